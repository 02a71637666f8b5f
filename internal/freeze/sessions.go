package freeze

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tsmigrate/tsmigrate/internal/clock"
	"github.com/tsmigrate/tsmigrate/internal/exit"
)

// Session is one backend connected to the frozen database.
type Session struct {
	PID         uint32 `json:"pid"`
	User        string `json:"user"`
	Application string `json:"application"`
	// Client is the client's address, "local" for a Unix socket, "" for a background worker.
	Client       string    `json:"client"`
	BackendType  string    `json:"backend_type"`
	State        string    `json:"state"`
	BackendStart time.Time `json:"backend_start"`
	// StateChange is when State last changed.
	StateChange time.Time  `json:"-"`
	XactStart   *time.Time `json:"xact_start"`
	// XID is the transaction id the session holds: it has written in its open transaction.
	XID string `json:"xid,omitempty"`
	// Locks are the relations it holds locks on, with the lock mode.
	Locks []string `json:"locks,omitempty"`
	// Outcome: "ended" (terminated by the freeze), "left" (disconnected by itself while
	// the freeze waited), "waited" (its transaction ended; it is still connected).
	Outcome string `json:"outcome,omitempty"`
}

// InTransaction says whether the session had a transaction open when it was seen.
func (s Session) InTransaction() bool { return s.XactStart != nil }

// String names the session for a person: pid, user, application, client, state, since when.
func (s Session) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "pid %d", s.PID)
	if s.User != "" {
		fmt.Fprintf(&b, " user %s", s.User)
	}
	if s.Application != "" && s.Application != s.BackendType {
		fmt.Fprintf(&b, " application %q", s.Application)
	}
	if s.Client != "" {
		fmt.Fprintf(&b, " client %s", s.Client)
	}
	if s.BackendType != "client backend" {
		fmt.Fprintf(&b, " (%s)", s.BackendType)
	}
	if s.State != "" {
		fmt.Fprintf(&b, ", %s", s.State)
	}
	if s.XactStart != nil {
		fmt.Fprintf(&b, ", transaction since %s", s.XactStart.UTC().Format(time.RFC3339))
	}
	return b.String()
}

// Holds says what the session holds that matters to a freeze: its transaction id and locks.
func (s Session) Holds() string {
	var parts []string
	if s.XID != "" {
		parts = append(parts, "transaction id "+s.XID+" (it has written)")
	}
	if len(s.Locks) > 0 {
		locks := s.Locks
		more := ""
		if len(locks) > 5 {
			locks, more = locks[:5], fmt.Sprintf(" and %d more", len(s.Locks)-5)
		}
		parts = append(parts, "locks on "+strings.Join(locks, ", ")+more)
	}
	if len(parts) == 0 {
		return "an open transaction"
	}
	return strings.Join(parts, ", ")
}

// Backends connected to the current database, other than this session, started
// before $1 (all when NULL), not among the pids $2, holding a transaction id when $3,
// among the pids $4 (all when NULL).
// Autovacuum workers (maintenance: they change no data, and ANALYZE's writes to
// pg_statistic are discounted by the proof), walsenders (they only read WAL) and
// parallel workers (their leader is listed) are left out. Checked on PostgreSQL 15
// and 17 with TimescaleDB 2.19.3, whose scheduler shows as backend type
// "TimescaleDB Background Worker Scheduler".
const sqlSessions = `
SELECT a.pid, coalesce(a.usename, ''), coalesce(a.application_name, ''),
       CASE WHEN a.client_addr IS NOT NULL THEN host(a.client_addr)
            WHEN a.backend_type = 'client backend' THEN 'local'
            ELSE '' END,
       coalesce(a.backend_type, ''), coalesce(a.state, ''), a.backend_start, coalesce(a.state_change, a.backend_start), a.xact_start,
       coalesce(a.backend_xid::text, ''),
       coalesce((SELECT array_agg(DISTINCT l.relation::regclass::text || ' (' || l.mode || ')')
                 FROM pg_locks l
                 WHERE l.pid = a.pid AND l.granted AND l.relation IS NOT NULL
                   AND l.database = a.datid), '{}')
FROM pg_stat_activity a
WHERE a.datid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND a.pid <> pg_backend_pid()
  AND a.backend_type NOT IN ('autovacuum worker', 'walsender', 'parallel worker')
  AND ($1::timestamptz IS NULL OR a.backend_start < $1)
  AND a.pid <> ALL ($2::int4[])
  AND (NOT $3 OR a.backend_xid IS NOT NULL)
  AND ($4::int4[] IS NULL OR a.pid = ANY ($4))
ORDER BY a.pid`

