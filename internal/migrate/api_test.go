package migrate_test

import (
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/schema"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
	"github.com/tsmigrate/tsmigrate/internal/verify"
)

// insertsMakeChunks inserts, as the target's owner, a row in a new time range of each
// hypertable of the shape list, and checks that each made a chunk.
func insertsMakeChunks(t *testing.T, owner *pgx.Conn) {
	t.Helper()
	for _, c := range []struct{ table, insert string }{
		{"metrics", "INSERT INTO metrics (t, device_id, v) VALUES ('2032-06-01', 1, 1)"},
		{"ticks", "INSERT INTO ticks VALUES (100000, 1)"},
	} {
		q := "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = '" + c.table + "'"
		before := scalar[int64](t, owner, q)
		if _, err := owner.Exec(context.Background(), c.insert); err != nil {
			t.Fatalf("%s as the target's owner: %v", c.insert, err)
		}
		if after := scalar[int64](t, owner, q); after != before+1 {
			t.Errorf("%s: %d chunks after the insert, %d before", c.table, after, before)
		}
	}
}

// The shape list through the stream engine, as tsdbadmin, into the bare managed-like
// target (tsdbadmin owns defaultdb and nothing more: no superuser, no right on
// TimescaleDB's catalog, pre_restore refused). Its table of the user's own in
// _timescaledb_internal cannot be created there by tsdbadmin: pre-flight blocks the
// run (exit 3) naming it, before anything changes. Moved to public on the source, the
// run goes: TimescaleDB's objects are made through its API (the restore path chosen by
// itself), every row arrives, verify finds both sides identical, the target's
// scheduler runs (it never went into restoring mode), and tsdbadmin's inserts in new
// time ranges make new chunks.
func TestStreamAPIBareOwner(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	tgt := testenv.Need(t, testenv.PG17TS, testenv.Options{Flavour: testenv.BareOwner})
	ctx := context.Background()
	src := testenv.NewDB(t, srv, true)
	testenv.MustExec(t, srv, src, shapes...)
	// Chunks made under two intervals (the first 7-day chunk cut short where the 1-day
	// ones end), and integer time with an integer_now function.
	testenv.MustExec(t, srv, src,
		`CREATE TABLE two (t timestamptz NOT NULL, v int)`,
		`SELECT create_hypertable('two', 't', chunk_time_interval => interval '1 day')`,
		`INSERT INTO two SELECT '2025-01-01'::timestamptz + g * interval '1 hour', g FROM generate_series(0, 4*24 - 1) g`,
		`SELECT set_chunk_time_interval('two', interval '7 days')`,
		`INSERT INTO two SELECT '2025-01-05'::timestamptz + g * interval '1 hour', g FROM generate_series(0, 20*24) g`,
		`CREATE FUNCTION ticks_now() RETURNS bigint LANGUAGE sql STABLE AS 'SELECT 1000::bigint'`,
		`SELECT set_integer_now_func('ticks', 'ticks_now')`)
	unfreezeAtCleanup(t, srv, src)
	opts := migrate.Options{Engine: migrate.EngineStream,
		Source: cfg(t, "source", srv.SuperURI(src)), Target: cfg(t, "target", tgt.URI(testenv.ManagedDB)),
		Jobs: 4, PgBin: srv.ClientBin(), FreezeGrace: time.Second,
	}

	_, err := migrate.Run(ctx, opts)
	if exit.Code(err) != exit.Blocked || !strings.Contains(err.Error(), "_timescaledb_internal.mine") {
		t.Fatalf("migrate of a table in _timescaledb_internal by a bare owner: %v", err)
	}
	if !writable(t, srv, src) {
		t.Fatal("the blocked run left the source frozen")
	}
	testenv.MustExec(t, srv, src, "ALTER TABLE _timescaledb_internal.mine SET SCHEMA public")

	sum, err := migrate.Run(ctx, opts)
	if err != nil {
		t.Fatalf("migrate: %v\n%+v", err, sum)
	}
	d := sum.Databases[0]
	if sum.Outcome != migrate.OutcomeMigrated || len(sum.Errors) != 0 || d.RestorePath != schema.PathAPI {
		t.Fatalf("summary %+v, database %+v", sum, d)
	}
	if d.Identical == nil || !*d.Identical {
		t.Fatalf("verify: %+v", d.Verify)
	}
	// Every chunk of every hypertable paired with the target's of the same slices.
	rep, _ := d.Verify.(*verify.Report)
	if rep == nil {
		t.Fatalf("no verify report (%T)", d.Verify)
	}
	chunks := map[string]int{}
	for _, u := range rep.Units {
		if u.Kind == "range" {
			t.Errorf("%s compared by time ranges: its chunks do not pair", u.Name())
		}
		if u.Kind == "chunk" {
			chunks[u.Table]++
		}
	}
	sc := connect(t, srv.SuperURI(src))
	for _, h := range []string{"two", "ticks", "metrics"} {
		n := scalar[int](t, sc, "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = $1", h)
		if chunks["public."+h] != n {
			t.Errorf("%d chunks of %s compared, the source has %d", chunks["public."+h], h, n)
		}
	}
	assertShapeTablesWith(t, d, "public.mine")
	assertShapesEqualOn(t, srv, src, tgt, testenv.ManagedDB)
	insertsMakeChunks(t, connect(t, tgt.URI(testenv.ManagedDB)))
	testenv.MustSchedulerRun(t, tgt, testenv.ManagedDB)
}

