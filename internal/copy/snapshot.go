package copy

import (
	"context"
	"fmt"
	"regexp"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
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
	// Timeouts off: the holding transaction stays idle for the whole run.
	exportSnapshotSQL = `SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0;
BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`
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
	if err := conn.PgConn().Exec(ctx, exportSnapshotSQL).Close(); err != nil {
		conn.Close(ctx)
		return nil, fmt.Errorf("export source snapshot: %w", err)
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
