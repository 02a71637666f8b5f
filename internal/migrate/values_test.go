package migrate_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/schema"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
	"github.com/tsmigrate/tsmigrate/internal/verify"
)

// Values whose meaning depends on the session or on other tables, migrated by each
// engine: what a user reads on the target must be what the source holds.

// way is an engine and, for the stream engine, a restore path ("": the default).
type way struct {
	engine string
	path   schema.RestorePath
}

func (w way) String() string {
	if w.path == "" {
		return w.engine
	}
	return w.engine + "-" + string(w.path)
}

var bothEngines = []way{{engine: migrate.EngineStream}, {engine: migrate.EngineDump}}

// migrateBoth runs check once per engine, each on a fresh source made by setup and a
// fresh target database, and hands it the run's summary and error.
func migrateBoth(t *testing.T, srv *testenv.Server, withTS bool, setup func(t *testing.T, src string),
	check func(t *testing.T, engine, src, dst string, sum *migrate.Summary, err error)) {
	migrateWays(t, srv, withTS, bothEngines, setup, check)
}

// migrateWays is migrateBoth for the ways given.
func migrateWays(t *testing.T, srv *testenv.Server, withTS bool, ways []way, setup func(t *testing.T, src string),
	check func(t *testing.T, engine, src, dst string, sum *migrate.Summary, err error)) {
	for _, w := range ways {
		t.Run(w.String(), func(t *testing.T) {
			src, dst := testenv.NewDB(t, srv, withTS), testenv.NewDB(t, srv, false)
			setup(t, src)
			unfreezeAtCleanup(t, srv, src)
			sum, err := migrate.Run(context.Background(), migrate.Options{Engine: w.engine, RestorePath: w.path,
				Source: cfg(t, "source", srv.URI(src)), Target: cfg(t, "target", srv.URI(dst)),
				Jobs: 1, PgBin: srv.ClientBin(), FreezeGrace: time.Second})
			check(t, w.engine, src, dst, sum, err)
		})
	}
}

// mustMigrate fails the test unless the run migrated and verify found both sides identical.
func mustMigrate(t *testing.T, sum *migrate.Summary, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("migrate: %v; schema differences: %s", err, schemaDiffs(sum))
	}
	if d := sum.Databases[0]; d.Identical == nil || !*d.Identical {
		t.Fatalf("verify: identical %v; schema differences: %s", d.Identical, schemaDiffs(sum))
	}
}

// sqlState is the SQLSTATE of err ("" when it is not a server error).
func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// connectQualified connects with an empty search_path: reg* values print schema-qualified.
func connectQualified(t *testing.T, uri string) *pgx.Conn {
	t.Helper()
	c := connect(t, uri)
	if _, err := c.Exec(context.Background(), "SET search_path = ''"); err != nil {
		t.Fatal(err)
	}
	return c
}

// scalarSet reads one value in a transaction that first runs settings (SET LOCAL ...).
func scalarSet[T any](t *testing.T, c *pgx.Conn, settings, q string) T {
	t.Helper()
	ctx := context.Background()
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, settings); err != nil {
		t.Fatalf("%s: %v", settings, err)
	}
	var v T
	if err := tx.QueryRow(ctx, q).Scan(&v); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return v
}

