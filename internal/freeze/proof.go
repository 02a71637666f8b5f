package freeze

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/clock"
	"github.com/tsmigrate/tsmigrate/internal/exit"
)

// Proof is what Freeze measured to show that writes to the database stopped.
//
// What proves "no writes to this database":
//   - Every change to a table of the database (user data, and the catalog, so DDL
//     too) is a heap insert, update or delete, which the cumulative statistics count
//     per database (pg_stat_database.tup_inserted/updated/deleted). A backend flushes
//     its counts when it goes idle, at most a second after its transaction ends, and
//     when it exits. RowsWritten staying the same over the window, with no backend in
//     a transaction that has written, means no write committed or aborted in it.
//     ANALYZE (autovacuum's too) rewrites pg_statistic and pg_statistic_ext_data
//     without changing any data; their counts, and those of their TOAST tables (long
//     most-common-values arrays of text columns go there), are subtracted.
//   - A transaction that has written holds a transaction id until it ends
//     (pg_stat_activity.backend_xid). None held at either end of the window means no
//     write is in flight, even one that has not yet flushed its counts.
//   - A prepared transaction (PREPARE TRANSACTION) holds written rows that COMMIT
//     PREPARED, which a read-only session may run, would make visible later: there
//     must be none.
//
// The WAL position (pg_current_wal_lsn) is server-wide: other databases, checkpoints
// and autovacuum move it. It is reported for information, not as proof. Commits are
// reported too: read-only transactions (this proof's own included) commit as well.
type Proof struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// WindowSeconds is how long the database stayed still (End - Start).
	WindowSeconds float64 `json:"window_seconds"`
	Samples       int     `json:"samples"`
	// Restarts counts windows begun again because a counter moved or a backend held a
	// transaction id (writes flushing late, or a writer that had to finish).
	Restarts int `json:"restarts"`
	// RowsWritten is the database's row-change counter, the same at Start and End.
	RowsWritten int64 `json:"rows_written"`
	// XIDHolders and PreparedTransactions were zero at Start and End.
	XIDHolders           int `json:"xid_holders"`
	PreparedTransactions int `json:"prepared_transactions"`
	// Commits in the database during the window (read-only ones).
	Commits int64 `json:"commits_in_window"`
	// ServerWALBytes is the server-wide WAL written during the window (all databases).
	ServerWALBytes int64 `json:"server_wal_bytes_in_window"`
	// CountersTracked is the server's track_counts: when off, the counters stay still
	// whatever happens and only the transaction ids prove anything.
	CountersTracked bool `json:"counters_tracked"`
	// TablesLocked is how many tables a deferred proof kept locked against writes
	// while the database was read (see locks.go); LockNotes say what the locks met:
	// statements cancelled, a time they were not held that proved harmless.
	TablesLocked int      `json:"tables_locked,omitempty"`
	LockNotes    []string `json:"lock_notes,omitempty"`
}

// One sample of the current database's write counters, on PostgreSQL 15 and 17: see
// Proof for why these (and pending.go for the server's next transaction id, the
// postmaster's start time and the database's statistics reset time). Each sample runs
// in its own transaction, so the statistics snapshot (stats_fetch_consistency = cache)
// is fresh.
const sqlSample = `
SELECT clock_timestamp(),
       d.tup_inserted + d.tup_updated + d.tup_deleted
         - coalesce((SELECT sum(pg_stat_get_tuples_inserted(c.oid) + pg_stat_get_tuples_updated(c.oid)
                                + pg_stat_get_tuples_deleted(c.oid))
                     FROM pg_class s, pg_class c
                     WHERE s.oid IN ('pg_catalog.pg_statistic'::regclass,
                                     'pg_catalog.pg_statistic_ext_data'::regclass)
                       AND c.oid IN (s.oid, s.reltoastrelid)), 0)::bigint,
       d.xact_commit,
       (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint,
       coalesce((SELECT array_agg(format('%s (owner %s, prepared %s)', p.gid, p.owner, p.prepared) ORDER BY p.prepared)
                 FROM pg_prepared_xacts p WHERE p.database = current_database()), '{}'),
       current_setting('track_counts')::bool,
       pg_snapshot_xmax(pg_current_snapshot())::text::bigint,
       pg_postmaster_start_time(),
       d.stats_reset
FROM pg_stat_database d
WHERE d.datname = current_database()`

