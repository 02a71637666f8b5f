package freeze

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tsmigrate/tsmigrate/internal/clock"
	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// A deferred proof (see pending.go) also stops writes while the database is read: from
// its baseline until Release, a session of its own holds a SHARE lock on every table of
// the database. Every write to a table (INSERT, UPDATE, DELETE, MERGE, COPY FROM, and
// DDL on it) first takes a ROW EXCLUSIVE or stronger lock, which SHARE lets no one have,
// whatever the writer's settings: a session that turned default_transaction_read_only
// off waits until the locks go, and so does a read-only session's write, which then
// fails as before. Reading takes ACCESS SHARE, which SHARE does not block: the dump and
// the copy go on. The write counters alone cannot prove this: a session flushes its
// counts only when it goes idle outside a transaction, so a procedure committing in a
// loop, or a session idle in a transaction after a write, hides its writes for as long
// as it stays so (measured on PostgreSQL 17: a write by a session then left idle in a
// transaction showed in no counter, and the run it escaped said MIGRATED). The WAL
// position cannot prove it either: it is the server's, and it moves without any write
// to the database (a bare pg_dump moved it by 232 bytes, an idle minute by 56).
//
// What the locks cannot stop, and how the proof still sees it:
//   - writes that create objects (CREATE TABLE, CREATE FUNCTION, ...) or move sequences:
//     they take no lock on a table; the proof's catalog digest sees them (catalog.go);
//   - materialized views, which LOCK TABLE refuses: REFRESH MATERIALIZED VIEW changes
//     the catalog, which the proof sees; CONCURRENTLY writes rows, which the counters
//     see once the session's transaction ends;
//   - tables the freezing role may not lock (it needs UPDATE, DELETE, TRUNCATE or, on
//     PostgreSQL 17, MAINTAIN on them), and chunks when there are more tables than the
//     lock table has room for beside pg_dump's own locks: CannotStop names them.
//
// A session that asks for an ACCESS EXCLUSIVE lock on a locked table (ALTER TABLE, DROP,
// TRUNCATE, VACUUM FULL, CLUSTER) would wait for the locks, and the copy's readers would
// queue behind it: the guard cancels such a statement. Where it may not, or when the
// session holding the locks is lost (a cut connection, the process killed before a
// --resume), the locks are taken again as soon as possible, and the proof fails if a
// session that was busy while they were not held stays busy through the flush horizon
// (its writes then might not show in the counters yet).

// Modes that conflict with SHARE: a session holding or waiting for one of these on a
// table writes to it (or changes it).
const writeModes = `'RowExclusiveLock', 'ShareUpdateExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock'`

// sqlLockTargets lists the tables of the database (not PostgreSQL's own, nor other
// sessions' temporary ones): whether each is an inheritance child (a chunk, a
// partition), whether this role may lock it in SHARE mode ($1: the privileges that
// allow it), and whether it is in one of TimescaleDB's schemas. Checked on PostgreSQL
// 15 and 17 with TimescaleDB 2.19.3.
var sqlLockTargets = `
SELECT c.oid, format('%I.%I', n.nspname, c.relname),
       EXISTS (SELECT FROM pg_inherits i WHERE i.inhrelid = c.oid),
       has_table_privilege(c.oid, $1), ` + sqltext.TimescaleSchema("n.nspname") + `
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT ` + sqltext.SystemSchema("n.nspname") + `
ORDER BY c.oid`

// sqlLockCapacity is how many locks the server's lock table is sized for.
const sqlLockCapacity = `SELECT current_setting('max_locks_per_transaction')::bigint *
	(current_setting('max_connections')::bigint + current_setting('max_prepared_transactions')::bigint),
	current_setting('server_version_num')::int`

// sqlWriters lists the backends that hold or wait for a lock that conflicts with SHARE
// on one of the tables $1, other than the session $2 and this one.
var sqlWriters = `
SELECT DISTINCT l.pid FROM pg_locks l
WHERE l.locktype = 'relation' AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.relation = ANY ($1::oid[]) AND l.pid <> $2 AND l.pid <> pg_backend_pid()
  AND l.mode IN (` + writeModes + `)`

// sqlExclusiveWaiters lists the backends waiting for an ACCESS EXCLUSIVE lock on one of
// the tables $1, with one of those tables.
const sqlExclusiveWaiters = `
SELECT l.pid, min((SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = l.relation)) FROM pg_locks l
WHERE NOT l.granted AND l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock'
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.relation = ANY ($1::oid[])
GROUP BY l.pid`

