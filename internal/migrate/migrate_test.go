package migrate_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tsmigrate/tsmigrate/internal/cli"
	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/freeze"
	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func cfg(t *testing.T, role, uri string) *dbconn.Config {
	t.Helper()
	c, err := dbconn.Parse(role, uri)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func connect(t *testing.T, uri string) *pgx.Conn { return testenv.Connect(t, uri) }

func scalar[T any](t *testing.T, c *pgx.Conn, q string, args ...any) T {
	t.Helper()
	var v T
	if err := c.QueryRow(context.Background(), q, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return v
}

// unfreezeAtCleanup gives writes back to a source a successful run left frozen.
func unfreezeAtCleanup(t *testing.T, srv *testenv.Server, db string) {
	t.Cleanup(func() { freeze.Unfreeze(context.Background(), cfg(t, "source", srv.URI(db))) })
}

// writable says whether a new session can write to db (it fails when frozen).
func writable(t *testing.T, srv *testenv.Server, db string) bool {
	t.Helper()
	err := srv.Exec(context.Background(), db, "CREATE TEMP TABLE probe (x int); INSERT INTO probe VALUES (1)")
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "25006" {
		return false
	}
	if err != nil {
		t.Fatalf("write probe on %s: %v", db, err)
	}
	return true
}

// shapes are the objects that break naive migrations.
var shapes = []string{
	`CREATE SCHEMA sales`, `CREATE SCHEMA "Mixed Case"`, `CREATE SCHEMA "ünï"`,
	`CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')`,
	`CREATE DOMAIN posint AS int CHECK (VALUE > 0)`,
	`CREATE TABLE devices (id serial PRIMARY KEY, name text NOT NULL, m mood, n posint)`,
	`CREATE FUNCTION shout() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.name := upper(NEW.name); RETURN NEW; END$$`,
	`CREATE TRIGGER devices_shout BEFORE INSERT ON devices FOR EACH ROW EXECUTE FUNCTION shout()`,
	`INSERT INTO devices (name, m, n) SELECT 'dev' || g, (ARRAY['sad','ok','happy'])[1 + g % 3]::mood, g FROM generate_series(1, 20) g`,
	`CREATE TABLE metrics (t timestamptz NOT NULL, device_id int NOT NULL REFERENCES devices (id), v float8, v2 float8 GENERATED ALWAYS AS (v * 2) STORED)`,
	`SELECT create_hypertable('metrics', 't', chunk_time_interval => interval '1 day')`,
	`SELECT add_dimension('metrics', 'device_id', number_partitions => 2)`,
	`INSERT INTO metrics (t, device_id, v) SELECT '2025-03-01'::timestamptz + g * interval '10 minutes', 1 + g % 20, g / 7.0 FROM generate_series(1, 5760) g`,
	`CREATE TABLE ticks (n bigint NOT NULL, v int)`,
	`SELECT create_hypertable('ticks', 'n', chunk_time_interval => 100)`,
	`INSERT INTO ticks SELECT g, g FROM generate_series(1, 1000) g`,
	`CREATE TABLE sales.orders (id bigint GENERATED ALWAYS AS IDENTITY, device_id int REFERENCES devices (id), total numeric(10,2), created date NOT NULL, PRIMARY KEY (id, created)) PARTITION BY RANGE (created)`,
	`CREATE TABLE sales.orders_2024 PARTITION OF sales.orders FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')`,
	`CREATE TABLE sales.orders_2025 PARTITION OF sales.orders FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')`,
	`INSERT INTO sales.orders (device_id, total, created) SELECT 1 + g % 20, g * 1.25, '2024-06-01'::date + g FROM generate_series(1, 400) g`,
	`CREATE VIEW sales.device_totals AS SELECT device_id, sum(total) AS total FROM sales.orders GROUP BY device_id`,
	`CREATE TABLE "Mixed Case"."Odd Table" ("Some Col" int, "ünï cöl" text)`,
	`INSERT INTO "Mixed Case"."Odd Table" VALUES (1, 'ä'), (2, 'ß'), (3, '✓')`,
	`CREATE TABLE "ünï".tëst (id int)`, `INSERT INTO "ünï".tëst SELECT generate_series(1, 7)`,
	`CREATE SEQUENCE standalone_seq START 500`, `SELECT nextval('standalone_seq') FROM generate_series(1, 3)`,
	`SELECT lo_from_bytea(0, 'large object bytes')`,
	`COMMENT ON SCHEMA public IS 'the app'`, `COMMENT ON FUNCTION shout() IS 'upper-cases names'`,
	`COMMENT ON CONSTRAINT devices_pkey ON devices IS 'the key'`, `COMMENT ON INDEX metrics_t_idx IS 'by time'`,
	`COMMENT ON DOMAIN posint IS 'above zero'`,
	// a user's table in TimescaleDB's schema; a character column keeping trailing spaces
	`CREATE TABLE _timescaledb_internal.mine (id int, note bpchar)`, `INSERT INTO _timescaledb_internal.mine VALUES (1, 'padded  '), (2, 'x')`,
	// how tables are stored, planned and replicated
	`ALTER TABLE devices SET (fillfactor = 80)`, `ALTER TABLE devices ALTER COLUMN name SET STATISTICS 300`,
	`ALTER TABLE devices ALTER COLUMN name SET STORAGE EXTERNAL`, `CREATE STATISTICS devices_m_n ON m, n FROM devices`,
	`ALTER TABLE devices REPLICA IDENTITY FULL`, `ALTER TABLE metrics ALTER COLUMN v SET STATISTICS 200`,
}

// The data-loss case and the shape list: --jobs 4, many chunks, every row, chunk and
// sequence equal, and the target usable afterwards.
func TestMigrateEveryShapeWithJobs4(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	ctx := context.Background()
	src := testenv.NewDB(t, srv, true)
	testenv.MustExec(t, srv, src, shapes...)
	dst := "t_shapes_target"
	t.Cleanup(func() { srv.Exec(ctx, "postgres", "DROP DATABASE IF EXISTS "+dst+" WITH (FORCE)") })
	unfreezeAtCleanup(t, srv, src)
	dumpDir := t.TempDir()

	var events []migrate.Event
	sum, err := migrate.Run(ctx, migrate.Options{
		Engine: migrate.EngineDump, Source: cfg(t, "source", srv.URI(src)), Target: cfg(t, "target", srv.URI(dst)),
		Jobs: 4, PgBin: srv.ClientBin(), DumpDir: dumpDir, KeepDump: true, FreezeGrace: time.Second,
		OnEvent: func(e migrate.Event) { events = append(events, e) },
	})
	if err != nil {
		t.Fatalf("migrate: %v\n%+v", err, sum)
	}
	if sum.Outcome != migrate.OutcomeMigrated || !sum.Frozen() || len(sum.CutOver) == 0 || len(sum.Errors) != 0 || sum.Harmless < 3 {
		t.Fatalf("summary %+v", sum)
	}
	d := sum.Databases[0]
	if !d.CreatedTarget || d.Identical == nil || !*d.Identical || d.DumpPath == "" {
		t.Fatalf("database run %+v", d)
	}
	if _, err := os.Stat(filepath.Join(d.DumpPath, "toc.dat")); err != nil {
		t.Fatalf("--keep-dump: %v", err)
	}
	assertShapeTables(t, d)
	if writable(t, srv, src) {
		t.Fatal("the source is writable after a successful run; it must stay frozen")
	}

	assertShapesEqual(t, srv, src, dst)
	phases := map[string]bool{}
	for _, e := range events {
		if e.Type == migrate.EventPhase {
			phases[e.Phase] = true
		}
	}
	for _, p := range []string{migrate.PhasePreflight, migrate.PhaseFreeze, migrate.PhaseDump, migrate.PhaseRestore, migrate.PhaseAnalyze, migrate.PhaseVerify} {
		if !phases[p] {
			t.Errorf("no %s phase event", p)
		}
	}
}

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := cli.Run(context.Background(), args, strings.NewReader(""), &out, &errOut)
	return code, out.String(), errOut.String()
}

// Two databases in one run, as tsdbadmin, one of them into the cloud-like target's
// defaultdb (TLS), the other into a database tsdbadmin creates (CREATEDB).
func TestMigrateTwoDatabasesOneIntoDefaultdb(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	managed := testenv.Need(t, testenv.PG17TS, testenv.Options{Managed: true})
	app := testenv.NewDB(t, srv, true)
	extra := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, app,
		"CREATE TABLE m (t timestamptz NOT NULL, v int)", "SELECT create_hypertable('m', 't')",
		"INSERT INTO m SELECT '2025-01-01'::timestamptz + g * interval '1 hour', g FROM generate_series(1, 500) g")
	testenv.MustExec(t, srv, extra, "CREATE TABLE notes (id serial PRIMARY KEY, body text)", "INSERT INTO notes (body) SELECT 'n' || g FROM generate_series(1, 30) g")
	unfreezeAtCleanup(t, srv, app)
	unfreezeAtCleanup(t, srv, extra)

	code, out, errOut := runCLI(t, "migrate", "--engine", "dump", "--yes", "--jobs", "2", "--pg-bin", srv.ClientBin(),
		"--source", srv.URI("postgres"), "--target", managed.URI(testenv.ManagedDB),
		"--database", app+":"+testenv.ManagedDB, "--database", extra, "--json")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	var sum migrate.Summary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	if len(sum.Databases) != 2 || sum.Databases[0].Target != testenv.ManagedDB || sum.Databases[0].CreatedTarget || !sum.Databases[1].CreatedTarget {
		t.Fatalf("databases %+v", sum.Databases)
	}
	if strings.Contains(out+errOut, testenv.SuperPassword) {
		t.Fatal("the password is in the output")
	}
	g := connect(t, managed.SuperURI(testenv.ManagedDB))
	if n := scalar[int64](t, g, "SELECT count(*) FROM m"); n != 500 {
		t.Fatalf("defaultdb has %d rows of m", n)
	}
	if n := scalar[int64](t, connect(t, managed.SuperURI(extra)), "SELECT count(*) FROM notes"); n != 30 {
		t.Fatalf("%s has %d notes", extra, n)
	}
}