type sample struct {
	at       time.Time
	rows     int64
	commits  int64
	wal      int64
	nextXID  int64 // server-wide: the next transaction id to be assigned
	prepared []string
	tracked  bool
	holders  []Session
	// The catalog digest (catalog.go), of a baseline only: hasCatalog says it was
	// taken (a baseline of an older tsmigrate has none).
	hasCatalog            bool
	catalogRows, seqsHash int64
	// started is the postmaster's start time, statsReset when the database's statistics
	// were last reset (nil: never): counters compare only while both stay the same.
	started    time.Time
	statsReset *time.Time
}

func takeSample(ctx context.Context, conn *pgx.Conn) (sample, error) {
	var s sample
	err := conn.QueryRow(ctx, sqlSample).Scan(&s.at, &s.rows, &s.commits, &s.wal, &s.prepared, &s.tracked, &s.nextXID, &s.started, &s.statsReset)
	if err != nil {
		return s, fmt.Errorf("prove the freeze: read counters: %w", err)
	}
	if s.holders, err = listSessions(ctx, conn, nil, nil, true); err != nil {
		return s, fmt.Errorf("prove the freeze: %w", err)
	}
	return s, nil
}

// moved says why the database is not still since base, or "".
func (s sample) moved(base sample) string {
	switch {
	case len(s.holders) > 0:
		return "a session holds a transaction id: " + describe(s.holders)
	case s.rows != base.rows:
		return fmt.Sprintf("rows written moved from %d to %d", base.rows, s.rows)
	}
	return ""
}

// prove watches the database until it has been still for a whole window, starting the
// window again when something moves, and gives up after three windows plus 2 s.
func prove(ctx context.Context, conn *pgx.Conn, opt Options) (Proof, error) {
	window := opt.ProofWindow
	giveUp := time.Now().Add(3*window + 2*time.Second)
	base, err := takeSample(ctx, conn)
	if err != nil {
		return Proof{}, err
	}
	opt.emit(Event{Type: EventProving, Deadline: time.Now().Add(window)})
	started := time.Now()
	p := Proof{Samples: 1}
	for {
		if len(base.prepared) > 0 {
			return p, notProven(fmt.Sprintf("%d prepared transaction(s) in the database: %s; COMMIT PREPARED or ROLLBACK PREPARED them, then freeze again",
				len(base.prepared), strings.Join(base.prepared, ", ")))
		}
		if err := clock.Sleep(ctx, pollInterval); err != nil {
			return p, err
		}
		cur, err := takeSample(ctx, conn)
		if err != nil {
			return p, err
		}
		p.Samples++
		if len(cur.prepared) > 0 {
			base = cur
			continue
		}
		reason := cur.moved(base)
		if reason == "" && len(base.holders) > 0 {
			reason = "a session held a transaction id: " + describe(base.holders)
		}
		if reason != "" {
			if time.Now().After(giveUp) {
				return p, notProven("writes did not stop: " + reason)
			}
			p.Restarts++
			base, started = cur, time.Now()
			opt.emit(Event{Type: EventProving, Deadline: started.Add(window), Reason: reason})
			continue
		}
		if time.Since(started) >= window {
			p.Start, p.End = base.at, cur.at
			p.WindowSeconds = cur.at.Sub(base.at).Seconds()
			p.RowsWritten = cur.rows
			p.Commits = cur.commits - base.commits
			p.ServerWALBytes = cur.wal - base.wal
			p.CountersTracked = cur.tracked
			return p, nil
		}
	}
}

func notProven(why string) error {
	return &exit.Error{Code: exit.Failed, Msg: why,
		Hint: "find the writer in pg_stat_activity; a session that SET default_transaction_read_only = off is not stopped by the freeze",
		Err:  ErrNotProven}
}
