package migrate_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/migrate"
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
			src := testenv.NewDB(t, srv, true)
			testenv.MustExec(t, srv, src, shapes...)
			unfreezeAtCleanup(t, srv, src)
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
