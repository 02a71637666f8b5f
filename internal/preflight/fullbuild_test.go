package preflight_test

import (
	"strings"
	"testing"

	"github.com/tsmigrate/tsmigrate/internal/preflight"
	"github.com/tsmigrate/tsmigrate/internal/schema"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// Needs TimescaleDB's full build (testenv.PG17TSL) for a source that uses compression,
// a continuous aggregate and a job; it skips, saying so, without TSMIGRATE_PG17_TSL_ROOT.
//
// timescaledb-edition fails against an Apache-only target, naming each feature the
// source uses, and passes against a full-build target; a full-build source that uses
// none of them passes against either.
func TestEditionOfTarget(t *testing.T) {
	full := testenv.Shared(t, testenv.PG17TSL)
	apache := testenv.Shared(t, testenv.PG17TS)
	src := testenv.NewDB(t, full, true)
	plain := testenv.NewDB(t, full, true)
	testenv.MustExec(t, full, src,
		`CREATE TABLE m (t timestamptz NOT NULL, v int)`, `SELECT create_hypertable('m', 't')`,
		`INSERT INTO m SELECT '2025-01-01'::timestamptz + g * interval '1 hour', g FROM generate_series(1, 300) g`,
		`ALTER TABLE m SET (timescaledb.compress)`,
		`CREATE MATERIALIZED VIEW m_daily WITH (timescaledb.continuous) AS SELECT time_bucket('1 day', t) AS d, sum(v) FROM m GROUP BY 1`,
		`CREATE PROCEDURE tick(job_id int, config jsonb) LANGUAGE plpgsql AS $$ BEGIN END $$`,
		`SELECT add_job('tick', '1 hour', initial_start => now() + interval '1 day')`)
	testenv.MustExec(t, full, plain,
		`CREATE TABLE m (t timestamptz NOT NULL, v int)`, `SELECT create_hypertable('m', 't')`)

	r := runPreflight(t, full.URI(src), apache.URI(testenv.NewDB(t, apache, false)))
	expect(t, r, "timescaledb-edition", preflight.Fail, "compression on 1 hypertable", "1 continuous aggregate", "1 job", "Apache")
	if !r.Failed() {
		t.Error("an Apache target for a source using compression does not block")
	}
	r = runPreflight(t, full.URI(src), full.URI(testenv.NewDB(t, full, false)))
	expect(t, r, "timescaledb-edition", preflight.Pass, "full")
	r = runPreflight(t, full.URI(plain), apache.URI(testenv.NewDB(t, apache, false)))
	expect(t, r, "timescaledb-edition", preflight.Pass, "either")

	// The same across versions: the newer Apache-only TimescaleDB of PostgreSQL 18 (the
	// test servers have no full build of it) is refused for that source, and the
	// restore through the API is not tried with what it cannot do.
	newer := testenv.Shared(t, testenv.PG18TS)
	r = runPreflight(t, full.URI(src), newer.URI(testenv.NewDB(t, newer, false)))
	expect(t, r, "timescaledb-version", preflight.Pass, "upgrade from TimescaleDB")
	expect(t, r, "timescaledb-edition", preflight.Fail, "compression on 1 hypertable", "1 continuous aggregate", "1 job", "Apache")
}

// compressed-defaults: a source whose compressed chunks read the default of a column
// added after they were compressed from the chunk's catalog blocks a migration that
// restores TimescaleDB's catalog into a target whose user is not a superuser (who may
// not set it there: the rows would read NULL), saying what to do; it passes for a
// superuser, for the catalog-less path (which copies those rows decompressed), and
// for a source without such chunks.
func TestCompressedDefaults(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TSL)
	src, plain := testenv.NewDB(t, srv, true), testenv.NewDB(t, srv, true)
	for _, db := range []string{src, plain} {
		testenv.MustExec(t, srv, db,
			`CREATE TABLE m (t timestamptz NOT NULL, v int)`, `SELECT create_hypertable('m', 't', chunk_time_interval => interval '1 day')`,
			`INSERT INTO m SELECT '2025-01-01'::timestamptz + g * interval '1 hour', g FROM generate_series(1, 100) g`,
			`ALTER TABLE m SET (timescaledb.compress)`,
			`SELECT compress_chunk(c) FROM show_chunks('m') c ORDER BY c LIMIT 2`)
	}
	testenv.MustExec(t, srv, src, `ALTER TABLE m ADD COLUMN a int DEFAULT 7`)
	testenv.MustExec(t, srv, plain, `ALTER TABLE m ADD COLUMN a int`)
	owner := role(t, srv, "")
	tgt := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, "postgres", "ALTER DATABASE "+tgt+" OWNER TO "+owner)

	r := runPreflightPath(t, srv.SuperURI(src), userURI(srv, owner, "pw-"+owner, tgt), schema.PathCatalog)
	expect(t, r, "compressed-defaults", preflight.Fail, "2 compressed chunks of public.m", "only a superuser", owner)
	if f := find(t, r, "compressed-defaults"); !strings.Contains(f.Do, "decompress_chunk") {
		t.Errorf("compressed-defaults does not say what to do: %s", f.Do)
	}
	r = runPreflight(t, srv.SuperURI(src), userURI(srv, owner, "pw-"+owner, tgt))
	expect(t, r, "compressed-defaults", preflight.Pass, "2 compressed chunks of public.m", "catalog-less path copies those rows decompressed")
	r = runPreflight(t, srv.SuperURI(src), srv.SuperURI(testenv.NewDB(t, srv, false)))
	expect(t, r, "compressed-defaults", preflight.Pass, "2 compressed chunks", "superuser")
	r = runPreflight(t, srv.SuperURI(plain), userURI(srv, owner, "pw-"+owner, tgt))
	expect(t, r, "compressed-defaults", preflight.Pass, "no compressed chunk")
}
