package live

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// writer writes to the source of p until stopped, one transaction at a time: a row
// into hypertable m (a new chunk every 24 rows), an update of docs that leaves its
// TOASTed column alone, a row into nokey (REPLICA IDENTITY FULL) and the delete of
// the one before. It counts the transactions the source acknowledged.
type writer struct {
	acked atomic.Int64
	stop  chan struct{}
	done  chan error
}

func startWriter(t *testing.T, p livePair) *writer {
	t.Helper()
	w := &writer{stop: make(chan struct{}), done: make(chan error, 1)}
	conn := dbConn(t, p.srv, p.src)
	go func() {
		ctx := context.Background()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for i := int64(1); ; i++ {
			select {
			case <-w.stop:
				w.done <- nil
				return
			case <-tick.C:
			}
			err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				b := &pgx.Batch{}
				b.Queue(`INSERT INTO m VALUES ('2024-04-01'::timestamptz + $1 * interval '1 hour', 9, $1, 'w')`, i)
				b.Queue(`UPDATE docs SET title = 'w' || $1::text WHERE id = $1 % 39 + 1`, i)
				b.Queue(`INSERT INTO nokey VALUES ($1, 'w')`, 1000+i)
				b.Queue(`DELETE FROM nokey WHERE a = $1`, 1000+i-1)
				return tx.SendBatch(ctx, b).Close()
			})
			if err != nil {
				w.done <- fmt.Errorf("writer, transaction %d: %w", i, err)
				return
			}
			w.acked.Store(i)
		}
	}()
	t.Cleanup(func() { w.halt(t) })
	return w
}

// halt stops the writer (once) and fails the test if it failed.
func (w *writer) halt(t *testing.T) {
	t.Helper()
	select {
	case <-w.stop:
		return
	default:
	}
	close(w.stop)
	if err := <-w.done; err != nil {
		t.Error(err)
	}
}

// applyInBackground applies until the end marker s.Slot, in its own goroutine, with
// the target reached at target; wait waits for the end.
func applyInBackground(t *testing.T, target *dbconn.Config, s *Stream) (ap *Applier, wait func()) {
	t.Helper()
	ap = &Applier{Target: target, End: s.Slot, OnRetry: func(n int, err error) { t.Logf("applier retry %d: %v", n, err) }}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	done := make(chan error, 1)
	go func() { done <- ap.Run(ctx) }()
	var once sync.Once
	var err error
	end := func() { once.Do(func() { err = <-done; cancel() }) }
	wait = func() {
		end()
		if err != nil {
			t.Fatalf("applier: %v", err)
		}
	}
	t.Cleanup(func() { cancel(); end() })
	return ap, wait
}

// runReceiver runs r until the test ends; alive fails the test once r stopped.
func runReceiver(t *testing.T, r *Receiver) (alive func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return func() {
		t.Helper()
		select {
		case err := <-done:
			done <- err
			t.Fatalf("the receiver stopped: %v (%+v)", err, r.Status())
		default:
		}
	}
}

// walsenderPort is the client port the source sees the slot's walsender come from.
func walsenderPort(t *testing.T, sc *pgx.Conn, slot string) int {
	t.Helper()
	var port int
	testenv.Eventually(t, time.Minute, func() error {
		err := sc.QueryRow(context.Background(), `SELECT a.client_port FROM pg_replication_slots s
JOIN pg_stat_activity a ON a.pid = s.active_pid WHERE s.slot_name = $1`, slot).Scan(&port)
		if err != nil {
			return fmt.Errorf("no walsender streams from slot %s: %v", slot, err)
		}
		return nil
	})
	return port
}

