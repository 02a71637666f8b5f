package migrate_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
	"github.com/tsmigrate/tsmigrate/internal/verify"
)

// Tests of this file need TimescaleDB's full build (testenv.PG17TSL): compression,
// continuous aggregates and user jobs do not exist in the Apache build. They skip,
// saying so, when TSMIGRATE_PG17_TSL_ROOT is not set.

// fullSource makes a source database on the full build with: hypertable m (1-day
// chunks, 12 old days and one recent chunk), compression segmented by dev with a
// policy compressing after 7 days (not started during the test), one old chunk already
// compressed by hand; integer-time hypertable ticks (10 chunks of 1000, now is 10000)
// with a policy compressing after 5000; hypertable nopolicy with compression enabled and no policy; a
// continuous aggregate over m; and a user job. It returns the job's id.
func fullSource(t *testing.T, srv *testenv.Server, db string) int {
	t.Helper()
	testenv.MustExec(t, srv, db,
		"CREATE TABLE m (t timestamptz NOT NULL, dev int NOT NULL, v double precision)",
		"SELECT create_hypertable('m', 't', chunk_time_interval => interval '1 day')",
		`INSERT INTO m SELECT '2025-01-01'::timestamptz + g * interval '1 minute', g % 5, g * 0.5 FROM generate_series(0, 12*24*60 - 1) g`,
		`INSERT INTO m SELECT now() - g * interval '1 second', g % 5, g FROM generate_series(1, 100) g`,
		"ALTER TABLE m SET (timescaledb.compress, timescaledb.compress_segmentby = 'dev')",
		"SELECT add_compression_policy('m', interval '7 days', initial_start => now() + interval '1 day')",
		"SELECT compress_chunk(c) FROM show_chunks('m') c ORDER BY c LIMIT 1",
		"CREATE TABLE nopolicy (t timestamptz NOT NULL, v int)",
		"SELECT create_hypertable('nopolicy', 't')",
		"INSERT INTO nopolicy SELECT '2025-01-01'::timestamptz + g * interval '1 hour', g FROM generate_series(1, 300) g",
		"ALTER TABLE nopolicy SET (timescaledb.compress)",
		`CREATE MATERIALIZED VIEW m_daily WITH (timescaledb.continuous) AS
		 SELECT time_bucket('1 day', t) AS day, dev, avg(v) AS av, count(*) AS n FROM m GROUP BY 1, 2 WITH DATA`,
		"CREATE TABLE ticks (t bigint NOT NULL, v int)",
		"SELECT create_hypertable('ticks', by_range('t', 1000))",
		"CREATE FUNCTION ticks_now() RETURNS bigint LANGUAGE sql STABLE AS 'SELECT 10000::bigint'",
		"SELECT set_integer_now_func('ticks', 'ticks_now')",
		"INSERT INTO ticks SELECT g, g FROM generate_series(0, 9999) g",
		"ALTER TABLE ticks SET (timescaledb.compress)",
		"SELECT add_compression_policy('ticks', compress_after => 5000, initial_start => now() + interval '1 day')",
		`CREATE PROCEDURE tick(job_id int, config jsonb) LANGUAGE plpgsql AS $$ BEGIN PERFORM 1; END $$`,
	)
	return scalar[int](t, connect(t, srv.SuperURI(db)), "SELECT add_job('tick', '1 hour', initial_start => now() + interval '1 day')")
}

// --compress-before on the full build compresses m's old uncompressed chunks (11: 12
// old days, one compressed by hand, the recent chunk too young) and ticks' chunks
// before 5000 (5), skips nopolicy, reports
// the bytes saved; the dump engine carries the compressed chunks, the continuous
// aggregate and the job to the target, the freeze pauses the jobs during the dump, the
// target's are scheduled again once verified, the source's by unfreeze, and verify
// finds both sides identical.
//
// The stream engine does the same, and copies the compressed chunks as they are.
func TestCompressBeforeFullBuild(t *testing.T) {
	for _, engine := range []string{migrate.EngineDump, migrate.EngineStream} {
		t.Run(engine, func(t *testing.T) { compressBeforeFullBuild(t, engine) })
	}
}

