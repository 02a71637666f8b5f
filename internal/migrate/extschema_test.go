package migrate_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
	"github.com/tsmigrate/tsmigrate/internal/verify"
)

// TimescaleDB installed in another schema than public on the source (one that needs
// quoting too) is migrated by either engine into that schema on the target, into a
// target database that exists or one that tsmigrate creates: verify finds the two
// identical, the hypertable's rows and chunks are all there, the schema keeps its
// comment and privileges, and the target left restoring mode (post_restore ran there).
func TestTimescaleDBInOtherSchema(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	for _, tc := range []struct {
		engine, schema string
		newTarget      bool
	}{
		{migrate.EngineStream, "ext", false},
		{migrate.EngineDump, "ext", false},
		// the stream engine's restore into a schema that needs quoting: see
		// schema.TestRestoreSectionIntoExtensionSchema
		{migrate.EngineDump, "Ext Schema", true},
	} {
		t.Run(tc.engine+"/"+tc.schema, func(t *testing.T) {
			ctx := context.Background()
			src, dst := testenv.NewDB(t, srv, false), testenv.NewDB(t, srv, false)
			if tc.newTarget {
				testenv.MustExec(t, srv, "postgres", "DROP DATABASE "+dst)
			}
			ext := pgx.Identifier{tc.schema}.Sanitize()
			testenv.MustExec(t, srv, src, "CREATE SCHEMA "+ext,
				"COMMENT ON SCHEMA "+ext+" IS 'TimescaleDB lives here'", "GRANT USAGE ON SCHEMA "+ext+" TO PUBLIC",
				"CREATE EXTENSION timescaledb SCHEMA "+ext,
				"CREATE TABLE m (t timestamptz NOT NULL, dev int, v float8)",
				"SELECT "+ext+".create_hypertable('m', 't', chunk_time_interval => interval '1 day')",
				"INSERT INTO m SELECT '2025-01-01'::timestamptz + g * interval '30 minutes', g % 5, g FROM generate_series(1, 2000) g")
			unfreezeAtCleanup(t, srv, src)

			sum, err := migrate.Run(ctx, migrate.Options{Engine: tc.engine,
				Source: cfg(t, "source", srv.URI(src)), Target: cfg(t, "target", srv.URI(dst)),
				Jobs: 2, PgBin: srv.ClientBin(), FreezeGrace: time.Second})
			if err != nil {
				t.Fatalf("migrate: %v; schema differences: %s", err, schemaDiffs(sum))
			}
			d := sum.Databases[0]
			if d.CreatedTarget != tc.newTarget {
				t.Errorf("created the target database: %v", d.CreatedTarget)
			}
			if d.Identical == nil || !*d.Identical {
				t.Fatalf("verify: identical %v; schema differences: %s", d.Identical, schemaDiffs(sum))
			}
			s, g := connect(t, srv.SuperURI(src)), connect(t, srv.SuperURI(dst))
			const extSchema = `SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'timescaledb'`
			if got := scalar[string](t, g, extSchema); got != tc.schema {
				t.Errorf("the target's TimescaleDB is in schema %s, want %s", got, tc.schema)
			}
			for _, q := range []string{"SELECT count(*) FROM m",
				"SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'm'"} {
				if a, b := scalar[int64](t, s, q), scalar[int64](t, g, q); a != b || a < 2 {
					t.Errorf("%s: source %d, target %d", q, a, b)
				}
			}
			const schemaFacts = `SELECT obj_description(oid, 'pg_namespace') || ', usage for PUBLIC: ' || has_schema_privilege('public', oid, 'USAGE')
				FROM pg_namespace WHERE nspname = $1`
			if got := scalar[string](t, g, schemaFacts, tc.schema); got != "TimescaleDB lives here, usage for PUBLIC: true" {
				t.Errorf("the target's schema %s: %s", tc.schema, got)
			}
			if got := scalar[string](t, g, "SELECT current_setting('timescaledb.restoring')"); got != "off" {
				t.Errorf("a new session on the target has timescaledb.restoring = %s", got)
			}
			// TimescaleDB is live on the target: a row out of every chunk's range makes one.
			chunks := scalar[int64](t, g, "SELECT count(*) FROM timescaledb_information.chunks")
			testenv.MustExec(t, srv, dst, "INSERT INTO m VALUES ('2030-01-01', 1, 1)")
			if n := scalar[int64](t, g, "SELECT count(*) FROM timescaledb_information.chunks"); n != chunks+1 {
				t.Errorf("an insert on the target made %d new chunks, want 1", n-chunks)
			}
		})
	}
}

// schemaDiffs are the schema differences verify found in the run's first database.
func schemaDiffs(sum *migrate.Summary) string {
	if sum == nil || len(sum.Databases) == 0 {
		return "(no verify report)"
	}
	rep, ok := sum.Databases[0].Verify.(*verify.Report)
	if !ok {
		return "(no verify report)"
	}
	b, _ := json.Marshal(rep.Schema)
	return string(b)
}
