package live

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
)

// The target keeps a live migration's state in the journal's schema (_tsmigrate),
// dropped with the journal when the run ends well:
//   - live: one row: the slot and publication, the replica identities to set back,
//     how far the changes were received (every transaction that committed on the
//     source up to received_lsn is in live_changes up to received_seq, and the slot
//     was told so) and applied (every change up to applied_seq is in the target's
//     tables, committed with this row);
//   - live_changes: the slot's messages as pgoutput sent them, in the order received;
//     the applier deletes them as it applies them;
//   - live_relations: the last Relation message of each source relation, which
//     describes its columns (pgoutput sends one before a relation's first change on
//     a connection), kept by the applier with what it applies;
//   - live_hypertables, live_chunks: the source's hypertables and chunks, read in the
//     slot's snapshot and then kept by the applier from the chunk catalog's changes
//     in the stream;
//   - live_touched: the source's tables and chunks that changes were applied to,
//     which the verify at the cut-over compares again: whole, or (key_columns set) a
//     plain table with a replica identity key only in the rows whose keys are in
//     live_touched_keys (every key a change was applied to, the old one and the new
//     one of an UPDATE that changed it), committed with the changes.
//
// Checked on PostgreSQL 15 and 17.
const (
	sqlCreateSpool = `
CREATE SCHEMA IF NOT EXISTS _tsmigrate;
CREATE TABLE IF NOT EXISTS _tsmigrate.live (
	one          boolean PRIMARY KEY DEFAULT true CHECK (one),
	slot         text NOT NULL,
	publication  text NOT NULL,
	start_lsn    pg_lsn NOT NULL,
	identity     jsonb NOT NULL,
	received_lsn pg_lsn NOT NULL,
	received_seq bigint NOT NULL DEFAULT 0,
	applied_lsn  pg_lsn NOT NULL,
	applied_seq  bigint NOT NULL DEFAULT 0,
	applied_commit_time timestamptz,
	peak_retained bigint NOT NULL DEFAULT 0,
	copied       boolean NOT NULL DEFAULT false
);
CREATE TABLE IF NOT EXISTS _tsmigrate.live_changes (
	seq  bigint PRIMARY KEY,
	lsn  bigint NOT NULL,
	data bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS _tsmigrate.live_relations (
	relid oid PRIMARY KEY,
	data  bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS _tsmigrate.live_hypertables (
	id          int PRIMARY KEY,
	schema_name text NOT NULL,
	table_name  text NOT NULL,
	compressed  boolean NOT NULL
);
CREATE TABLE IF NOT EXISTS _tsmigrate.live_chunks (
	id            int PRIMARY KEY,
	hypertable_id int NOT NULL,
	schema_name   text NOT NULL,
	table_name    text NOT NULL,
	compressed_chunk_id int
);
CREATE TABLE IF NOT EXISTS _tsmigrate.live_touched (
	kind       text NOT NULL,
	schema_name text NOT NULL,
	table_name text NOT NULL,
	PRIMARY KEY (kind, schema_name, table_name)
);
ALTER TABLE _tsmigrate.live_touched ADD COLUMN IF NOT EXISTS key_columns text[];
CREATE TABLE IF NOT EXISTS _tsmigrate.live_touched_keys (
	schema_name text NOT NULL,
	table_name  text NOT NULL,
	key         jsonb NOT NULL,
	PRIMARY KEY (schema_name, table_name, key)
)`

	sqlInsertState = `INSERT INTO _tsmigrate.live (slot, publication, start_lsn, identity, received_lsn, applied_lsn)
VALUES ($1, $2, $3, $4, $3, $3)`

	// In the slot's snapshot, on the source (TimescaleDB 2.x up to 2.28, whose chunk
	// catalog names chunks by schema_name and table_name).
	sqlSourceHypertables = `SELECT id, schema_name::text, table_name::text, compression_state = 2 FROM _timescaledb_catalog.hypertable`
	sqlSourceChunks      = `SELECT id, hypertable_id, schema_name::text, table_name::text, compressed_chunk_id FROM _timescaledb_catalog.chunk`
)

// durableSessionSQL: a target session whose commits are on disk when they return,
// whatever synchronous_commit the target's database or server says (a migration
// gives the target database the source database's settings): the receiver tells the
// slot that the changes it committed are kept, and the source may then recycle their
// WAL. PostgreSQL 15, 17.
const durableSessionSQL = dbconn.NoTimeouts + "; SET default_transaction_read_only = off; SET synchronous_commit = on"