// lockWait is how long one attempt to lock waits for a lock: longer than the default
// deadlock_timeout (1 s), after which an autovacuum worker in the way cancels itself.
const lockWait = 2 * time.Second

// guardTick is how often the guard looks for sessions queued for ACCESS EXCLUSIVE and
// checks that its session is alive.
const guardTick = time.Second

// lockTarget is one table to lock.
type lockTarget struct {
	oid       uint32
	name      string
	child     bool
	lockable  bool
	timescale bool
}

// lockPlan is what the freeze locks, and what it leaves out and why.
type lockPlan struct {
	oids  []uint32
	names []string
	// unlockable: tables the role may not lock, the user's before TimescaleDB's;
	// chunks: inheritance children left out for the lock table's room (with the
	// capacity that made it so).
	unlockable []string
	children   int
	capacity   int64
}

// planLocks lists the tables to lock. All lockable tables, unless they are more than
// the lock table is sized for: pg_dump takes a lock on each of them too, so the roots
// only (hypertables, partitioned and plain tables), whose writes go through them.
func planLocks(ctx context.Context, q querier, all bool) (*lockPlan, error) {
	var capacity int64
	var version int
	if err := q.QueryRow(ctx, sqlLockCapacity).Scan(&capacity, &version); err != nil {
		return nil, fmt.Errorf("read the lock table's size: %w", err)
	}
	privileges := "UPDATE, DELETE, TRUNCATE"
	if version >= 170000 {
		privileges += ", MAINTAIN"
	}
	rows, _ := q.Query(ctx, sqlLockTargets, privileges)
	var targets []lockTarget
	var t lockTarget
	if _, err := pgx.ForEachRow(rows, []any{&t.oid, &t.name, &t.child, &t.lockable, &t.timescale}, func() error {
		targets = append(targets, t)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list the tables to lock: %w", err)
	}
	p := &lockPlan{capacity: capacity}
	lockable := 0
	for _, t := range targets {
		if t.lockable {
			lockable++
		}
	}
	roots := !all || int64(lockable) > capacity
	// The user's tables first in what is said, then TimescaleDB's own (which a database
	// owner that is no superuser may not lock).
	slices.SortStableFunc(targets, func(a, b lockTarget) int {
		return cmp.Compare(boolInt(a.timescale), boolInt(b.timescale))
	})
	for _, t := range targets {
		switch {
		case !t.lockable:
			p.unlockable = append(p.unlockable, t.name)
		case roots && t.child:
			p.children++
		default:
			p.oids = append(p.oids, t.oid)
			p.names = append(p.names, t.name)
		}
	}
	return p, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// cannotStop says what the locks leave out, one sentence each.
func (p *lockPlan) cannotStop() []string {
	var out []string
	if len(p.unlockable) > 0 {
		names := p.unlockable
		more := ""
		if len(names) > 5 {
			names, more = names[:5], fmt.Sprintf(" and %d more", len(p.unlockable)-5)
		}
		out = append(out, fmt.Sprintf("%d table(s) the freezing role may not lock (it needs UPDATE, DELETE, TRUNCATE or MAINTAIN on them): %s%s; a session that turns read-only off can write them during the copy, and a write of a session that stays in its transaction does not show in the proof",
			len(p.unlockable), strings.Join(names, ", "), more))
	}
	if p.children > 0 {
		out = append(out, fmt.Sprintf("%d chunk(s) or partition(s) are not locked, only their hypertables and parent tables: the lock table is sized for %d locks (max_locks_per_transaction × (max_connections + max_prepared_transactions)), and pg_dump needs one per table too; a write straight into a chunk by its own name, by a session that turns read-only off and stays in its transaction, does not show in the proof; raise max_locks_per_transaction to lock them all",
			p.children, p.capacity))
	}
	return out
}

// guard is the session that holds the freeze's locks, and the goroutine that watches
// it. Only that goroutine uses the session once it runs.
type guard struct {
	src  *dbconn.Config
	plan *lockPlan

	mu   sync.Mutex
	conn *dbconn.Conn
	// lapse: the locks are not held (since lapseFrom, the server's time), for why;
	// heldAgain: they were taken again then (after a lapse), and suspects are the
	// sessions connected at that time that may hold writes of the lapse the counters
	// do not show yet.
	lapsed    bool
	lapseFrom time.Time
	last      time.Time // the server's time when the locks were last seen held
	why       []string
	heldAgain time.Time
	suspects  map[sessionKey]Session
	cancelled []string

	stop     chan struct{}
	done     chan struct{}
	once     sync.Once
	paused   sync.Once
	released []string
}

// pid is the backend of the session holding the locks; 0 for none (nor a guard).
func (g *guard) pid() uint32 {
	if g == nil {
		return 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.conn == nil || g.conn.IsClosed() {
		return 0
	}
	return g.conn.PgConn().PID()
}

// sessionKey names a backend across pid reuse.
type sessionKey struct {
	pid   uint32
	start time.Time
}

// lockTables takes the freeze's locks after the sessions from before the freeze are
// dealt with. A session that holds or waits for a write lock on a table to lock gets
// opt.Grace to let go and is then ended, like the sessions from before (with
// NoTerminate, it is waited for up to WaitTimeout, and the freeze fails then). The
// events are EventWaiting and EventEnded, Reason saying that they hold write locks.
func lockTables(ctx context.Context, src *dbconn.Config, conn *pgx.Conn, opt Options) (*guard, []Session, error) {
	plan, err := planLocks(ctx, conn, true)
	if err != nil {
		return nil, nil, err
	}
	lconn, err := src.ConnectSession(ctx, sqlSessionSetup)
	if err != nil {
		return nil, nil, err
	}
	g := &guard{src: src, plan: plan, conn: lconn}
	ended, err := g.acquire(ctx, conn, opt, true)
	if err != nil {
		lconn.Close(context.WithoutCancel(ctx))
		return nil, nil, err
	}
	g.start()
	return g, ended, nil
}

// acquire locks the plan's tables on g.conn, in a transaction left open. With settle,
// sessions in the way are ended after opt.Grace (or waited for, NoTerminate), as the
// freeze does; without, they are only waited for, up to opt.WaitTimeout.
func (g *guard) acquire(ctx context.Context, conn *pgx.Conn, opt Options, settle bool) ([]Session, error) {
	if _, err := g.conn.Exec(ctx, "BEGIN"); err != nil {
		return nil, fmt.Errorf("lock the tables: %w", err)
	}
	start := time.Now()
	deadline := start.Add(opt.Grace)
	if opt.NoTerminate || !settle {
		deadline = start.Add(opt.WaitTimeout)
	}
	giveUp := start.Add(opt.Grace + opt.WaitTimeout)
	var ended []Session
	var told []uint32
	rootsOnly := false
	for {
		err := g.tryLock(ctx)
		if err == nil {
			err = g.conn.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&g.last)
		}
		if err == nil {
			return ended, nil
		}
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) {
			return nil, fmt.Errorf("lock the tables: %w", err)
		}
		switch pgErr.Code {
		case "55P03", "40P01": // lock_not_available (lock_timeout), deadlock_detected
		case "53200", "42P01": // out of shared memory (the lock table is full); a table dropped meanwhile
			if pgErr.Code == "53200" {
				if rootsOnly {
					return nil, fmt.Errorf("lock the tables: %w", err)
				}
				rootsOnly = true
			}
			if g.plan, err = planLocks(ctx, conn, !rootsOnly); err != nil {
				return nil, err
			}
			continue
		default:
			return nil, fmt.Errorf("lock the tables: %w", err)
		}
		writers, err := g.writers(ctx, conn)
		if err != nil {
			return nil, err
		}
		if pids := pidsOf(writers); len(writers) > 0 && !slices.Equal(pids, told) {
			opt.emit(Event{Type: EventWaiting, Sessions: writers, Deadline: deadline, Reason: "they hold or wait for write locks on tables the freeze locks"})
			told = pids
		}
		now := time.Now()
		switch {
		case now.After(giveUp) || (len(writers) > 0 && !now.Before(deadline) && (opt.NoTerminate || !settle)):
			if len(writers) == 0 {
				return nil, notProven(fmt.Sprintf("could not lock the database's tables within %s (an autovacuum to prevent wraparound, or a prepared transaction, may hold a lock)", now.Sub(start).Round(time.Second)))
			}
			return nil, &exit.Error{Code: exit.Failed, Err: ErrSessionsRemain,
				Msg:  fmt.Sprintf("%d session(s) hold write locks on tables the freeze must lock, after %s: %s", len(writers), now.Sub(start).Round(time.Second), describe(writers)),
				Hint: "let them finish, raise --wait-timeout, or drop --no-terminate to end them"}
		case len(writers) > 0 && !now.Before(deadline):
			for _, s := range writers {
				if err := terminate(ctx, conn, s); err != nil {
					return nil, err
				}
			}
			if err := waitExited(ctx, conn, writers); err != nil {
				return nil, err
			}
			opt.emit(Event{Type: EventEnded, Sessions: writers, Reason: "they held write locks on tables the freeze locks"})
			for _, s := range writers {
				s.Outcome = "ended"
				ended = append(ended, s)
			}
		}
		if err := clock.Sleep(ctx, pollInterval); err != nil {
			return nil, err
		}
	}
}

// tryLock makes one attempt to lock the plan's tables, waiting lockWait at most for
// each lock; a failed attempt keeps none of them.
func (g *guard) tryLock(ctx context.Context) error {
	if len(g.plan.oids) == 0 {
		return nil
	}
	_, err := g.conn.Exec(ctx, fmt.Sprintf("SAVEPOINT tsmigrate_lock; SET LOCAL lock_timeout = '%dms'; LOCK TABLE ONLY %s IN SHARE MODE; RELEASE SAVEPOINT tsmigrate_lock",
		lockWait.Milliseconds(), strings.Join(g.plan.names, ", ")))
	if err != nil {
		if _, rerr := g.conn.Exec(ctx, "ROLLBACK TO SAVEPOINT tsmigrate_lock"); rerr != nil {
			return fmt.Errorf("%w (and rolling back: %v)", err, rerr)
		}
	}
	return err
}

// writers lists the sessions that hold or wait for write locks on the plan's tables.
func (g *guard) writers(ctx context.Context, conn *pgx.Conn) ([]Session, error) {
	rows, _ := conn.Query(ctx, sqlWriters, g.plan.oids, int32(g.conn.PgConn().PID()))
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return nil, fmt.Errorf("list the sessions holding write locks: %w", err)
	}
	if len(pids) == 0 {
		return nil, nil
	}
	return listSessionsOf(ctx, conn, pids)
}

