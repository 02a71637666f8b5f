package migrate_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// Pre-flight and verify agree on extensions the target database has and the source's
// lacks: a managed service's own pg_stat_statements neither blocks nor fails verify;
// any other (citext here) blocks before the freeze, where verify failed after the
// whole copy.
func TestTargetOwnExtensionsPreflightAndVerifyAgree(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	ctx := context.Background()
	src := testenv.NewDB(t, srv, true)
	testenv.MustExec(t, srv, src, `CREATE TABLE t (x int)`, `INSERT INTO t SELECT generate_series(1, 10)`)
	run := func(dst string) (*migrate.Summary, error) {
		return migrate.Run(ctx, migrate.Options{Engine: migrate.EngineStream,
			Source: cfg(t, "source", srv.URI(src)), Target: cfg(t, "target", srv.URI(dst)),
			Jobs: 2, PgBin: srv.ClientBin(), FreezeGrace: time.Second})
	}

	blocked := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, blocked, `CREATE EXTENSION pg_stat_statements`, `CREATE EXTENSION citext`)
	sum, err := run(blocked)
	if exit.Code(err) != exit.Blocked || !strings.Contains(err.Error(), "extensions: the target database already has extensions the source database does not have: citext") {
		t.Fatalf("exit %d: %v", exit.Code(err), err)
	}
	if sum.Began() || !writable(t, srv, src) {
		t.Fatal("the run began, or left the source frozen")
	}

	own := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, own, `CREATE EXTENSION pg_stat_statements`)
	unfreezeAtCleanup(t, srv, src)
	sum, err = run(own)
	if err != nil {
		t.Fatalf("migrate into a target with pg_stat_statements: %v (%s)", err, schemaDiffs(sum))
	}
	if d := sum.Databases[0]; d.Identical == nil || !*d.Identical {
		t.Errorf("not identical: %s", schemaDiffs(sum))
	}
}
