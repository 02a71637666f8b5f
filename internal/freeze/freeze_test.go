package freeze_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/freeze"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var kinds = []testenv.Kind{testenv.PG17TS, testenv.PG15}

// fixture is one fresh database with a table t(a int), on a shared server.
type fixture struct {
	srv *testenv.Server
	db  string
	src *dbconn.Config
}

func newFixture(t *testing.T, k testenv.Kind, withTS bool) *fixture {
	t.Helper()
	srv := testenv.Shared(t, k)
	db := testenv.NewDB(t, srv, withTS)
	testenv.MustExec(t, srv, db, "CREATE TABLE t (a int)")
	src, err := dbconn.Parse("source", srv.URI(db))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		freeze.Unfreeze(ctx, src)
	})
	return &fixture{srv: srv, db: db, src: src}
}

// session is another client of the database, as an application would be.
func (f *fixture) session(t *testing.T) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, f.srv.SuperURI(f.db)+"&application_name=app")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// writing is a session idle in a transaction that has written a row (a = 1).
func (f *fixture) writing(t *testing.T) *pgx.Conn {
	t.Helper()
	c := f.session(t)
	if _, err := c.Exec(context.Background(), "BEGIN; INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	return c
}

func pid(c *pgx.Conn) uint32 { return c.PgConn().PID() }

// writeFromNewSession writes from a session that connects now: it creates a table,
// which the read-only default refuses at once (an INSERT into t would first wait for
// the locks a deferred proof holds).
func (f *fixture) writeFromNewSession(t *testing.T) error {
	t.Helper()
	c := f.session(t)
	_, err := c.Exec(context.Background(), "CREATE TEMPORARY TABLE probe AS SELECT 42 AS a")
	return err
}

func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

func mustReadOnly(t *testing.T, f *fixture) {
	t.Helper()
	if err := f.writeFromNewSession(t); sqlState(err) != "25006" {
		t.Fatalf("a write from a new session after the freeze: got %v, want SQLSTATE 25006 (read-only transaction)", err)
	}
}

func mustWritable(t *testing.T, f *fixture) {
	t.Helper()
	if err := f.writeFromNewSession(t); err != nil {
		t.Fatalf("a write from a new session: %v", err)
	}
}

func status(t *testing.T, f *fixture) *freeze.State {
	t.Helper()
	st, err := freeze.Status(context.Background(), f.src)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func find(list []freeze.Session, pid uint32) *freeze.Session {
	for i := range list {
		if list[i].PID == pid {
			return &list[i]
		}
	}
	return nil
}

// events collects Freeze's events; a test waits for one with wait.
type events struct {
	mu   sync.Mutex
	list []freeze.Event
	ch   chan freeze.Event
}

func newEvents() *events { return &events{ch: make(chan freeze.Event, 1000)} }

func (e *events) on(ev freeze.Event) {
	e.mu.Lock()
	e.list = append(e.list, ev)
	e.mu.Unlock()
	select {
	case e.ch <- ev:
	default:
	}
}

// next returns the next event of kind, or false after 30 s. Safe in any goroutine.
func (e *events) next(kind freeze.EventType) (freeze.Event, bool) {
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev := <-e.ch:
			if ev.Type == kind {
				return ev, true
			}
		case <-timeout:
			return freeze.Event{}, false
		}
	}
}

func (e *events) wait(t *testing.T, kind freeze.EventType) freeze.Event {
	t.Helper()
	ev, ok := e.next(kind)
	if !ok {
		t.Fatalf("no %s event within 30 s", kind)
	}
	return ev
}

