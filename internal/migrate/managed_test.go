package migrate_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/freeze"
	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/preflight"
	"github.com/tsmigrate/tsmigrate/internal/schema"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// The shape list with either engine, as tsdbadmin into a cloud-like target's defaultdb
// (the owner, no superuser; timescaledb_pre_restore() and timescaledb_post_restore()
// SECURITY DEFINER and granted to it, the catalog writable): the catalog path, every
// shape equal, verify identical; afterwards tsdbadmin makes a new chunk in each
// hypertable, restoring mode is off and the database's TimescaleDB scheduler runs.
func TestManagedCloudLikeEveryShape(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	for _, engine := range []string{migrate.EngineStream, migrate.EngineDump} {
		t.Run(engine, func(t *testing.T) {
			ctx := context.Background()
			tgt := testenv.Need(t, testenv.PG17TS, testenv.Options{Flavour: testenv.CloudLike})
			src := shapesSource(t, srv)
			sum, err := migrate.Run(ctx, migrate.Options{Engine: engine,
				Source: cfg(t, "source", srv.URI(src)), Target: cfg(t, "target", tgt.URI(testenv.ManagedDB)),
				Jobs: 4, PgBin: srv.ClientBin(), FreezeGrace: time.Second})
			if err != nil {
				t.Fatalf("migrate: %v; schema differences: %s\n%+v", err, schemaDiffs(sum), sum)
			}
			d := sum.Databases[0]
			if d.Identical == nil || !*d.Identical {
				t.Fatalf("verify: identical %v; schema differences: %s", d.Identical, schemaDiffs(sum))
			}
			if d.RestorePath != schema.PathCatalog {
				t.Errorf("restore path %q, want %q", d.RestorePath, schema.PathCatalog)
			}
			assertShapeTables(t, d)
			assertShapesEqualOn(t, srv, src, tgt, testenv.ManagedDB)
			assertManagedTargetLive(t, tgt, testenv.ManagedDB, map[string]string{
				"metrics": "INSERT INTO metrics (t, device_id, v) VALUES ('2032-06-01', 3, 1)",
				"ticks":   "INSERT INTO ticks VALUES (50000, 1)",
			})
		})
	}
}

// shapesSource is a new source database on srv holding the shape list and then extra,
// unfrozen when the test ends.
func shapesSource(t *testing.T, srv *testenv.Server, extra ...string) string {
	t.Helper()
	src := testenv.NewDB(t, srv, true)
	testenv.MustExec(t, srv, src, append(append([]string{}, shapes...), extra...)...)
	unfreezeAtCleanup(t, srv, src)
	return src
}

// assertManagedTargetLive checks a target database after a migration as its
// non-superuser owner: a new session is out of restoring mode, the owner's row in a
// new time range of each hypertable (inserts, by name) makes one new chunk there, and
// the database's TimescaleDB scheduler runs.
func assertManagedTargetLive(t *testing.T, tgt *testenv.Server, db string, inserts map[string]string) {
	t.Helper()
	ctx := context.Background()
	g, err := pgx.Connect(ctx, tgt.URI(db))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close(ctx)
	var user, restoring string
	if err := g.QueryRow(ctx, "SELECT current_user, current_setting('timescaledb.restoring')").Scan(&user, &restoring); err != nil {
		t.Fatal(err)
	}
	if user != testenv.ManagedAdmin || restoring != "off" {
		t.Errorf("a new session on the target as %s has timescaledb.restoring = %s", user, restoring)
	}
	const chunks = "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = $1"
	for ht, insert := range inserts {
		var before, after int64
		if err := g.QueryRow(ctx, chunks, ht).Scan(&before); err != nil {
			t.Fatal(err)
		}
		if _, err := g.Exec(ctx, insert); err != nil {
			t.Errorf("%s as %s: %v", insert, user, err)
			continue
		}
		if err := g.QueryRow(ctx, chunks, ht).Scan(&after); err != nil {
			t.Fatal(err)
		}
		if before == 0 || after != before+1 {
			t.Errorf("%s: %d chunks before the insert, %d after; want one more", ht, before, after)
		}
	}
	testenv.MustSchedulerRun(t, tgt, db)
}

