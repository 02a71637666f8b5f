package cli_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// At a terminal, the lag is redrawn above the cut-over's question while it waits for
// the answer, the cursor kept where the answer is typed; "y" cuts over.
func TestLiveCutoverPromptTerminal(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src, dst := testenv.NewDB(t, srv, true), testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, src,
		`CREATE TABLE m (ts timestamptz NOT NULL, v float8, PRIMARY KEY (ts))`,
		`SELECT create_hypertable('m', 'ts')`,
		`INSERT INTO m SELECT '2026-01-01'::timestamptz + g * interval '1 minute', g FROM generate_series(1, 1000) g`)
	t.Cleanup(func() {
		srv.Exec(context.Background(), "postgres", "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '"+src+"'",
			"ALTER DATABASE "+src+" RESET ALL")
	})
	t.Setenv("TSMIGRATE_SOURCE", srv.SuperURI(src))
	t.Setenv("TSMIGRATE_TARGET", srv.SuperURI(dst))
	const question = "; cut over now? this freezes writes on "
	answer := func(screen string) []byte {
		// Once the lag was redrawn above the question (cursor saved, moved up).
		if i := strings.Index(screen, question); i >= 0 && strings.Contains(screen[i:], "\x1b7\r\x1b[1A\x1b[2Klive: catch-up") {
			return []byte("y\r")
		}
		return nil
	}
	run := atTerminal(t, []string{"migrate", "--live", "--cutover", "prompt", "--yes", "--jobs", "2", "--freeze-grace", "1s", "--pg-bin", srv.ClientBin()},
		answer, "MIGRATED", 3*time.Minute)
	if !run.ended || run.err != nil || !strings.Contains(run.screen, "MIGRATED") {
		t.Fatalf("ended %v, %v; the terminal showed:\n%q", run.ended, run.err, run.screen)
	}
	if !strings.Contains(run.screen, "live: copy") || !strings.Contains(run.screen, "lag is ") {
		t.Errorf("no live line or question on the terminal:\n%q", run.screen)
	}
}
