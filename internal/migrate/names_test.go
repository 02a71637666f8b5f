package migrate_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// Table names that break line-based reading of pg_dump's and pg_restore's output: one
// with a newline (pg_dump -v prints the name raw, so its line is cut in two), one with
// a space, one in a schema with a space (pg_restore -l lists names unquoted), and a
// hypertable in a schema with a line break, named with one and quotes. Both
// engines migrate them whole; the stream engine still builds each table's indexes with
// its rows.
func TestMigrateNamesWithNewlinesAndSpaces(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	ctx := context.Background()
	for _, engine := range []string{migrate.EngineStream, migrate.EngineDump} {
		t.Run(engine, func(t *testing.T) {
			src := testenv.NewDB(t, srv, true)
			dst := testenv.NewDB(t, srv, false)
			testenv.MustExec(t, srv, src,
				"CREATE TABLE \"new\nline\" (id int PRIMARY KEY, v text)",
				"CREATE INDEX \"new\nline v\" ON \"new\nline\" (v)",
				"INSERT INTO \"new\nline\" SELECT g, 'a' || g FROM generate_series(1, 50) g",
				`CREATE TABLE "with space" (id int PRIMARY KEY, v text)`,
				`CREATE INDEX "with space v" ON "with space" (v)`,
				`INSERT INTO "with space" SELECT g, 'b' || g FROM generate_series(1, 60) g`,
				`CREATE SCHEMA "Mixed Case"`,
				`CREATE TABLE "Mixed Case"."t 1" (id int PRIMARY KEY)`,
				`INSERT INTO "Mixed Case"."t 1" SELECT generate_series(1, 5)`,
				"CREATE SCHEMA \"odd\nschema\"",
				"CREATE TABLE \"odd\nschema\".\"it's\n a \"\"name\"\"\" (t timestamptz NOT NULL, v int)",
				"SELECT create_hypertable('\"odd\nschema\".\"it''s\n a \"\"name\"\"\"', 't', chunk_time_interval => interval '1 day')",
				"INSERT INTO \"odd\nschema\".\"it's\n a \"\"name\"\"\" SELECT '2025-01-01'::timestamptz + g * interval '1 hour', g FROM generate_series(1, 72) g")
			unfreezeAtCleanup(t, srv, src)
			var notes []string
			sum, err := migrate.Run(ctx, migrate.Options{Engine: engine,
				Source: cfg(t, "source", srv.URI(src)), Target: cfg(t, "target", srv.URI(dst)),
				Jobs: 2, PgBin: srv.ClientBin(), FreezeGrace: time.Second,
				OnEvent: func(e migrate.Event) {
					if e.Type == migrate.EventNote || e.Type == migrate.EventWarning {
						notes = append(notes, e.Text)
					}
				},
			})
			if err != nil {
				t.Fatalf("migrate: %v\n%+v", err, sum)
			}
			d := sum.Databases[0]
			if d.Identical == nil || !*d.Identical || len(sum.Errors) != 0 {
				t.Fatalf("not identical: %+v", d)
			}
			rows := map[string]int64{}
			for _, tb := range d.Tables {
				if tb.Source == tb.Target {
					rows[tb.Name] = tb.Target
				}
			}
			for name, want := range map[string]int64{"public.\"new\nline\"": 50, `public."with space"`: 60, `"Mixed Case"."t 1"`: 5,
				"\"odd\nschema\".\"it's\n a \"\"name\"\"\"": 72} {
				if rows[name] != want {
					t.Errorf("table %q: %d rows on both sides, want %d (tables %+v)", name, rows[name], want, d.Tables)
				}
			}
			for _, n := range notes {
				if strings.Contains(n, "not with each table") {
					t.Errorf("per-table index building was switched off: %s", n)
				}
			}
			dc := connect(t, srv.URI(dst))
			if n := scalar[int64](t, dc, `SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'`); n != 4 {
				t.Errorf("%d indexes on the target's public tables, want 4", n)
			}
		})
	}
}
