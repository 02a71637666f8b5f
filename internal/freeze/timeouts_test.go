package freeze_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/clock"
	"github.com/tsmigrate/tsmigrate/internal/freeze"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// The source database's own timeouts (ALTER DATABASE ... SET) must not cut short the
// freeze's and the unfreeze's sessions, which hold transactions: each timeout alone,
// made to fire for a session that keeps it. The network is slow (the server waits
// 5 ms at least for each next statement: idle in the transaction longer than
// idle_in_transaction_session_timeout), and another freeze holds the advisory lock
// that serialises them for 300 ms after the session asks for it (longer than
// statement_timeout, lock_timeout and transaction_timeout). A migration's freeze was
// killed under load by the first (TestDatabaseSettingsCarried).
func TestFreezeIgnoresDatabaseTimeouts(t *testing.T) {
	for _, k := range kinds {
		for _, setting := range []string{"idle_in_transaction_session_timeout = '1ms'", "statement_timeout = '100ms'",
			"lock_timeout = '100ms'", "transaction_timeout = '100ms'"} {
			t.Run(fmt.Sprintf("%s/%s", k, setting), func(t *testing.T) {
				if k == testenv.PG15 && strings.HasPrefix(setting, "transaction_timeout") {
					t.Skip("transaction_timeout is PostgreSQL 17's")
				}
				t.Parallel()
				f := newFixture(t, k, k.TimescaleDB())
				ctx := context.Background()
				testenv.MustExec(t, f.srv, "postgres", fmt.Sprintf("ALTER DATABASE %s SET %s", f.db, setting))
				proxy := testenv.StartProxy(t, f.srv)
				proxy.Latency(5 * time.Millisecond)
				src := testenv.Config(t, "source", proxy.URI(t, f.srv.URI(f.db)))

				waitForAdvisoryLock(t, f, func() error {
					res, err := freeze.Freeze(ctx, src, freeze.Options{DeferProof: true, PauseJobs: true, ProofWindow: freeze.MinProofWindow})
					if err != nil {
						return fmt.Errorf("freeze: %w", err)
					}
					if _, err := res.Pending.Finish(ctx); err != nil {
						return fmt.Errorf("proof: %w", err)
					}
					return nil
				})
				mustReadOnly(t, f)
				waitForAdvisoryLock(t, f, func() error {
					if res, err := freeze.Unfreeze(ctx, src); err != nil || !res.WasFrozen {
						return fmt.Errorf("unfreeze: %+v, %w", res, err)
					}
					return nil
				})
				mustWritable(t, f)
			})
		}
	}
}

// waitForAdvisoryLock runs do while a session of the test holds the freezes' advisory
// lock on f's database, which it lets go 300 ms after another session started to wait
// for it.
func waitForAdvisoryLock(t *testing.T, f *fixture, do func() error) {
	t.Helper()
	holder := testenv.Connect(t, f.srv.SuperURI(f.db))
	if _, err := holder.Exec(context.Background(), "SELECT pg_advisory_lock($1)", int64(freeze.AdvisoryKey)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	released := make(chan error, 1)
	go func() {
		var waiting bool
		for !waiting {
			if err := clock.Sleep(ctx, 10*time.Millisecond); err != nil {
				released <- nil // do ended without waiting
				return
			}
			if err := holder.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
				AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))`).Scan(&waiting); err != nil {
				released <- err
				return
			}
		}
		time.Sleep(300 * time.Millisecond)
		_, err := holder.Exec(ctx, "SELECT pg_advisory_unlock_all()")
		released <- err
	}()
	err := do()
	cancel()
	if rerr := <-released; err == nil {
		err = rerr
	}
	if err != nil {
		t.Fatal(err)
	}
}
