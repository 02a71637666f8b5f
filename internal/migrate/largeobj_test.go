package migrate_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
	"github.com/tsmigrate/tsmigrate/internal/verify"
)

// Large objects arrive with their comments and privileges, whatever their OIDs, with
// either engine, from PostgreSQL 17 (whose pg_dump puts their metadata in the data
// section, which the stream engine does not restore) and 15 (in pre-data); verify,
// privileges included, finds the target identical.
func TestLargeObjectMetadataCarried(t *testing.T) {
	for _, kind := range []testenv.Kind{testenv.PG17TS, testenv.PG15} {
		for _, engine := range []string{migrate.EngineStream, migrate.EngineDump} {
			t.Run(string(kind)+"/"+engine, func(t *testing.T) { largeObjectMetadataCarried(t, kind, engine) })
		}
	}
}

func largeObjectMetadataCarried(t *testing.T, kind testenv.Kind, engine string) {
	srv := testenv.Shared(t, kind)
	role := testenv.NewRole(t, srv, "tsm_lo_reader")
	ctx := context.Background()
	src := testenv.NewDB(t, srv, kind.TimescaleDB())
	dst := testenv.NewDB(t, srv, false)
	unfreezeAtCleanup(t, srv, src)
	testenv.MustExec(t, srv, src,
		`SELECT lo_create(1000)`, `COMMENT ON LARGE OBJECT 1000 IS 'low oid'`,
		`SELECT lo_from_bytea(20001, 'hello')`, `COMMENT ON LARGE OBJECT 20001 IS 'it''s the first'`,
		`GRANT SELECT ON LARGE OBJECT 20001 TO `+role,
		`GRANT SELECT, UPDATE ON LARGE OBJECT 1000 TO `+role+` WITH GRANT OPTION`,
		`GRANT SELECT ON LARGE OBJECT 1000 TO PUBLIC`,
		`SELECT lo_from_bytea(20002, 'world')`)
	sum, err := migrate.Run(ctx, migrate.Options{Engine: engine,
		Source: cfg(t, "source", srv.URI(src)), Target: cfg(t, "target", srv.URI(dst)),
		Jobs: 2, PgBin: srv.ClientBin(), FreezeGrace: time.Second})
	if err != nil || sum.Outcome != migrate.OutcomeMigrated {
		t.Fatalf("migrate: %v\n%+v", err, sum)
	}
	q := `SELECT string_agg(format('%s %s %s %s', l.oid, obj_description(l.oid, 'pg_largeobject'), l.lomacl, encode(lo_get(l.oid), 'escape')), '; ' ORDER BY l.oid)
		FROM pg_largeobject_metadata l`
	if a, b := scalar[string](t, connect(t, srv.SuperURI(src)), q), scalar[string](t, connect(t, srv.SuperURI(dst)), q); a != b {
		t.Errorf("large objects differ:\nsource %s\ntarget %s", a, b)
	}
	rep, err := verify.Run(ctx, verify.Options{Source: cfg(t, "source", srv.URI(src)), Target: cfg(t, "target", srv.URI(dst)), Privileges: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range rep.Schema {
		if strings.HasPrefix(d.Object, "large object") || strings.HasPrefix(d.Object, "comment on large object") {
			t.Errorf("verify --privileges: %s", d)
		}
	}
}
