package schema

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/pgtools"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func count(t *testing.T, srv *testenv.Server, db, q string) int64 {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, srv.SuperURI(db))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var n int64
	if err := c.QueryRow(ctx, q).Scan(&n); err != nil {
		t.Fatalf("%s on %s: %v", q, db, err)
	}
	return n
}

func cfg(t *testing.T, role, uri string) *dbconn.Config {
	t.Helper()
	c, err := dbconn.Parse(role, uri)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The documented `pg_restore --jobs 4` loses every hypertable's rows; Restore, with the
// catalog first and alone, keeps them all, with --jobs 4 as well.
func TestRestoreKeepsHypertableDataWherePlainParallelRestoreLosesIt(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	ctx := context.Background()
	tools := &pgtools.Tools{Dir: srv.ClientBin()}
	src := testenv.NewDB(t, srv, true)
	testenv.MustExec(t, srv, src,
		`CREATE TABLE metrics (t timestamptz NOT NULL, dev int NOT NULL, v float8)`,
		`SELECT create_hypertable('metrics', 't', chunk_time_interval => interval '1 day')`,
		`SELECT add_dimension('metrics', 'dev', number_partitions => 2)`,
		`INSERT INTO metrics SELECT '2025-01-01'::timestamptz + g * interval '20 minutes', g % 7, g FROM generate_series(1, 2880) g`,
		`CREATE TABLE ticks (n bigint NOT NULL, v int)`,
		`SELECT create_hypertable('ticks', 'n', chunk_time_interval => 100)`,
		`INSERT INTO ticks SELECT g, g FROM generate_series(1, 1000) g`,
		`CREATE TABLE devices (id serial PRIMARY KEY, name text)`,
		`INSERT INTO devices (name) SELECT 'd' || g FROM generate_series(1, 50) g`)
	chunks := count(t, srv, src, "SELECT count(*) FROM timescaledb_information.chunks")
	if chunks < 40 {
		t.Fatalf("only %d chunks in the source", chunks)
	}
	dir := filepath.Join(t.TempDir(), "dump")
	msgs, err := Dump(ctx, DumpOptions{Tools: tools, Source: cfg(t, "source", srv.URI(src)), Dir: dir, Jobs: 2})
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	if len(msgs) == 0 {
		t.Fatal("pg_dump printed none of the known circular-FK warnings")
	}

	// The documented way, with the documented pre/post_restore around it.
	naive := testenv.NewDB(t, srv, true)
	testenv.MustExec(t, srv, naive, "SELECT timescaledb_pre_restore()")
	err = tools.Run(ctx, pgtools.Cmd{Program: "pg_restore", Conn: cfg(t, "target", srv.URI(naive)), Args: []string{"--no-owner", "--jobs=4", dir}})
	if !errors.As(err, new(*pgtools.ExitError)) {
		t.Fatalf("plain pg_restore --jobs 4: %v; expected it to fail", err)
	}
	testenv.MustExec(t, srv, naive, "SELECT timescaledb_post_restore()")
	if n := count(t, srv, naive, "SELECT count(*) FROM metrics"); n != 0 {
		t.Fatalf("plain pg_restore --jobs 4 kept %d rows; the data-loss case no longer reproduces", n)
	}

	dst := testenv.NewDB(t, srv, false)
	res, err := Restore(ctx, RestoreOptions{Tools: tools, Target: cfg(t, "target", srv.URI(dst)), Archive: dir, Jobs: 4, TimescaleDB: "2.19.3", TimescaleDBSchema: "public"})
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	// pre_restore, catalog, schema and data, catalog rows naming relations, post_restore.
	if !res.CreatedExtension || len(res.Steps) != 5 {
		t.Fatalf("restore result %+v", res)
	}
	for _, q := range []string{
		"SELECT count(*) FROM metrics", "SELECT count(*) FROM ticks", "SELECT count(*) FROM devices",
		"SELECT count(*) FROM timescaledb_information.chunks",
		"SELECT count(*) FROM timescaledb_information.dimensions",
		"SELECT last_value FROM devices_id_seq",
	} {
		if a, b := count(t, srv, src, q), count(t, srv, dst, q); a != b || a == 0 {
			t.Errorf("%s: source %d, target %d", q, a, b)
		}
	}
	// New rows go into the right chunks on the target: TimescaleDB is live again.
	testenv.MustExec(t, srv, dst, "INSERT INTO metrics VALUES ('2030-01-01', 1, 1)", "INSERT INTO devices (name) VALUES ('new')")
	if n := count(t, srv, dst, "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'metrics'"); n != count(t, srv, src, "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'metrics'")+1 {
		t.Errorf("insert on the target made no new chunk (%d)", n)
	}
	if err := Analyze(ctx, cfg(t, "target", srv.URI(dst)), 2, nil); err != nil {
		t.Fatal(err)
	}
}

func TestRestoreSections(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	ctx := context.Background()
	tools := &pgtools.Tools{Dir: srv.ClientBin()}
	src := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, src, "CREATE TABLE a (id int PRIMARY KEY, b text)", "CREATE INDEX a_b ON a (b)", "INSERT INTO a VALUES (1, 'x')")
	file := filepath.Join(t.TempDir(), "schema.dump")
	if _, err := DumpSchema(ctx, tools, cfg(t, "source", srv.URI(src)), file, nil); err != nil {
		t.Fatal(err)
	}
	dst := testenv.NewDB(t, srv, false)
	target := cfg(t, "target", srv.URI(dst))
	if _, err := RestoreSection(ctx, tools, target, file, PreData, 2, nil, nil); err != nil {
		t.Fatal(err)
	}
	if n := count(t, srv, dst, "SELECT count(*) FROM pg_indexes WHERE tablename = 'a'"); n != 0 {
		t.Fatalf("pre-data made %d indexes", n)
	}
	testenv.MustExec(t, srv, dst, "INSERT INTO a VALUES (1, 'x')")
	if _, err := RestoreSection(ctx, tools, target, file, PostData, 2, nil, nil); err != nil {
		t.Fatal(err)
	}
	if n := count(t, srv, dst, "SELECT count(*) FROM pg_indexes WHERE tablename = 'a'"); n != 2 {
		t.Fatalf("post-data made %d indexes, want 2", n)
	}
	// A conflicting object is an error naming it.
	_, err := RestoreSection(ctx, tools, target, file, PreData, 1, nil, nil)
	var me *MessageError
	if !errors.As(err, &me) || me.Messages[0].Object != "TABLE public.a" {
		t.Fatalf("restoring pre-data twice: %v; want a MessageError on TABLE public.a", err)
	}
}

