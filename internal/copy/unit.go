package copy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/inventory"
	"github.com/tsmigrate/tsmigrate/internal/journal"
)

// pipeBuffer batches COPY messages (one per row) into writes of the pipe's size, so
// that the two connections hand over 64 kB at a time rather than row by row; pgconn's
// CopyFrom reads into a 64 kB buffer less its 5-byte message header.
const pipeBuffer = 65536 - 5

// live counts what passed through a running unit; read by the progress ticker.
type live struct {
	info        UnitInfo
	table       string // tableKey of the unit
	kind        journal.Kind
	attempt     int // this try's number, counted as it began
	rows, bytes atomic.Int64
	// building: the unit's rows are in and it builds its indexes and constraints, or
	// it is an indexes unit; no byte moves meanwhile.
	building atomic.Bool
}

// counter counts bytes and COPY messages (rows, give or take the binary header and
// trailer) on their way to the pipe.
type counter struct {
	w io.Writer
	l *live
}

func (c counter) Write(p []byte) (int, error) {
	c.l.rows.Add(1)
	c.l.bytes.Add(int64(len(p)))
	return c.w.Write(p)
}

// errTargetFailed closes the pipe when the target side of a COPY failed first.
var errTargetFailed = errors.New("target side of the copy failed")

// UnitError is a unit that failed: which unit, on which side, and the server's reason.
type UnitError struct {
	Unit string
	Side string // "source" or "target"
	Err  error
}

func (e *UnitError) Error() string {
	reason := dbconn.Reason(e.Err)
	var xe *exit.Error
	if errors.As(e.Err, &xe) {
		reason = xe.Error()
	}
	return fmt.Sprintf("copy %s: %s: %s", e.Unit, e.Side, dbconn.Redact(reason))
}

func (e *UnitError) Unwrap() error { return e.Err }

// permanent marks an error of ours that another attempt would not cure.
type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

func describe(u *journal.Unit) string {
	switch u.Kind {
	case journal.KindRange:
		end := "end"
		if u.PageHi >= 0 {
			end = fmt.Sprint(u.PageHi)
		}
		return fmt.Sprintf("table %s (pages %d to %s)", inventory.DisplayName(u.Schema, u.Table), u.PageLo, end)
	case journal.KindTable, journal.KindConfig:
		return "table " + inventory.DisplayName(u.Schema, u.Table)
	case journal.KindConfigSeq:
		return "sequence " + inventory.DisplayName(u.Schema, u.Table)
	case journal.KindIndexes:
		return "indexes and constraints of table " + inventory.DisplayName(u.Schema, u.Table)
	default:
		return u.ID
	}
}

// tableKey names the table whose indexes wait for the unit: a chunk's hypertable,
// else the table itself.
func tableKey(u *journal.Unit) string {
	if u.Parent != "" {
		return u.Parent
	}
	return inventory.DisplayName(u.Schema, u.Table)
}

func qualified(u *journal.Unit) string { return pgx.Identifier{u.Schema, u.Table}.Sanitize() }

// targetQualified is the table the unit's rows go into on the target.
func targetQualified(u *journal.Unit) string {
	if u.TargetTable != "" {
		return pgx.Identifier{u.TargetSchema, u.TargetTable}.Sanitize()
	}
	return qualified(u)
}

// routed says whether a chunk's rows go through its hypertable on the target.
func routed(u *journal.Unit) bool {
	return u.Parent != "" && u.TargetTable != "" && inventory.DisplayName(u.TargetSchema, u.TargetTable) == u.Parent
}

func info(u *journal.Unit) UnitInfo {
	i := UnitInfo{ID: u.ID, Kind: string(u.Kind), EstBytes: u.EstBytes, EstRows: u.EstRows}
	if u.Table != "" {
		i.Relation = u.Schema + "." + u.Table
	}
	return i
}

// selectList is the quoted column names joined by commas ("" for a table without
// columns, whose rows COPY still carries, as empty lines), each with its cast, if any
// (casts: one per column, or none).
func selectList(cols, casts []string) string {
	q := make([]string, len(cols))
	for i, c := range cols {
		q[i] = pgx.Identifier{c}.Sanitize()
		if i < len(casts) && casts[i] != "" {
			q[i] += "::" + casts[i]
		}
	}
	return strings.Join(q, ", ")
}

// freezeMinBytes: smaller tables are copied without TRUNCATE and FREEZE. The
// TRUNCATE costs about a millisecond per table whatever its size (5000 small chunks:
// 13.5 s with it, 6.2 s without), while what FREEZE saves (setting hint bits and
// freezing the rows later) grows with the table.
const freezeMinBytes = 1 << 20