// start runs the guard's goroutine.
func (g *guard) start() {
	g.stop, g.done = make(chan struct{}), make(chan struct{})
	go g.run()
}

func (g *guard) run() {
	defer close(g.done)
	t := time.NewTicker(guardTick)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), guardTick+lockWait+5*time.Second)
		g.tick(ctx)
		cancel()
	}
}

// tick does one round of the guard's work: with the locks held, it cancels statements
// queued for ACCESS EXCLUSIVE on a locked table, and sees whether its session is alive;
// with them lost, it tries to take them again; after a lapse, it clears the suspects
// that have since flushed their counts.
func (g *guard) tick(ctx context.Context) {
	g.mu.Lock()
	lapsed := g.lapsed
	g.mu.Unlock()
	if lapsed {
		g.relock(ctx)
		return
	}
	var now time.Time
	if err := g.conn.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&now); err != nil {
		g.lose(time.Time{}, "the session holding them was lost ("+dbconn.Reason(err)+")")
		return
	}
	g.mu.Lock()
	g.last = now
	g.mu.Unlock()
	for _, w := range g.waiters(ctx, sqlExclusiveWaiters) {
		if g.cancel(ctx, w) {
			g.mu.Lock()
			g.cancelled = append(g.cancelled, fmt.Sprintf("session %s asked for an ACCESS EXCLUSIVE lock on %s during the copy (ALTER, DROP, TRUNCATE, VACUUM FULL, CLUSTER...): its statement was cancelled, as the copy would have waited behind it", w.who, w.table))
			g.mu.Unlock()
			continue
		}
		// Let go of the locks rather than have the copy wait behind the session.
		g.conn.Exec(ctx, "ROLLBACK")
		g.lose(now, fmt.Sprintf("session %s asked for an ACCESS EXCLUSIVE lock on %s, which the copy would have waited behind, and its statement could not be cancelled: the freeze let go of its locks", w.who, w.table))
		return
	}
	g.clearSuspects(ctx)
}