func compressBeforeFullBuild(t *testing.T, engine string) {
	srv := testenv.Shared(t, testenv.PG17TSL)
	ctx := context.Background()
	src := testenv.NewDB(t, srv, true)
	dst := testenv.NewDB(t, srv, false)
	job := fullSource(t, srv, src)
	// A search_path without TimescaleDB's schema, which the target gets too: tsmigrate
	// finds TimescaleDB's functions all the same.
	testenv.MustExec(t, srv, "postgres", "ALTER DATABASE "+src+" SET search_path = pg_catalog")
	unfreezeAtCleanup(t, srv, src)

	jobScheduled := `SELECT scheduled FROM timescaledb_information.jobs WHERE job_id = $1`
	var pausedDuringDump *bool
	var notes strings.Builder
	sum, err := migrate.Run(ctx, migrate.Options{
		Source: cfg(t, "source", srv.URI(src)), Target: cfg(t, "target", srv.URI(dst)),
		Engine: engine, Jobs: 2, PgBin: srv.ClientBin(), CompressBefore: true, FreezeGrace: time.Second,
		OnEvent: func(e migrate.Event) {
			notes.WriteString(e.Text + "\n")
			if e.Type == migrate.EventPhase && (e.Phase == migrate.PhaseDump || e.Phase == migrate.PhaseCopy) {
				// A new session: the freeze ended those from before it.
				v := !scalar[bool](t, connect(t, srv.SuperURI(src)), jobScheduled, job)
				pausedDuringDump = &v
			}
		},
	})
	if err != nil {
		b, _ := json.MarshalIndent(sum, "", "  ")
		t.Fatalf("migrate: %v\n%s", err, b)
	}
	d := sum.Databases[0]
	c := d.Compression
	if c == nil || c.Chunks != 16 || c.Hypertables != 2 || c.BytesBefore <= c.BytesAfter || c.BytesAfter <= 0 ||
		len(c.Skipped) != 1 || !strings.Contains(c.Skipped[0], "nopolicy") {
		t.Fatalf("compression %+v", c)
	}
	if !strings.Contains(sum.CompressBefore, "compressed 16 chunks of 2 hypertables") {
		t.Fatalf("compress_before %q", sum.CompressBefore)
	}
	for _, w := range sum.Warnings {
		if strings.Contains(w, "not compressed on the target") {
			t.Fatalf("warning: %s", w)
		}
	}
	if d.CompressedChunks != 17 || d.Identical == nil || !*d.Identical {
		t.Fatalf("compressed chunks %d, identical %v", d.CompressedChunks, d.Identical)
	}
	var materialized int64 // rows of the continuous aggregate that verify compared
	rep, _ := d.Verify.(*verify.Report)
	if rep == nil {
		t.Fatalf("no verify report (%T)", d.Verify)
	}
	for _, u := range rep.Units {
		if u.Aggregate && u.Table == "public.m_daily" {
			materialized += u.Target.Rows
		}
	}
	if materialized == 0 {
		t.Fatal("verify compared no materialized row of the continuous aggregate m_daily")
	}
	if pausedDuringDump == nil || !*pausedDuringDump {
		t.Fatalf("job %d was not paused during the dump or copy (%v)", job, pausedDuringDump)
	}
	if !strings.Contains(notes.String(), "paused 3 scheduled TimescaleDB jobs") || len(d.PausedJobs) != 3 {
		t.Fatalf("paused jobs %v, notes:\n%s", d.PausedJobs, notes.String())
	}

	s, g := connect(t, srv.SuperURI(src)), connect(t, srv.SuperURI(dst))
	for _, q := range []string{
		"SELECT count(*) FROM timescaledb_information.chunks WHERE is_compressed",
		"SELECT count(*) FROM timescaledb_information.chunks WHERE NOT is_compressed",
		"SELECT count(*) FROM public.m",
		"SELECT sum(v)::bigint FROM public.m WHERE t < '2025-02-01'",
		"SELECT sum(n)::bigint FROM public.m_daily",
		"SELECT sum(v) FROM public.ticks",
		"SELECT count(*) FROM timescaledb_information.jobs WHERE proc_name = 'tick'",
	} {
		if a, b := scalar[int64](t, s, q), scalar[int64](t, g, q); a != b {
			t.Errorf("%s: source %d, target %d", q, a, b)
		}
	}
	if scalar[bool](t, s, jobScheduled, job) || !scalar[bool](t, g, jobScheduled, job) {
		t.Errorf("job %d: scheduled on the frozen source %v (want false), on the target %v (want true)",
			job, scalar[bool](t, s, jobScheduled, job), scalar[bool](t, g, jobScheduled, job))
	}
	if code, out, errOut := runCLI(t, "unfreeze", "--source", srv.URI(src)); code != 0 {
		t.Fatalf("unfreeze: exit %d\n%s\n%s", code, out, errOut)
	}
	s = connect(t, srv.SuperURI(src))
	q := "SELECT count(*) FROM timescaledb_information.jobs WHERE scheduled"
	if a, b := scalar[int64](t, s, q), scalar[int64](t, g, q); a != b || !scalar[bool](t, s, jobScheduled, job) {
		t.Errorf("after unfreeze: %s: source %d, target %d; job %d scheduled on the source %v", q, a, b, job, scalar[bool](t, s, jobScheduled, job))
	}
	// The target works: new rows land in the compressed hypertable and the aggregate
	// refreshes.
	testenv.MustExec(t, srv, dst, "INSERT INTO public.m VALUES ('2025-01-02 00:00:30', 9, 1)",
		"CALL public.refresh_continuous_aggregate('public.m_daily', '2025-01-01', '2025-01-03')")
	if n := scalar[int64](t, g, "SELECT n FROM public.m_daily WHERE dev = 9"); n != 1 {
		t.Errorf("the continuous aggregate on the target counts %d rows of dev 9", n)
	}
}

