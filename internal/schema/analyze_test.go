package schema

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// ANALYZE of a table of _timescaledb_cache, the first one at least, changes its
// statistics in pg_class, and every session of the database then takes it for the
// extension being dropped or created: TimescaleDB 2.19.3 decides again whether it is
// loaded, and a session that asks meanwhile fails, "tried calling catalog_get when
// extension isn't loaded" (a user's query on a hypertable, an ANALYZE of one by
// another job, a pg_restore statement). Analyze leaves those tables out: they are
// empty, and there only to signal. Here a session queries a hypertable while Analyze
// runs, and the cache tables' statistics stay as CREATE EXTENSION left them.
func TestAnalyzeLeavesTimescaleCacheTablesAlone(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	db := testenv.NewDB(t, srv, true)
	testenv.MustExec(t, srv, db, `CREATE TABLE m (t timestamptz NOT NULL, v int)`,
		`SELECT create_hypertable('m', 't', chunk_time_interval => interval '1 hour')`,
		`INSERT INTO m SELECT '2025-01-01'::timestamptz + g * interval '1 minute', g FROM generate_series(0, 3000) g`)
	const stale = `SELECT count(*) FROM pg_class WHERE relnamespace = '_timescaledb_cache'::regnamespace AND reltuples = -1`
	tables := count(t, srv, db, stale)
	if tables == 0 {
		t.Fatal("no table of _timescaledb_cache without statistics")
	}

	ctx, cancel := context.WithCancel(context.Background())
	user := testenv.Connect(t, srv.SuperURI(db))
	queried := make(chan error, 1)
	go func() {
		for {
			if _, err := user.Exec(ctx, "SELECT count(*) FROM m"); err != nil {
				if ctx.Err() != nil {
					err = nil
				}
				queried <- err
				return
			}
		}
	}()
	err := Analyze(ctx, cfg(t, "target", srv.URI(db)), 2, nil)
	cancel()
	err = errors.Join(err, <-queried)
	if err != nil {
		t.Error(err)
	}
	if n := count(t, srv, db, stale); n != tables {
		t.Errorf("%d of the %d tables of _timescaledb_cache were analyzed", tables-n, tables)
	}
}

// Analyze with a choice analyzes the tables chosen, and no other; a few small tables
// go to every job rather than all in one statement of one job (the tables left to
// analyze after a stream copy: TimescaleDB's catalog, the journal).
func TestAnalyzeOnlyTheTablesPickedOnEveryJob(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	db := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, db, `CREATE TABLE a (v int)`, `CREATE TABLE b (v int)`, `CREATE TABLE "c d" (v int)`,
		`INSERT INTO a SELECT generate_series(1, 1000)`, `INSERT INTO b SELECT generate_series(1, 1000)`,
		`INSERT INTO "c d" SELECT generate_series(1, 10)`)
	pick := func(tb TableName) bool { return tb.Schema == "public" && tb.Name != "b" }
	conn := testenv.Connect(t, srv.SuperURI(db))
	groups, err := analyzeGroups(context.Background(), conn, 2, pick)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{`"public"."a"`, `"public"."c d"`}; !slices.Equal(groups, want) {
		t.Errorf("statements of 2 jobs: %q, want %q", groups, want)
	}
	if err := Analyze(context.Background(), cfg(t, "target", srv.URI(db)), 2, pick); err != nil {
		t.Fatal(err)
	}
	const analyzed = `SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace AND reltuples >= 0`
	if n := count(t, srv, db, analyzed); n != 2 {
		t.Errorf("%d tables analyzed, want 2 (a and \"c d\")", n)
	}
	if n := count(t, srv, db, `SELECT reltuples::bigint FROM pg_class WHERE oid = 'b'::regclass`); n != -1 {
		t.Errorf("b was analyzed (reltuples %d)", n)
	}
}