// regclass, regtype and the other reg* values name objects by OID; in text they are
// names, qualified only where the session's search_path does not find them. A source
// database whose search_path puts schema extra first must not make extra.dup arrive as
// public.dup, nor extra.only_extra fail to arrive.
func TestRegValuesKeepTheirObjects(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	const read = `SELECT string_agg(concat_ws(' ', c, ty, p, pr, o, cfg, col), '; ' ORDER BY id) FROM public.refs`
	var want string
	migrateBoth(t, srv, false, func(t *testing.T, src string) {
		testenv.MustExec(t, srv, src,
			"CREATE SCHEMA extra",
			"CREATE TABLE public.dup (x int)", "CREATE TABLE extra.dup (x int)", "CREATE TABLE extra.only_extra (x int)",
			"CREATE TYPE public.kind AS ENUM ('a')", "CREATE TYPE extra.kind AS ENUM ('b')",
			"CREATE FUNCTION public.f(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1'",
			"CREATE FUNCTION extra.f(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1 + 1'",
			"CREATE TEXT SEARCH CONFIGURATION extra.cfg (COPY = pg_catalog.simple)",
			"CREATE COLLATION extra.coll (provider = libc, locale = 'C')",
			`CREATE TABLE public.refs (id int PRIMARY KEY, c regclass, ty regtype, p regproc, pr regprocedure,
				o regoperator, cfg regconfig, col regcollation)`,
			`INSERT INTO public.refs VALUES
				(1, 'extra.dup', 'extra.kind', 'extra.f', 'extra.f(int)', '+(int,int)', 'extra.cfg', 'extra.coll'),
				(2, 'public.dup', 'public.kind', 'public.f', 'public.f(int)', '-(int,int)', 'simple', '"C"'),
				(3, 'extra.only_extra', 'extra.kind[]', 'extra.f', 'extra.f(int)', '*(int,int)', 'english', '"POSIX"')`,
			"ALTER DATABASE "+src+" SET search_path = extra, public")
		want = scalar[string](t, connectQualified(t, srv.SuperURI(src)), read)
	}, func(t *testing.T, engine, src, dst string, sum *migrate.Summary, err error) {
		mustMigrate(t, sum, err)
		if got := scalar[string](t, connectQualified(t, srv.SuperURI(dst)), read); got != want {
			t.Errorf("the target's reg* values:\n%s\nthe source's:\n%s", got, want)
		}
	})
}

// An expression index over a function that reads another table (declared IMMUTABLE,
// which PostgreSQL takes on trust) holds what the function returned when the index was
// built: built before the other table's rows are in, it is wrong, and a query that
// uses it misses rows that a scan of the table finds. Both engines build such an
// index once all rows are in, as pg_restore does.
func TestIndexOverFunctionReadingAnotherTable(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	const (
		query    = "SELECT count(*) FROM items WHERE label_of(code) = 'seven'"
		byIndex  = "SET LOCAL enable_seqscan = off"
		byScan   = "SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off"
		inChunks = "SELECT count(*) FROM m WHERE label_of(code) = 'seven' AND t > '2024-01-01'"
	)
	migrateBoth(t, srv, true, func(t *testing.T, src string) {
		testenv.MustExec(t, srv, src,
			"CREATE TABLE codes (code int PRIMARY KEY, label text)",
			"INSERT INTO codes VALUES (7, 'seven'), (8, 'eight')",
			`CREATE FUNCTION label_of(int) RETURNS text LANGUAGE plpgsql IMMUTABLE
				AS $$BEGIN RETURN (SELECT label FROM public.codes WHERE code = $1); END$$`,
			// bigger than codes, so that the stream engine copies it first
			"CREATE TABLE items (id int PRIMARY KEY, code int, pad text)",
			"INSERT INTO items SELECT g, 7 + g % 2, repeat('x', 200) FROM generate_series(1, 5000) g",
			"CREATE INDEX items_label ON items (label_of(code))",
			// and a hypertable whose chunks' indexes call it in their predicate
			"CREATE TABLE m (t timestamptz NOT NULL, code int)",
			"SELECT create_hypertable('m', 't', chunk_time_interval => interval '1 day', create_default_indexes => false)",
			"INSERT INTO m SELECT '2025-01-01'::timestamptz + g * interval '1 hour', 7 + g % 2 FROM generate_series(1, 100) g",
			"CREATE INDEX m_seven ON m (t) WHERE label_of(code) = 'seven'",
			// sizes known: the chunks (a page each, like codes) are copied before codes
			"ANALYZE")
	}, func(t *testing.T, engine, src, dst string, sum *migrate.Summary, err error) {
		mustMigrate(t, sum, err)
		s, g := connect(t, srv.SuperURI(src)), connect(t, srv.SuperURI(dst))
		want := scalarSet[int64](t, s, byScan, query)
		if want != 2500 || scalarSet[int64](t, s, byIndex, query) != want {
			t.Fatalf("the source reads %d rows by scan, %d by index", want, scalarSet[int64](t, s, byIndex, query))
		}
		if got := scalarSet[int64](t, g, byIndex, query); got != want {
			t.Errorf("through index items_label the target finds %d rows, the source %d", got, want)
		}
		if a, b := scalarSet[int64](t, s, byIndex, inChunks), scalarSet[int64](t, g, byIndex, inChunks); a != b || a != 50 {
			t.Errorf("through the chunks' index m_seven: source %d rows, target %d", a, b)
		}
		// ANALYZE ran once the index was there: the planner has its statistics.
		const stats = "SELECT count(*) FROM pg_stats WHERE schemaname = 'public' AND tablename = 'items_label'"
		if n := scalar[int64](t, g, stats); n != 1 {
			t.Errorf("the target has %d statistics of index items_label's expression, want 1", n)
		}
	})
}