// A restore error that is not on the harmless list fails the run (exit 1), shows the
// object and what to do, unfreezes the source and says how to reset the target.
func TestConflictingObjectFailsAndUnfreezes(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src := testenv.NewDB(t, srv, true)
	dst := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, src, "CREATE COLLATION public.plain (provider = libc, locale = 'C')",
		"CREATE TABLE t (id int, s text COLLATE public.plain)", "INSERT INTO t VALUES (1, 'a')")
	// A collation is not among the objects pre-flight looks for in the target.
	testenv.MustExec(t, srv, dst, "CREATE COLLATION public.plain (provider = libc, locale = 'C')")
	unfreezeAtCleanup(t, srv, src)
	// What a killed run left behind is removed first, with a note: the error is still
	// stderr's last line.
	stale := testenv.StaleScratch(t)

	code, out, errOut := runCLI(t, "migrate", "--engine", "dump", "--yes", "--jobs", "2", "--pg-bin", srv.ClientBin(), "--no-verify",
		"--source", srv.URI(src), "--target", srv.URI(dst))
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{
		"ERROR pg_restore: COLLATION public.plain: could not execute query: ERROR:  collation \"plain\" for encoding \"UTF8\" already exists",
		"what to do: the target already holds this object",
		"the source is writable again",
		"to reset the target",
		`DROP DATABASE "` + dst + `"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	if !strings.HasPrefix(lines[len(lines)-1], "tsmigrate: ") {
		t.Errorf("last line of stderr is not tsmigrate's one-line error:\n%s", errOut)
	}
	if !strings.Contains(errOut, "removed 1 temporary directories that killed tsmigrate runs left behind: "+stale) {
		t.Errorf("stderr does not say the killed run's directory was removed:\n%s", errOut)
	}
	if !writable(t, srv, src) {
		t.Fatal("the source is still frozen after the failed run")
	}
}

// A rehearsal freezes nothing, measures, and reports the projected downtime and what
// changed on the source meanwhile; --compress-before says an Apache source cannot compress.
func TestRehearsal(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src := testenv.NewDB(t, srv, true)
	dst := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, src, "CREATE TABLE m (t timestamptz NOT NULL, v int)", "SELECT create_hypertable('m', 't')",
		"INSERT INTO m SELECT '2025-01-01'::timestamptz + g * interval '1 hour', g FROM generate_series(1, 2000) g")

	// A writer keeps inserting during the rehearsal; none of its writes may fail.
	ctx, stop := context.WithCancel(context.Background())
	var written, failed atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if err := srv.Exec(context.Background(), src, "INSERT INTO m VALUES (now(), 1)"); err != nil {
				failed.Add(1)
			} else {
				written.Add(1)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	file := filepath.Join(t.TempDir(), "app.dump")
	code, out, errOut := runCLI(t, "migrate", "--engine", "dump", "--rehearsal", "--compress-before", "--jobs", "2", "--pg-bin", srv.ClientBin(),
		"--dump-file", file, "--no-verify", "--source", srv.URI(src), "--target", srv.URI(dst), "--json")
	stop()
	<-done
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	var sum migrate.Summary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatal(err)
	}
	if failed.Load() > 0 || written.Load() == 0 {
		t.Fatalf("writer: %d written, %d failed; a rehearsal must not stop writes", written.Load(), failed.Load())
	}
	if sum.Outcome != migrate.OutcomeRehearsed || sum.Frozen() || sum.ProjectedDowntime <= migrate.FreezeAllowance ||
		sum.SourceChanges == nil || sum.SourceChanges.Inserted == 0 || len(sum.ResetTarget) == 0 ||
		!strings.Contains(sum.CompressBefore, "Apache") {
		t.Fatalf("summary: %s", out)
	}
	for _, p := range sum.Phases {
		if p.Phase == migrate.PhaseFreeze {
			t.Fatal("a rehearsal froze the source")
		}
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Fatalf("the dump file is left without --keep-dump: %v", err)
	}
	if !writable(t, srv, src) {
		t.Fatal("the source is not writable after the rehearsal")
	}
	// The text summary states the projection.
	code, text, errText := runCLI(t, "migrate", "--engine", "dump", "--rehearsal", "--jobs", "2", "--pg-bin", srv.ClientBin(), "--no-verify",
		"--source", srv.URI(src), "--target", srv.URI(testenv.NewDB(t, srv, false)))
	if code != 0 || !strings.Contains(text, "projected downtime of a real run: about") || !strings.Contains(text, "the source changed during the run:") {
		t.Fatalf("exit %d, text summary:\n%s\n%s", code, text, errText)
	}
}

// --all-databases takes every source database with user objects, each into its name.
func TestMigrateAllDatabases(t *testing.T) {
	srcSrv := testenv.Need(t, testenv.PG17TS, testenv.Options{})
	dstSrv := testenv.Shared(t, testenv.PG17TS)
	ctx := context.Background()
	for _, db := range []string{"alldb_ts", "alldb_plain", "alldb_empty"} {
		if err := srcSrv.CreateDatabase(ctx, db, db == "alldb_ts"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { dstSrv.Exec(ctx, "postgres", "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)") })
	}
	testenv.MustExec(t, srcSrv, "alldb_ts", "CREATE TABLE m (t timestamptz NOT NULL, v int)", "SELECT create_hypertable('m', 't')",
		"INSERT INTO m SELECT '2025-01-01'::timestamptz + g * interval '1 hour', g FROM generate_series(1, 100) g")
	testenv.MustExec(t, srcSrv, "alldb_plain", "CREATE TABLE p (id int)", "INSERT INTO p SELECT generate_series(1, 10)")

	sum, err := migrate.Run(ctx, migrate.Options{
		Engine: migrate.EngineDump, Source: cfg(t, "source", srcSrv.URI("postgres")), Target: cfg(t, "target", dstSrv.URI("postgres")),
		AllDatabases: true, Jobs: 2, PgBin: srcSrv.ClientBin(), NoVerify: true, FreezeGrace: time.Second,
	})
	if err != nil {
		t.Fatalf("migrate: %v", err)
	}
	var names []string
	for _, d := range sum.Databases {
		names = append(names, d.Source+":"+d.Target)
	}
	if strings.Join(names, " ") != "alldb_plain:alldb_plain alldb_ts:alldb_ts" {
		t.Fatalf("databases %v; want the two with user objects", names)
	}
	if n := scalar[int64](t, connect(t, dstSrv.SuperURI("alldb_ts")), "SELECT count(*) FROM m"); n != 100 {
		t.Fatalf("alldb_ts has %d rows", n)
	}
}

// Bad input: one line, exit 2, nothing changed.
func TestUsageErrors(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, src, "CREATE TABLE t (id int)")
	dst := "t_usage_target"
	conn := []string{"--source", srv.URI(src), "--target", srv.URI(dst), "--pg-bin", srv.ClientBin()}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--engine", "bogus"}, `unknown --engine "bogus"`},
		{[]string{"--dump-file", "x.dump"}, "--dump-file is for the dump engine"},
		{[]string{"--engine", "dump", "--resume"}, "--resume is for the stream engine"},
		{[]string{"--resume", "--worker"}, "exclude each other"},
		{[]string{"--progress", "fancy"}, `unknown --progress mode "fancy"`},
		{[]string{"--jobs", "0"}, "--jobs 0"},
		{[]string{"--database", ":x"}, `invalid --database ":x"`},
		{[]string{"--engine", "dump", "--dump-dir", t.TempDir(), "--dump-file", "x.dump"}, "exclude each other"},
		{[]string{"--database", src, "--all-databases"}, "exclude each other"},
		// Without --yes and without a terminal, nothing is frozen and nothing is left.
		{nil, "no terminal to confirm on"},
	}
	for _, c := range cases {
		code, out, errOut := runCLI(t, append(append([]string{"migrate"}, c.args...), conn...)...)
		lines := strings.Split(strings.TrimSpace(errOut), "\n")
		if code != 2 || !strings.Contains(lines[len(lines)-1], c.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 with %q\n%s", c.args, code, errOut, c.want, out)
		}
	}
	if !writable(t, srv, src) {
		t.Fatal("the source was frozen")
	}
	if n := scalar[int](t, connect(t, srv.SuperURI("postgres")), "SELECT count(*) FROM pg_database WHERE datname = $1", dst); n != 0 {
		t.Fatal("the target database made for the run is left after it was refused")
	}
}

// A dump that may not fit on its disk stops the run before anything changes (exit 3).
func TestDumpDiskTooSmall(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "tsmigrate-test", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a small tmpfs here (%v: %s)", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	srv := testenv.Shared(t, testenv.PG17TS)
	src := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, src, "CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
	dst := testenv.NewDB(t, srv, false)
	code, out, errOut := runCLI(t, "migrate", "--engine", "dump", "--yes", "--pg-bin", srv.ClientBin(), "--dump-dir", filepath.Join(dir, "dumps"),
		"--source", srv.URI(src), "--target", srv.URI(dst))
	if code != 3 || !strings.Contains(errOut, "the dump may need up to") || !strings.Contains(errOut, "free") {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	if !writable(t, srv, src) {
		t.Fatal("the source was frozen")
	}
}

// assertShapeTables checks the summary's rows of the shape list: equal on both sides.
func assertShapeTables(t *testing.T, d *migrate.DatabaseRun) {
	t.Helper()
	assertShapeTablesWith(t, d, "_timescaledb_internal.mine")
}

// assertShapeTablesWith is assertShapeTables for a shape list whose table
// _timescaledb_internal.mine was moved to mine.
func assertShapeTablesWith(t *testing.T, d *migrate.DatabaseRun, mine string) {
	t.Helper()
	kinds := map[string]migrate.TableRows{}
	for _, tr := range d.Tables {
		kinds[tr.Name] = tr
		if tr.Source != tr.Target || tr.SourceChunks != tr.TargetChunks {
			t.Errorf("%s: source %d rows %d chunks, target %d rows %d chunks", tr.Name, tr.Source, tr.SourceChunks, tr.Target, tr.TargetChunks)
		}
	}
	if m := kinds["public.metrics"]; m.Kind != "hypertable" || m.Source != 5760 || m.SourceChunks < 60 {
		t.Fatalf("metrics in the summary: %+v", m)
	}
	if o := kinds["sales.orders"]; o.Kind != "partitioned table" || o.Source != 400 {
		t.Fatalf("sales.orders in the summary: %+v", o)
	}
	if _, ok := kinds[`"Mixed Case"."Odd Table"`]; !ok {
		t.Fatalf("no MixedCase table in %v", kinds)
	}
	if m := kinds[mine]; m.Source != 2 {
		t.Fatalf("the user's table %s in the summary: %+v", mine, m)
	}
}

// assertShapesEqual checks that the shape list arrived equal and that the target works
// like the source.
func assertShapesEqual(t *testing.T, srv *testenv.Server, src, dst string) {
	t.Helper()
	assertShapesEqualOn(t, srv, src, srv, dst)
}

// assertShapesEqualOn is assertShapesEqual from database src of server srv to database
// dst of server dstSrv.
func assertShapesEqualOn(t *testing.T, srv *testenv.Server, src string, dstSrv *testenv.Server, dst string) {
	t.Helper()
	ctx := context.Background()
	s, g := connect(t, srv.SuperURI(src)), connect(t, dstSrv.SuperURI(dst))
	for _, q := range []string{
		"SELECT count(*) FROM timescaledb_information.chunks",
		"SELECT count(*) FROM timescaledb_information.dimensions",
		"SELECT sum(v2)::bigint FROM metrics",
		"SELECT count(*) FROM sales.device_totals",
		`SELECT sum("Some Col") FROM "Mixed Case"."Odd Table"`,
		`SELECT count(*) FROM "ünï".tëst`,
		"SELECT count(*) FROM pg_largeobject_metadata",
		"SELECT last_value FROM standalone_seq",
		"SELECT last_value FROM devices_id_seq",
	} {
		if a, b := scalar[int64](t, s, q), scalar[int64](t, g, q); a != b {
			t.Errorf("%s: source %d, target %d", q, a, b)
		}
	}
	if a, b := scalar[[]byte](t, s, "SELECT lo_get(min(oid)) FROM pg_largeobject_metadata"), scalar[[]byte](t, g, "SELECT lo_get(min(oid)) FROM pg_largeobject_metadata"); !bytes.Equal(a, b) {
		t.Errorf("large object: %q vs %q", a, b)
	}
	// The target works like the source: sequences continue without collision, the
	// trigger fires, domains and enums check, identity and generated columns fill in.
	testenv.MustExec(t, dstSrv, dst,
		"INSERT INTO devices (name, m, n) VALUES ('late', 'ok', 5)",
		"INSERT INTO sales.orders (device_id, total, created) VALUES (1, 1, '2025-02-02')",
		"INSERT INTO metrics (t, device_id, v) VALUES ('2031-01-01', 21, 1)")
	if n := scalar[string](t, g, "SELECT name FROM devices WHERE id = 21"); n != "LATE" {
		t.Errorf("trigger did not fire on the target: %q", n)
	}
	if v := scalar[float64](t, g, "SELECT v2 FROM metrics WHERE t = '2031-01-01'"); v != 2 {
		t.Errorf("generated column on the target: %v", v)
	}
	if err := dstSrv.Exec(ctx, dst, "INSERT INTO devices (name, n) VALUES ('bad', -1)"); err == nil {
		t.Error("the domain's check is gone on the target")
	}
	if n := scalar[int64](t, g, "SELECT nextval('standalone_seq')"); n != scalar[int64](t, s, "SELECT last_value FROM standalone_seq")+1 {
		t.Errorf("standalone_seq continues at %d", n)
	}
}

// The library's default engine is the command line's: Options without an Engine run
// the stream engine, which refuses the dump engine's options before touching a server.
func TestDefaultEngineIsTheCommandLines(t *testing.T) {
	sum, err := migrate.Run(context.Background(), migrate.Options{KeepDump: true,
		Source: cfg(t, "source", "postgres://u@127.0.0.1:1/a"), Target: cfg(t, "target", "postgres://u@127.0.0.1:1/b")})
	if sum.Engine != migrate.EngineStream || err == nil || err.Error() != "--keep-dump is for the dump engine (use --engine dump)" {
		t.Errorf("engine %q, error %v; want the stream engine refusing --keep-dump", sum.Engine, err)
	}
}
