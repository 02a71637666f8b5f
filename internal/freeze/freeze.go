// Package freeze stops writes to a source database before its dump and proves that
// they stopped: new transactions default to read-only (ALTER DATABASE ... SET
// default_transaction_read_only = on), sessions connected before the freeze are ended
// after a grace period or waited for, and the database's write counters and
// transaction ids are watched over a short window. What it did is recorded on the
// database itself (RecordSetting), so that Unfreeze undoes exactly that from any
// machine, even after the freezing process was killed.
package freeze

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/inventory"
	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// Defaults for zero Options fields.
const (
	DefaultWaitTimeout = 2 * time.Minute
	DefaultProofWindow = 3 * time.Second
	// MinProofWindow: a busy backend flushes its write counts to the statistics at
	// most once a second (PGSTAT_MIN_INTERVAL, PostgreSQL 15+), so a shorter window can
	// miss a writer that writes all the time (measured: a 500 ms window "proved" a
	// database into which a session inserted every 50 ms).
	MinProofWindow = 1500 * time.Millisecond
)

// pollInterval is how often sessions and counters are looked at while waiting.
const pollInterval = 200 * time.Millisecond

// Options change how Freeze deals with sessions and proves the freeze.
type Options struct {
	// Grace is how long sessions connected before the freeze get to finish their open
	// transactions before they are ended. Zero ends them at once.
	Grace time.Duration
	// NoTerminate waits for those sessions' transactions to end instead of ending the
	// sessions, for at most WaitTimeout (default DefaultWaitTimeout). On timeout the
	// freeze is undone and Freeze fails naming who still holds what.
	NoTerminate bool
	WaitTimeout time.Duration
	// ProofWindow is how long the database must stay still for the proof (default
	// DefaultProofWindow, at least MinProofWindow).
	ProofWindow time.Duration
	// KeepPIDs are backends of the caller (its other connections to the database):
	// neither ended nor waited for. They count in the proof like any other. They are
	// the caller's to tell about: Result.CannotStop, what users must know, leaves them
	// out (they are tsmigrate's own, and write nothing).
	KeepPIDs []uint32
	// DeferProof makes Freeze return once the sessions from before are dealt with and a
	// baseline of the write counters is taken, without a proof window: Result.Pending
	// holds the baseline, and its Finish, called after the caller has read the database,
	// proves that nothing changed since (see pending.go).
	DeferProof bool
	// PauseJobs also unschedules the database's scheduled TimescaleDB user jobs, in the
	// freezing transaction, and records them: Unfreeze schedules them again (see
	// jobs.go). For a migration, whose target must not run them before it is verified.
	PauseJobs bool
	// OnEvent, if set, hears about each step as it happens.
	OnEvent func(Event)
}

// EventType names a step of Freeze.
type EventType string

const (
	// EventFrozen: the read-only default and the record are committed (ID, Since).
	EventFrozen EventType = "frozen"
	// EventWaiting: Sessions from before the freeze; they are ended at Deadline, or
	// (NoTerminate) the wait for their transactions gives up at Deadline.
	EventWaiting EventType = "waiting"
	// EventEnded: Sessions were ended.
	EventEnded EventType = "ended"
	// EventProving: the proof window starts, or starts again after Reason.
	EventProving EventType = "proving"
	// EventBaseline: (DeferProof) the baseline of the write counters is taken; the proof
	// is PendingProof.Finish.
	EventBaseline EventType = "baseline"
	// EventUndone: Freeze failed and undid the freeze (Reason says why).
	EventUndone EventType = "undone"
)

// Event is one step of Freeze, for a caller that shows progress.
type Event struct {
	Type     EventType
	ID       string
	Since    time.Time
	Sessions []Session
	Deadline time.Time
	Reason   string
}