// Foreign keys from plain tables to a hypertable (TimescaleDB 2.16 and later): the
// hypertable's chunks, not its root, hold the rows, so TimescaleDB gives each chunk a
// copy of the key (a constraint whose parent is the root's, with its own action
// triggers). Both engines must give the target the same keys, on the same chunks, by
// the same names, whether the referencing table holds rows or not, so that a delete
// of a referenced row is refused on the target as on the source; also when the stream
// engine restores through TimescaleDB's API, which names chunks otherwise.
func TestForeignKeysToHypertable(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	ctx := context.Background()
	const (
		fks = `SELECT string_agg(format('%s on %s -> %s: %s (parent %s)', c.conname, c.conrelid::regclass, c.confrelid::regclass,
			pg_get_constraintdef(c.oid), coalesce((SELECT p.conname FROM pg_constraint p WHERE p.oid = c.conparentid), '-')), E'\n' ORDER BY c.conname)
			FROM pg_constraint c WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace`
		deleteReferenced = "DELETE FROM m WHERE id = 6"
	)
	var want string
	migrateWays(t, srv, true, append(bothEngines, way{migrate.EngineStream, schema.PathAPI}), func(t *testing.T, src string) {
		testenv.MustExec(t, srv, src,
			"CREATE TABLE m (time timestamptz NOT NULL, id int, v int, PRIMARY KEY (time, id))",
			"SELECT create_hypertable('m', by_range('time', interval '1 day'))",
			"CREATE TABLE m2 (time timestamptz NOT NULL, id int, PRIMARY KEY (time, id))",
			"SELECT create_hypertable('m2', by_range('time', interval '1 day'))",
			// one referencing table with rows, one empty; keys made before the chunks
			`CREATE TABLE refs (rid int PRIMARY KEY, t timestamptz, id int, t2 timestamptz, id2 int,
				FOREIGN KEY (t, id) REFERENCES m (time, id) ON DELETE RESTRICT, FOREIGN KEY (t2, id2) REFERENCES m2 (time, id))`,
			"CREATE TABLE later (t timestamptz, id int, CONSTRAINT later_m FOREIGN KEY (t, id) REFERENCES m (time, id))")
		// The chunks of m and m2 made in turn: each chunk's copy of a key of refs takes
		// the next free name (refs_time_id_fkey, refs_time_id_fkey1, ...) whichever
		// hypertable it is of.
		for day := 0; day < 4; day++ {
			for _, h := range []string{"m (time, id)", "m2"} {
				testenv.MustExec(t, srv, src, fmt.Sprintf("INSERT INTO %s SELECT '2025-01-01'::timestamptz + (%d * 4 + g) * interval '6 hours', %[2]d * 4 + g FROM generate_series(0, 3) g", h, day))
			}
		}
		testenv.MustExec(t, srv, src, "INSERT INTO refs SELECT g, '2025-01-01'::timestamptz + g * interval '6 hours', g, '2025-01-01'::timestamptz + g * interval '6 hours', g FROM generate_series(2, 14, 4) g")
		s := connect(t, srv.SuperURI(src))
		want = scalar[string](t, s, fks)
		if err := srv.Exec(ctx, src, "BEGIN", deleteReferenced); sqlState(err) != "23503" {
			t.Fatalf("the source let a referenced row be deleted: %v", err)
		}
	}, func(t *testing.T, engine, src, dst string, sum *migrate.Summary, err error) {
		mustMigrate(t, sum, err)
		g := connect(t, srv.SuperURI(dst))
		if got := scalar[string](t, g, fks); got != want {
			t.Errorf("the target's foreign keys:\n%s\nthe source's:\n%s", got, want)
		}
		if err := srv.Exec(ctx, dst, deleteReferenced); sqlState(err) != "23503" {
			t.Errorf("the target let a row that refs references be deleted: %v", err)
		}
		testenv.MustExec(t, srv, dst, "INSERT INTO later VALUES ('2025-01-01 06:00', 1)")
		if err := srv.Exec(ctx, dst, "DELETE FROM m WHERE id = 1"); sqlState(err) != "23503" {
			t.Errorf("the target let a row that later references be deleted: %v", err)
		}
		if err := srv.Exec(ctx, dst, "INSERT INTO later VALUES ('2025-01-01 06:00', 2)"); sqlState(err) != "23503" {
			t.Errorf("the target took a row of later that references no row of m: %v", err)
		}
	})
}