// --compress-older-than replaces the policy's compress_after: with 1 hour, the recent
// chunk stays (its newest row is younger) and nopolicy's old chunks are compressed too;
// integer-time ticks keeps its policy's compress_after (5 chunks).
func TestCompressOlderThanFullBuild(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TSL)
	src := testenv.NewDB(t, srv, true)
	dst := testenv.NewDB(t, srv, false)
	fullSource(t, srv, src)
	unfreezeAtCleanup(t, srv, src)
	want := scalar[int](t, connect(t, srv.SuperURI(src)), `SELECT count(*) FROM timescaledb_information.chunks
		WHERE hypertable_name IN ('m', 'nopolicy') AND NOT is_compressed AND range_end < now() - interval '1 hour'`)

	code, out, errOut := runCLI(t, "migrate", "--yes", "--jobs", "2", "--pg-bin", srv.ClientBin(), "--no-verify",
		"--compress-before", "--compress-older-than", "1h", "--source", srv.URI(src), "--target", srv.URI(dst), "--json")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	var sum migrate.Summary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatal(err)
	}
	c := sum.Databases[0].Compression
	s := connect(t, srv.SuperURI(src)) // after the run: the freeze ended older sessions
	if c == nil || c.Chunks != want+5 || c.Hypertables != 3 || len(c.Skipped) != 0 {
		t.Fatalf("compression %+v, want %d chunks of 3 hypertables", c, want+5)
	}
	if n := scalar[int](t, s, "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'm' AND NOT is_compressed"); n != 1 {
		t.Fatalf("%d chunks left uncompressed on the source, want the recent one", n)
	}
	if n := scalar[int](t, connect(t, srv.SuperURI(dst)), "SELECT count(*) FROM timescaledb_information.chunks WHERE is_compressed"); n != sum.Databases[0].CompressedChunks || n != want+1+5 {
		t.Fatalf("%d compressed chunks on the target, summary %d, want %d", n, sum.Databases[0].CompressedChunks, want+1+5)
	}
}

