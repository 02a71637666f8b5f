package copy

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// userSequencesSQL lists the sequences pg_dump sets (see plan.go for the rules).
var userSequencesSQL = `SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'S' AND ` + nsCond + ` AND NOT ` + memberCond + ` ORDER BY 1`

// SQL of sequences and large objects. Checked on PostgreSQL 15 and 17.
const (
	setvalSQL = `SELECT pg_catalog.setval($1::regclass, $2, $3)`

	largeObjectOIDsSQL = `SELECT oid FROM pg_largeobject_metadata ORDER BY oid`
	// The target's pre-data section already created the large objects (pg_dump puts
	// their metadata there); create only those it lacks.
	loCreateSQL = `SELECT lo_create($1) WHERE NOT EXISTS (SELECT FROM pg_largeobject_metadata WHERE oid = $1)`
	loGetSQL    = `SELECT lo_get($1, $2, $3)`
	loPutSQL    = `SELECT lo_put($1, $2, $3)`

	// loChunk is how much of a large object is held in memory at once.
	loChunk = 256 << 10
)

func (w *worker) copyAllSequences(ctx context.Context, tx pgx.Tx, l *live) (int64, error) {
	rows, err := w.src.Query(ctx, userSequencesSQL)
	if err != nil {
		return 0, sideError{"source", err}
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, sideError{"source", err}
	}
	return copySequences(ctx, w.src.Conn, tx, names, l)
}

// copySequences reads each sequence's last_value and is_called on the source, as
// pg_dump does, and sets them on the target.
func copySequences(ctx context.Context, src *pgx.Conn, tx pgx.Tx, names []string, l *live) (int64, error) {
	type value struct {
		last   int64
		called bool
	}
	vals := make([]value, len(names))
	b := &pgx.Batch{}
	for i, n := range names {
		b.Queue("SELECT last_value, is_called FROM " + n).QueryRow(func(r pgx.Row) error {
			return r.Scan(&vals[i].last, &vals[i].called)
		})
	}
	if err := src.SendBatch(ctx, b).Close(); err != nil {
		return 0, sideError{"source", fmt.Errorf("read sequence values: %w", err)}
	}
	b = &pgx.Batch{}
	for i, n := range names {
		b.Queue(setvalSQL, n, vals[i].last, vals[i].called)
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return 0, sideError{"target", fmt.Errorf("set sequence values: %w", err)}
	}
	l.rows.Add(int64(len(names)))
	return int64(len(names)), nil
}

// copyLargeObjects copies every large object's contents in pieces of loChunk.
func copyLargeObjects(ctx context.Context, src *pgx.Conn, tx pgx.Tx, l *live) (int64, error) {
	rows, err := src.Query(ctx, largeObjectOIDsSQL)
	if err != nil {
		return 0, sideError{"source", err}
	}
	oids, err := pgx.CollectRows(rows, pgx.RowTo[uint32])
	if err != nil {
		return 0, sideError{"source", err}
	}
	buf := make([]byte, 0, loChunk)
	for _, oid := range oids {
		if _, err := tx.Exec(ctx, loCreateSQL, oid); err != nil {
			return 0, sideError{"target", fmt.Errorf("create large object %d: %w", oid, err)}
		}
		for off := int64(0); ; off += loChunk {
			buf = buf[:0]
			if err := src.QueryRow(ctx, loGetSQL, oid, off, loChunk).Scan(&buf); err != nil {
				return 0, sideError{"source", fmt.Errorf("read large object %d: %w", oid, err)}
			}
			if len(buf) == 0 {
				break
			}
			if _, err := tx.Exec(ctx, loPutSQL, oid, off, buf); err != nil {
				return 0, sideError{"target", fmt.Errorf("write large object %d: %w", oid, err)}
			}
			l.bytes.Add(int64(len(buf)))
			if len(buf) < loChunk {
				break
			}
		}
		l.rows.Add(1)
	}
	return int64(len(oids)), nil
}