// The restore through TimescaleDB's API forced for a target user who is a superuser
// (--restore-path api; what a migration across TimescaleDB versions takes): the shape
// list arrives equal, verify identical, the target never in restoring mode.
func TestStreamAPIForcedForSuperuser(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	ctx := context.Background()
	src := testenv.NewDB(t, srv, true)
	testenv.MustExec(t, srv, src, shapes...)
	dst := "t_api_forced_target"
	t.Cleanup(func() { srv.Exec(ctx, "postgres", "DROP DATABASE IF EXISTS "+dst+" WITH (FORCE)") })
	unfreezeAtCleanup(t, srv, src)

	sum, err := migrate.Run(ctx, migrate.Options{Engine: migrate.EngineStream, RestorePath: schema.PathAPI,
		Source: cfg(t, "source", srv.SuperURI(src)), Target: cfg(t, "target", srv.SuperURI(dst)),
		Jobs: 2, PgBin: srv.ClientBin(), FreezeGrace: time.Second,
	})
	if err != nil {
		t.Fatalf("migrate: %v\n%+v", err, sum)
	}
	d := sum.Databases[0]
	if sum.Outcome != migrate.OutcomeMigrated || d.RestorePath != schema.PathAPI || d.Identical == nil || !*d.Identical {
		t.Fatalf("summary %+v, database %+v", sum, d)
	}
	assertShapeTables(t, d)
	assertShapesEqual(t, srv, src, dst)
	if on := scalar[string](t, connect(t, srv.SuperURI(dst)), "SELECT coalesce(current_setting('timescaledb.restoring', true), 'off')"); on != "off" {
		t.Errorf("restoring mode on the target: %s", on)
	}
}

