package migrate_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/preflight"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// --jobs beyond what the servers take failed the run after the freeze ("too many
// clients"); pre-flight now checks both servers' connection budget first and says
// which --jobs fits. One that fits migrates.
func TestJobsBeyondMaxConnections(t *testing.T) {
	small := testenv.Options{Settings: map[string]string{"max_connections": "20"}}
	srcSrv, dstSrv := testenv.Need(t, testenv.PG17TS, small), testenv.Need(t, testenv.PG17TS, small)
	ctx := context.Background()
	src := testenv.NewDB(t, srcSrv, true)
	testenv.MustExec(t, srcSrv, src, shapes...)
	unfreezeAtCleanup(t, srcSrv, src)
	run := func(jobs int) (*migrate.Summary, error) {
		return migrate.Run(ctx, migrate.Options{Engine: migrate.EngineStream,
			Source: cfg(t, "source", srcSrv.URI(src)), Target: cfg(t, "target", dstSrv.URI("postgres")),
			Databases: []migrate.Mapping{{Source: src, Target: "app"}},
			Jobs:      jobs, PgBin: srcSrv.ClientBin(), FreezeGrace: time.Second})
	}
	sum, err := run(12)
	if exit.Code(err) != exit.Blocked || !strings.Contains(err.Error(), "connections: a migration with --jobs 12 opens up to 15 client sessions on the source and 27 on the target") {
		t.Fatalf("exit %d: %v", exit.Code(err), err)
	}
	if sum.Began() || !writable(t, srcSrv, src) {
		t.Fatal("the run began, or left the source frozen")
	}
	rep := sum.Preflight[0].(*preflight.Report)
	var do string
	for _, f := range rep.Findings {
		if f.Check == "connections" {
			do = f.Do
		}
	}
	var fits int
	if _, err := fmt.Sscanf(do, "migrate with --jobs %d or fewer", &fits); err != nil || fits < 2 || fits >= 12 {
		t.Fatalf("connections: do %q", do)
	}
	if sum, err := run(fits); err != nil {
		t.Fatalf("--jobs %d: %v\n%+v", fits, err, sum)
	}
}