// waiter is a session waiting for a lock on a locked table.
type waiter struct {
	pid        int32
	who, table string
}

// waiters runs q (sqlExclusiveWaiters or sqlWaitingWriters) on the guard's session.
func (g *guard) waiters(ctx context.Context, q string) []waiter {
	rows, _ := g.conn.Query(ctx, q, g.plan.oids)
	var out []waiter
	var w waiter
	if _, err := pgx.ForEachRow(rows, []any{&w.pid, &w.table}, func() error {
		w.who = fmt.Sprintf("pid %d", w.pid)
		out = append(out, w)
		return nil
	}); err != nil {
		return nil
	}
	for i, w := range out {
		if list, err := listSessionsOf(ctx, g.conn, []int32{w.pid}); err == nil && len(list) == 1 {
			out[i].who = list[0].String()
		}
	}
	return out
}

// cancel cancels w's statement; false when it may not (another role's session, without
// pg_signal_backend) or w is gone. A refusal is an error, which must not end the
// transaction that holds the locks: a savepoint takes it.
func (g *guard) cancel(ctx context.Context, w waiter) bool {
	if _, err := g.conn.Exec(ctx, "SAVEPOINT tsmigrate_cancel"); err != nil {
		return false
	}
	var done bool
	if err := g.conn.QueryRow(ctx, "SELECT pg_cancel_backend($1)", w.pid).Scan(&done); err != nil {
		g.conn.Exec(ctx, "ROLLBACK TO SAVEPOINT tsmigrate_cancel")
		return false
	}
	g.conn.Exec(ctx, "RELEASE SAVEPOINT tsmigrate_cancel")
	return done
}