// TimescaleDB in another schema than public, one that needs quoting: EnsureTimescaleDB
// creates it there (and refuses a target holding it elsewhere), pre-data restores
// without the CREATE SCHEMA of that schema but with its comment and privileges, and
// pre/post_restore are called in it.
func TestRestoreSectionIntoExtensionSchema(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	ctx := context.Background()
	tools := &pgtools.Tools{Dir: srv.ClientBin()}
	src := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, src, `CREATE SCHEMA "Ext Schema"`, `COMMENT ON SCHEMA "Ext Schema" IS 'extension here'`,
		`GRANT USAGE ON SCHEMA "Ext Schema" TO PUBLIC`, `CREATE EXTENSION timescaledb SCHEMA "Ext Schema"`,
		`CREATE TABLE m (t timestamptz NOT NULL, v int)`,
		`SELECT "Ext Schema".create_hypertable('m', 't', chunk_time_interval => interval '1 day')`,
		`INSERT INTO m SELECT '2025-01-01'::timestamptz + g * interval '1 hour', g FROM generate_series(1, 100) g`)
	file := filepath.Join(t.TempDir(), "schema.dump")
	if _, err := DumpSchema(ctx, tools, cfg(t, "source", srv.URI(src)), file, nil); err != nil {
		t.Fatal(err)
	}
	dst := testenv.NewDB(t, srv, false)
	c, err := pgx.Connect(ctx, srv.SuperURI(dst))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	for i, want := range []bool{true, false} {
		if plan, created, err := EnsureTimescaleDB(ctx, c, "2.19.3", "Ext Schema"); err != nil || created != want || plan.Version != "2.19.3" || plan.Upgrade() {
			t.Fatalf("EnsureTimescaleDB, call %d: created %v, %v", i+1, created, err)
		}
	}
	if _, _, err := EnsureTimescaleDB(ctx, c, "2.19.3", "public"); err == nil || !strings.Contains(err.Error(), "in schema Ext Schema but the source has it in public") {
		t.Fatalf("EnsureTimescaleDB into public with the extension in Ext Schema: %v", err)
	}
	if err := PreRestore(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, err := RestoreSection(ctx, tools, cfg(t, "target", srv.URI(dst)), file, PreData, 1, nil, nil); err != nil {
		t.Fatalf("pre-data: %v", err)
	}
	var facts string
	if err := c.QueryRow(ctx, `SELECT obj_description(oid, 'pg_namespace') || ', usage for PUBLIC: ' || has_schema_privilege('public', oid, 'USAGE')
		FROM pg_namespace WHERE nspname = 'Ext Schema'`).Scan(&facts); err != nil || facts != "extension here, usage for PUBLIC: true" {
		t.Errorf("schema \"Ext Schema\" on the target: %q, %v", facts, err)
	}
	const restoring = `SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase AND d.datname = current_database()
		CROSS JOIN unnest(s.setconfig) c WHERE c = 'timescaledb.restoring=on'`
	if n := count(t, srv, dst, restoring); n != 1 {
		t.Errorf("the target database is not in restoring mode after pre_restore")
	}
	if err := PostRestore(ctx, c); err != nil {
		t.Fatal(err)
	}
	if n := count(t, srv, dst, restoring); n != 0 {
		t.Errorf("the target database is in restoring mode after post_restore")
	}
}

