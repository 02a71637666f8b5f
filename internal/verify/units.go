package verify

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

// Unit is one compared piece of data: a plain table, a hypertable chunk, or a time
// range of a hypertable (where the chunks of both sides do not line up).
type Unit struct {
	Kind        string `json:"kind"`  // "table", "chunk" or "range"
	Table       string `json:"table"` // schema.name; the hypertable for chunks and ranges
	Chunk       string `json:"chunk,omitempty"`
	TargetChunk string `json:"target_chunk,omitempty"` // when its name differs on the target
	Range       string `json:"range,omitempty"`        // [start, end) of the time dimension
	Source      Side   `json:"source"`
	Target      Side   `json:"target"`
	Identical   bool   `json:"identical"`
	// Problem says what differs, in words ("" when identical).
	Problem string `json:"problem,omitempty"`
	// Columns and Rows are the drill-down's evidence (Options.ShowRows).
	Columns   []string      `json:"columns,omitempty"`
	Rows      []RowDiff     `json:"rows,omitempty"`
	DrillNote string        `json:"drill_note,omitempty"`
	Duration  time.Duration `json:"duration_ns"`
}

// Side is one server's view of a unit.
type Side struct {
	Present  bool   `json:"present"`
	Rows     int64  `json:"rows"`
	Checksum string `json:"checksum,omitempty"`
}

// RowDiff is one row that differs. Source or Target is nil where that side lacks
// the row; a nil value inside is SQL NULL.
type RowDiff struct {
	Key    string    `json:"key,omitempty"`
	Source []*string `json:"source"`
	Target []*string `json:"target"`
}

func (u *Unit) name() string {
	switch {
	case u.Chunk != "":
		return fmt.Sprintf("hypertable %s chunk %s", u.Table, u.Chunk)
	case u.Range != "":
		return fmt.Sprintf("hypertable %s range %s", u.Table, u.Range)
	}
	return "table " + u.Table
}

// Name says which data the unit covers, in words.
func (u *Unit) Name() string { return u.name() }

func (u *Unit) sortKey() string { return u.Table + "\x00" + u.Chunk + u.Range }

// plan is a Unit before it runs: how to read it on each side.
type plan struct {
	Unit
	columns []column  // compared columns, in the source's order
	from    [2]string // FROM item per side, aliased t; "" when absent on that side
	where   [2]string // row filter per side, "" for none
	key     keySpec   // how the drill-down orders rows
	sortPos float64
}

func (p *plan) name() string { return p.Unit.name() }

// planUnits pairs the two sides' tables and chunks into units.
func planUnits(src, tgt *inventory) []*plan {
	names := map[string]bool{}
	for n := range src.tables {
		names[n] = true
	}
	for n := range tgt.tables {
		names[n] = true
	}
	var plans []*plan
	for n := range names {
		plans = append(plans, planTable(n, src.tables[n], tgt.tables[n])...)
	}
	sort.Slice(plans, func(i, j int) bool {
		if plans[i].Table != plans[j].Table {
			return plans[i].Table < plans[j].Table
		}
		return plans[i].sortPos < plans[j].sortPos
	})
	return plans
}

func planTable(name string, s, t *table) []*plan {
	ref := s
	if ref == nil {
		ref = t
	}
	cols := commonColumns(s, t)
	key := chooseKey(ref, cols)
	base := plan{Unit: Unit{Kind: "table", Table: name}, columns: cols, key: key}
	sides := [2]*table{s, t}

	if (s == nil || s.hyper == nil) && (t == nil || t.hyper == nil) {
		p := base
		for i, tb := range sides {
			if tb != nil {
				p.from[i] = "ONLY " + tb.qualified() + " AS t"
			}
		}
		return []*plan{&p}
	}
	if s != nil && t != nil && s.hyper != nil && t.hyper != nil {
		if ps := chunkPlans(base, s, t); ps != nil {
			return ps
		}
	}
	return rangePlans(base, sides)
}

// chunkPlans pairs chunks by their slices. It returns nil when the two sides' chunks
// do not pair one to one.
func chunkPlans(base plan, s, t *table) []*plan {
	bySlices := map[string]chunk{}
	for _, c := range t.hyper.chunks {
		if _, dup := bySlices[c.slices]; dup || c.slices == "" {
			return nil
		}
		bySlices[c.slices] = c
	}
	if len(s.hyper.chunks) != len(t.hyper.chunks) {
		return nil
	}
	var plans []*plan
	for _, sc := range s.hyper.chunks {
		tc, ok := bySlices[sc.slices]
		if !ok {
			return nil
		}
		p := base
		p.Kind = "chunk"
		p.Chunk = sc.schema + "." + sc.name
		if tc.schema != sc.schema || tc.name != sc.name {
			p.TargetChunk = tc.schema + "." + tc.name
		}
		p.Range = rangeText(sc.start, sc.end)
		p.sortPos = sc.startSort
		if sc.compressed || tc.compressed {
			// Compressed rows are not in the chunk table itself: read them through the
			// hypertable, over exactly the chunk's slices. Untested here: the Apache
			// build has no compression.
			p.from = [2]string{s.qualified() + " AS t", t.qualified() + " AS t"}
			p.where = [2]string{sc.slices, tc.slices}
		} else {
			p.from = [2]string{"ONLY " + sc.qualified() + " AS t", "ONLY " + tc.qualified() + " AS t"}
		}
		plans = append(plans, &p)
	}
	return plans
}