// A session idle in a write transaction from before the freeze is ended after the
// grace, its write is lost to it, new sessions cannot write, the proof holds, and
// unfreeze gives writes back.
func TestFreezeEndsSessionsThenUnfreeze(t *testing.T) {
	for _, k := range kinds {
		t.Run(string(k), func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t, k, k == testenv.PG17TS)
			holder := f.writing(t)
			idle := f.session(t)
			var scheduler uint32
			if k == testenv.PG17TS {
				scheduler = schedulerPID(t, f, true)
			}

			start := time.Now()
			res, err := freeze.Freeze(ctx, f.src, freeze.Options{Grace: 500 * time.Millisecond, ProofWindow: freeze.MinProofWindow})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("freeze took %s; proof: %+v", time.Since(start).Round(time.Millisecond), res.Proof)

			h := find(res.Sessions, pid(holder))
			if h == nil || h.Outcome != "ended" || h.XID == "" || h.State != "idle in transaction" {
				t.Fatalf("the session idle in a write transaction: got %+v, want it listed as ended, holding a transaction id", h)
			}
			if s := find(res.Sessions, pid(idle)); s == nil || s.Outcome != "ended" {
				t.Fatalf("the idle session from before the freeze: got %+v, want ended", s)
			}
			if _, err := holder.Exec(ctx, "COMMIT"); err == nil {
				t.Fatal("the ended session could still commit")
			}
			if res.Proof.XIDHolders != 0 || res.Proof.WindowSeconds < 1.4 || !res.Proof.CountersTracked {
				t.Fatalf("proof: %+v", res.Proof)
			}
			if len(res.CannotStop) < 2 || !strings.Contains(res.CannotStop[0], "SET default_transaction_read_only = off") {
				t.Fatalf("cannot stop: %q", res.CannotStop)
			}
			mustReadOnly(t, f)

			// Freeze's own connection, opened before the freeze, is closed when it
			// returns, but its server process may take a moment to go (seen once under
			// the load of the whole test run): give sessions from before 5 s to be gone.
			var st *freeze.State
			testenv.Eventually(t, 5*time.Second, func() error {
				if st = status(t, f); len(st.SessionsFromBefore) > 0 {
					return fmt.Errorf("sessions from before the freeze: %v", st.SessionsFromBefore)
				}
				return nil
			})
			if !st.Frozen || !st.Intact || st.ID != res.ID || !st.Since.Equal(res.Since) || len(st.SessionsFromBefore) != 0 {
				t.Fatalf("status after freeze: %+v (freeze id %s)", st, res.ID)
			}

			_, err = freeze.Freeze(ctx, f.src, freeze.Options{})
			if !errors.Is(err, freeze.ErrAlreadyFrozen) || !strings.Contains(err.Error(), res.ID) {
				t.Fatalf("freezing again: got %v, want already frozen naming %s", err, res.ID)
			}
			if st := status(t, f); st.ID != res.ID {
				t.Fatalf("freezing again overwrote the record: %+v", st)
			}

			un, err := freeze.Unfreeze(ctx, f.src)
			if err != nil {
				t.Fatal(err)
			}
			if !un.WasFrozen || un.ID != res.ID {
				t.Fatalf("unfreeze: %+v", un)
			}
			mustWritable(t, f)
			var n int
			f.session(t).QueryRow(ctx, "SELECT count(*) FROM t WHERE a = 1").Scan(&n)
			if n != 0 {
				t.Fatal("the ended session's uncommitted row is in the table")
			}
			if k == testenv.PG17TS {
				if !un.SchedulerRestarted {
					t.Fatalf("unfreeze did not restart the TimescaleDB scheduler that the freeze ended: %+v", un)
				}
				if s := find(res.Sessions, scheduler); s == nil || s.Outcome != "ended" {
					t.Fatalf("the TimescaleDB scheduler from before the freeze: got %+v, want ended", s)
				}
				if now := schedulerPID(t, f, true); now == scheduler {
					t.Fatal("the scheduler running after unfreeze is the one from before")
				}
			}

			again, err := freeze.Unfreeze(ctx, f.src)
			if err != nil || again.WasFrozen {
				t.Fatalf("second unfreeze: %+v, %v; want nothing to undo", again, err)
			}
			if st := status(t, f); st.Frozen {
				t.Fatalf("status after unfreeze: %+v", st)
			}
		})
	}
}

// schedulerPID is the pid of the database's TimescaleDB scheduler (0 if none), waiting
// up to 10 s for one when need.
func schedulerPID(t *testing.T, f *fixture, need bool) uint32 {
	t.Helper()
	c := f.session(t)
	var p uint32
	read := func() error {
		p = 0
		c.QueryRow(context.Background(), `SELECT pid FROM pg_stat_activity WHERE datname = current_database()
			AND backend_type = 'TimescaleDB Background Worker Scheduler'`).Scan(&p)
		if p == 0 {
			return errors.New("no TimescaleDB scheduler for the database")
		}
		return nil
	}
	if !need {
		read()
		return p
	}
	testenv.Eventually(t, 10*time.Second, read)
	return p
}

