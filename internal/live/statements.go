package live

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// insert buffers a row for COPY into rel's target (a hypertable routes it to its
// chunk); consecutive rows of one relation go in one COPY.
func (a *applier) insert(ctx context.Context, rel *relation, t *pglogrepl.TupleData) error {
	if a.copyRel != rel {
		if err := a.flush(ctx); err != nil {
			return err
		}
		a.copyRel = rel
	} else if err := a.flushBatch(ctx); err != nil {
		return err
	}
	for i, c := range t.Columns {
		if i > 0 {
			a.copyBuf.WriteByte('\t')
		}
		switch c.DataType {
		case pglogrepl.TupleDataTypeNull:
			a.copyBuf.WriteString(`\N`)
		case pglogrepl.TupleDataTypeText:
			copyEscape(&a.copyBuf, c.Data)
		default:
			return fmt.Errorf("apply: an insert into %s with a column sent as %q", rel.source, c.DataType)
		}
	}
	a.copyBuf.WriteByte('\n')
	a.copyRows++
	if a.copyBuf.Len() >= copyMaxBytes {
		return a.flushCopy(ctx)
	}
	return nil
}

// copyEscape writes v as a value of COPY's text format.
func copyEscape(b interface {
	WriteByte(byte) error
	Write([]byte) (int, error)
}, v []byte) {
	start := 0
	for i, c := range v {
		var esc string
		switch c {
		case '\\':
			esc = `\\`
		case '\n':
			esc = `\n`
		case '\r':
			esc = `\r`
		case '\t':
			esc = `\t`
		default:
			continue
		}
		b.Write(v[start:i])
		b.Write([]byte(esc))
		start = i + 1
	}
	b.Write(v[start:])
}

func (a *applier) flushCopy(ctx context.Context) error {
	if a.copyRel == nil || a.copyRows == 0 {
		a.copyRel = nil
		return nil
	}
	rel := a.copyRel
	var names []string
	for _, c := range rel.cols {
		names = append(names, pgx.Identifier{c.name}.Sanitize())
	}
	sql := "COPY " + rel.target.quoted() + " (" + strings.Join(names, ", ") + ") FROM STDIN"
	ct, err := a.tx.Conn().PgConn().CopyFrom(ctx, &a.copyBuf, sql)
	if err != nil {
		return fmt.Errorf("apply: insert %d row(s) of %s into %s: %w", a.copyRows, rel.source, rel.target, err)
	}
	if ct.RowsAffected() != a.copyRows {
		return &StopError{What: fmt.Sprintf("inserting %d row(s) of %s into %s on the target inserted %d", a.copyRows, rel.source, rel.target, ct.RowsAffected())}
	}
	a.copyBuf.Reset()
	a.copyRows, a.copyRel = 0, nil
	return nil
}

