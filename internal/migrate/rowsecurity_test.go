package migrate_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// The source user owns the database and may read a table with row-level security
// that another role owns: the copy failed after the freeze ("query would be affected
// by row-level security policy"); pre-flight now blocks before anything changes.
func TestRowSecurityOnSourceBlocks(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	ctx := context.Background()
	const owner = "rls_db_owner"
	testenv.MustExec(t, srv, "postgres", "CREATE ROLE "+owner+" LOGIN PASSWORD 'pw-rls'",
		"GRANT SET ON PARAMETER tsmigrate.freeze_record TO "+owner)
	src := testenv.NewDB(t, srv, false)
	t.Cleanup(func() {
		srv.Exec(ctx, "postgres", "DROP OWNED BY "+owner, "REVOKE SET ON PARAMETER tsmigrate.freeze_record FROM "+owner, "DROP ROLE "+owner)
	})
	testenv.MustExec(t, srv, "postgres", "ALTER DATABASE "+src+" OWNER TO "+owner)
	testenv.MustExec(t, srv, src, `CREATE TABLE t (x int)`, `INSERT INTO t SELECT generate_series(1, 10)`,
		`ALTER TABLE t ENABLE ROW LEVEL SECURITY`, `CREATE POLICY few ON t FOR SELECT USING (x < 5)`,
		`GRANT SELECT ON t TO `+owner)
	t.Cleanup(func() { srv.Exec(ctx, src, "DROP OWNED BY "+owner) })
	unfreezeAtCleanup(t, srv, src)
	u, _ := url.Parse(srv.URI(src))
	u.User = url.UserPassword(owner, "pw-rls")
	sum, err := migrate.Run(ctx, migrate.Options{Engine: migrate.EngineStream,
		Source: cfg(t, "source", u.String()), Target: cfg(t, "target", srv.URI("postgres")),
		Databases: []migrate.Mapping{{Source: src, Target: src + "_rls"}},
		Jobs:      2, PgBin: srv.ClientBin(), FreezeGrace: time.Second})
	t.Cleanup(func() { srv.Exec(ctx, "postgres", "DROP DATABASE IF EXISTS "+src+"_rls WITH (FORCE)") })
	if exit.Code(err) != exit.Blocked || !strings.Contains(err.Error(), "source-read: row-level security policies apply to "+owner+" on public.t") {
		t.Fatalf("exit %d: %v", exit.Code(err), err)
	}
	if sum.Began() || !writable(t, srv, src) {
		t.Error("the run began, or left the source frozen")
	}
}
