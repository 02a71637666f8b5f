package schema

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tsmigrate/tsmigrate/internal/pgtools"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// germanLocale makes the de_DE.UTF-8 locale in a directory of its own (with the
// localedef of the servers' root, whose C library the client programs use) and sets
// the environment of a German user: LANG, LC_ALL, LANGUAGE, and LOCPATH naming it.
func germanLocale(t *testing.T) {
	t.Helper()
	root := testenv.Pg17Root()
	loaders, _ := filepath.Glob(filepath.Join(root, "usr/lib/*/ld-linux*.so.2"))
	if len(loaders) != 1 {
		t.Fatalf("no single loader in %s: %q", root, loaders)
	}
	dir := t.TempDir()
	cmd := exec.Command(loaders[0], "--library-path", filepath.Dir(loaders[0]),
		filepath.Join(root, "usr/bin/localedef"), "-i", "de_DE", "-f", "UTF-8", filepath.Join(dir, "de_DE.UTF-8"))
	cmd.Env = []string{"I18NPATH=" + filepath.Join(root, "usr/share/i18n")}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("localedef: %v\n%s", err, out)
	}
	t.Setenv("LOCPATH", dir)
	t.Setenv("LANG", "de_DE.UTF-8")
	t.Setenv("LC_ALL", "de_DE.UTF-8")
	t.Setenv("LANGUAGE", "de")
}

// A user whose locale is German gets pg_dump's and pg_restore's messages in German
// (checked first, so that the test shows something); tsmigrate's children speak
// English whatever the user's locale, so that the known harmless messages are still
// told from errors and each error still names its object. Before ChildEnv set
// LC_MESSAGES=C, the dump's known warnings were not recognised and the conflict on
// restore named no object.
func TestToolsMessagesInEnglishWhateverTheLocale(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	germanLocale(t)
	out, _ := exec.Command(filepath.Join(srv.ClientBin(), "pg_restore"), "-l", "/nonexistent").CombinedOutput()
	if !strings.Contains(string(out), "Fehler") {
		t.Fatalf("pg_restore does not speak German in this environment: %s", out)
	}

	ctx := context.Background()
	tools := &pgtools.Tools{Dir: srv.ClientBin()}
	src := testenv.NewDB(t, srv, true)
	testenv.MustExec(t, srv, src,
		`CREATE TABLE metrics (t timestamptz NOT NULL, dev int NOT NULL, v float8)`,
		`SELECT create_hypertable('metrics', 't')`,
		`INSERT INTO metrics VALUES ('2025-01-01', 1, 1)`,
		`CREATE TABLE a (id int PRIMARY KEY, b text)`)
	msgs, err := Dump(ctx, DumpOptions{Tools: tools, Source: cfg(t, "source", srv.URI(src)), Dir: filepath.Join(t.TempDir(), "dump"), Jobs: 2})
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	if len(msgs) == 0 {
		t.Fatal("pg_dump printed none of the known circular-FK warnings")
	}
	for _, m := range msgs {
		if !m.Harmless || strings.Contains(strings.Join(m.Lines, "\n"), "Warnung") {
			t.Errorf("dump message not known harmless, or in German: %+v", m)
		}
	}

	file := filepath.Join(t.TempDir(), "schema.dump")
	if _, err := DumpSchema(ctx, tools, cfg(t, "source", srv.URI(src)), file, nil); err != nil {
		t.Fatal(err)
	}
	dst := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, dst, "CREATE TABLE a (id int)")
	// pg_restore itself, as the dump engine and post-data use it (--jobs 2: no batches).
	_, err = RestoreSection(ctx, tools, cfg(t, "target", srv.URI(dst)), file, PreData, 2, nil, nil)
	var me *MessageError
	if !errors.As(err, &me) {
		t.Fatalf("restoring onto a conflicting table: %v; want a MessageError", err)
	}
	found := false
	for _, m := range me.Messages {
		if strings.Contains(strings.Join(m.Lines, "\n"), "Fehler") {
			t.Errorf("message in German: %q", m.Lines)
		}
		found = found || m.Object == "TABLE public.a"
	}
	if !found {
		t.Errorf("no message names TABLE public.a: %+v", me.Messages)
	}
	if os.Getenv("LC_ALL") != "de_DE.UTF-8" {
		t.Error("the test's own environment changed")
	}
}