// lose records that the locks are not held since from (the last time they were seen
// held when zero), for why.
func (g *guard) lose(from time.Time, why string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if from.IsZero() {
		from = g.last
	}
	g.lapsed, g.lapseFrom = true, from
	g.why = append(g.why, why)
}

// relock takes the locks again after a lapse, without ending anyone: one attempt per
// tick. Then the sessions connected now that were busy since the lapse began become
// suspects.
func (g *guard) relock(ctx context.Context) {
	if g.conn == nil || g.conn.IsClosed() {
		conn, err := g.src.ConnectSession(ctx, sqlSessionSetup)
		if err != nil {
			return
		}
		g.mu.Lock()
		g.conn = conn
		g.mu.Unlock()
	}
	if g.conn.PgConn().TxStatus() == 'I' {
		if _, err := g.conn.Exec(ctx, "BEGIN"); err != nil {
			g.conn.Close(ctx)
			return
		}
	}
	if err := g.tryLock(ctx); err != nil {
		if g.conn.PgConn().TxStatus() != 'T' {
			g.conn.Close(ctx)
		}
		return
	}
	g.heldNow(ctx)
}

// heldNow records that the locks are held again after a lapse, and who may hold
// unflushed writes of it: every other session connected now, but those idle since
// before the lapse began.
func (g *guard) heldNow(ctx context.Context) {
	var now time.Time
	var app string
	if err := g.conn.QueryRow(ctx, "SELECT clock_timestamp(), current_setting('application_name')").Scan(&now, &app); err != nil {
		return
	}
	list, err := listSessions(ctx, g.conn, &now, nil, false)
	if err != nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.suspects == nil {
		g.suspects = map[sessionKey]Session{}
	}
	for _, s := range list {
		// Idle since before the lapse: it wrote nothing during it. Under tsmigrate's own
		// application name: this run's (a copy session that a cut connection left
		// behind, say), read-only.
		if (s.State == "idle" && s.StateChange.Before(g.lapseFrom)) || s.Application == app {
			continue
		}
		g.suspects[sessionKey{s.PID, s.BackendStart}] = s
	}
	g.lapsed, g.heldAgain, g.last = false, now, now
}

// clearSuspects drops the suspects that have flushed their counts since the locks were
// held again: gone (a backend flushes as it exits), idle since a moment at least
// PGSTAT_MIN_INTERVAL (1 s) after it (a backend going idle then flushes whatever it
// held, its last flush being at least that long before), or idle for the flush
// horizon (an idle backend flushes within PGSTAT_IDLE_INTERVAL).
func (g *guard) clearSuspects(ctx context.Context) {
	g.mu.Lock()
	if len(g.suspects) == 0 {
		g.mu.Unlock()
		return
	}
	pids := make([]int32, 0, len(g.suspects))
	for k := range g.suspects {
		pids = append(pids, int32(k.pid))
	}
	since := g.heldAgain.Add(time.Second)
	g.mu.Unlock()
	var now time.Time
	if err := g.conn.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&now); err != nil {
		return
	}
	list, err := listSessionsOf(ctx, g.conn, pids)
	if err != nil {
		return
	}
	here := map[sessionKey]Session{}
	for _, s := range list {
		here[sessionKey{s.PID, s.BackendStart}] = s
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for k := range g.suspects {
		s, ok := here[k]
		if !ok || (s.State == "idle" && (!s.StateChange.Before(since) || now.Sub(s.StateChange) >= flushHorizon)) {
			delete(g.suspects, k)
		}
	}
}

