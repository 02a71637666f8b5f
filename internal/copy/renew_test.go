package copy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/journal"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// sqlHolder finds the session that holds a run's exported snapshot: idle in the
// transaction whose last statement exported it (see ExportSnapshot).
const sqlHolder = `SELECT pid, client_port FROM pg_stat_activity
WHERE datname = $1 AND state = 'idle in transaction' AND query = 'SELECT pg_export_snapshot()'`

// loseHolder cuts, through the proxy, the connection that holds the snapshot of the
// run copying db, and waits until its backend has ended (and the snapshot with it).
func loseHolder(ctx context.Context, conn *pgx.Conn, proxy *testenv.Proxy, db string) error {
	var pid, port int
	if err := conn.QueryRow(ctx, sqlHolder, db).Scan(&pid, &port); err != nil {
		return fmt.Errorf("find the snapshot's holder: %w", err)
	}
	if !proxy.CutPort(port) {
		return fmt.Errorf("the holder (pid %d, port %d) is not connected through the proxy", pid, port)
	}
	for range 200 {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE pid = $1`, pid).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		time.Sleep(25 * time.Millisecond)
	}
	return fmt.Errorf("the holder's backend %d still runs 5 s after its connection was cut", pid)
}

// The connection that holds the exported snapshot is lost in the data phase (the
// workers' connections stay):
//  1. without RenewSnapshot the run fails, saying the snapshot is gone;
//  2. resumed with RenewSnapshot and MaxRetries 1, it renews the snapshot once, and
//     when the new holder is lost too, it fails the same way: renewals are bounded;
//  3. resumed with RenewSnapshot, it renews once (two workers, one renewal) and ends
//     with every table, chunk, sequence and large object equal.
func TestSnapshotHolderLost(t *testing.T) {
	p := newPair(t)
	ctx := context.Background()
	proxy := testenv.StartProxy(t, p.srv)
	watch := dbConn(t, p.srv, "postgres")
	source := mustParse(t, "source", proxy.URI(t, p.srv.SuperURI(p.src)))

	// run copies with the holder lost at the first data unit done, and again at the
	// first one done after each renewal, losses times in all.
	run := func(renew bool, maxRetries, losses int) (*Result, []Event, error) {
		var events []Event
		var lossErr error
		lost, renewed := 0, 0
		res, err := Run(ctx, Options{Source: source, Target: p.target(t), Jobs: 2, FreezeID: "f", RangeBytes: testRange,
			RenewSnapshot: renew, MaxRetries: maxRetries, RetryBackoff: 50 * time.Millisecond,
			OnEvent: func(e Event) {
				switch {
				case e.Type == SnapshotRenewed:
					renewed++
					events = append(events, e)
				case e.Type == Retry || e.Type == Failed:
					events = append(events, e)
				case e.Type == Done && e.Unit.Kind == string(journal.KindTable) && lost < losses && lost == renewed && lossErr == nil:
					lost++
					lossErr = loseHolder(ctx, watch, proxy, p.src)
				}
			}})
		if lossErr != nil {
			t.Fatal(lossErr)
		}
		if lost != losses {
			t.Fatalf("the holder was lost %d times, want %d (run: %v)", lost, losses, err)
		}
		return res, events, err
	}
	wantGone := func(err error, hint string) {
		t.Helper()
		var xe *exit.Error
		if !errors.As(err, &xe) || !strings.Contains(xe.Msg, "the source snapshot is gone") || !strings.Contains(xe.Hint, hint) {
			t.Fatalf("got %v, want the source snapshot gone (%s)", err, hint)
		}
	}

	res, _, err := run(false, 0, 1)
	wantGone(err, "resume to continue under a new snapshot")
	if res.SnapshotRenewals != 0 {
		t.Fatalf("renewed %d times without RenewSnapshot", res.SnapshotRenewals)
	}

	res, events, err := run(true, 1, 2)
	wantGone(err, "lost again after 1 renewal(s)")
	if res.SnapshotRenewals != 1 || res.Retries < 1 {
		t.Fatalf("%d renewals, %d retries; events %+v", res.SnapshotRenewals, res.Retries, events)
	}

	res, events, err = run(true, 0, 1)
	if err != nil {
		t.Fatalf("%v; events %+v", err, events)
	}
	if res.SnapshotRenewals != 1 || res.Retries < 1 || len(events) == 0 || events[0].Type != SnapshotRenewed || events[0].Err == "" {
		t.Fatalf("%d renewals, %d retries; events %+v", res.SnapshotRenewals, res.Retries, events)
	}
	t.Logf("renewed: %s; %d units copied after %d skipped, %d retries", events[0].Err, len(res.Units), res.Skipped, res.Retries)
	p.finish(t)
	p.assertEqual(t)
}

// givenSnapshot is a snapshot a caller gives Run.
type givenSnapshot string

func (s givenSnapshot) Snapshot() string              { return string(s) }
func (givenSnapshot) Close(ctx context.Context) error { return nil }

// A given snapshot (a replication slot's, say) cannot be replaced by a new export:
// Run refuses RenewSnapshot with one, before it connects anywhere.
func TestRenewSnapshotRefusesGivenSnapshot(t *testing.T) {
	nowhere := mustParse(t, "source", "postgres://u:p@127.0.0.1:1/db")
	_, err := Run(context.Background(), Options{Source: nowhere, Target: nowhere, FreezeID: "f",
		Snapshot: givenSnapshot("00000003-00000002-1"), RenewSnapshot: true})
	if err == nil || !strings.Contains(err.Error(), "RenewSnapshot") {
		t.Fatalf("RenewSnapshot with a given snapshot: %v", err)
	}
}
