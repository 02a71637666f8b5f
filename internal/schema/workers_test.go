package schema

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tsmigrate/tsmigrate/internal/pgtools"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// fakeProgram writes a program named name into a new directory: a shell script that
// answers --version as 17.12 and otherwise runs body. Its worker subshells are
// processes of their own, as pg_dump -j's and pg_restore -j's are.
func fakeProgram(t *testing.T, name, body string) *pgtools.Tools {
	t.Helper()
	dir := t.TempDir()
	script := "#!/bin/sh\n" + `if [ "$1" = "--version" ]; then echo "` + name + ` (PostgreSQL) 17.12"; exit 0; fi` + "\n" +
		"f=$(mktemp -d)\ntrap 'rm -r \"$f\"' EXIT\nmkfifo \"$f/a\" \"$f/b\"\n" + body + "\nwait\n"
	if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return &pgtools.Tools{Dir: dir, Version: pgtools.Version{Major: 17, Minor: 12, Text: "17.12"}}
}

// pg_dump and pg_restore write a message in several write() calls ("pg_dump:", " ",
// "error: ", the text and its newline: PostgreSQL 17's pg_log_generic_v), so the
// messages of parallel workers, which share stderr, interleave inside a line. Seen in
// a dump with --jobs 2 of a table named with a line break: a worker's prefix, then
// the leader's whole message naming that table, then the rest of the worker's
// message. The worker's text, the leader's line cut by the name: every line is read
// as its process wrote it, and the dump passes.
func TestDumpWorkersWritesInterleaved(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, src, "CREATE TABLE \"new\nline\" (id int)")
	// The worker (a subshell) writes its prefix, lets the leader write a whole
	// message, then writes the rest of its own. The fifos order the writes.
	tools := fakeProgram(t, "pg_dump", `
( printf 'pg_dump:' >&2; echo > "$f/a"; read x < "$f/b"
  printf ' ' >&2; printf '%s\n' 'dumping contents of table "_timescaledb_catalog.continuous_agg_migrate_plan_step"' >&2 ) &
read x < "$f/a"
printf 'pg_dump:' >&2; printf ' ' >&2; printf 'finished item 4312 TABLE DATA new\nline\n' >&2
echo > "$f/b"`)
	msgs, err := Dump(context.Background(), DumpOptions{Tools: tools, Source: cfg(t, "source", srv.URI(src)),
		Dir: filepath.Join(t.TempDir(), "dump"), Jobs: 2})
	if err != nil || len(msgs) != 0 {
		t.Fatalf("dump: %v, messages %+v; want no message", err, msgs)
	}
}

// Each pg_restore -j worker prints the context of its error ("while PROCESSING TOC:",
// "from TOC entry N; ...") and the error in separate messages, between which another
// worker's may come. Each error is told with its own worker's entry: the harmless
// comment on the extension is harmless, the other error names its table.
func TestRestoreWorkersMessagesInterleaved(t *testing.T) {
	toc, err := ParseTOC(strings.NewReader("12; 1259 16390 TABLE public devices postgres\n4142; 0 0 COMMENT - EXTENSION timescaledb \n"))
	if err != nil {
		t.Fatal(err)
	}
	// Worker 1 restores the comment, worker 2 the table; worker 2's context comes
	// between worker 1's and its error.
	tools := fakeProgram(t, "pg_restore", `
( printf 'pg_restore:' >&2; printf ' ' >&2; printf 'while PROCESSING TOC:\n' >&2
  printf 'pg_restore:' >&2; printf ' ' >&2; printf 'from TOC entry 4142; 0 0 COMMENT EXTENSION timescaledb \n' >&2
  echo > "$f/a"; read x < "$f/b"
  printf 'pg_restore:' >&2; printf ' ' >&2; printf 'error: ' >&2
  printf 'could not execute query: ERROR:  must be owner of extension timescaledb\nCommand was: COMMENT ON EXTENSION timescaledb IS '"'x'"';\n' >&2 ) &
read x < "$f/a"
printf 'pg_restore:' >&2; printf ' ' >&2; printf 'while PROCESSING TOC:\n' >&2
printf 'pg_restore:' >&2; printf ' ' >&2; printf 'from TOC entry 12; 1259 16390 TABLE devices postgres\n' >&2
echo > "$f/b"; wait
printf 'pg_restore:' >&2; printf ' ' >&2; printf 'error: ' >&2
printf 'could not execute query: ERROR:  relation "devices" already exists\nCommand was: CREATE TABLE public.devices (id integer);\n' >&2
exit 1`)
	msgs, err := runClassified(context.Background(), tools, pgtools.Cmd{Program: "pg_restore", Args: []string{"x"}}, toc, nil, nil)
	var harmless, table int
	for _, m := range msgs {
		switch {
		case m.Harmless && m.Rule == "comment-on-extension-not-owner" && m.TOCID == 4142:
			harmless++
		case !m.Harmless && m.TOCID == 12 && m.Object == "TABLE public.devices" && strings.Contains(m.Text, `relation "devices" already exists`):
			table++
		}
	}
	if harmless != 1 || table != 1 || len(msgs) != 2 || err == nil || !strings.Contains(err.Error(), "TABLE public.devices") {
		t.Fatalf("messages %+v, error %v; want the comment harmless and the table's error failing the run", msgs, err)
	}
}