// statement queues an update ('U') or delete ('D') of one row of rel, found by the
// source's replica identity: its key (a primary key, or the index named), or all its
// columns (FULL), where one row of several equal ones is taken.
func (a *applier) statement(ctx context.Context, rel *relation, op byte, old, new *pglogrepl.TupleData) error {
	key := old
	if key == nil {
		key = new // the key did not change: the new row holds it
	}
	if key == nil {
		return fmt.Errorf("apply: a change to %s without the row's key", rel.source)
	}
	var args []any
	arg := func(c *pglogrepl.TupleDataColumn) string {
		if c.DataType == pglogrepl.TupleDataTypeNull {
			args = append(args, nil)
		} else {
			args = append(args, string(c.Data))
		}
		return "$" + strconv.Itoa(len(args))
	}
	var set []string
	if op == 'U' {
		for i, c := range new.Columns {
			if i >= len(rel.cols) || c.DataType == pglogrepl.TupleDataTypeToast {
				continue // an unchanged TOASTed value: left as it is
			}
			col := rel.cols[i]
			set = append(set, pgx.Identifier{col.name}.Sanitize()+" = CAST("+arg(c)+"::text AS "+col.typ+")")
		}
	}
	full := rel.full() || old != nil && rel.msg.ReplicaIdentity == 'f'
	var conds []string
	for i, c := range key.Columns {
		if i >= len(rel.cols) {
			break
		}
		col := rel.cols[i]
		if !full && !col.key {
			continue
		}
		if c.DataType == pglogrepl.TupleDataTypeToast {
			if !full {
				return &StopError{What: fmt.Sprintf("a change to %s whose key column %s was sent as an unchanged TOASTed value", rel.source, col.name)}
			}
			continue
		}
		alias := "t."
		if full {
			alias = "u."
		}
		name := alias + pgx.Identifier{col.name}.Sanitize()
		switch {
		case c.DataType == pglogrepl.TupleDataTypeNull:
			conds = append(conds, name+" IS NULL")
		case col.byText:
			conds = append(conds, name+"::text = "+arg(c)+"::text")
		default:
			conds = append(conds, name+" = CAST("+arg(c)+"::text AS "+col.typ+")")
		}
	}
	if len(conds) == 0 {
		return &StopError{What: fmt.Sprintf("a change to %s that names no key to find its row by", rel.source)}
	}
	only := "ONLY "
	if rel.kind == relChunk {
		only = "" // the hypertable with its chunks
	}
	target := only + rel.target.quoted() + " AS t"
	where := strings.Join(conds, " AND ")
	if full {
		// Equal rows cannot be told apart: one of them is the one that changed.
		where = "(t.tableoid, t.ctid) = (SELECT u.tableoid, u.ctid FROM " + only + rel.target.quoted() + " AS u WHERE " + where + " LIMIT 1)"
	}
	var sql string
	what := "update"
	if op == 'U' {
		if len(set) == 0 {
			return nil
		}
		sql = "UPDATE " + target + " SET " + strings.Join(set, ", ") + " WHERE " + where
	} else {
		what = "delete"
		sql = "DELETE FROM " + target + " WHERE " + where
	}
	if a.batch == nil {
		a.batch = &pgx.Batch{}
	}
	a.batch.Queue(sql, args...)
	a.batchFor = append(a.batchFor, fmt.Sprintf("%s of a row of %s (%s)", what, rel.source, describeKey(rel, key, full)))
	if a.batch.Len() >= batchMax {
		return a.flushBatch(ctx)
	}
	return nil
}

// describeKey shows the key of a row, for a StopError: the key columns, or with FULL
// the first few columns.
func describeKey(rel *relation, key *pglogrepl.TupleData, full bool) string {
	var parts []string
	for i, c := range key.Columns {
		if i >= len(rel.cols) || len(parts) >= 4 {
			break
		}
		if !full && !rel.cols[i].key {
			continue
		}
		v := "NULL"
		switch c.DataType {
		case pglogrepl.TupleDataTypeText:
			v = string(c.Data)
			if len(v) > 40 {
				v = v[:40] + "..."
			}
			v = strconv.Quote(v)
		case pglogrepl.TupleDataTypeToast:
			v = "(unchanged)"
		}
		parts = append(parts, rel.cols[i].name+" = "+v)
	}
	return strings.Join(parts, ", ")
}

// flushBatch sends the queued statements; each must change exactly one row.
func (a *applier) flushBatch(ctx context.Context) error {
	if a.batch == nil || a.batch.Len() == 0 {
		return nil
	}
	b, what := a.batch, a.batchFor
	a.batch, a.batchFor = nil, nil
	br := a.tx.SendBatch(ctx, b)
	for i := range what {
		ct, err := br.Exec()
		if err != nil {
			br.Close()
			return fmt.Errorf("apply: %s: %w", what[i], err)
		}
		if ct.RowsAffected() != 1 {
			br.Close()
			return &StopError{What: fmt.Sprintf("the %s changed %d rows on the target, not one: the target does not hold the source's row as it was", what[i], ct.RowsAffected()),
				Hint: "the target no longer matches the source; start the migration over (and report this if nothing else wrote to the target)"}
		}
	}
	return br.Close()
}