// With NoTerminate, a session in a write transaction from before the freeze is waited
// for; the freeze completes once it commits, and the session is named among what the
// freeze cannot stop.
func TestFreezeNoTerminateWaitsForTransaction(t *testing.T) {
	for _, k := range kinds {
		t.Run(string(k), func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t, k, false)
			holder := f.writing(t)
			ev := newEvents()
			type out struct {
				res *freeze.Result
				err error
			}
			done := make(chan out, 1)
			go func() {
				res, err := freeze.Freeze(ctx, f.src, freeze.Options{NoTerminate: true, WaitTimeout: 30 * time.Second,
					ProofWindow: freeze.MinProofWindow, OnEvent: ev.on})
				done <- out{res, err}
			}()
			w := ev.wait(t, freeze.EventWaiting)
			if s := find(w.Sessions, pid(holder)); s == nil || s.XID == "" {
				t.Fatalf("waiting event: %+v, want the holder with its transaction id", w.Sessions)
			}
			mustReadOnly(t, f) // in place while it waits
			if _, err := holder.Exec(ctx, "COMMIT"); err != nil {
				t.Fatal(err)
			}
			o := <-done
			if o.err != nil {
				t.Fatal(o.err)
			}
			t.Logf("proof: %+v", o.res.Proof)
			if s := find(o.res.Sessions, pid(holder)); s == nil || s.Outcome != "waited" {
				t.Fatalf("sessions: %+v, want the holder as waited", o.res.Sessions)
			}
			if !strings.Contains(strings.Join(o.res.CannotStop, "\n"), fmt.Sprintf("pid %d", pid(holder))) {
				t.Fatalf("cannot stop does not name the waited session: %q", o.res.CannotStop)
			}
			var n int
			if err := holder.QueryRow(ctx, "SELECT count(*) FROM t WHERE a = 1").Scan(&n); err != nil || n != 1 {
				t.Fatalf("the waited session's row: %d, %v", n, err)
			}
			mustReadOnly(t, f)
			if st := status(t, f); !st.Intact || len(st.SessionsFromBefore) != 1 {
				t.Fatalf("status: %+v, want intact and the waited session listed", st)
			}
			if _, err := freeze.Unfreeze(ctx, f.src); err != nil {
				t.Fatal(err)
			}
			mustWritable(t, f)
		})
	}
}

// With NoTerminate, a transaction that outlives the wait makes the freeze fail naming
// it, and the freeze is undone.
func TestFreezeNoTerminateTimeoutUndoes(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, testenv.PG15, false)
	holder := f.writing(t)
	ev := newEvents()
	_, err := freeze.Freeze(ctx, f.src, freeze.Options{NoTerminate: true, WaitTimeout: time.Second, OnEvent: ev.on})
	if !errors.Is(err, freeze.ErrSessionsRemain) {
		t.Fatalf("got %v, want sessions remain", err)
	}
	msg := err.Error()
	for _, want := range []string{fmt.Sprintf("pid %d", pid(holder)), "transaction id", `application "app"`, "t (RowExclusiveLock)", "the freeze was undone"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not say %q", msg, want)
		}
	}
	if !slices.ContainsFunc(ev.list, func(e freeze.Event) bool { return e.Type == freeze.EventUndone }) {
		t.Error("no undone event")
	}
	if st := status(t, f); st.Frozen {
		t.Fatalf("status after the failed freeze: %+v", st)
	}
	mustWritable(t, f)
	if _, err := holder.Exec(ctx, "COMMIT"); err != nil {
		t.Fatalf("the waited-for session was disturbed: %v", err)
	}
}

// A database-level default_transaction_read_only set before the freeze comes back
// on unfreeze; none set means none after.
func TestUnfreezeRestoresPreviousSetting(t *testing.T) {
	for _, k := range kinds {
		t.Run(string(k), func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t, k, false)
			for _, prev := range []string{"off", "", "on"} {
				if prev != "" {
					testenv.MustExec(t, f.srv, "postgres", fmt.Sprintf("ALTER DATABASE %s SET default_transaction_read_only = %s", f.db, prev))
				}
				res, err := freeze.Freeze(ctx, f.src, freeze.Options{ProofWindow: freeze.MinProofWindow})
				if err != nil {
					t.Fatalf("previous %q: %v", prev, err)
				}
				if got := deref(res.PreviousReadOnly); got != prev {
					t.Fatalf("previous %q: result says %q", prev, got)
				}
				if st := status(t, f); st.ReadOnly != "on" || deref(st.PreviousReadOnly) != prev {
					t.Fatalf("previous %q: status %+v", prev, st)
				}
				un, err := freeze.Unfreeze(ctx, f.src)
				if err != nil {
					t.Fatal(err)
				}
				if st := status(t, f); un.ReadOnly != prev || st.ReadOnly != prev || st.Frozen {
					t.Fatalf("previous %q: after unfreeze %+v, status %+v", prev, un, st)
				}
				testenv.MustExec(t, f.srv, "postgres", fmt.Sprintf("ALTER DATABASE %s RESET default_transaction_read_only", f.db))
			}
		})
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// A role that must not store the record (here: the owner of the database, not a
// superuser, without GRANT SET ON PARAMETER) is refused with the grant to run, and
// nothing changes.
func TestFreezeWithoutPermissionChangesNothing(t *testing.T) {
	srv := testenv.Need(t, testenv.PG15, testenv.Options{Managed: true})
	src, err := dbconn.Parse("source", srv.URI(testenv.ManagedDB))
	if err != nil {
		t.Fatal(err)
	}
	_, err = freeze.Freeze(context.Background(), src, freeze.Options{})
	if err == nil || !strings.Contains(err.Error(), "GRANT SET ON PARAMETER tsmigrate.freeze_record TO tsdbadmin") ||
		!strings.Contains(err.Error(), "SQLSTATE 42501") {
		t.Fatalf("got %v, want permission denied with the grant to run", err)
	}
	st, err := freeze.Status(context.Background(), src)
	if err != nil || st.Frozen || st.ReadOnly != "" {
		t.Fatalf("status: %+v, %v; want nothing changed", st, err)
	}
}