// rangePlans cuts a hypertable (on one side at least) into ranges of its time
// dimension at every chunk boundary of either side, so that each range lies within
// one chunk per side, plus the open ends before the first and after the last.
func rangePlans(base plan, sides [2]*table) []*plan {
	var h *hypertable
	for _, tb := range sides {
		if tb != nil && tb.hyper != nil {
			h = tb.hyper
			break
		}
	}
	type bound struct {
		text string
		pos  float64
	}
	seen := map[string]bool{}
	var bounds []bound
	for _, tb := range sides {
		if tb == nil || tb.hyper == nil {
			continue
		}
		for _, c := range tb.hyper.chunks {
			for _, b := range []bound{{c.start, c.startSort}, {c.end, c.endSort}} {
				if b.text != "" && !math.IsInf(b.pos, 0) && !seen[b.text] {
					seen[b.text] = true
					bounds = append(bounds, b)
				}
			}
		}
	}
	sort.Slice(bounds, func(i, j int) bool { return bounds[i].pos < bounds[j].pos })

	col := "t." + quoteIdent(h.timeColumn)
	lit := func(b string) string { return quoteLiteral(b) + "::" + h.timeType }
	var plans []*plan
	for i := 0; i <= len(bounds); i++ {
		p := base
		p.Kind = "range"
		var conds []string
		lo, hi := "", ""
		p.sortPos = math.Inf(-1)
		if i > 0 {
			lo = bounds[i-1].text
			p.sortPos = bounds[i-1].pos
			conds = append(conds, col+" >= "+lit(lo))
		}
		if i < len(bounds) {
			hi = bounds[i].text
			conds = append(conds, col+" < "+lit(hi))
		}
		p.Range = rangeText(lo, hi)
		for j, tb := range sides {
			if tb == nil {
				continue
			}
			only := "ONLY "
			if tb.hyper != nil {
				only = ""
			}
			p.from[j] = only + tb.qualified() + " AS t"
			p.where[j] = strings.Join(conds, " AND ")
		}
		plans = append(plans, &p)
	}
	return plans
}

func rangeText(lo, hi string) string {
	if lo == "" {
		lo = "-∞"
	}
	if hi == "" {
		hi = "+∞"
	}
	return "[" + lo + ", " + hi + ")"
}

// commonColumns are the columns both sides have, by name, in the source's order
// (a missing or extra column is a schema difference, reported there).
func commonColumns(s, t *table) []column {
	if s == nil {
		return t.columns
	}
	if t == nil {
		return s.columns
	}
	have := map[string]bool{}
	for _, c := range t.columns {
		have[c.name] = true
	}
	var cols []column
	for _, c := range s.columns {
		if have[c.name] {
			cols = append(cols, c)
		}
	}
	return cols
}

// rowText is the canonical text of a row: the row constructor's text form, in which
// NULL is an empty field and ” is "", every value is its type's output (under the
// pinned settings) and quoting keeps field boundaries unambiguous.
func rowText(cols []column) string {
	parts := make([]string, len(cols))
	for i, c := range cols {
		parts[i] = "t." + quoteIdent(c.name)
	}
	return "ROW(" + strings.Join(parts, ", ") + ")::text"
}

// checksumSQL counts the rows and sums the two 64-bit halves of each row's md5:
// order-independent, duplicate-sensitive (a sum, not an xor), one scan, no rows sent.
// sum(bigint) accumulates in numeric, so it never overflows.
// Checked on PostgreSQL 15 and 17.
const checksumSQL = `SELECT count(*),
	coalesce(sum(('x' || substr(r.h, 1, 16))::bit(64)::bigint), 0)::text,
	coalesce(sum(('x' || substr(r.h, 17, 16))::bit(64)::bigint), 0)::text
FROM (SELECT md5(%s) AS h FROM %s%s) AS r`

func where(cond string) string {
	if cond == "" {
		return ""
	}
	return " WHERE " + cond
}

// check computes both sides' checksums of the unit at once and, when they differ and
// showRows > 0, drills down to the first differing rows.
func (w *worker) check(ctx context.Context, p *plan, showRows int) (Unit, error) {
	start := time.Now()
	u := p.Unit
	err := w.both(ctx, func(ctx context.Context, s *session, side int) error {
		if p.from[side] == "" {
			return nil
		}
		if err := s.begin(ctx, s.snapshot); err != nil {
			return err
		}
		var sd Side
		var a, b string
		q := fmt.Sprintf(checksumSQL, rowText(p.columns), p.from[side], where(p.where[side]))
		if err := s.conn.QueryRow(ctx, q).Scan(&sd.Rows, &a, &b); err != nil {
			return fmt.Errorf("%s: checksum: %w", s.cfg.Role, err)
		}
		sd.Present = true
		sd.Checksum = a + ":" + b
		if side == source {
			u.Source = sd
		} else {
			u.Target = sd
		}
		return nil
	})
	if err != nil {
		return u, err
	}
	switch {
	case !u.Source.Present:
		u.Problem = "not on the source (extra on the target)"
	case !u.Target.Present:
		u.Problem = "missing on the target"
	case u.Source.Rows != u.Target.Rows:
		u.Problem = fmt.Sprintf("rows differ: source %d, target %d", u.Source.Rows, u.Target.Rows)
	case u.Source.Checksum != u.Target.Checksum:
		u.Problem = "same row count, different values"
	default:
		u.Identical = true
	}
	if !u.Identical && showRows > 0 && u.Source.Present && u.Target.Present {
		if err := w.drill(ctx, p, &u, showRows); err != nil {
			return u, err
		}
	}
	err = w.both(ctx, func(ctx context.Context, s *session, side int) error {
		if p.from[side] == "" {
			return nil
		}
		return s.commit(ctx)
	})
	u.Duration = time.Since(start)
	return u, err
}
