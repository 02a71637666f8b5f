package migrate_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// missingSource makes a source on the full build whose hypertable m had columns added
// with defaults after two of its three chunks were compressed: those chunks' rows read
// the defaults from the chunk's catalog (pg_attribute.attmissingval), not from their
// compressed data. The values are of kinds whose text is easy to get wrong (quotes, a
// backslash, braces, an array, a time zone, float and numeric digits); a's default was
// changed since, and a row inserted into a compressed chunk afterwards makes it partial.
func missingSource(t *testing.T, srv *testenv.Server, db string) {
	t.Helper()
	testenv.MustExec(t, srv, db,
		"CREATE TABLE m (t timestamptz NOT NULL, dev int NOT NULL, v int)",
		"SELECT create_hypertable('m', by_range('t', interval '1 day'))",
		"INSERT INTO m SELECT '2025-01-01'::timestamptz + g * interval '10 minutes', g % 3, g FROM generate_series(0, 3*144 - 1) g",
		"ALTER TABLE m SET (timescaledb.compress, timescaledb.compress_segmentby = 'dev')",
		"SELECT compress_chunk(c) FROM show_chunks('m') c ORDER BY c LIMIT 2",
		"ALTER TABLE m ADD COLUMN a int DEFAULT 7",
		`ALTER TABLE m ADD COLUMN note text DEFAULT E'it''s a \\ "quoted" {x}, y'`,
		"ALTER TABLE m ADD COLUMN at timestamptz DEFAULT '2025-03-01 12:34:56.789+05:30'",
		"ALTER TABLE m ADD COLUMN arr int[] DEFAULT '{1,2}'",
		"ALTER TABLE m ADD COLUMN f float8 DEFAULT 0.1",
		"ALTER TABLE m ADD COLUMN n numeric DEFAULT 1.50",
		"ALTER TABLE m ALTER COLUMN a SET DEFAULT 8",
		"INSERT INTO m (t, dev, v) VALUES ('2025-01-01 00:05', 1, -1)",
	)
}

// missingPair is a source made by missingSource on the full build's shared server, to
// be unfrozen at the end of the test, and an empty target beside it.
func missingPair(t *testing.T) (srv *testenv.Server, src, dst string) {
	t.Helper()
	srv = testenv.Shared(t, testenv.PG17TSL)
	src = testenv.NewDB(t, srv, true)
	dst = testenv.NewDB(t, srv, false)
	missingSource(t, srv, src)
	unfreezeAtCleanup(t, srv, src)
	return srv, src, dst
}

// A column added with a DEFAULT after chunks were compressed arrives with its value in
// those chunks, with either engine, with and without the run's verify (issue 10, item
// 1): the target's rows read as the source's, value for value.
func TestAddedColumnDefaultsInCompressedChunksFullBuild(t *testing.T) {
	for _, engine := range []string{migrate.EngineStream, migrate.EngineDump} {
		for _, noVerify := range []bool{false, true} {
			name := engine
			if noVerify {
				name += "-no-verify"
			}
			t.Run(name, func(t *testing.T) {
				srv, src, dst := missingPair(t)
				sum, err := migrate.Run(context.Background(), migrate.Options{
					Source: cfg(t, "source", srv.URI(src)), Target: cfg(t, "target", srv.URI(dst)),
					Engine: engine, Jobs: 2, PgBin: srv.ClientBin(), FreezeGrace: time.Second, NoVerify: noVerify})
				if err != nil {
					b, _ := json.MarshalIndent(sum, "", "  ")
					t.Fatalf("migrate: %v\n%s", err, b)
				}
				rows := `SELECT string_agg(format('%s %s %s %s %s %s %s %s %s', t, dev, v, a, note, at, arr, f, n), E'\n' ORDER BY t, dev, v) FROM public.m`
				s, g := connect(t, srv.SuperURI(src)), connect(t, srv.SuperURI(dst))
				for _, c := range []*pgx.Conn{s, g} {
					if _, err := c.Exec(context.Background(), "SET TimeZone = 'UTC'; SET extra_float_digits = 3"); err != nil {
						t.Fatal(err)
					}
				}
				want, got := scalar[string](t, s, rows), scalar[string](t, g, rows)
				if got != want {
					t.Fatalf("the target's rows of m differ from the source's:\n%s", firstDiff(want, got))
				}
				if n := scalar[int64](t, g, "SELECT count(*) FROM public.m WHERE a IS NULL OR note IS NULL OR arr IS NULL"); n != 0 {
					t.Fatalf("%d rows of m on the target lack a column's value", n)
				}
			})
		}
	}
}

// firstDiff shows the first line where got differs from want.
func firstDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := range max(len(w), len(g)) {
		var a, b string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			b = g[i]
		}
		if a != b {
			return "source: " + a + "\ntarget: " + b
		}
	}
	return ""
}
