package copy

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/sqltext"
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

	// Large objects' comments, and their privileges as pg_dump gives them: those
	// beyond the owner's defaults are granted, the defaults they lack revoked (revokes
	// first: an owner's own right may come back with its grant option), grantees by
	// name (the owner is the target's user, as with pg_dump --no-owner; the grantor
	// too). pg_dump 17 puts them with the large objects' metadata in the data section,
	// which the stream engine does not restore; before 17 the pre-data section gave
	// them already, and giving them again changes nothing.
	loCommentsSQL = `SELECT objoid, description FROM pg_description
WHERE classoid = 'pg_largeobject'::regclass AND objsubid = 0 ORDER BY objoid`
	loPrivilegesSQL = `WITH lo AS (SELECT oid, lomowner, lomacl FROM pg_largeobject_metadata WHERE lomacl IS NOT NULL),
held AS (SELECT lo.oid, a.grantee, a.privilege_type, a.is_grantable, a.n
	FROM lo, aclexplode(lo.lomacl) WITH ORDINALITY a(grantor, grantee, privilege_type, is_grantable, n)),
dflt AS (SELECT lo.oid, a.grantee, a.privilege_type, a.is_grantable FROM lo, aclexplode(acldefault('L', lo.lomowner)) a)
SELECT x.oid, x.grant, coalesce(r.rolname, ''), x.privilege_type, x.is_grantable
FROM (SELECT h.*, true AS grant FROM held h WHERE NOT EXISTS (SELECT FROM dflt d
		WHERE (d.oid, d.grantee, d.privilege_type, d.is_grantable) = (h.oid, h.grantee, h.privilege_type, h.is_grantable))
	UNION ALL SELECT d.*, 0, false FROM dflt d WHERE NOT EXISTS (SELECT FROM held h
		WHERE (d.oid, d.grantee, d.privilege_type, d.is_grantable) = (h.oid, h.grantee, h.privilege_type, h.is_grantable))) x
LEFT JOIN pg_roles r ON r.oid = x.grantee
ORDER BY x.oid, x.grant, x.n`
)

func (w *worker) copyAllSequences(ctx context.Context, tx targetTx, l *live) (int64, error) {
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
func copySequences(ctx context.Context, src *pgx.Conn, tx targetTx, names []string, l *live) (int64, error) {
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
func copyLargeObjects(ctx context.Context, src *pgx.Conn, tx targetTx, l *live) (int64, error) {
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
	if err := copyLargeObjectMetadata(ctx, src, tx); err != nil {
		return 0, err
	}
	return int64(len(oids)), nil
}

// copyLargeObjectMetadata gives the target's large objects the source's comments and
// privileges, in one batch (grants in the order of the source's list, which the
// target's then follows).
func copyLargeObjectMetadata(ctx context.Context, src *pgx.Conn, tx targetTx) error {
	var stmts []string
	var oid uint32
	var text string
	rows, _ := src.Query(ctx, loCommentsSQL)
	_, err := pgx.ForEachRow(rows, []any{&oid, &text}, func() error {
		stmts = append(stmts, fmt.Sprintf("COMMENT ON LARGE OBJECT %d IS %s", oid, sqltext.Literal(text)))
		return nil
	})
	if err != nil {
		return sideError{"source", fmt.Errorf("read large objects' comments: %w", err)}
	}
	var grant, grantable bool
	var grantee, privilege string
	rows, _ = src.Query(ctx, loPrivilegesSQL)
	_, err = pgx.ForEachRow(rows, []any{&oid, &grant, &grantee, &privilege, &grantable}, func() error {
		who := "PUBLIC"
		if grantee != "" {
			who = pgx.Identifier{grantee}.Sanitize()
		}
		switch {
		case grant && grantable:
			stmts = append(stmts, fmt.Sprintf("GRANT %s ON LARGE OBJECT %d TO %s WITH GRANT OPTION", privilege, oid, who))
		case grant:
			stmts = append(stmts, fmt.Sprintf("GRANT %s ON LARGE OBJECT %d TO %s", privilege, oid, who))
		default:
			stmts = append(stmts, fmt.Sprintf("REVOKE %s ON LARGE OBJECT %d FROM %s", privilege, oid, who))
		}
		return nil
	})
	if err != nil {
		return sideError{"source", fmt.Errorf("read large objects' privileges: %w", err)}
	}
	if len(stmts) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	for _, q := range stmts {
		b.Queue(q)
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return sideError{"target", fmt.Errorf("give large objects their comments and privileges: %w", err)}
	}
	return nil
}