// A run as tsdbadmin into a managed-like target that fails after it restored part of
// the source: the target is out of restoring mode and its scheduler runs; the reset
// the run prints, run as tsdbadmin (who may not drop the database's TimescaleDB, the
// superuser's), leaves the target empty for pre-flight, and the migration then
// succeeds. Stream engine: rows rejected during the copy; dump engine: an object the
// target holds already. Before, the hint said DROP EXTENSION timescaledb CASCADE,
// which tsdbadmin may not run, and the target stayed in restoring mode with its
// scheduler stopped. Into the cloud-like target with either engine (the catalog
// path), into the bare owner's with the stream engine (the catalog-less path), on the
// Apache and the full build: a continuous aggregate, policies and a user job are
// dropped as well.
func TestManagedResetAfterFailure(t *testing.T) {
	for _, c := range []struct {
		flavour testenv.Flavour
		engine  string
	}{
		{testenv.CloudLike, migrate.EngineStream},
		{testenv.CloudLike, migrate.EngineDump},
		{testenv.BareOwner, migrate.EngineStream},
	} {
		name := string(c.flavour) + "/" + c.engine
		t.Run(name, func(t *testing.T) {
			srv := testenv.Shared(t, testenv.PG17TS)
			// A table of the user's in _timescaledb_internal, which the bare owner may not
			// create (pre-flight says so), is moved to public on the source.
			src := shapesSource(t, srv, append([]string{"ALTER TABLE _timescaledb_internal.mine SET SCHEMA public"}, failingShapes...)...)
			managedResetAfterFailure(t, srv, c.flavour, c.engine, src, "INSERT INTO metrics (t, device_id, v) VALUES ('2032-06-01', 3, 1)")
		})
		t.Run(name+"/full-build", func(t *testing.T) {
			srv := testenv.Shared(t, testenv.PG17TSL)
			src := testenv.NewDB(t, srv, true)
			fullSource(t, srv, src)
			testenv.MustExec(t, srv, src, failingShapes...)
			unfreezeAtCleanup(t, srv, src)
			managedResetAfterFailure(t, srv, c.flavour, c.engine, src, "INSERT INTO m VALUES ('2032-06-01', 1, 1)")
		})
	}
}

// failingShapes are what TestManagedResetAfterFailure makes fail: a collation the
// target holds already (dump engine), rows of labels a constraint on the target
// rejects (stream engine).
var failingShapes = []string{"CREATE COLLATION public.plain (provider = libc, locale = 'C')",
	"CREATE TABLE labels (id int, s text COLLATE public.plain)", "INSERT INTO labels SELECT g, 'a' FROM generate_series(1, 10) g"}

// managedResetAfterFailure is TestManagedResetAfterFailure from database src of srv,
// with engine, into a new cloud-like target of srv's kind; insert makes a new chunk in
// one of its hypertables.
func managedResetAfterFailure(t *testing.T, srv *testenv.Server, flavour testenv.Flavour, engine, src, insert string) {
	ctx := context.Background()
	tgt := testenv.Need(t, srv.Kind, testenv.Options{Flavour: flavour})
	admin := connect(t, tgt.URI(testenv.ManagedDB))
	opt := migrate.Options{Engine: engine,
		Source: cfg(t, "source", srv.URI(src)), Target: cfg(t, "target", tgt.URI(testenv.ManagedDB)),
		Jobs: 2, PgBin: srv.ClientBin(), FreezeGrace: time.Second}
	if engine == migrate.EngineStream {
		opt.OnEvent = func(e migrate.Event) {
			if e.Type == migrate.EventPhase && e.Phase == migrate.PhaseCopy {
				testenv.MustExec(t, tgt, testenv.ManagedDB, "ALTER TABLE labels ADD CONSTRAINT few CHECK (id < 5)")
			}
		}
	} else if _, err := admin.Exec(ctx, "CREATE COLLATION public.plain (provider = libc, locale = 'C')"); err != nil {
		t.Fatal(err)
	}
	sum, err := migrate.Run(ctx, opt)
	if err == nil || sum.Outcome != migrate.OutcomeFailed {
		t.Fatalf("the run did not fail: %v, %+v", err, sum)
	}
	assertManagedTargetLive(t, tgt, testenv.ManagedDB, nil)
	var reset string
	for _, s := range sum.ResetTarget {
		if _, sql, ok := strings.Cut(s, "as "+testenv.ManagedAdmin+", drop what the run restored: "); ok {
			reset = sql
		}
	}
	if reset == "" || strings.Contains(reset, "EXTENSION timescaledb") {
		t.Fatalf("reset steps: %q", sum.ResetTarget)
	}
	t.Logf("reset: %s", reset)
	if _, err := admin.Exec(ctx, reset); err != nil {
		t.Fatalf("the reset as %s: %v", testenv.ManagedAdmin, err)
	}
	rep, err := preflight.Run(ctx, preflight.Options{Source: opt.Source, Target: opt.Target, Engine: engine})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range rep.Findings {
		if f.Check == "target-empty" && f.Status != preflight.Pass {
			t.Fatalf("after the reset, target-empty: %s: %s", f.Status, f.Saw)
		}
	}
	if _, err := freeze.Unfreeze(ctx, opt.Source); err != nil {
		t.Fatal(err)
	}
	opt.OnEvent = nil
	sum, err = migrate.Run(ctx, opt)
	if err != nil {
		t.Fatalf("migrate after the reset: %v; schema differences: %s", err, schemaDiffs(sum))
	}
	if d := sum.Databases[0]; d.Identical == nil || !*d.Identical {
		t.Fatalf("verify after the reset: %v; schema differences: %s", d.Identical, schemaDiffs(sum))
	}
	ht, _, _ := strings.Cut(strings.TrimPrefix(insert, "INSERT INTO "), " ")
	assertManagedTargetLive(t, tgt, testenv.ManagedDB, map[string]string{ht: insert})
}

