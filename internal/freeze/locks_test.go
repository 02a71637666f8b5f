package freeze_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/freeze"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// rogue is a session that connects after the freeze and turns the read-only default
// off, as the freeze says it cannot stop.
func (f *fixture) rogue(t *testing.T) *pgx.Conn {
	t.Helper()
	c := f.session(t)
	if _, err := c.Exec(context.Background(), "SET default_transaction_read_only = off"); err != nil {
		t.Fatal(err)
	}
	return c
}

// background runs statements on c one after the other in a goroutine, as psql does
// with "UPDATE ...; BEGIN; SELECT 1", and returns the first error, or nil, when done.
func background(c *pgx.Conn, statements ...string) <-chan error {
	done := make(chan error, 1)
	go func() {
		for _, q := range statements {
			if _, err := c.Exec(context.Background(), q); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	return done
}

// waitForLockWaits waits until n sessions of the application "app" wait for a lock.
func (f *fixture) waitForLockWaits(t *testing.T, n int) {
	t.Helper()
	c := f.session(t)
	for i := 0; ; i++ {
		var waiting int
		if err := c.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = 'app' AND wait_event_type = 'Lock'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting >= n {
			return
		}
		if i == 100 {
			t.Fatalf("%d of %d writers wait for a lock after 10 s: they were not stopped", waiting, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// values reads what the writers of these tests change.
func (f *fixture) values(t *testing.T) string {
	t.Helper()
	var s string
	if err := f.session(t).QueryRow(context.Background(),
		`SELECT (SELECT string_agg(a::text, ',' ORDER BY a) FROM t) || ' / ' || (SELECT n FROM counter)`).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// The two writers the write counters did not see (issue 10, I.3), after a deferred
// freeze, while the database is read: a procedure that updates rows and commits in a
// loop, and "UPDATE ...; BEGIN; SELECT 1" left idle in its transaction. Both turned the
// read-only default off. Neither may write while the database is read: they wait for
// the freeze's locks, and their statements are cancelled when the proof ends; the proof
// holds, and the rows are what they were. PostgreSQL 15 and 17.
func TestDeferredProofStopsUnflushedWriters(t *testing.T) {
	for _, k := range kinds {
		t.Run(string(k), func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t, k, false)
			testenv.MustExec(t, f.srv, f.db, "INSERT INTO t VALUES (1), (2), (3)",
				"CREATE TABLE counter (n int)", "INSERT INTO counter VALUES (0)",
				`CREATE PROCEDURE bump() LANGUAGE plpgsql AS $$
				BEGIN
					FOR i IN 1..600 LOOP
						UPDATE counter SET n = n + 1;
						COMMIT;
						PERFORM pg_sleep(0.05);
					END LOOP;
				END$$`)
			before := f.values(t)
			res, err := freeze.Freeze(ctx, f.src, freeze.Options{DeferProof: true, ProofWindow: freeze.MinProofWindow})
			if err != nil {
				t.Fatal(err)
			}
			defer res.Pending.Release()
			loop := background(f.rogue(t), "CALL bump()")
			idle := background(f.rogue(t), "UPDATE t SET a = a + 10 WHERE a = 1", "BEGIN", "SELECT 1")
			f.waitForLockWaits(t, 2)
			if got := f.values(t); got != before {
				t.Fatalf("rows written while the database is read: %s, were %s", got, before)
			}
			p, err := res.Pending.Finish(ctx)
			if got := f.values(t); err == nil && got != before {
				t.Fatalf("the proof holds, yet the rows changed: %s, were %s", got, before)
			}
			if err != nil {
				t.Fatalf("nothing was written, yet: %v", err)
			}
			for name, done := range map[string]<-chan error{"the procedure": loop, "the idle transaction's update": idle} {
				select {
				case err := <-done:
					if sqlState(err) != "57014" {
						t.Errorf("%s: %v, want it cancelled (57014)", name, err)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("%s still runs after the proof", name)
				}
			}
			if got := f.values(t); got != before {
				t.Fatalf("rows changed after the proof: %s, were %s", got, before)
			}
			if p.TablesLocked < 2 || !strings.Contains(strings.Join(p.LockNotes, "\n"), "waited to write public.counter") ||
				!strings.Contains(strings.Join(p.LockNotes, "\n"), "waited to write public.t") {
				t.Errorf("proof %+v", p)
			}
			mustReadOnly(t, f)
		})
	}
}

// A session that turned read-only off and holds a write lock in an open transaction
// when the freeze locks the tables is ended after the grace period (its write rolled
// back), like a session from before the freeze; with NoTerminate the freeze waits for
// it, and fails and is undone when it does not let go in time.
func TestFreezeEndsWriteLockHolders(t *testing.T) {
	for _, noTerminate := range []bool{false, true} {
		t.Run(map[bool]string{false: "terminate", true: "no-terminate"}[noTerminate], func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t, testenv.PG17TS, false)
			testenv.MustExec(t, f.srv, f.db, "INSERT INTO t VALUES (1)")
			var holder *pgx.Conn
			opt := freeze.Options{DeferProof: true, ProofWindow: freeze.MinProofWindow, Grace: time.Second,
				NoTerminate: noTerminate, WaitTimeout: 2 * time.Second,
				OnEvent: func(e freeze.Event) {
					if e.Type == freeze.EventFrozen {
						holder = f.rogue(t)
						if _, err := holder.Exec(ctx, "BEGIN; UPDATE t SET a = 2"); err != nil {
							t.Error(err)
						}
					}
				}}
			res, err := freeze.Freeze(ctx, f.src, opt)
			if noTerminate {
				if !errors.Is(err, freeze.ErrSessionsRemain) || !strings.Contains(err.Error(), "write locks") ||
					!strings.Contains(err.Error(), "the freeze was undone") {
					t.Fatalf("got %v, want the freeze undone for a session holding write locks", err)
				}
				mustWritable(t, f)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer res.Pending.Release()
			if s := find(res.Sessions, pid(holder)); s == nil || s.Outcome != "ended" {
				t.Fatalf("the session holding a write lock: %+v", res.Sessions)
			}
			var a int
			if err := f.session(t).QueryRow(ctx, "SELECT a FROM t").Scan(&a); err != nil || a != 1 {
				t.Fatalf("a = %d (%v): its write was not rolled back", a, err)
			}
			if _, err := res.Pending.Finish(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// guardPID is the backend that holds the freeze's locks on table t, once one does
// (waiting up to 10 s).
func (f *fixture) guardPID(t *testing.T) int32 {
	t.Helper()
	c := f.session(t)
	for i := 0; ; i++ {
		var p int32
		err := c.QueryRow(context.Background(), `SELECT pid FROM pg_locks
			WHERE relation = 't'::regclass AND mode = 'ShareLock' AND granted`).Scan(&p)
		if err == nil {
			return p
		}
		if !errors.Is(err, pgx.ErrNoRows) || i == 100 {
			t.Fatalf("no session holds a SHARE lock on t: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A statement that asks for an ACCESS EXCLUSIVE lock on a locked table (here ALTER
// TABLE, by a session that turned read-only off) would wait for the freeze's locks, and
// every reader of the table after it (the copy) would wait behind it: it is cancelled,
// readers go on, and the proof says so.
func TestFreezeLocksCancelExclusiveWaiter(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, testenv.PG17TS, false)
	res, err := freeze.Freeze(ctx, f.src, freeze.Options{DeferProof: true, ProofWindow: freeze.MinProofWindow})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Pending.Release()
	alter := background(f.rogue(t), "ALTER TABLE t ADD COLUMN b int")
	f.waitForLockWaits(t, 1)
	read := background(f.session(t), "SELECT count(*) FROM t")
	for name, done := range map[string]<-chan error{"ALTER TABLE": alter, "the reader": read} {
		select {
		case err := <-done:
			if want := map[string]string{"ALTER TABLE": "57014", "the reader": ""}[name]; sqlState(err) != want {
				t.Errorf("%s: %v, want %q", name, err, want)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("%s still waits", name)
		}
	}
	p, err := res.Pending.Finish(ctx)
	if err != nil || !strings.Contains(strings.Join(p.LockNotes, "\n"), "asked for an ACCESS EXCLUSIVE lock on public.t") {
		t.Fatalf("proof %+v: %v", p, err)
	}
}

// When the session holding the locks is lost (ended here; a cut connection alike), the
// locks are taken again. A session that wrote meanwhile and stayed in a transaction,
// whose write no counter shows, fails the proof; with nobody busy meanwhile, the proof
// holds and says when the locks were not held.
func TestFreezeLockLapse(t *testing.T) {
	for _, write := range []bool{true, false} {
		t.Run(map[bool]string{true: "write", false: "quiet"}[write], func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t, testenv.PG17TS, false)
			testenv.MustExec(t, f.srv, f.db, "INSERT INTO t VALUES (1)")
			res, err := freeze.Freeze(ctx, f.src, freeze.Options{DeferProof: true, ProofWindow: freeze.MinProofWindow})
			if err != nil {
				t.Fatal(err)
			}
			defer res.Pending.Release()
			guard := f.guardPID(t)
			testenv.MustExec(t, f.srv, f.db, fmt.Sprintf("SELECT pg_terminate_backend(%d, 5000)", guard))
			if write {
				c := f.rogue(t)
				for _, q := range []string{"UPDATE t SET a = 2", "BEGIN", "SELECT 1"} {
					if _, err := c.Exec(ctx, q); err != nil {
						t.Fatal(err)
					}
				}
			}
			if f.guardPID(t) == guard { // wait until the locks are held again
				t.Fatal("the ended session still holds the locks")
			}
			p, err := res.Pending.Finish(ctx)
			if !write {
				if err != nil || !strings.Contains(strings.Join(p.LockNotes, "\n"), "were not held from") {
					t.Fatalf("proof %+v: %v", p, err)
				}
				return
			}
			if !errors.Is(err, freeze.ErrNotProven) || !strings.Contains(err.Error(), "locks were not held from") ||
				!strings.Contains(err.Error(), "idle in transaction") {
				t.Fatalf("a write while the locks were not held: %v", err)
			}
		})
	}
}

// A resumed migration's proof (a baseline restored by another process) holds the locks
// again (Hold): the time between the first process's end and Hold counts as a time
// without them, so a write then by a session that stays in its transaction fails the
// proof, though no counter shows it yet.
func TestRestoredProofHoldsLocks(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, testenv.PG17TS, false)
	testenv.MustExec(t, f.srv, f.db, "INSERT INTO t VALUES (1)")
	data := deferredFreeze(t, f.src)
	c := f.rogue(t)
	for _, q := range []string{"UPDATE t SET a = 2", "BEGIN", "SELECT 1"} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	p := restore(t, f.src, data)
	if err := p.Hold(ctx); err != nil {
		t.Fatal(err)
	}
	defer p.Release()
	waiting := background(f.rogue(t), "UPDATE t SET a = 3")
	f.waitForLockWaits(t, 1) // the write waits
	if _, err := p.Finish(ctx); !errors.Is(err, freeze.ErrNotProven) || !strings.Contains(err.Error(), "ended before its proof") {
		t.Fatalf("a write before Hold by a session still in its transaction: %v", err)
	}
	// A failed proof lets writes go (the source is to be unfrozen): the waiting one too.
	if err := <-waiting; err != nil {
		t.Fatalf("the write that waited: %v", err)
	}
}

// What the locks cannot stop, by a session that turned read-only off and then stays in
// a transaction (so that no counter shows it): an object created, one commented on (a
// comment on a locked table waits for the locks, as a write does), a sequence moved, a
// large object written or cut short (its pages are rows of pg_largeobject, which the
// freeze may not lock: reading a large object takes the lock a write does).
// Each fails the proof, named (PostgreSQL 15 and 17).
func TestDeferredProofSeesCatalogAndSequences(t *testing.T) {
	for _, k := range kinds {
		for _, tc := range []struct{ name, sql, want string }{
			{"create", "CREATE TABLE late (a int)", "the catalog changed"},
			{"comment", "COMMENT ON SCHEMA public IS 'late'", "the catalog changed"},
			{"nextval", "SELECT nextval('s')", "a sequence moved"},
			{"lo_put", "SELECT lo_put(4242, 1, 'x')", "the catalog changed"},
			{"lo_truncate", "SELECT lo_truncate(lo_open(4242, 131072), 2048)", "the catalog changed"},
		} {
			t.Run(string(k)+"/"+tc.name, func(t *testing.T) {
				ctx := context.Background()
				f := newFixture(t, k, false)
				testenv.MustExec(t, f.srv, f.db, "CREATE SEQUENCE s", "SELECT lo_from_bytea(4242, decode(repeat('ab', 3000), 'hex'))")
				res, err := freeze.Freeze(ctx, f.src, freeze.Options{DeferProof: true, ProofWindow: freeze.MinProofWindow})
				if err != nil {
					t.Fatal(err)
				}
				defer res.Pending.Release()
				c := f.rogue(t)
				for _, q := range []string{tc.sql, "BEGIN", "SELECT 1"} {
					if _, err := c.Exec(ctx, q); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := res.Pending.Finish(ctx); !errors.Is(err, freeze.ErrNotProven) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("got %v, want the proof failed: %s", err, tc.want)
				}
			})
		}
	}
}

// A freezing role that is not a superuser (the database's owner, allowed to store the
// freeze's record) may neither lock a table another role owns (nor TimescaleDB's
// catalog) nor read pg_largeobject: the freeze says so in CannotStop, naming the user's
// tables first, and locks the rest.
func TestFreezeSaysWhatItCannotLock(t *testing.T) {
	ctx := context.Background()
	srv := testenv.Shared(t, testenv.PG17TS)
	db, uri := testenv.NewOwnerDB(t, srv)
	role := strings.TrimSuffix(db, "_db")
	testenv.MustExec(t, srv, db, "GRANT SET ON PARAMETER tsmigrate.freeze_record TO "+role, "CREATE TABLE theirs (a int)")
	src := testenv.Config(t, "source", uri)
	t.Cleanup(func() { freeze.Unfreeze(context.Background(), src) })
	if _, err := testenv.Connect(t, uri).Exec(ctx, "CREATE TABLE mine (a int); SELECT lo_from_bytea(0, 'abc')"); err != nil {
		t.Fatal(err)
	}
	res, err := freeze.Freeze(ctx, src, freeze.Options{DeferProof: true, ProofWindow: freeze.MinProofWindow})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Pending.Release()
	said := strings.Join(res.CannotStop, "\n")
	if !strings.Contains(said, "table(s) the freezing role may not lock (it needs UPDATE, DELETE, TRUNCATE or MAINTAIN on them): public.theirs, _timescaledb_catalog.") ||
		!strings.Contains(said, "may not read the catalog(s) pg_largeobject") {
		t.Fatalf("cannot stop:\n%s", said)
	}
	p, err := res.Pending.Finish(ctx)
	if err != nil || p.TablesLocked != 1 {
		t.Fatalf("proof %+v: %v", p, err)
	}
}

// A transaction id taken elsewhere on the server during the read (another database's
// write, an autovacuum's ANALYZE) makes Finish wait for the database's sessions to
// flush their counts, up to the flush horizon (10 s and more). The session that holds
// the freeze's locks is the freeze's own and never writes: it is not waited for, so
// with no other session in the database Finish does not wait.
func TestDeferredProofDoesNotWaitForItsLocks(t *testing.T) {
	f := newFixture(t, testenv.PG15, false)
	ctx := context.Background()
	res, err := freeze.Freeze(ctx, f.src, freeze.Options{DeferProof: true, ProofWindow: freeze.MinProofWindow})
	if err != nil {
		t.Fatal(err)
	}
	other := testenv.NewDB(t, f.srv, false)
	testenv.MustExec(t, f.srv, other, "CREATE TABLE elsewhere (a int)", "INSERT INTO elsewhere VALUES (1)")
	t0 := time.Now()
	p, err := res.Pending.Finish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(t0); took >= 10*time.Second || p.Samples != 3 || p.TablesLocked == 0 {
		t.Fatalf("proof %+v took %s; want a third sample at once, without waiting for the locks' session", p, took)
	}
}
