package migrate_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// Values whose meaning depends on the session or on other tables, migrated by each
// engine: what a user reads on the target must be what the source holds.

// migrateBoth runs f once per engine, each on a fresh source made by setup and a fresh
// target database, and hands it the run's summary and error.
func migrateBoth(t *testing.T, srv *testenv.Server, withTS bool, setup func(t *testing.T, src string),
	check func(t *testing.T, engine, src, dst string, sum *migrate.Summary, err error)) {
	for _, engine := range []string{migrate.EngineStream, migrate.EngineDump} {
		t.Run(engine, func(t *testing.T) {
			src, dst := testenv.NewDB(t, srv, withTS), testenv.NewDB(t, srv, false)
			setup(t, src)
			unfreezeAtCleanup(t, srv, src)
			sum, err := migrate.Run(context.Background(), migrate.Options{Engine: engine,
				Source: cfg(t, "source", srv.URI(src)), Target: cfg(t, "target", srv.URI(dst)),
				Jobs: 1, PgBin: srv.ClientBin(), FreezeGrace: time.Second})
			check(t, engine, src, dst, sum, err)
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

// connectQualified connects with an empty search_path: reg* values print schema-qualified.
func connectQualified(t *testing.T, uri string) *pgx.Conn {
	t.Helper()
	c := connect(t, uri)
	if _, err := c.Exec(context.Background(), "SET search_path = ''"); err != nil {
		t.Fatal(err)
	}
	return c
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
