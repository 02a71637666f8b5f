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

// A grant to a role the target server lacks failed the run after the freeze ("role
// ... does not exist"). The run leaves such grants out, and pre-flight warns of them
// first, naming the role and how it is used.
func TestGrantToRoleOnlyOnSourceLeftOut(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	other := testenv.Need(t, testenv.PG17TS, testenv.Options{})
	ctx := context.Background()
	testenv.MustExec(t, srv, "postgres", "CREATE ROLE onlysrc")
	t.Cleanup(func() { srv.Exec(ctx, "postgres", "DROP OWNED BY onlysrc", "DROP ROLE onlysrc") })
	src := testenv.NewDB(t, srv, true)
	testenv.MustExec(t, srv, src, `CREATE TABLE t (x int)`, `GRANT SELECT ON t TO onlysrc`)
	t.Cleanup(func() { srv.Exec(ctx, src, "DROP OWNED BY onlysrc") })
	unfreezeAtCleanup(t, srv, src)
	sum, err := migrate.Run(ctx, migrate.Options{Engine: migrate.EngineStream,
		Source: cfg(t, "source", srv.URI(src)), Target: cfg(t, "target", other.URI("postgres")),
		Databases: []migrate.Mapping{{Source: src, Target: "app"}},
		Jobs:      2, PgBin: srv.ClientBin(), FreezeGrace: time.Second})
	if err != nil {
		t.Fatalf("exit %d: %v", exit.Code(err), err)
	}
	said := strings.Join(sum.Warnings, "\n")
	if !strings.Contains(said, "granted-roles: the source database grants privileges to roles the target server does not have: onlysrc (privileges)") {
		t.Errorf("pre-flight's warning is not among the run's warnings:\n%s", said)
	}
}