func listSessions(ctx context.Context, q querier, before *time.Time, keep []uint32, writersOnly bool) ([]Session, error) {
	pids := make([]int32, len(keep))
	for i, p := range keep {
		pids[i] = int32(p)
	}
	return querySessions(ctx, q, before, pids, writersOnly, nil)
}

// listSessionsOf lists the sessions among pids that are still connected.
func listSessionsOf(ctx context.Context, q querier, pids []int32) ([]Session, error) {
	return querySessions(ctx, q, nil, []int32{}, false, pids)
}

func querySessions(ctx context.Context, q querier, before *time.Time, keep []int32, writersOnly bool, only []int32) ([]Session, error) {
	rows, err := q.Query(ctx, sqlSessions, before, keep, writersOnly, only)
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	out := []Session{}
	var s Session
	var pid int32
	_, err = pgx.ForEachRow(rows, []any{&pid, &s.User, &s.Application, &s.Client, &s.BackendType, &s.State,
		&s.BackendStart, &s.StateChange, &s.XactStart, &s.XID, &s.Locks}, func() error {
		s.PID = uint32(pid)
		if len(s.Locks) == 0 {
			s.Locks = nil
		}
		out = append(out, s)
		s = Session{}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	return out, nil
}

// sessionsBefore lists the sessions that connected before t, except those in keep.
func sessionsBefore(ctx context.Context, q querier, t time.Time, keep []uint32) ([]Session, error) {
	return listSessions(ctx, q, &t, keep, false)
}

// Ends a backend, without waiting for it to exit: pg_terminate_backend's own wait
// (its timeout argument) looks every 100 ms, which made every freeze of a TimescaleDB
// database, whose job scheduler is a session to end, a tenth of a second longer;
// waitExited waits instead.
const sqlTerminate = `SELECT pg_terminate_backend($1)`

// sqlRemaining counts the backends of a list that have not exited. A backend leaves
// pg_stat_activity once its transaction is rolled back and its locks released (its
// exit callbacks, PostgreSQL 15 to 18). Autocommit: each poll sees the server anew.
const sqlRemaining = `SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)`

// exitPoll and exitWait: how often, and up to how long, waitExited looks.
const (
	exitPoll = 5 * time.Millisecond
	exitWait = 5 * time.Second
)

// errTerminate is a session that could not be ended.
var errTerminate = errors.New("cannot end session")

func terminate(ctx context.Context, q querier, s Session) error {
	var done bool
	if err := q.QueryRow(ctx, sqlTerminate, int32(s.PID)).Scan(&done); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42501" {
			return fmt.Errorf("%w %s: %s (SQLSTATE %s); freeze as a superuser, grant pg_signal_backend to the freezing role, or use --no-terminate",
				errTerminate, s, pgErr.Message, pgErr.Code)
		}
		return fmt.Errorf("end session %s: %w", s, err)
	}
	return nil
}

// waitExited waits up to exitWait for the sessions of list, ended, to exit; the
// caller looks for those that remain.
func waitExited(ctx context.Context, q querier, list []Session) error {
	pids := make([]int32, len(list))
	for i, s := range list {
		pids[i] = int32(s.PID)
	}
	deadline := time.Now().Add(exitWait)
	for {
		var n int
		if err := q.QueryRow(ctx, sqlRemaining, pids).Scan(&n); err != nil {
			return fmt.Errorf("wait for the ended sessions to exit: %w", err)
		}
		if n == 0 || !time.Now().Before(deadline) {
			return nil
		}
		if err := clock.Sleep(ctx, exitPoll); err != nil {
			return err
		}
	}
}