// A writer the freeze cannot stop (a session that turned the read-only default off)
// keeps the proof from holding: the freeze fails and is undone.
func TestFreezeProofCatchesWriter(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, testenv.PG17TS, false)
	ev := newEvents()
	stop := make(chan struct{})
	writerDone := make(chan error, 1)
	go func() {
		if _, ok := ev.next(freeze.EventFrozen); !ok {
			writerDone <- errors.New("no frozen event")
			return
		}
		c, err := pgx.Connect(ctx, f.srv.SuperURI(f.db)+"&options=-c%20default_transaction_read_only%3Doff")
		if err != nil {
			writerDone <- err
			return
		}
		defer c.Close(ctx)
		for {
			select {
			case <-stop:
				writerDone <- nil
				return
			default:
			}
			if _, err := c.Exec(ctx, "INSERT INTO t VALUES (7)"); err != nil {
				writerDone <- err
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	start := time.Now()
	_, err := freeze.Freeze(ctx, f.src, freeze.Options{ProofWindow: freeze.MinProofWindow, OnEvent: ev.on})
	t.Logf("gave up after %s", time.Since(start).Round(time.Millisecond))
	close(stop)
	if werr := <-writerDone; werr != nil {
		t.Fatalf("writer: %v", werr)
	}
	if !errors.Is(err, freeze.ErrNotProven) || !strings.Contains(err.Error(), "the freeze was undone") {
		t.Fatalf("got %v, want not proven, undone", err)
	}
	t.Log(err)
	if st := status(t, f); st.Frozen {
		t.Fatalf("status: %+v", st)
	}
}

// Cancelling the context while the freeze waits (Ctrl-C, SIGTERM) undoes the freeze.
func TestFreezeCancelledUndoes(t *testing.T) {
	f := newFixture(t, testenv.PG15, false)
	f.writing(t)
	ctx, cancel := context.WithCancel(context.Background())
	ev := newEvents()
	go func() {
		ev.next(freeze.EventWaiting)
		cancel()
	}()
	_, err := freeze.Freeze(ctx, f.src, freeze.Options{NoTerminate: true, OnEvent: ev.on})
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "the freeze was undone") {
		t.Fatalf("got %v, want cancelled and undone", err)
	}
	if st := status(t, f); st.Frozen {
		t.Fatalf("status: %+v", st)
	}
	mustWritable(t, f)
}

// An unfreeze from elsewhere while Freeze waits makes Freeze fail rather than report a
// freeze that is no longer there.
func TestFreezeNoticesUnfreezeMeanwhile(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, testenv.PG15, false)
	holder := f.writing(t)
	ev := newEvents()
	done := make(chan error, 1)
	go func() {
		_, err := freeze.Freeze(ctx, f.src, freeze.Options{NoTerminate: true, OnEvent: ev.on})
		done <- err
	}()
	ev.wait(t, freeze.EventWaiting)
	if un, err := freeze.Unfreeze(ctx, f.src); err != nil || !un.WasFrozen {
		t.Fatalf("unfreeze meanwhile: %+v, %v", un, err)
	}
	if _, err := holder.Exec(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, freeze.ErrNotProven) || !strings.Contains(err.Error(), "someone else") {
		t.Fatalf("got %v, want a failure saying the freeze was undone by someone else", err)
	}
	mustWritable(t, f)
}