// report waits up to horizon for the guard to hold the locks with no suspect left,
// then says what keeps the proof from holding (none when nothing does), and what it
// did on the way (statements cancelled, lapses proven harmless).
//
// It then stops the guard's goroutine, the locks still held: the proof's last reads
// follow, and the guard's own traffic would only compete with them (held then checks
// that the locks were held throughout).
func (g *guard) report(ctx context.Context, horizon time.Duration) (problems, notes []string, err error) {
	defer g.pause()
	deadline := time.Now().Add(horizon)
	for {
		g.mu.Lock()
		clear := !g.lapsed && len(g.suspects) == 0
		g.mu.Unlock()
		if clear || !time.Now().Before(deadline) {
			break
		}
		if err := clock.Sleep(ctx, pollInterval); err != nil {
			return nil, nil, err
		}
	}
	// The goroutine's tick under way ends first: a statement it cancelled may have
	// ended, and its caller gone on to this proof, before the tick recorded it.
	g.pause()
	g.mu.Lock()
	defer g.mu.Unlock()
	notes = append(notes, g.cancelled...)
	why := strings.Join(g.why, "; ")
	switch {
	case g.lapsed:
		problems = append(problems, fmt.Sprintf("the freeze's locks on %d table(s) are not held since %s (%s), and could not be taken again: writes since then were not stopped, and a write of a session still in its transaction does not show",
			len(g.plan.oids), g.lapseFrom.UTC().Format(time.RFC3339), why))
	case len(g.suspects) > 0:
		var busy []Session
		for _, s := range g.suspects {
			busy = append(busy, s)
		}
		slices.SortFunc(busy, func(a, b Session) int { return int(a.PID) - int(b.PID) })
		names := make([]string, len(busy))
		for i, s := range busy {
			names[i] = s.String()
		}
		problems = append(problems, fmt.Sprintf("the freeze's locks were not held from %s to %s (%s), and %d session(s) connected then stayed busy since: a write of theirs in that time would not show in the write counters yet: %s",
			g.lapseFrom.UTC().Format(time.RFC3339), g.heldAgain.UTC().Format(time.RFC3339), why, len(busy), strings.Join(names, "; ")))
	case len(g.why) > 0:
		notes = append(notes, fmt.Sprintf("the freeze's locks were not held from %s to %s (%s); no session that was busy then stayed busy, so the write counters show any write of that time",
			g.lapseFrom.UTC().Format(time.RFC3339), g.heldAgain.UTC().Format(time.RFC3339), why))
	}
	return problems, notes, nil
}

// pause stops the guard's goroutine; the locks stay held.
func (g *guard) pause() {
	g.paused.Do(func() {
		close(g.stop)
		<-g.done
	})
}

// held says whether the locks are held still, once the goroutine is paused: the
// session is alive, in the transaction that took them, and no lapse was recorded.
func (g *guard) held(ctx context.Context) bool {
	if g.lapsed || g.conn == nil || g.conn.IsClosed() {
		return false
	}
	_, err := g.conn.Exec(ctx, "SELECT 1")
	return err == nil && g.conn.PgConn().TxStatus() == 'T'
}

// sqlWaitingWriters lists the backends waiting for a lock that conflicts with SHARE
// on one of the tables $1, with one of those tables.
var sqlWaitingWriters = `
SELECT l.pid, min((SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = l.relation)) FROM pg_locks l
WHERE NOT l.granted AND l.locktype = 'relation' AND l.mode IN (` + writeModes + `)
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.relation = ANY ($1::oid[])
GROUP BY l.pid`

// release ends the guard and lets go of the locks. With cancelWriters, the statements
// waiting to write a locked table are cancelled first: they were asked for while the
// database was read, and must not land once it has been (a session's write that the
// read-only default refuses fails either way). It says whose statements it cancelled.
func (g *guard) release(cancelWriters bool) []string {
	g.once.Do(func() {
		g.pause()
		if g.conn == nil || g.conn.IsClosed() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		defer g.conn.Close(ctx) // ends the transaction: the locks go
		if !cancelWriters || g.lapsed {
			return
		}
		for _, w := range g.waiters(ctx, sqlWaitingWriters) {
			if g.cancel(ctx, w) {
				g.released = append(g.released, fmt.Sprintf("session %s waited to write %s while the database was read: its statement was cancelled", w.who, w.table))
			}
		}
	})
	return g.released
}