// TestReceiverConnectionCut: the source and the target reached through proxies that
// cut the receiver's connections while a writer runs (the replication connection
// alone, every connection to the source, the replication connection in the middle
// of a transaction bigger than logical_decoding_work_mem, the target's while the
// receiver keeps changes there, every connection to the target while the applier
// applies: both connect again): the receiver connects again each time, and once
// applied up to the end marker the target holds every write the source acknowledged,
// once.
func TestReceiverConnectionCut(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	p := newLivePair(t, srv)
	ctx := context.Background()
	s := p.start(t)
	sproxy, tproxy := testenv.StartProxy(t, srv), testenv.StartProxy(t, srv)
	r := &Receiver{
		Source:  mustParse(t, "source", sproxy.URI(t, srv.SuperURI(p.src))),
		Target:  mustParse(t, "target", tproxy.URI(t, srv.SuperURI(p.dst))),
		OnRetry: func(n int, err error) { t.Logf("receiver retry %d: %v", n, err) },
	}
	running := runReceiver(t, r)
	w := startWriter(t, p)
	p.copyAt(t, s)
	s.Close(ctx)

	sc := dbConn(t, srv, p.src)
	// moreReceived waits for the receiver to have reconnected reconnects times and kept
	// more messages since.
	moreReceived := func(what string, reconnects int) {
		t.Helper()
		testenv.Eventually(t, 2*time.Minute, func() error {
			running()
			if st := r.Status(); st.Reconnects < reconnects {
				return fmt.Errorf("%s: receiver %+v, want %d reconnects", what, st, reconnects)
			}
			return nil
		})
		since := r.Status().Messages
		testenv.Eventually(t, 2*time.Minute, func() error {
			running()
			if st := r.Status(); st.Messages < since+50 {
				return fmt.Errorf("%s: receiver %+v, want 50 messages more than %d", what, st, since)
			}
			return nil
		})
	}
	moreReceived("before any cut", 0)

	if !sproxy.CutPort(walsenderPort(t, sc, s.Slot)) {
		t.Fatal("the replication connection does not go through the proxy")
	}
	moreReceived("after the replication connection was cut", 1)

	if n := sproxy.CutAll(); n < 2 {
		t.Fatalf("cut %d connections to the source, want the replication and the query connections", n)
	}
	moreReceived("after every connection to the source was cut", 2)

	// In the middle of a big transaction: what the receiver kept of it is dropped and
	// received again.
	walsenderPort(t, sc, s.Slot)
	sproxy.CutOneAfter(1 << 20)
	testenv.MustExec(t, srv, p.src, `INSERT INTO m SELECT '2024-06-01'::timestamptz + g * interval '1 second', 7, g, repeat('big', 20) FROM generate_series(1, 40000) g`)
	moreReceived("after the replication connection was cut mid-transaction", 3)

	// While the receiver keeps what it received in the target.
	held := tproxy.HoldAnswerTo(`"live_changes"`, time.Minute)
	testenv.Eventually(t, 2*time.Minute, func() error {
		running()
		select {
		case <-held:
			return nil
		default:
			return errors.New("the receiver keeps nothing in the target")
		}
	})
	if n := tproxy.CutAll(); n != 1 {
		t.Fatalf("cut %d connections to the target, want the receiver's", n)
	}
	moreReceived("after the target's connection was cut while changes were kept there", 4)

	ap, applied := applyInBackground(t, r.Target, s)
	testenv.Eventually(t, 2*time.Minute, func() error {
		running()
		if st := ap.Status(); st.Transactions < 10 {
			return fmt.Errorf("applier %+v: not applying yet", st)
		}
		return nil
	})
	if n := tproxy.CutAll(); n < 2 {
		t.Fatalf("cut %d connections to the target, want the receiver's and the applier's", n)
	}
	moreReceived("after every connection to the target was cut", 5)

	w.halt(t)
	if _, err := EmitEndMarker(ctx, p.source, s.Slot); err != nil {
		t.Fatal(err)
	}
	applied()
	st, rst := ap.Status(), r.Status()
	t.Logf("receiver %+v; applier %+v; %d writer transactions", rst, st, w.acked.Load())
	if !st.ReachedEnd || st.Reconnects == 0 {
		t.Fatalf("applier %+v: want the end marker applied after a reconnection", st)
	}
	p.verifyIdentical(t)
	tc := dbConn(t, srv, p.dst)
	if n := queryInt(t, tc, `SELECT count(*) FROM m WHERE dev = 9`); n != w.acked.Load() {
		t.Errorf("the target holds %d of the writer's rows of m, the source acknowledged %d", n, w.acked.Load())
	}
	if n := queryInt(t, tc, `SELECT count(*) FROM m WHERE dev = 7`); n != 40000 {
		t.Errorf("the target holds %d rows of the transaction cut in the middle, want 40000", n)
	}
}

// sqlIdentities: every table's replica identity (and its index), chunks' included.
const sqlIdentities = `SELECT c.oid::regclass::text, c.relreplident::text, coalesce((SELECT ic.relname::text FROM pg_index i
	JOIN pg_class ic ON ic.oid = i.indexrelid WHERE i.indrelid = c.oid AND i.indisreplident), '')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') ORDER BY 1`