// ErrNoState: the target holds no live migration's state.
var ErrNoState = errors.New("the target holds no live migration state")

// State is what the target's live row says.
type State struct {
	Names
	StartLSN    LSN
	Identity    []IdentityChange
	ReceivedLSN LSN
	ReceivedSeq int64
	AppliedLSN  LSN
	AppliedSeq  int64
	// AppliedCommitTime: the source's commit time of the last transaction applied.
	AppliedCommitTime *time.Time
	PeakRetained      int64
	// Copied: the copy's data and schema are all in the target; changes may be applied.
	Copied bool
}

const sqlReadState = `SELECT slot, publication, start_lsn::text, identity, received_lsn::text, received_seq,
	applied_lsn::text, applied_seq, applied_commit_time, peak_retained, copied FROM _tsmigrate.live`

// ReadState reads the target's live row.
func ReadState(ctx context.Context, conn *pgx.Conn) (*State, error) {
	var st State
	var start, recv, applied string
	var identity []byte
	err := conn.QueryRow(ctx, sqlReadState).Scan(&st.Slot, &st.Publication, &start, &identity, &recv, &st.ReceivedSeq,
		&applied, &st.AppliedSeq, &st.AppliedCommitTime, &st.PeakRetained, &st.Copied)
	var pgErr *pgconn.PgError
	if errors.Is(err, pgx.ErrNoRows) || errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000") {
		return nil, ErrNoState
	}
	if err != nil {
		return nil, fmt.Errorf("read the live migration's state in the target: %w", err)
	}
	if err := json.Unmarshal(identity, &st.Identity); err != nil {
		return nil, fmt.Errorf("read the live migration's state in the target: %w", err)
	}
	for _, p := range []struct {
		s string
		l *LSN
	}{{start, &st.StartLSN}, {recv, &st.ReceivedLSN}, {applied, &st.AppliedLSN}} {
		if *p.l, err = parseLSN(p.s); err != nil {
			return nil, err
		}
	}
	return &st, st.Names.valid()
}

// Init makes the target's live state for the stream s: the tables above, and the
// source's hypertables and chunks as the slot's snapshot sees them.
func Init(ctx context.Context, target *dbconn.Config, s *Stream) error {
	conn, err := target.ConnectSession(ctx, durableSessionSQL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	identity, err := json.Marshal(s.Identity)
	if err != nil {
		return err
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, sqlCreateSpool); err != nil {
		return fmt.Errorf("make the live migration's tables in the target: %w", err)
	}
	if _, err := tx.Exec(ctx, sqlInsertState, s.Slot, s.Publication, s.StartLSN.String(), identity); err != nil {
		return fmt.Errorf("record the live migration in the target: %w", err)
	}
	if s.Plan.Timescale {
		for _, c := range []struct {
			query, table string
			cols         []string
		}{
			{sqlSourceHypertables, "live_hypertables", []string{"id", "schema_name", "table_name", "compressed"}},
			{sqlSourceChunks, "live_chunks", []string{"id", "hypertable_id", "schema_name", "table_name", "compressed_chunk_id"}},
		} {
			rows, err := s.holder.Query(ctx, c.query)
			if err != nil {
				return fmt.Errorf("read the source's TimescaleDB catalog: %w", err)
			}
			vals, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([]any, error) { return r.Values() })
			if err != nil {
				return fmt.Errorf("read the source's TimescaleDB catalog: %w", err)
			}
			if _, err := tx.CopyFrom(ctx, pgx.Identifier{"_tsmigrate", c.table}, c.cols, pgx.CopyFromRows(vals)); err != nil {
				return fmt.Errorf("record the source's TimescaleDB catalog in the target: %w", err)
			}
		}
	}
	return tx.Commit(ctx)
}

// MarkCopied records that the copy is complete in the target, on disk when it returns
// whatever synchronous_commit says: a resumed run applies changes rather than being
// refused as killed in its copy.
func MarkCopied(ctx context.Context, conn *pgx.Conn) error {
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, sqlDurable); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE _tsmigrate.live SET copied = true`)
		return err
	})
}

func parseLSN(s string) (LSN, error) {
	l, err := pglogrepl.ParseLSN(s)
	if err != nil {
		return 0, fmt.Errorf("read the live migration's state in the target: LSN %q: %w", s, err)
	}
	return l, nil
}