// On the full build, as tsdbadmin into the bare managed-like target: the chunks
// compressed on the source are compressed on the target (read decompressed, compressed
// again), the continuous aggregates answer the same rows (their materialized rows
// copied, not refreshed; the real-time one's watermark as the source's), and the
// policies and the user job are made with the source's schedules, none running before
// the run's verify; verify identical; tsdbadmin's new rows make chunks; the scheduler
// runs.
func TestStreamAPIFullBuildBareOwner(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TSL)
	tgt := testenv.Need(t, testenv.PG17TSL, testenv.Options{Flavour: testenv.BareOwner})
	ctx := context.Background()
	src := testenv.NewDB(t, srv, true)
	fullSource(t, srv, src)
	testenv.MustExec(t, srv, src,
		`CREATE MATERIALIZED VIEW m_hourly WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
		 SELECT time_bucket('1 hour', t) AS hour, max(v) AS mx, sum(v) AS total FROM m GROUP BY 1 WITH DATA`,
		`SELECT add_continuous_aggregate_policy('m_hourly', start_offset => interval '30 days', end_offset => interval '1 hour',
		 schedule_interval => interval '1 hour', initial_start => now() + interval '1 day')`,
		`SELECT add_retention_policy('nopolicy', interval '5 years', initial_start => now() + interval '1 day')`,
		`CREATE INDEX m_daily_av ON m_daily (av DESC) WHERE n > 1`,
		// A row past the aggregates' last refresh: the real-time view aggregates it; raw
		// rows removed after it (as a retention policy would): the view shows their
		// materialized buckets, below its watermark, which a refresh would lose.
		`INSERT INTO m VALUES (now() + interval '1 hour', 1, 4.5)`,
		`DELETE FROM m WHERE t >= '2025-01-05' AND t < '2025-01-06'`,
	)
	unfreezeAtCleanup(t, srv, src)

	sum, err := migrate.Run(ctx, migrate.Options{Engine: migrate.EngineStream,
		Source: cfg(t, "source", srv.SuperURI(src)), Target: cfg(t, "target", tgt.URI(testenv.ManagedDB)),
		Jobs: 2, PgBin: srv.ClientBin(), FreezeGrace: time.Second,
	})
	if err != nil {
		if rep, ok := sum.Databases[0].Verify.(*verify.Report); ok {
			for _, sd := range rep.Schema {
				t.Logf("schema difference: %+v", sd)
			}
		}
		t.Fatalf("migrate: %v\n%+v", err, sum)
	}
	d := sum.Databases[0]
	if sum.Outcome != migrate.OutcomeMigrated || d.RestorePath != schema.PathAPI || d.Identical == nil || !*d.Identical {
		t.Fatalf("summary %+v, database %+v, verify %+v", sum, d, d.Verify)
	}
	for _, w := range sum.Warnings {
		if strings.Contains(w, "not compressed on the target") || strings.Contains(w, "watermark") || strings.Contains(w, "not made") {
			t.Errorf("warning: %s", w)
		}
	}
	s, g := connect(t, srv.SuperURI(src)), connect(t, tgt.URI(testenv.ManagedDB))
	for _, q := range []string{
		"SELECT count(*) FROM timescaledb_information.chunks WHERE is_compressed",
		"SELECT count(*) FROM timescaledb_information.chunks WHERE NOT is_compressed",
		"SELECT count(*) FROM timescaledb_information.jobs WHERE job_id >= 1000",
		"SELECT count(*) FROM timescaledb_information.continuous_aggregates",
		"SELECT count(*) FROM m",
		"SELECT sum(t) FROM ticks",
	} {
		if a, b := scalar[int64](t, s, q), scalar[int64](t, g, q); a != b {
			t.Errorf("%s: source %d, target %d", q, a, b)
		}
	}
	watermark := `SELECT _timescaledb_functions.cagg_watermark(ca.mat_hypertable_id) FROM _timescaledb_catalog.continuous_agg ca
		WHERE ca.user_view_name = 'm_hourly'`
	if a, b := scalar[int64](t, s, watermark), scalar[int64](t, g, watermark); a != b {
		t.Errorf("watermark of m_hourly: source %d, target %d", a, b)
	}
	if n := scalar[int64](t, g, "SELECT count(*) FROM m_hourly WHERE hour >= '2025-01-05' AND hour < '2025-01-06'"); n != 24 {
		t.Errorf("m_hourly shows %d buckets of the day whose raw rows were removed, want its 24 materialized ones", n)
	}
	for _, q := range []string{
		"SELECT string_agg(format('%s %s %s %s', day, dev, av, n), ',' ORDER BY day, dev) FROM m_daily",
		"SELECT string_agg(format('%s %s %s', hour, mx, total), ',' ORDER BY hour) FROM m_hourly",
		"SELECT string_agg(format('%s %s %s %s %s %s %s', proc_name, schedule_interval, max_runtime, max_retries, retry_period, fixed_schedule, config - 'hypertable_id' - 'mat_hypertable_id'), ',' ORDER BY proc_name, schedule_interval) FROM timescaledb_information.jobs WHERE job_id >= 1000",
	} {
		if a, b := scalar[string](t, s, q), scalar[string](t, g, q); a != b {
			t.Errorf("%s:\nsource %s\ntarget %s", q, a, b)
		}
	}
	// The source's jobs stay paused while it is frozen; the target's run as the source's
	// did before, at the same next start.
	if n := scalar[int64](t, g, "SELECT count(*) FROM timescaledb_information.jobs WHERE job_id >= 1000 AND scheduled"); n != 5 || len(d.Jobs) != 5 {
		t.Errorf("%d jobs scheduled on the target, %d in the summary, want 5", n, len(d.Jobs))
	}
	nextStarts := "SELECT string_agg(format('%s %s', proc_name, next_start), ',' ORDER BY proc_name, next_start) FROM timescaledb_information.jobs WHERE job_id >= 1000"
	if a, b := scalar[string](t, s, nextStarts), scalar[string](t, g, nextStarts); a != b {
		t.Errorf("next starts:\nsource %s\ntarget %s", a, b)
	}
	if _, err := g.Exec(ctx, "INSERT INTO m VALUES ('2031-01-01', 1, 1)"); err != nil {
		t.Fatalf("insert as tsdbadmin: %v", err)
	}
	// The user's index on a continuous aggregate, made on its materialization hypertable.
	indexDef := `SELECT regexp_replace(pg_get_indexdef(indexrelid), '_materialized_hypertable_[0-9]+', 'M') FROM pg_index
		WHERE indexrelid = '_timescaledb_internal.m_daily_av'::regclass`
	if a, b := scalar[string](t, s, indexDef), scalar[string](t, g, indexDef); a != b {
		t.Errorf("index m_daily_av: source %s, target %s", a, b)
	}
	testenv.MustSchedulerRun(t, tgt, testenv.ManagedDB)
}