// Result is what Freeze did and what it measured.
type Result struct {
	Database string    `json:"database"`
	ID       string    `json:"freeze_id"`
	Since    time.Time `json:"since"`
	Host     string    `json:"host"`
	// PreviousReadOnly is the database-level default_transaction_read_only before the
	// freeze (nil: not set), which Unfreeze restores.
	PreviousReadOnly *string `json:"previous_read_only"`
	// Sessions connected before the freeze, as first found, and what became of them
	// (Outcome).
	Sessions []Session `json:"sessions"`
	Proof    Proof     `json:"proof"`
	// Pending is the baseline to finish the proof with (Options.DeferProof); Proof is
	// then empty.
	Pending *PendingProof `json:"-"`
	// CannotStop says, one sentence each, what the freeze does not prevent.
	CannotStop []string `json:"cannot_stop"`
	// PausedJobs are the TimescaleDB jobs the freeze unscheduled (Options.PauseJobs),
	// which Unfreeze schedules again.
	PausedJobs []int `json:"paused_timescaledb_jobs,omitempty"`
}

// Sentinel causes, for errors.Is on Freeze's errors.
var (
	// ErrAlreadyFrozen: the database carries a tsmigrate freeze record already; nothing
	// was changed. Status tells whose.
	ErrAlreadyFrozen = errors.New("already frozen")
	// ErrSessionsRemain: with NoTerminate, sessions from before the freeze kept their
	// transactions open past the wait timeout; the freeze was undone.
	ErrSessionsRemain = errors.New("sessions from before the freeze remain in transactions")
	// ErrNotProven: writes did not stop within the proof's time; the freeze was undone.
	ErrNotProven = errors.New("the freeze could not be proven")
)

func (o Options) withDefaults() Options {
	if o.WaitTimeout <= 0 {
		o.WaitTimeout = DefaultWaitTimeout
	}
	if o.ProofWindow <= 0 {
		o.ProofWindow = DefaultProofWindow
	}
	o.ProofWindow = max(o.ProofWindow, MinProofWindow)
	if o.Grace < 0 {
		o.Grace = 0
	}
	return o
}

func (o Options) emit(e Event) {
	if o.OnEvent != nil {
		o.OnEvent(e)
	}
}

// Freeze makes src's database read-only for new transactions, deals with the sessions
// connected before, and proves that writes stopped. The connection Freeze makes is its
// own and is never ended. When Freeze fails after the database was made read-only
// (including when ctx is cancelled), it undoes the freeze before returning; if that
// undo fails too, the error says so and `tsmigrate unfreeze` undoes it later.
func Freeze(ctx context.Context, src *dbconn.Config, opt Options) (*Result, error) {
	opt = opt.withDefaults()
	conn, err := src.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	db := src.Database()
	if _, err := conn.Exec(ctx, sqlSessionSetup); err != nil {
		return nil, fmt.Errorf("freeze %s: set up session: %w", db, err)
	}
	rec, err := begin(ctx, conn.Conn, db, opt)
	if err != nil {
		return nil, err
	}
	// Every backend that starts after the commit reads the new default; the ones
	// before may not have.
	var frozenAt time.Time
	if err := conn.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&frozenAt); err != nil {
		return nil, undo(ctx, src, conn.Conn, rec.ID, opt, fmt.Errorf("freeze %s: read server clock: %w", db, err))
	}
	opt.emit(Event{Type: EventFrozen, ID: rec.ID, Since: rec.Since})
	res := &Result{Database: db, ID: rec.ID, Since: rec.Since, Host: rec.Host, PreviousReadOnly: rec.Previous, PausedJobs: rec.PausedJobs}

	res.Sessions, err = settleSessions(ctx, conn.Conn, frozenAt, opt)
	var locks *guard
	switch {
	case err == nil && opt.DeferProof:
		var ended []Session
		if locks, ended, err = lockTables(ctx, src, conn.Conn, opt); err != nil {
			break
		}
		res.Sessions = append(res.Sessions, ended...)
		if res.Pending, err = baseline(ctx, src, conn.Conn, rec.ID, res.Sessions, opt); err != nil {
			locks.release(false)
			break
		}
		res.Pending.guard = locks
		opt.emit(Event{Type: EventBaseline, ID: rec.ID, Since: res.Pending.Baseline()})
	case err == nil:
		res.Proof, err = prove(ctx, conn.Conn, opt)
	}
	if err == nil {
		res.CannotStop, err = cannotStop(ctx, conn.Conn, db, res.Sessions, opt, locks)
	}
	if err != nil {
		res.Pending.Release()
		return nil, undo(ctx, src, conn.Conn, rec.ID, opt, err)
	}
	// Someone may have run unfreeze, or changed the setting, while this waited.
	set, err := settings(ctx, conn)
	if err != nil {
		res.Pending.Release()
		return nil, undo(ctx, src, conn.Conn, rec.ID, opt, err)
	}
	if st, _ := stateFrom(db, set); !st.Intact || st.ID != rec.ID {
		res.Pending.Release()
		return nil, &exit.Error{Code: exit.Failed, Err: ErrNotProven,
			Msg: fmt.Sprintf("freeze %s of database %q was undone or changed by someone else while it was being proven (now: frozen %v, freeze id %q, default_transaction_read_only %q)",
				rec.ID, db, st.Frozen, st.ID, st.ReadOnly),
			Hint: "see tsmigrate freeze-status; freeze again when ready"}
	}
	return res, nil
}