// The full build's objects (compression, a compressed chunk, a continuous aggregate,
// policies and a user job: fullSource) with either engine as tsdbadmin into a
// cloud-like target on the full build: the catalog path, verify identical, the target
// live and its scheduler running.
func TestManagedCloudLikeFullBuild(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TSL)
	for _, engine := range []string{migrate.EngineStream, migrate.EngineDump} {
		t.Run(engine, func(t *testing.T) {
			ctx := context.Background()
			tgt := testenv.Need(t, testenv.PG17TSL, testenv.Options{Flavour: testenv.CloudLike})
			src := testenv.NewDB(t, srv, true)
			fullSource(t, srv, src)
			unfreezeAtCleanup(t, srv, src)
			sum, err := migrate.Run(ctx, migrate.Options{Engine: engine,
				Source: cfg(t, "source", srv.URI(src)), Target: cfg(t, "target", tgt.URI(testenv.ManagedDB)),
				Jobs: 2, PgBin: srv.ClientBin(), FreezeGrace: time.Second})
			if err != nil {
				t.Fatalf("migrate: %v; schema differences: %s\n%+v", err, schemaDiffs(sum), sum)
			}
			d := sum.Databases[0]
			if d.Identical == nil || !*d.Identical || d.RestorePath != schema.PathCatalog {
				t.Fatalf("verify: identical %v, restore path %s; schema differences: %s", d.Identical, d.RestorePath, schemaDiffs(sum))
			}
			assertManagedTargetLive(t, tgt, testenv.ManagedDB, map[string]string{
				"m":     "INSERT INTO m VALUES ('2032-06-01', 1, 1)",
				"ticks": "INSERT INTO ticks VALUES (50000, 1)",
			})
		})
	}
}

// The dump engine as tsdbadmin into the bare owner's target is blocked by pre-flight
// (exit 3), saying why in one line, before anything changes: pg_restore writes
// TimescaleDB's catalog, which the bare owner may not. The source stays writable,
// the target empty, its scheduler running.
func TestManagedBareDumpEngineBlocked(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	ctx := context.Background()
	tgt := testenv.Need(t, testenv.PG17TS, testenv.Options{Flavour: testenv.BareOwner})
	src := testenv.NewDB(t, srv, true)
	testenv.MustExec(t, srv, src, "CREATE TABLE m (t timestamptz NOT NULL, v int)", "SELECT create_hypertable('m', 't')",
		"INSERT INTO m SELECT '2025-01-01'::timestamptz + g * interval '1 hour', g FROM generate_series(1, 100) g")
	unfreezeAtCleanup(t, srv, src)
	sum, err := migrate.Run(ctx, migrate.Options{Engine: migrate.EngineDump,
		Source: cfg(t, "source", srv.URI(src)), Target: cfg(t, "target", tgt.URI(testenv.ManagedDB)),
		Jobs: 2, PgBin: srv.ClientBin(), FreezeGrace: time.Second})
	want := "the dump engine restores TimescaleDB's catalog with pg_restore, which it cannot here"
	if !schema.APIPathAvailable {
		want = "cannot restore without TimescaleDB's catalog yet"
	}
	if exit.Code(err) != exit.Blocked || sum.Outcome != migrate.OutcomeBlocked || !strings.Contains(err.Error(), want) {
		t.Fatalf("exit %d (%v), want 3 saying %q", exit.Code(err), err, want)
	}
	if !writable(t, srv, src) {
		t.Error("the source was frozen")
	}
	if n := scalar[int64](t, connect(t, tgt.URI(testenv.ManagedDB)), "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"); n != 0 {
		t.Errorf("the target holds %d tables", n)
	}
	testenv.MustSchedulerRun(t, tgt, testenv.ManagedDB)
}