// The publication a live migration made on the source (tsmigrate_ and 16 hex digits),
// which its schema dump holds (taken in the slot's snapshot), is left out of the
// restore: it is tsmigrate's, not the user's, and the target's owner, no superuser,
// could not make it (FOR TABLES IN SCHEMA). The user's publication is restored.
func TestRestoreLeavesOutLivePublication(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	ctx := context.Background()
	tools := &pgtools.Tools{Dir: srv.ClientBin()}
	src := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, src, "CREATE TABLE a (id int PRIMARY KEY)", "CREATE SCHEMA s", "CREATE TABLE s.b (id int PRIMARY KEY)",
		"CREATE PUBLICATION tsmigrate_0123456789abcdef FOR TABLES IN SCHEMA s, TABLE a", "CREATE PUBLICATION mine FOR TABLE a")
	file := filepath.Join(t.TempDir(), "schema.dump")
	if _, err := DumpSchema(ctx, tools, cfg(t, "source", srv.URI(src)), file, nil); err != nil {
		t.Fatal(err)
	}
	dst, ownerURI := testenv.NewOwnerDB(t, srv)
	target := cfg(t, "target", ownerURI)
	for _, section := range []string{PreData, PostData} {
		if _, err := RestoreSection(ctx, tools, target, file, section, 1, nil, nil); err != nil {
			t.Fatalf("restore %s as the target's owner: %v", section, err)
		}
	}
	if n := count(t, srv, dst, "SELECT count(*) FROM pg_publication WHERE pubname = 'tsmigrate_0123456789abcdef'"); n != 0 {
		t.Error("the live migration's publication was restored")
	}
	if n := count(t, srv, dst, "SELECT count(*) FROM pg_publication_rel WHERE prpubid = (SELECT oid FROM pg_publication WHERE pubname = 'mine')"); n != 1 {
		t.Errorf("the user's publication holds %d tables on the target, want 1", n)
	}
}