// undo removes a freeze that Freeze made and could not complete, and returns cause,
// with a word on whether the undo worked. A cancelled context may have broken conn;
// the undo then connects anew.
func undo(ctx context.Context, src *dbconn.Config, conn *pgx.Conn, id string, opt Options, cause error) error {
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	suffix := "; the freeze was undone"
	var err error
	if conn.IsClosed() {
		var fresh *dbconn.Conn
		if fresh, err = src.Connect(uctx); err == nil {
			defer fresh.Close(uctx)
			conn = fresh.Conn
		}
	}
	if err == nil {
		_, err = unfreeze(uctx, conn, src.Database(), id)
	}
	if err != nil {
		suffix = fmt.Sprintf("; undoing the freeze failed too (%s): run tsmigrate unfreeze", dbconn.Reason(err))
	} else {
		opt.emit(Event{Type: EventUndone, ID: id, Reason: cause.Error()})
	}
	var e *exit.Error
	if errors.As(cause, &e) {
		e.Msg += suffix
		return cause
	}
	return fmt.Errorf("%w%s", cause, suffix)
}

// The freezing transaction's checks: the TimescaleDB scheduler of this database, if
// one is running, and the server's clock.
const sqlSchedulerRunning = `
SELECT EXISTS (SELECT 1 FROM pg_stat_activity
               WHERE datname = current_database()
                 AND backend_type = 'TimescaleDB Background Worker Scheduler'),
       statement_timestamp()`

// begin writes the record and the read-only default in one transaction, so that a
// crash leaves either both or neither.
func begin(ctx context.Context, conn *pgx.Conn, db string, opt Options) (*record, error) {
	host, _ := os.Hostname()
	rec := &record{ID: newID(), Host: host}
	err := recordTx(ctx, conn, func(tx pgx.Tx, set map[string]string) error {
		if st, _ := stateFrom(db, set); st.Frozen {
			return alreadyFrozen(st)
		}
		if prev, ok := set[readOnlySetting]; ok {
			rec.Previous = &prev
		}
		var scheduler bool
		if err := tx.QueryRow(ctx, sqlSchedulerRunning).Scan(&scheduler, &rec.Since); err != nil {
			return err
		}
		rec.RestartScheduler = scheduler && !opt.NoTerminate
		if err := tx.QueryRow(ctx, "SELECT current_user").Scan(&rec.User); err != nil {
			return err
		}
		stmts := []string{}
		if opt.PauseJobs {
			var err error
			if rec.PausedJobs, err = PauseJobs(ctx, tx); err != nil {
				return err
			}
			// Jobs a killed rehearsal left paused: this freeze's unfreeze schedules them.
			if earlier, _ := rehearsalJobs(set); len(earlier) > 0 {
				rec.PausedJobs = union(rec.PausedJobs, earlier)
				stmts = append(stmts, sqlResetRehearsalJobs(db))
			}
			if len(rec.PausedJobs) > 0 {
				if _, err := tx.Exec(ctx, sqlForceStatsFlush); err != nil {
					return err
				}
			}
		}
		js, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		for _, s := range append(stmts,
			sqlAlterDatabase(db, "SET "+pgx.Identifier{RecordSetting}.Sanitize()+" = "+sqltext.Literal(string(js))),
			sqlAlterDatabase(db, "SET "+readOnlySetting+" = on"),
		) {
			if _, err := tx.Exec(ctx, s); err != nil {
				return recordError(db, rec.User, err)
			}
		}
		return nil
	})
	if err != nil {
		var e *exit.Error
		if errors.As(err, &e) {
			return nil, err
		}
		return nil, fmt.Errorf("freeze %s: %w", db, err)
	}
	return rec, nil
}

