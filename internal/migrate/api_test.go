package migrate_test

import (
	"context"
	"strings"
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