// latin1DB creates a database in encoding LATIN1 (with TimescaleDB) for this test.
func latin1DB(t *testing.T, srv *testenv.Server) string {
	t.Helper()
	name := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, "postgres", "DROP DATABASE "+name,
		"CREATE DATABASE "+name+" ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
	testenv.MustExec(t, srv, name, "CREATE EXTENSION timescaledb")
	return name
}

// utf8 is uri with client_encoding UTF8: pgx reads and writes strings as UTF-8, and a
// session's client_encoding is its database's encoding unless told otherwise.
func utf8(uri string) string { return uri + "&client_encoding=UTF8" }

// A source database in LATIN1 migrates, by either engine, into an existing UTF8
// target database and into one that tsmigrate creates (in LATIN1, as the source): the
// characters arrive as they were, and verify compares characters, not their bytes in
// each database's encoding.
func TestLatin1Source(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	const read = `SELECT string_agg(format('%s|%s|%s|%s|%s|%s|%s', id, s, v, j, e, a, n), E'\n' ORDER BY id) FROM t`
	for _, engine := range []string{migrate.EngineStream, migrate.EngineDump} {
		for _, newTarget := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/new-target=%v", engine, newTarget), func(t *testing.T) {
				ctx := context.Background()
				src, dst := latin1DB(t, srv), testenv.NewDB(t, srv, false)
				if newTarget {
					testenv.MustExec(t, srv, "postgres", "DROP DATABASE "+dst)
				}
				s := connect(t, utf8(srv.SuperURI(src)))
				for _, q := range []string{
					"CREATE TYPE mood AS ENUM ('gêné', 'ravi')",
					`CREATE TABLE t (id int PRIMARY KEY, s text, v varchar(20), j jsonb, e mood, a text[], n name, "çà" text)`,
					`INSERT INTO t VALUES (1, 'café ß ÿ Ü', 'déjà vu', '{"clé": "été"}', 'gêné', '{"à","ö"}', 'nämé', 'x'),
						(2, '½ £ © ±', 'Ñandú', '["ø"]', 'ravi', NULL, 'plain', NULL)`,
					"CREATE TABLE m (time timestamptz NOT NULL, label text)",
					"SELECT create_hypertable('m', 'time', chunk_time_interval => interval '1 day')",
					"INSERT INTO m SELECT '2025-01-01'::timestamptz + g * interval '5 hours', 'mesure n° ' || g || ' à ' || g FROM generate_series(1, 50) g",
				} {
					if _, err := s.Exec(ctx, q); err != nil {
						t.Fatalf("%s: %v", q, err)
					}
				}
				unfreezeAtCleanup(t, srv, src)
				const labels = "SELECT string_agg(label, ',' ORDER BY time) FROM m"
				want, wantLabels := scalar[string](t, s, read), scalar[string](t, s, labels)
				sum, err := migrate.Run(ctx, migrate.Options{Engine: engine,
					Source: cfg(t, "source", srv.URI(src)), Target: cfg(t, "target", srv.URI(dst)),
					Jobs: 2, PgBin: srv.ClientBin(), FreezeGrace: time.Second})
				mustMigrate(t, sum, err)
				g := connect(t, utf8(srv.SuperURI(dst)))
				if got := scalar[string](t, g, read); got != want {
					t.Errorf("the target reads\n%s\nthe source\n%s", got, want)
				}
				if got := scalar[string](t, g, labels); got != wantLabels {
					t.Errorf("hypertable m: source %q, target %q", wantLabels, got)
				}
				wantEnc := "UTF8"
				if newTarget {
					wantEnc = "LATIN1"
				}
				if enc := scalar[string](t, g, "SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()"); enc != wantEnc {
					t.Errorf("the target database's encoding is %s, want %s", enc, wantEnc)
				}
				// One character changed on the target: verify, comparing characters, sees it.
				if _, err := g.Exec(ctx, "UPDATE t SET s = replace(s, 'é', 'e') WHERE id = 1"); err != nil {
					t.Fatal(err)
				}
				rep, err := verify.Run(ctx, verify.Options{Source: cfg(t, "source", srv.URI(src)), Target: cfg(t, "target", srv.URI(dst))})
				if err != nil {
					t.Fatalf("verify: %v", err)
				}
				if rep.UnitsDiffering != 1 {
					t.Errorf("verify after a change on the target: %d units differ, want 1", rep.UnitsDiffering)
				}
			})
		}
	}
}

