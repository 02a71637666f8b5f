package copy

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/exit"
)

// SnapshotSource gives the snapshot that every read of the source shares. Today's
// source is ExportSnapshot; a live mode can give one taken with
// CREATE_REPLICATION_SLOT ... EXPORT_SNAPSHOT on a replication connection, so that
// the changes made after it can be streamed from the slot.
type SnapshotSource interface {
	// Snapshot is the ID of an exported snapshot, valid until Close.
	Snapshot() string
	// Close ends the transaction (or connection) that keeps the snapshot alive.
	Close(ctx context.Context) error
}

// SQL of the exported snapshot. Checked on PostgreSQL 15 and 17.
const (
	// After dbconn.NoTimeouts, on its own (the holding transaction stays idle for the
	// whole run); a query before BEGIN in the same string would start the transaction.
	exportSnapshotSQL = `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`
)

type exportedSnapshot struct {
	conn *dbconn.Conn
	id   string
}

// ExportSnapshot opens a REPEATABLE READ READ ONLY transaction on the source, exports
// its snapshot with pg_export_snapshot() and holds the transaction open until Close.
func ExportSnapshot(ctx context.Context, source *dbconn.Config) (SnapshotSource, error) {
	conn, err := source.Connect(ctx)
	if err != nil {
		return nil, err
	}
	s := &exportedSnapshot{conn: conn}
	for _, sql := range []string{dbconn.NoTimeouts, exportSnapshotSQL} {
		if err := conn.PgConn().Exec(ctx, sql).Close(); err != nil {
			conn.Close(ctx)
			return nil, fmt.Errorf("export source snapshot: %w", err)
		}
	}
	if err := conn.QueryRow(ctx, `SELECT pg_export_snapshot()`).Scan(&s.id); err != nil {
		conn.Close(ctx)
		return nil, fmt.Errorf("export source snapshot: %w", err)
	}
	return s, nil
}

func (s *exportedSnapshot) Snapshot() string { return s.id }

func (s *exportedSnapshot) Close(ctx context.Context) error {
	s.conn.PgConn().Exec(ctx, "ROLLBACK").Close()
	return s.conn.Close(ctx)
}

var snapshotID = regexp.MustCompile(`^[0-9A-Fa-f]+-[0-9A-Fa-f]+(-[0-9]+)?$`)

// importSnapshotSQL starts a transaction that sees snapshot id.
func importSnapshotSQL(id string) (string, error) {
	if !snapshotID.MatchString(id) {
		return "", fmt.Errorf("invalid snapshot id %q", id)
	}
	return "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '" + id + "'", nil
}

// snapshotGone says whether err, from importing a snapshot, means that the transaction
// that exported it has ended (PostgreSQL 15 and 17): 42704 undefined_object, "snapshot
// ... does not exist", once the holder's end removed it; 55000
// object_not_in_prerequisite_state, "could not import the requested snapshot", when
// the holder ended between the import's reading of the snapshot and its use.
func snapshotGone(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "42704" || pgErr.Code == "55000")
}

// goneError is the run's end when the snapshot is gone and not renewed.
func (r *run) goneError(err error) error {
	hint := "the transaction that held it ended, its connection lost or closed; resume to continue under a new snapshot"
	if r.opts.RenewSnapshot {
		hint = fmt.Sprintf("it was lost again after %d renewal(s), as many as retries allow; resume to continue under a new snapshot", r.renewals)
	}
	return &exit.Error{Code: exit.Failed, Err: err, Msg: "the source snapshot is gone: " + dbconn.Reason(err), Hint: hint}
}

// currentSnapshot is the ID of the snapshot to import; it waits for a renewal under way.
func (r *run) currentSnapshot() string {
	r.snapMu.Lock()
	defer r.snapMu.Unlock()
	return r.snapshot
}

// closeHolderTimeout bounds the ROLLBACK on a lost holder's connection, which may hang
// when the network dropped it without a word.
const closeHolderTimeout = 5 * time.Second

// renewSnapshot follows a failed import of snapshot old because it is gone (cause). When
// another worker renewed it meanwhile, it returns nil at once: import the current one.
// Otherwise, with Options.RenewSnapshot and fewer than MaxRetries renewals so far, it
// ends the old holder, exports a new snapshot and returns nil; workers wanting the
// snapshot wait meanwhile. Else it returns the error that ends the run.
func (r *run) renewSnapshot(ctx context.Context, old string, cause error) error {
	r.snapMu.Lock()
	if r.snapshot != old {
		r.snapMu.Unlock()
		return nil
	}
	if !r.opts.RenewSnapshot || r.renewals >= r.opts.MaxRetries {
		defer r.snapMu.Unlock()
		return r.goneError(cause)
	}
	r.renewals++
	n := r.renewals
	if r.own != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeHolderTimeout)
		r.own.Close(cctx)
		cancel()
		r.own = nil
	}
	snap, err := ExportSnapshot(ctx, r.opts.Source)
	if err != nil {
		r.snapMu.Unlock()
		return fmt.Errorf("renew the source snapshot: %w", err)
	}
	r.own, r.snapshot = snap, snap.Snapshot()
	r.snapMu.Unlock()

	r.mu.Lock()
	r.res.Retries++
	r.res.SnapshotRenewals++
	r.mu.Unlock()
	r.emit(Event{Type: SnapshotRenewed, Attempt: n, Err: dbconn.Redact(dbconn.Reason(cause))})
	return nil
}

// closeSnapshot ends the snapshot Run exported (the last one renewed).
func (r *run) closeSnapshot() {
	r.snapMu.Lock()
	defer r.snapMu.Unlock()
	if r.own != nil {
		r.own.Close(context.Background())
		r.own = nil
	}
}