// Killed in its data phase, a migration through TimescaleDB's API (as the bare owner
// of the target database) resumes on the same path: the chunks made by the first run
// are paired again (none made twice), finished units skipped, verify identical.
func TestStreamAPIKillThenResume(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src := bigSource(t, srv)
	dst, dstURI := testenv.NewOwnerDB(t, srv)
	unfreezeAtCleanup(t, srv, src)

	p := startTsmigrate(t, testenv.Binary(t), "migrate", "--yes", "--jobs", "1", "--freeze-grace", "1s", "--progress", "json", "--json",
		"--pg-bin", srv.ClientBin(), "--source", srv.URI(src), "--target", dstURI)
	p.waitFor(t, "done", 20)
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.cmd.Wait()
	g := connect(t, srv.SuperURI(dst))
	var done, total int
	sessionsGone(t, g, dst) // the killed sessions' transactions end shortly after
	done = scalar[int](t, g, "SELECT count(*) FROM _tsmigrate.units WHERE state = 'done'")
	total = scalar[int](t, g, "SELECT count(*) FROM _tsmigrate.units")
	if done == 0 || done >= total {
		t.Fatalf("killed with %d of %d units done: not in the middle of the data phase", done, total)
	}
	chunks := "SELECT count(*) FROM timescaledb_information.chunks"
	made := scalar[int](t, g, chunks)

	code, out, errOut := runCLI(t, "migrate", "--resume", "--yes", "--jobs", "2", "--progress", "plain", "--json",
		"--pg-bin", srv.ClientBin(), "--source", srv.URI(src), "--target", dstURI)
	if code != 0 {
		t.Fatalf("resume: exit %d\n%s\n%s", code, out, errOut)
	}
	var sum migrate.Summary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatal(err)
	}
	d := sum.Databases[0]
	if d.RestorePath != schema.PathAPI || d.Data == nil || d.Data.Skipped < done || d.Identical == nil || !*d.Identical {
		t.Fatalf("resumed: path %s, data %+v (killed with %d of %d done), identical %v", d.RestorePath, d.Data, done, total, d.Identical)
	}
	if n, want := scalar[int](t, g, chunks), scalar[int](t, connect(t, srv.SuperURI(src)), chunks); n != made || n != want {
		t.Errorf("%d chunks on the target after the resume, %d before it, the source has %d", n, made, want)
	}
	assertSumsEqual(t, srv, src, dst)
}

