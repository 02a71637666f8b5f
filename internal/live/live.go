// Package live is the live mode of a stream migration: the applications keep writing
// to the source while its rows are copied, and the changes they make meanwhile are
// streamed by logical decoding, kept in the target, and applied there after the copy,
// until a cut-over that stops writes for seconds.
//
// The pieces, in the order a migration uses them:
//   - Start, on the source: a publication that covers every chunk, present and future
//     (TimescaleDB's chunk schemas, which needs a superuser), TimescaleDB's chunk
//     catalog (to learn which hypertable a new chunk belongs to) and hypertable
//     catalog (to name a hypertable made, renamed or dropped: DDL) and the plain tables
//     by name (TimescaleDB 2.20+ refuses create_hypertable on a table in a schema
//     publication); replica identities where the publication would otherwise make
//     UPDATE and DELETE fail (see Identity); a logical replication slot (pgoutput)
//     whose exported snapshot the copy reads (Stream.Snapshot, imported by a holder
//     transaction so that it outlives the replication connection).
//   - Receive, during the copy and after it: the slot's changes, kept in the target
//     (schema _tsmigrate, see spool.go) and confirmed to the source as they are
//     committed there, so that the slot does not hold back the source's WAL for the
//     whole copy.
//   - Apply, after the copy: the kept changes applied through the hypertables (chunk
//     names differ between servers) in commit order, in batches, with the position
//     applied stored in the same target transaction as the data: a killed run resumes
//     without losing or repeating a change. DDL on the source that the stream shows
//     (a table whose columns or types no longer match the target's, a table the
//     target lacks, a hypertable made, renamed or dropped) stops it with a StopError
//     naming the change; DDL followed by no change to the table is not in the stream:
//     the verify at the cut-over compares the schemas.
//   - EmitEndMarker, once the source is frozen: a logical message that ends the
//     stream exactly; Apply stops at it.
//   - Drop: the slot, the publication, and the replica identities set back.
//
// Measured facts this package is built on: /work/shared/docs/live-mode-notes.md.
package live

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"regexp"

	"github.com/jackc/pglogrepl"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// Names of what a live migration makes on the source: a slot and a publication of
// the same name, "tsmigrate_" and an id.
type Names struct {
	Slot        string `json:"slot"`
	Publication string `json:"publication"`
}

var nameRE = regexp.MustCompile(sqltext.LiveName)

// NewNames makes fresh names.
func NewNames() Names {
	var b [8]byte
	rand.Read(b[:])
	n := "tsmigrate_" + hex.EncodeToString(b[:])
	return Names{Slot: n, Publication: n}
}

// valid checks names read back from a journal before they go into replication
// commands, which take no parameters.
func (n Names) valid() error {
	if !nameRE.MatchString(n.Slot) || !nameRE.MatchString(n.Publication) {
		return fmt.Errorf("live: invalid slot or publication name %q/%q", n.Slot, n.Publication)
	}
	return nil
}

// EndPrefix is the prefix of the logical message that ends a live migration's stream.
const EndPrefix = "tsmigrate-end"

// TimescaleDB's logical messages around work that moves rows without changing them
// (TimescaleDB 2.16+, timescaledb.enable_compression_wal_markers, on by default;
// seen on 2.19.3: transactional messages inside the compressing transaction).
const (
	compressionStart   = "::timescaledb-compression-start"
	compressionEnd     = "::timescaledb-compression-end"
	decompressionStart = "::timescaledb-decompression-start"
	decompressionEnd   = "::timescaledb-decompression-end"
)

// replicationParams are the settings of the replication session, as PostgreSQL's own
// subscriber sets them (libpqwalreceiver), plus UTC: the output plugin prints values
// as text under them, and the applying session reads them under the same.
var replicationParams = map[string]string{
	"DateStyle": "ISO", "IntervalStyle": "postgres", "extra_float_digits": "3", "TimeZone": "UTC",
}

// LSN is a WAL position.
type LSN = pglogrepl.LSN

// sqlEmitEnd writes the end marker into the source's WAL, outside any transaction, so
// that it needs no transaction id: it works on a source frozen read-only. PostgreSQL
// 15, 17.
const sqlEmitEnd = `SELECT pg_logical_emit_message(false, $1, $2)::text`

// EmitEndMarker writes the end of the stream into the source's WAL: the applier that
// was given content as its End stops once it applied every change before it.
func EmitEndMarker(ctx context.Context, source *dbconn.Config, content string) (LSN, error) {
	conn, err := source.ConnectSession(ctx, dbconn.NoTimeouts)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var lsn string
	if err := conn.QueryRow(ctx, sqlEmitEnd, EndPrefix, content).Scan(&lsn); err != nil {
		return 0, fmt.Errorf("write the end marker into the source's WAL: %w", err)
	}
	return pglogrepl.ParseLSN(lsn)
}