// xmlSource holds XML documents with declarations, which xml's output drops: in a
// column, a domain over xml, an array of xml, and a hypertable's chunks.
func xmlSource(t *testing.T, srv *testenv.Server, src string) {
	testenv.MustExec(t, srv, src,
		"CREATE DOMAIN doc AS xml",
		"CREATE TABLE docs (id int PRIMARY KEY, x xml, d doc, a xml[], plain xml)",
		`INSERT INTO docs VALUES
			(1, '<?xml version="1.0"?><a>1</a>', '<?xml version="1.0" encoding="UTF-8"?>`+"\n"+`<b/>', ARRAY['<?xml version="1.0"?><c/>'::xml, '<d/>'], '<e/>'),
			(2, '<a>2</a>', NULL, NULL, 'text <i>content</i>')`,
		"CREATE TABLE m (t timestamptz NOT NULL, x xml)",
		"SELECT create_hypertable('m', 't', chunk_time_interval => interval '1 day')",
		`INSERT INTO m SELECT '2025-01-01'::timestamptz + g * interval '7 hours', ('<?xml version="1.0"?><m>' || g || '</m>')::xml FROM generate_series(1, 20) g`)
}

// What a user reads of the XML values, declarations included (the text cast is the
// value as stored).
const xmlRead = `SELECT (SELECT string_agg(concat_ws('|', id, x::text, d::text, a::text[], plain::text), E'\n' ORDER BY id) FROM docs)
	|| (SELECT string_agg(x::text, ',' ORDER BY t) FROM m)`

// XML documents with a declaration (<?xml version="1.0"?>) arrive with it: the stream
// engine reads xml through its text, which keeps it. The dump engine cannot (pg_dump
// writes xml's output, which drops it): pre-flight says so and blocks the run before
// the freeze, naming the columns.
func TestXMLDeclarations(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	var want string
	migrateBoth(t, srv, true, func(t *testing.T, src string) {
		xmlSource(t, srv, src)
		want = scalar[string](t, connect(t, srv.SuperURI(src)), xmlRead)
	}, func(t *testing.T, engine, src, dst string, sum *migrate.Summary, err error) {
		if engine == migrate.EngineDump {
			if exit.Code(err) != exit.Blocked {
				t.Fatalf("dump engine: exit %d (%v), want %d", exit.Code(err), err, exit.Blocked)
			}
			for _, w := range []string{"xml-declarations", "public.docs.x", "public.docs.d", "public.docs.a", "public.m.x", "--engine stream"} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("the refusal %q does not name %s", err, w)
				}
			}
			if strings.Contains(err.Error(), "docs.plain") {
				t.Errorf("the refusal %q names docs.plain, which holds no declaration", err)
			}
			if !writable(t, srv, src) {
				t.Error("the refused run froze the source")
			}
			return
		}
		mustMigrate(t, sum, err)
		if got := scalar[string](t, connect(t, srv.SuperURI(dst)), xmlRead); got != want {
			t.Errorf("the target's XML:\n%s\nthe source's:\n%s", got, want)
		}
	})
}