// settleSessions deals with the sessions that connected before frozenAt: they read
// the old default and may still write.
func settleSessions(ctx context.Context, conn *pgx.Conn, frozenAt time.Time, opt Options) ([]Session, error) {
	seen := map[uint32]Session{}
	var order []uint32
	// A session is reported as the freeze first found it: what it held then.
	note := func(list []Session) {
		for _, s := range list {
			if _, ok := seen[s.PID]; !ok {
				order = append(order, s.PID)
				seen[s.PID] = s
			}
		}
	}
	outcome := func(present []Session, what string) []Session {
		here := map[uint32]bool{}
		for _, s := range present {
			here[s.PID] = true
		}
		out := make([]Session, 0, len(order))
		for _, pid := range order {
			s := seen[pid]
			s.Outcome = "left"
			if here[pid] {
				s.Outcome = what
			}
			out = append(out, s)
		}
		return out
	}

	list, err := sessionsBefore(ctx, conn, frozenAt, opt.KeepPIDs)
	if err != nil || len(list) == 0 {
		return []Session{}, err
	}
	note(list)
	if opt.NoTerminate {
		deadline := time.Now().Add(opt.WaitTimeout)
		var told []uint32
		for {
			busy := inTransaction(list)
			if len(busy) == 0 {
				return outcome(list, "waited"), nil
			}
			if pids := pidsOf(busy); !slices.Equal(pids, told) {
				opt.emit(Event{Type: EventWaiting, Sessions: busy, Deadline: deadline})
				told = pids
			}
			if !time.Now().Before(deadline) {
				return nil, sessionsRemain(busy, opt.WaitTimeout)
			}
			if err := clock.Sleep(ctx, pollInterval); err != nil {
				return nil, err
			}
			if list, err = sessionsBefore(ctx, conn, frozenAt, opt.KeepPIDs); err != nil {
				return nil, err
			}
			note(list)
		}
	}

	deadline := time.Now().Add(opt.Grace)
	opt.emit(Event{Type: EventWaiting, Sessions: list, Deadline: deadline})
	for len(inTransaction(list)) > 0 && time.Now().Before(deadline) {
		if err := clock.Sleep(ctx, min(pollInterval, time.Until(deadline))); err != nil {
			return nil, err
		}
		if list, err = sessionsBefore(ctx, conn, frozenAt, opt.KeepPIDs); err != nil {
			return nil, err
		}
		note(list)
	}
	for _, s := range list {
		if err := terminate(ctx, conn, s); err != nil {
			return nil, err
		}
	}
	if err := waitExited(ctx, conn, list); err != nil {
		return nil, err
	}
	ended := outcome(list, "ended")
	if len(list) > 0 {
		opt.emit(Event{Type: EventEnded, Sessions: list})
	}
	still, err := sessionsBefore(ctx, conn, frozenAt, opt.KeepPIDs)
	if err != nil {
		return nil, err
	}
	if len(still) > 0 {
		return nil, fmt.Errorf("%w: %s did not exit within 5 s of being ended", errTerminate, describe(still))
	}
	return ended, nil
}

func inTransaction(list []Session) []Session {
	var out []Session
	for _, s := range list {
		if s.InTransaction() {
			out = append(out, s)
		}
	}
	return out
}

func pidsOf(list []Session) []uint32 {
	out := make([]uint32, len(list))
	for i, s := range list {
		out[i] = s.PID
	}
	return out
}

func describe(list []Session) string {
	s := ""
	for i, x := range list {
		if i > 0 {
			s += "; "
		}
		s += x.String() + ", holding " + x.Holds()
	}
	return s
}

func sessionsRemain(busy []Session, timeout time.Duration) error {
	return &exit.Error{Code: exit.Failed,
		Msg: fmt.Sprintf("%d session(s) from before the freeze still in a transaction after %s: %s",
			len(busy), timeout, describe(busy)),
		Hint: "let them finish, raise --wait-timeout, or drop --no-terminate to end them",
		Err:  ErrSessionsRemain}
}
