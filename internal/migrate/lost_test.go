package migrate_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// The source connection is lost after the copy, at the freeze proof's read and in the
// middle of verify's read of the source's schema: both reads are made again on a new
// connection, saying so, and the migration ends well, instead of failing after a
// complete copy.
func TestLostSourceAfterCopyRetried(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	ctx := context.Background()
	src := testenv.NewDB(t, srv, true)
	dst := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, src, "CREATE TABLE t (id int PRIMARY KEY, v text)", "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g",
		"CREATE TABLE m (t timestamptz NOT NULL, v int)", "SELECT create_hypertable('m', 't')",
		"INSERT INTO m SELECT '2025-01-01'::timestamptz + g * interval '1 hour', g FROM generate_series(1, 500) g")
	unfreezeAtCleanup(t, srv, src)
	proxy := testenv.StartProxy(t, srv)
	var notes []string
	sum, err := migrate.Run(ctx, migrate.Options{Engine: migrate.EngineStream,
		Source: cfg(t, "source", proxy.URI(t, srv.URI(src))), Target: cfg(t, "target", srv.URI(dst)),
		Jobs: 2, PgBin: srv.ClientBin(), FreezeGrace: time.Second,
		OnEvent: func(e migrate.Event) {
			switch {
			case e.Type == migrate.EventPhase && e.Phase == migrate.PhaseProve:
				proxy.CutOneAfter(1) // the proof's new connection, as it logs in
			case e.Type == migrate.EventPhase && e.Phase == migrate.PhaseVerify:
				proxy.CutOneAfter(4000) // the source's coordinator, reading the schema
			case e.Type == migrate.EventNote:
				notes = append(notes, e.Text)
				if strings.Contains(e.Text, "lost") {
					t.Log(e.Text)
				}
			}
		},
	})
	if err != nil {
		t.Fatalf("migrate: %v\n%s", err, strings.Join(notes, "\n"))
	}
	if sum.Outcome != migrate.OutcomeMigrated || proxy.Cuts() != 2 {
		t.Fatalf("outcome %s, %d cuts, want migrated after 2", sum.Outcome, proxy.Cuts())
	}
	all := strings.Join(notes, "\n")
	for _, want := range []string{"the freeze proof lost its connection to the source", "verify: a connection was lost"} {
		if !strings.Contains(all, want) {
			t.Errorf("no note says %q:\n%s", want, all)
		}
	}
	if d := sum.Databases[0]; d.FreezeProof == nil || d.Identical == nil || !*d.Identical {
		t.Fatalf("proof %+v, identical %v", d.FreezeProof, d.Identical)
	}
}