func identities(t *testing.T, conn *pgx.Conn) map[string]string {
	t.Helper()
	rows, _ := conn.Query(context.Background(), sqlIdentities)
	m := map[string]string{}
	var name, ri, idx string
	if _, err := pgx.ForEachRow(rows, []any{&name, &ri, &idx}, func() error {
		m[name] = ri + " " + idx
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestDropLeavesNothing: after Drop (while the receiver still streams from the slot)
// the source holds no slot, no publication, and every table has the replica identity
// it had before Start, the chunks created during the migration included; Drop again
// finds nothing to do.
func TestDropLeavesNothing(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	p := newLivePair(t, srv)
	testenv.MustExec(t, srv, p.src,
		`ALTER TABLE scratchpad REPLICA IDENTITY NOTHING`,
		`CREATE TABLE ui (a int NOT NULL, b int)`, `CREATE UNIQUE INDEX ui_a ON ui (a)`,
		`ALTER TABLE ui REPLICA IDENTITY USING INDEX ui_a`)
	ctx := context.Background()
	sc := dbConn(t, srv, p.src)
	before := identities(t, sc)
	s, err := Start(ctx, p.source, Options{Names: NewNames(), ReplicaIdentityFull: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(ctx); Drop(ctx, p.source, s.Names, s.Identity) })
	var set []string
	for _, c := range s.Identity {
		set = append(set, c.Kind+" "+c.Table.String())
	}
	t.Logf("Start set the replica identity of: %v", set)
	during := identities(t, sc)
	for _, n := range []string{"scratchpad", "nokey", "events"} {
		if during[n] != "f " {
			t.Errorf("during the migration %s has replica identity %q, want FULL", n, during[n])
		}
	}
	if err := Init(ctx, p.target, s); err != nil {
		t.Fatal(err)
	}
	r := &Receiver{Source: p.source, Target: p.target}
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	rdone := make(chan error, 1)
	go func() { rdone <- r.Run(rctx) }()
	// New chunks of both hypertables, made while the migration runs.
	testenv.MustExec(t, srv, p.src,
		`INSERT INTO events VALUES ('2025-01-01', 'new', '{}')`, `INSERT INTO m VALUES ('2025-01-01', 1, 1, 'new')`,
		`UPDATE scratchpad SET t = 'y'`, `DELETE FROM nokey WHERE a = 1`)
	walsenderPort(t, sc, s.Slot)
	s.Close(ctx)

	if err := Drop(ctx, p.source, s.Names, s.Identity); err != nil {
		t.Fatalf("Drop: %v", err)
	}
	if n := queryInt(t, sc, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, s.Slot); n != 0 {
		t.Errorf("Drop left the slot")
	}
	if n := queryInt(t, sc, `SELECT count(*) FROM pg_publication WHERE pubname = $1`, s.Publication); n != 0 {
		t.Errorf("Drop left the publication")
	}
	after := identities(t, sc)
	for name, was := range before {
		if after[name] != was {
			t.Errorf("%s: replica identity %q after Drop, %q before Start", name, after[name], was)
		}
	}
	// The chunks made during the migration have their hypertable's identity.
	rows, _ := sc.Query(ctx, `SELECT ch.oid::regclass::text, ch.relreplident::text, h.relreplident::text
FROM _timescaledb_catalog.chunk k JOIN _timescaledb_catalog.hypertable ht ON ht.id = k.hypertable_id
JOIN pg_class ch ON ch.oid = format('%I.%I', k.schema_name, k.table_name)::regclass
JOIN pg_class h ON h.oid = format('%I.%I', ht.schema_name, ht.table_name)::regclass`)
	var chunk, cri, hri string
	n := 0
	if _, err := pgx.ForEachRow(rows, []any{&chunk, &cri, &hri}, func() error {
		n++
		if cri != hri {
			t.Errorf("chunk %s: replica identity %s after Drop, its hypertable's %s", chunk, cri, hri)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(after) <= len(before) || n == 0 {
		t.Errorf("no chunk was made during the migration (%d tables before, %d after)", len(before), len(after))
	}
	if err := Drop(ctx, p.source, s.Names, s.Identity); err != nil {
		t.Errorf("Drop again: %v", err)
	}
	// The receiver that streamed from the slot stops, saying why.
	testenv.Eventually(t, 2*time.Minute, func() error {
		select {
		case err := <-rdone:
			t.Logf("the receiver stopped: %v", err)
			return nil
		default:
			return fmt.Errorf("the receiver still runs after its slot was dropped: %+v", r.Status())
		}
	})
}

// TestReceiverIdleSourceCuts: while the source writes nothing, the replication
// connection is cut more times than the receiver's budget of failures in a row: each
// session streamed, so none counts as a failure, and the receiver goes on.
func TestReceiverIdleSourceCuts(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	p := newLivePair(t, srv)
	ctx := context.Background()
	s := p.start(t)
	s.Close(ctx)
	proxy := testenv.StartProxy(t, srv)
	r := &Receiver{Source: mustParse(t, "source", proxy.URI(t, srv.SuperURI(p.src))), Target: p.target}
	alive := runReceiver(t, r)
	sc := dbConn(t, srv, p.src)
	cuts := maxReconnects + 2
	for i := range cuts {
		testenv.Eventually(t, 2*time.Minute, func() error {
			alive()
			if st := r.Status(); st.Reconnects != i {
				return fmt.Errorf("receiver %+v, want %d reconnects", st, i)
			}
			// The walsender of this session, not the one of the session cut before,
			// which the server may not have ended yet.
			if port := walsenderPort(t, sc, s.Slot); !proxy.CutPort(port) {
				return fmt.Errorf("the walsender's connection (port %d) is not open through the proxy", port)
			}
			return nil
		})
	}
	testenv.MustExec(t, srv, p.src, `UPDATE docs SET title = 'after the cuts' WHERE id = 1`)
	testenv.Eventually(t, 2*time.Minute, func() error {
		alive()
		if st := r.Status(); st.Reconnects != cuts || st.ReceivedSeq == 0 {
			return fmt.Errorf("receiver %+v, want %d reconnects and the update received", st, cuts)
		}
		return nil
	})
}

// TestTargetCrashLosesNothing: the target's server crashes (its WAL writer slowed, so
// that an asynchronous commit stays in memory, as with synchronous_commit = off, which
// a target database may have from its source) right after the copy was recorded as
// done, right after the receiver told the slot what it kept, and right after the
// applier applied the end marker: nothing the slot was told of, nor the copy's end,
// nor the end reached, is lost.
func TestTargetCrashLosesNothing(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	tsrv := testenv.Need(t, testenv.PG17TS, testenv.Options{Settings: map[string]string{"wal_writer_delay": "10s"}})
	ctx := context.Background()
	src, dst := testenv.NewDB(t, srv, true), testenv.NewDB(t, tsrv, false)
	testenv.MustExec(t, srv, src, `CREATE TABLE p (id int PRIMARY KEY, t text)`)
	testenv.MustExec(t, tsrv, dst, `CREATE TABLE p (id int PRIMARY KEY, t text)`, `ALTER DATABASE `+dst+` SET synchronous_commit = off`)
	source, target := mustParse(t, "source", srv.SuperURI(src)), mustParse(t, "target", tsrv.SuperURI(dst))
	s := startOn(t, source, target, Options{Names: NewNames()})
	s.Close(ctx)
	r := &Receiver{Source: source, Target: target, OnRetry: func(n int, err error) { t.Logf("receiver retry %d: %v", n, err) }}
	alive := runReceiver(t, r)
	sc := dbConn(t, srv, src)
	crash := func() {
		t.Helper()
		tsrv.Kill()
		// Until the killed backends are gone, the new postmaster refuses to start
		// ("pre-existing shared memory block is still in use").
		testenv.Eventually(t, time.Minute, func() error { return tsrv.Restart(ctx) })
	}
	// The copy recorded as done, then a crash: a resumed run must still know.
	mc := dbConn(t, tsrv, dst)
	if err := MarkCopied(ctx, mc); err != nil {
		t.Fatal(err)
	}
	crash()
	const rounds = 3
	for i := 1; i <= rounds; i++ {
		testenv.MustExec(t, srv, src, fmt.Sprintf(`INSERT INTO p VALUES (%d, 'x')`, i))
		var end string
		if err := sc.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&end); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 2*time.Minute, func() error {
			alive()
			if n := queryInt(t, sc, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND confirmed_flush_lsn >= $2::pg_lsn`, s.Slot, end); n == 0 {
				return fmt.Errorf("the slot was not told of the insert of round %d: receiver %+v", i, r.Status())
			}
			return nil
		})
		crash()
	}
	if _, err := EmitEndMarker(ctx, source, s.Slot); err != nil {
		t.Fatal(err)
	}
	actx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	ap := &Applier{Target: target, End: s.Slot}
	if err := ap.Run(actx); err != nil {
		t.Fatalf("apply: %v (receiver %+v)", err, r.Status())
	}
	crash()
	tc := dbConn(t, tsrv, dst)
	st, err := ReadState(ctx, tc)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Copied {
		t.Error("after the crash the target no longer records the copy as done")
	}
	if want := ap.Status(); st.AppliedSeq != want.AppliedSeq || !want.ReachedEnd {
		t.Errorf("after the crash the target says applied up to %d, the applier had reached the end at %d (%+v)", st.AppliedSeq, want.AppliedSeq, want)
	}
	if n := queryInt(t, tc, `SELECT count(*) FROM p`); n != rounds {
		t.Errorf("the target holds %d of the %d rows inserted on the source", n, rounds)
	}
}