func alreadyFrozen(st *State) error {
	msg := fmt.Sprintf("database %q is already frozen by tsmigrate (freeze %s since %s, from %s as %s); nothing was changed",
		st.Database, st.ID, st.Since.UTC().Format(time.RFC3339), st.Host, st.User)
	if st.ID == "" {
		msg = fmt.Sprintf("database %q carries a tsmigrate freeze record already (%s); nothing was changed", st.Database, st.Problem)
	}
	return &exit.Error{Code: exit.Failed, Msg: msg, Hint: "tsmigrate unfreeze first to freeze anew", Err: ErrAlreadyFrozen}
}

func recordError(db, user string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42501" {
		return &exit.Error{Code: exit.Failed,
			Msg: fmt.Sprintf("cannot freeze database %q as %s: %s; nothing was changed", db, user, dbconn.Reason(err)),
			Hint: fmt.Sprintf("freeze as a superuser, or as a superuser run GRANT SET ON PARAMETER %s TO %s; the role must also own the database",
				RecordSetting, inventory.Ident(user)),
			Err: err}
	}
	return err
}

func newID() string {
	b := make([]byte, 6)
	rand.Read(b)
	return "fz-" + time.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b)
}

// Role-level settings of default_transaction_read_only that outrank the database's
// (ALTER ROLE r [IN DATABASE d] SET ...): such roles' new sessions ignore the freeze.
const sqlRoleOverrides = `
SELECT r.rolname, s.setdatabase <> 0, substr(item, strpos(item, '=') + 1)
FROM pg_db_role_setting s
JOIN pg_roles r ON r.oid = s.setrole, unnest(s.setconfig) AS item
WHERE s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database()))
  AND split_part(item, '=', 1) = 'default_transaction_read_only'
ORDER BY 1`

// cannotStop says what the freeze does not prevent, for this database (locks: the
// deferred proof's, nil without one).
func cannotStop(ctx context.Context, conn *pgx.Conn, db string, sessions []Session, opt Options, locks *guard) ([]string, error) {
	first := "a superuser, or any session, can run SET default_transaction_read_only = off (or BEGIN READ WRITE) and write again: the freeze only changes the default for new transactions"
	if locks != nil {
		first = fmt.Sprintf("a superuser, or any session, can run SET default_transaction_read_only = off (or BEGIN READ WRITE) and write again: the freeze only changes the default for new transactions; until the source has been read, the freeze holds SHARE locks on its %d table(s), so that such writes wait (and are cancelled when the reading ends), as do the writes of read-only sessions, which fail as before", len(locks.plan.oids))
	}
	out := []string{
		first,
		fmt.Sprintf("other databases on this server keep running and writing: the freeze covers database %q only", db),
	}
	if locks != nil {
		out = append(out, locks.plan.cannotStop()...)
		unread, err := unreadCatalogs(ctx, conn)
		if err != nil {
			return nil, err
		}
		out = append(out, unread...)
	}
	for _, s := range sessions {
		if s.Outcome == "waited" {
			out = append(out, fmt.Sprintf("session %s connected before the freeze and was waited for, not ended: it keeps read-write transactions and can write again", s))
		}
	}
	rows, err := conn.Query(ctx, sqlRoleOverrides)
	if err != nil {
		return nil, fmt.Errorf("read role settings: %w", err)
	}
	var role, value string
	var inDB bool
	_, err = pgx.ForEachRow(rows, []any{&role, &inDB, &value}, func() error {
		if on, _ := parseBool(value); on {
			return nil
		}
		scope := "ALTER ROLE " + role + " SET"
		if inDB {
			scope = "ALTER ROLE " + role + " IN DATABASE " + db + " SET"
		}
		out = append(out, fmt.Sprintf("role %s has its own default_transaction_read_only = %s (%s), which outranks the database's: its new sessions are not read-only", role, value, scope))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read role settings: %w", err)
	}
	return out, nil
}