// A database whose name needs quoting (mixed case, a space, non-ASCII, a quote) is
// frozen, reported and unfrozen like any other.
func TestFreezeQuotedDatabaseName(t *testing.T) {
	ctx := context.Background()
	srv := testenv.Shared(t, testenv.PG15)
	name := fmt.Sprintf(`Frost "Ä" %d`, time.Now().UnixNano()%100000)
	if err := srv.CreateDatabase(ctx, name, false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Exec(context.Background(), "postgres", "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	})
	testenv.MustExec(t, srv, name, "CREATE TABLE t (a int)")
	src, err := dbconn.Parse("source", srv.URI(name))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{srv: srv, db: name, src: src}
	t.Cleanup(func() { freeze.Unfreeze(context.Background(), src) })

	res, err := freeze.Freeze(ctx, src, freeze.Options{ProofWindow: freeze.MinProofWindow})
	if err != nil {
		t.Fatal(err)
	}
	if res.Database != name {
		t.Errorf("result names database %q, want %q", res.Database, name)
	}
	mustReadOnly(t, f)
	if st := status(t, f); !st.Intact || st.ID != res.ID {
		t.Fatalf("status: %+v", st)
	}
	if un, err := freeze.Unfreeze(ctx, src); err != nil || !un.WasFrozen {
		t.Fatalf("unfreeze: %+v, %v", un, err)
	}
	mustWritable(t, f)
}

// DeferProof: Freeze returns without a proof window, with a baseline; Finish proves
// nothing changed since, and fails, naming it, on a write committed after the baseline
// or a transaction id held. The session from before is ended first, as usual.
func TestFreezeDeferredProof(t *testing.T) {
	f := newFixture(t, testenv.PG15, false)
	ctx := context.Background()
	before := f.writing(t)
	t0 := time.Now()
	res, err := freeze.Freeze(ctx, f.src, freeze.Options{DeferProof: true, ProofWindow: freeze.MinProofWindow})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(t0); took >= freeze.MinProofWindow || res.Pending == nil || res.Proof.Samples != 0 {
		t.Fatalf("deferred freeze took %s, pending %v, proof %+v", took, res.Pending, res.Proof)
	}
	if s := find(res.Sessions, pid(before)); s == nil || s.Outcome != "ended" {
		t.Fatalf("session from before: %+v", res.Sessions)
	}
	mustReadOnly(t, f)
	p, err := res.Pending.Finish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p.WindowSeconds < freeze.MinProofWindow.Seconds()-0.05 || !p.CountersTracked || time.Since(t0) < freeze.MinProofWindow {
		t.Fatalf("proof %+v after %s", p, time.Since(t0))
	}

	// The writer stays connected and writes within a second of its first flush (at
	// connect): its counts are flushed only after 10 s idle, which Finish waits for.
	c := f.session(t)
	for _, q := range []string{"SET default_transaction_read_only = off", "INSERT INTO t VALUES (7)"} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	_, err = res.Pending.Finish(ctx)
	if !errors.Is(err, freeze.ErrNotProven) || !strings.Contains(err.Error(), "rows written moved") {
		t.Fatalf("after a write: %v", err)
	}
	if _, err := c.Exec(ctx, "BEGIN; DELETE FROM t WHERE a = 7"); err != nil {
		t.Fatal(err)
	}
	_, err = res.Pending.Finish(ctx)
	if !errors.Is(err, freeze.ErrNotProven) || !strings.Contains(err.Error(), "transaction id") {
		t.Fatalf("with a transaction id held: %v", err)
	}
	mustReadOnly(t, f)
}

// ANALYZE (autovacuum's, here a manual one) after the baseline rewrites pg_statistic and
// its TOAST table (the histogram of a text column of long values): not a write to the
// data, Finish passes. (While the freeze's locks are held, ANALYZE waits for them, and
// autovacuum skips the tables: this is a baseline restored without them.)
func TestFreezeDeferredProofIgnoresAnalyze(t *testing.T) {
	f := newFixture(t, testenv.PG15, false)
	ctx := context.Background()
	testenv.MustExec(t, f.srv, f.db, "CREATE TABLE s (v text)", "INSERT INTO s SELECT md5(g::text) FROM generate_series(1, 10000) g")
	data := deferredFreeze(t, f.src)
	if err := f.srv.Exec(ctx, f.db, "SET default_transaction_read_only = off", "ANALYZE s"); err != nil {
		t.Fatal(err)
	}
	if p, err := restore(t, f.src, data).Finish(ctx); err != nil {
		t.Fatalf("proof %+v: %v", p, err)
	}
}