// A full-build source that uses compression, a continuous aggregate and a job cannot go
// to an Apache-only target: pre-flight blocks (exit 3) naming what the source uses, and
// nothing is compressed or frozen.
func TestEditionBlocksApacheTarget(t *testing.T) {
	full := testenv.Shared(t, testenv.PG17TSL)
	apache := testenv.Shared(t, testenv.PG17TS)
	src := testenv.NewDB(t, full, true)
	dst := testenv.NewDB(t, apache, false)
	fullSource(t, full, src)
	s := connect(t, full.SuperURI(src))
	before := scalar[int](t, s, "SELECT count(*) FROM timescaledb_information.chunks WHERE is_compressed")

	code, out, errOut := runCLI(t, "migrate", "--yes", "--pg-bin", apache.ClientBin(), "--compress-before",
		"--source", full.URI(src), "--target", apache.URI(dst))
	if code != exit.Blocked {
		t.Fatalf("exit %d, want %d\n%s\n%s", code, exit.Blocked, out, errOut)
	}
	all := out + errOut
	for _, w := range []string{"timescaledb-edition", "compression", "continuous aggregates", "Apache"} {
		if !strings.Contains(all, w) {
			t.Errorf("the output does not name %q:\n%s", w, all)
		}
	}
	if after := scalar[int](t, s, "SELECT count(*) FROM timescaledb_information.chunks WHERE is_compressed"); after != before {
		t.Errorf("a blocked run compressed chunks: %d before, %d after", before, after)
	}
	if !writable(t, full, src) {
		t.Error("a blocked run left the source frozen")
	}
}

// --compress-before on integer-time hypertables compresses what their compression
// policy would: the chunks wholly before integer_now() - compress_after, not before
// compress_after taken as a time. Hypertables ticks8 (bigint) and ticks4 (integer),
// 20 chunks of 1000 each, integer_now 20000, policies compressing after 5000: 15
// chunks each, the 5 newest left alone.
func TestCompressBeforeIntegerNowFullBuild(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TSL)
	src := testenv.NewDB(t, srv, true)
	dst := testenv.NewDB(t, srv, false)
	for _, h := range []struct{ name, typ string }{{"ticks8", "bigint"}, {"ticks4", "integer"}} {
		testenv.MustExec(t, srv, src,
			"CREATE TABLE "+h.name+" (t "+h.typ+" NOT NULL, v int)",
			"SELECT create_hypertable('"+h.name+"', by_range('t', 1000))",
			"CREATE FUNCTION "+h.name+"_now() RETURNS "+h.typ+" LANGUAGE sql STABLE AS 'SELECT 20000'",
			"SELECT set_integer_now_func('"+h.name+"', '"+h.name+"_now')",
			"INSERT INTO "+h.name+" SELECT g, g FROM generate_series(0, 19999) g",
			"ALTER TABLE "+h.name+" SET (timescaledb.compress)",
			"SELECT add_compression_policy('"+h.name+"', compress_after => 5000, initial_start => now() + interval '1 day')")
	}
	unfreezeAtCleanup(t, srv, src)

	sum, err := migrate.Run(context.Background(), migrate.Options{
		Source: cfg(t, "source", srv.URI(src)), Target: cfg(t, "target", srv.URI(dst)),
		Engine: migrate.EngineStream, Jobs: 2, PgBin: srv.ClientBin(), CompressBefore: true, FreezeGrace: time.Second})
	if err != nil {
		b, _ := json.MarshalIndent(sum, "", "  ")
		t.Fatalf("migrate: %v\n%s", err, b)
	}
	if c := sum.Databases[0].Compression; c == nil || c.Chunks != 30 || c.Hypertables != 2 {
		t.Errorf("compression %+v, want 30 chunks of 2 hypertables", c)
	}
	s := connect(t, srv.SuperURI(src))
	for _, h := range []string{"ticks8", "ticks4"} {
		if got := scalar[string](t, s, `SELECT string_agg(range_start_integer || '-' || range_end_integer, ' ' ORDER BY range_start_integer)
			FROM timescaledb_information.chunks WHERE hypertable_name = $1 AND NOT is_compressed`, h); got != "15000-16000 16000-17000 17000-18000 18000-19000 19000-20000" {
			t.Errorf("%s: chunks left uncompressed on the source: %s", h, got)
		}
	}
}