// copySQL gives the source's COPY TO and the target's COPY FROM of a table unit.
// A whole table is read with COPY table TO, as pg_dump reads it (on TimescaleDB's
// full build this reads a compressed chunk's heap as it is, never decompressing),
// or, to decompress a compressed chunk, with a SELECT of it; a range with a TID range
// scan of ONLY the table; a config table with its dump condition. A table of
// freezeMinBytes or more is truncated on the target in the same transaction, so that
// COPY FREEZE may write frozen rows, but a hypertable that routes a chunk's rows.
func copySQL(u *journal.Unit) (src, dst string, truncate bool) {
	t, sel := qualified(u), selectList(u.Columns, u.Casts)
	cols := ""
	if len(u.Columns) > 0 {
		cols = "(" + selectList(u.Columns, nil) + ")"
	}
	format, freeze := "", ""
	if u.Binary {
		format = "FORMAT binary"
	}
	switch u.Kind {
	case journal.KindTable:
		src = fmt.Sprintf("COPY %s %s TO STDOUT", t, cols)
		if u.Decompress {
			src = fmt.Sprintf("COPY (SELECT %s FROM %s) TO STDOUT", sel, t)
		} else if len(u.Casts) > 0 {
			// ONLY: TimescaleDB reads a compressed chunk's own rows alone then, as COPY
			// does (checked on 2.19.3), not its compressed ones decompressed.
			src = fmt.Sprintf("COPY (SELECT %s FROM ONLY %s) TO STDOUT", sel, t)
		}
		if u.EstBytes >= freezeMinBytes && !routed(u) {
			truncate, freeze = true, "FREEZE"
		}
	case journal.KindRange:
		cond := fmt.Sprintf("ctid >= '(%d,0)'::tid", u.PageLo)
		if u.PageHi >= 0 {
			cond += fmt.Sprintf(" AND ctid < '(%d,0)'::tid", u.PageHi)
		}
		src = fmt.Sprintf("COPY (SELECT %s FROM ONLY %s WHERE %s) TO STDOUT", sel, t, cond)
	case journal.KindConfig:
		src = fmt.Sprintf("COPY (SELECT %s FROM ONLY %s %s) TO STDOUT", sel, t, u.Condition)
	}
	opts := strings.Trim(format+", "+freeze, ", ")
	if format != "" {
		src += " (" + format + ")"
	}
	dst = fmt.Sprintf("COPY %s %s FROM STDIN", targetQualified(u), cols)
	if opts != "" {
		dst += " (" + opts + ")"
	}
	return src, dst, truncate
}

// pipe streams one COPY from the source (read, the source's COPY TO, writing its data
// into the writer it is given) into the target transaction (dstSQL, a COPY FROM STDIN,
// after other statements if need be).
// Nothing is buffered beyond the pipe's 64 kB. It returns the rows the target took,
// which must be the rows the source sent when strict (extension configuration tables
// may have triggers that skip rows the extension made itself, such as TimescaleDB's
// metadata_insert_trigger).
func pipe(ctx context.Context, read func(io.Writer) (pgconn.CommandTag, error), tgt *pgconn.PgConn, dstSQL string, strict bool, l *live) (int64, error) {
	pr, pw := io.Pipe()
	srcDone := make(chan error, 1)
	var srcRows int64
	go func() {
		bw := bufio.NewWriterSize(pw, pipeBuffer)
		tag, err := read(counter{w: bw, l: l})
		if err == nil {
			err = bw.Flush()
		}
		srcRows = tag.RowsAffected()
		pw.CloseWithError(err)
		srcDone <- err
	}()
	tag, tgtErr := tgt.CopyFrom(ctx, pr, dstSQL)
	if tgtErr != nil {
		pr.CloseWithError(errTargetFailed)
	}
	srcErr := <-srcDone
	switch {
	case srcErr != nil && !errors.Is(srcErr, errTargetFailed):
		return 0, sideError{"source", srcErr}
	case tgtErr != nil:
		return 0, sideError{"target", tgtErr}
	case strict && srcRows != tag.RowsAffected():
		return 0, permanent{fmt.Errorf("source sent %d rows, target took %d", srcRows, tag.RowsAffected())}
	}
	return tag.RowsAffected(), nil
}

// sideError says which server an error came from.
type sideError struct {
	side string
	err  error
}

func (e sideError) Error() string { return e.side + ": " + e.err.Error() }
func (e sideError) Unwrap() error { return e.err }