// Killed while it restores the rest of post-data after the hypertables' indexes (built
// through TimescaleDB on every chunk) are in, a migration through the API resumes:
// the entries on the target already, the hypertable's index among them, are not made
// twice (a second CREATE INDEX of the same name would fail the run); every index,
// constraint, trigger and policy of the source ends on the target, verify identical.
func TestStreamAPIKillInPostDataThenResume(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src := postDataSource(t, srv)
	dst, dstURI := testenv.NewOwnerDB(t, srv)
	unfreezeAtCleanup(t, srv, src)
	const fks = "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conrelid::regclass::text ~ '^c[0-9]$'"

	p := startTsmigrate(t, testenv.Binary(t), "migrate", "--yes", "--jobs", "1", "--freeze-grace", "1s", "--progress", "json", "--json",
		"--pg-bin", srv.ClientBin(), "--source", srv.URI(src), "--target", dstURI)
	g := connect(t, srv.SuperURI(dst))
	testenv.Eventually(t, 90*time.Second, func() error {
		if !p.saw("==> post-data") || scalar[int](t, g, fks) < 2 {
			return errors.New("no foreign key on the target in post-data")
		}
		return nil
	})
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.cmd.Wait()
	sessionsGone(t, g, dst) // the killed run's pg_restore ends after the statement it runs
	if have := scalar[int](t, g, fks); have >= 6 {
		t.Fatalf("killed with %d of the 6 foreign keys on the target: not in the middle of post-data", have)
	}
	if n := scalar[int](t, g, "SELECT count(*) FROM pg_indexes WHERE indexname = 'm_id'"); n != 1 {
		t.Fatalf("the hypertable's index m_id is not on the target when killed (%d)", n)
	}

	code, out, errOut := runCLI(t, "migrate", "--resume", "--yes", "--jobs", "2", "--progress", "plain", "--json",
		"--pg-bin", srv.ClientBin(), "--source", srv.URI(src), "--target", dstURI)
	if code != 0 {
		t.Fatalf("resume: exit %d\n%s\n%s", code, out, errOut)
	}
	var sum migrate.Summary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatal(err)
	}
	if d := sum.Databases[0]; sum.Outcome != migrate.OutcomeMigrated || d.RestorePath != schema.PathAPI || d.Identical == nil || !*d.Identical {
		t.Fatalf("resumed: %+v", sum)
	}
	// Chunks and their constraints are named by ids, which differ on the target.
	ids := regexp.MustCompile(`_hyper_\d+_\d+_chunk|\b\d+_\d+_|constraint_\d+`)
	norm := func(s string) string {
		lines := strings.Split(ids.ReplaceAllString(s, "#"), "\n")
		sort.Strings(lines)
		return strings.Join(lines, "\n")
	}
	s := connect(t, srv.SuperURI(src))
	for _, q := range []string{sqlUserObjects, "SELECT count(*)::text FROM m", "SELECT count(*)::text FROM timescaledb_information.chunks"} {
		if a, b := norm(scalar[string](t, s, q)), norm(scalar[string](t, g, q)); a != b {
			t.Errorf("%s\nsource:\n%s\ntarget:\n%s", q, a, b)
		}
	}
}

// A chunk the API path cannot make with the source's slices (empty, in a partition of
// a uuid space dimension that holds no row anywhere, and no value of the column is
// found for it) is said, in a warning naming it; the run goes on, verify compares that
// hypertable's rows by time ranges and leaves out its number of chunks: identical,
// also with --no-verify, which compares rows per hypertable from the journal.
func TestStreamAPIChunkNotMade(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	ctx := context.Background()
	for _, noVerify := range []bool{false, true} {
		src := testenv.NewDB(t, srv, true)
		testenv.MustExec(t, srv, src,
			`CREATE TABLE u (t timestamptz NOT NULL, id uuid NOT NULL, v int)`,
			`SELECT create_hypertable('u', 't', chunk_time_interval => interval '1 day')`,
			`SELECT add_dimension('u', 'id', number_partitions => 2)`,
			`INSERT INTO u SELECT '2025-01-01'::timestamptz + g * interval '1 hour', md5(g::text)::uuid, g FROM generate_series(0, 71) g`,
			`DELETE FROM u WHERE _timescaledb_functions.get_partition_hash(id) >= 1073741823`)
		_, dstURI := testenv.NewOwnerDB(t, srv)
		unfreezeAtCleanup(t, srv, src)
		sum, err := migrate.Run(ctx, migrate.Options{Engine: migrate.EngineStream, NoVerify: noVerify,
			Source: cfg(t, "source", srv.SuperURI(src)), Target: cfg(t, "target", dstURI),
			Jobs: 2, PgBin: srv.ClientBin(), FreezeGrace: time.Second,
		})
		if err != nil {
			t.Fatalf("migrate (no verify %v): %v\n%+v", noVerify, err, sum)
		}
		warned := 0
		for _, w := range sum.Warnings {
			if strings.Contains(w, "was not made on the target") && strings.Contains(w, "public.u") {
				warned++
			}
		}
		if warned != 3 {
			t.Errorf("%d warnings of chunks not made, want 3: %v", warned, sum.Warnings)
		}
		d := sum.Databases[0]
		if noVerify {
			continue
		}
		rep, _ := d.Verify.(*verify.Report)
		if d.Identical == nil || !*d.Identical || rep == nil {
			t.Fatalf("verify: %+v", d.Verify)
		}
		ranges := 0
		for _, u := range rep.Units {
			if u.Kind == "range" && u.Table == "public.u" {
				ranges++
			}
		}
		if ranges == 0 {
			t.Errorf("public.u is not compared by time ranges: %+v", rep.Units)
		}
	}
}
