package migrate_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// preDataSource makes a source whose schema takes a few seconds to restore: 1500
// tables, besides an extension in a schema of its own, a type, a domain, a function,
// a view and a hypertable with rows.
func preDataSource(t *testing.T, srv *testenv.Server) string {
	t.Helper()
	src := testenv.NewDB(t, srv, true)
	testenv.MustExec(t, srv, src,
		"CREATE SCHEMA ext", "CREATE EXTENSION hstore WITH SCHEMA ext", "COMMENT ON SCHEMA ext IS 'extensions'",
		"CREATE TYPE mood AS ENUM ('sad', 'happy')", "CREATE DOMAIN positive AS int CHECK (VALUE > 0)",
		"CREATE FUNCTION twice(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1 * 2'",
		"CREATE TABLE kv (id serial PRIMARY KEY, h ext.hstore, m mood, p positive)",
		"INSERT INTO kv (h, m, p) SELECT ('a=>' || g)::ext.hstore, 'happy', g FROM generate_series(1, 100) g",
		"CREATE VIEW kv_view AS SELECT id, twice(p) FROM kv",
		"CREATE TABLE m (t timestamptz NOT NULL, v int)", "SELECT create_hypertable('m', 't', chunk_time_interval => interval '1 day')",
		"INSERT INTO m SELECT '2025-01-01'::timestamptz + g * interval '1 hour', g FROM generate_series(1, 24 * 10) g",
		`DO $$ BEGIN FOR i IN 1..1500 LOOP
			EXECUTE format('CREATE TABLE many_%s (id int PRIMARY KEY, a text, b mood)', i);
		END LOOP; END $$`,
		"INSERT INTO many_1500 VALUES (1, 'last', 'sad')")
	return src
}

// SIGKILL of tsmigrate while it restores the schema (pre-data), with part of it on the
// target, then --resume: exit 0, what the killed run restored dropped and the schema
// restored again (the extension kept in its schema), the data copied, verify identical.
func TestStreamKillInPreDataThenResume(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src := preDataSource(t, srv)
	dst := testenv.NewDB(t, srv, false)
	unfreezeAtCleanup(t, srv, src)
	const tables = "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relname LIKE 'many\\_%' AND relkind = 'r'"

	g := connect(t, srv.SuperURI(dst))
	killWhen(t, srv, src, dst, "pre-data", "100 tables on the target", func() bool { return scalar[int](t, g, tables) >= 100 })
	have := scalar[int](t, g, tables)
	t.Logf("killed with %d of the 1500 tables on the target", have)
	if have >= 1500 {
		t.Fatal("killed after the schema was restored: make it bigger")
	}
	if steps := scalar[string](t, g, "SELECT coalesce(string_agg(name, ','), '') FROM _tsmigrate.steps"); steps != "" {
		t.Fatalf("journal steps %q, want none", steps)
	}
	if writable(t, srv, src) {
		t.Fatal("the source is writable after tsmigrate was killed")
	}

	code, out, errOut := runCLI(t, "migrate", "--resume", "--yes", "--jobs", "2", "--progress", "plain", "--json",
		"--pg-bin", srv.ClientBin(), "--source", srv.URI(src), "--target", srv.URI(dst))
	var sum migrate.Summary
	if err := json.Unmarshal([]byte(out), &sum); err != nil || code != 0 {
		t.Fatalf("resume: exit %d, %v\n%s\n%s", code, err, out, errOut)
	}
	if d := sum.Databases[0]; d.Identical == nil || !*d.Identical || sum.Outcome != migrate.OutcomeMigrated {
		t.Fatalf("resume: %+v\n%s", sum, errOut)
	}
	if !strings.Contains(errOut, "dropping what it restored, then restoring the schema again") {
		t.Errorf("the resume does not say it restores the schema again:\n%s", errOut)
	}
	if n := scalar[int](t, g, tables); n != 1500 {
		t.Errorf("%d tables on the target, want 1500", n)
	}
	if s := scalar[string](t, g, "SELECT extnamespace::regnamespace::text || ' ' || coalesce(obj_description('ext'::regnamespace), '') FROM pg_extension WHERE extname = 'hstore'"); s != "ext extensions" {
		t.Errorf("hstore on the target: %q, want in schema ext with its comment", s)
	}
}

// killWhen starts a stream migration of src into dst and SIGKILLs it once it is in
// phase and ready (what) says true.
func killWhen(t *testing.T, srv *testenv.Server, src, dst, phase, what string, ready func() bool) {
	t.Helper()
	p := startTsmigrate(t, testenv.Binary(t), "migrate", "--yes", "--jobs", "1", "--freeze-grace", "1s", "--progress", "json", "--json",
		"--pg-bin", srv.ClientBin(), "--source", srv.URI(src), "--target", srv.URI(dst))
	defer func() {
		if t.Failed() {
			t.Logf("tsmigrate's stderr:\n%s", p.output())
		}
	}()
	testenv.Eventually(t, 90*time.Second, func() error {
		if !p.saw("==> " + phase) {
			return fmt.Errorf("no %s phase", phase)
		}
		if !ready() {
			return fmt.Errorf("no %s", what)
		}
		return nil
	})
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.cmd.Wait()
}
