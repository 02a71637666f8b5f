package verify

import (
	"context"
	"fmt"
	"strings"
)

// The drill-down bisects a differing unit: it cuts the unit's rows into fanout buckets
// by an ordering key (quantiles taken on one side), checksums every bucket on both sides
// in one scan each, and descends into the differing buckets in key order until a bucket
// holds at most leafRows rows per side; those rows are fetched and compared.
const (
	fanout   = 16
	leafRows = 64
	// maxLeaf bounds the rows fetched from a bucket that cannot be cut further
	// (many rows sharing one key).
	maxLeaf  = 1000
	maxDepth = 40
)

// keySpec orders a unit's rows for the drill-down: the primary key when there is one,
// else the time column then the row's text, else the row's text alone. The row text
// makes the order total, so every bucket can be cut.
type keySpec struct {
	exprs  []string // SQL over alias t
	types  []string // SQL type to cast a bound's text to
	shown  []string // names of the leading exprs that identify a row to the user
	unique bool
}

// collatable types get COLLATE "C" in keys, so that both sides cut the rows at the
// same places whatever their databases' collations.
func collatable(typ string) bool {
	return typ == "text" || typ == "name" || strings.HasPrefix(typ, "character")
}

func keyExpr(c column) string {
	e := "t." + quoteIdent(c.name)
	if collatable(c.typ) {
		e += ` COLLATE "C"`
	}
	return e
}

func chooseKey(ref *table, cols []column) keySpec {
	byName := map[string]column{}
	for _, c := range cols {
		byName[c.name] = c
	}
	rowKey := "(" + rowText(cols) + ` COLLATE "C")`
	var k keySpec
	if len(ref.pk) > 0 {
		k.unique = true
		for _, n := range ref.pk {
			c, ok := byName[n]
			if !ok {
				k = keySpec{}
				break
			}
			k.exprs = append(k.exprs, keyExpr(c))
			k.types = append(k.types, c.typ)
			k.shown = append(k.shown, c.name)
		}
		if k.unique {
			return k
		}
	}
	if ref.hyper != nil {
		if c, ok := byName[ref.hyper.timeColumn]; ok {
			k.exprs = append(k.exprs, keyExpr(c))
			k.types = append(k.types, c.typ)
			k.shown = append(k.shown, c.name)
		}
	}
	k.exprs = append(k.exprs, rowKey)
	k.types = append(k.types, "text")
	return k
}

// args collects query parameters and gives their placeholders.
type args []any

func (a *args) add(v any) string {
	*a = append(*a, v)
	return fmt.Sprintf("$%d", len(*a))
}

// tuple is ROW($i::type, ...) of a bound.
func (k keySpec) tuple(a *args, bound []string) string {
	parts := make([]string, len(bound))
	for i, v := range bound {
		parts[i] = a.add(v) + "::" + k.types[i]
		if strings.HasSuffix(k.exprs[i], `COLLATE "C"`) || strings.HasSuffix(k.exprs[i], `COLLATE "C")`) {
			parts[i] += ` COLLATE "C"`
		}
	}
	return "ROW(" + strings.Join(parts, ", ") + ")"
}

func (k keySpec) row(prefix string) string {
	return "ROW(" + strings.Join(k.aliases(prefix), ", ") + ")"
}

// selectKeys is the key expressions aliased k0, k1, ...
func (k keySpec) selectKeys() string {
	parts := make([]string, len(k.exprs))
	for i, e := range k.exprs {
		parts[i] = fmt.Sprintf("%s AS k%d", e, i)
	}
	return strings.Join(parts, ", ")
}

// rangeWhere selects lo <= key < hi (nil: unbounded) on top of the unit's own filter.
// The bounds on the first key column alone let an index on it narrow the scan.
func (k keySpec) rangeWhere(a *args, base string, lo, hi []string) string {
	var conds []string
	if base != "" {
		conds = append(conds, "("+base+")")
	}
	cols := "ROW(" + strings.Join(k.exprs, ", ") + ")"
	if lo != nil {
		conds = append(conds, cols+" >= "+k.tuple(a, lo))
		conds = append(conds, k.exprs[0]+" >= "+a.add(lo[0])+"::"+k.types[0])
	}
	if hi != nil {
		conds = append(conds, cols+" < "+k.tuple(a, hi))
		conds = append(conds, k.exprs[0]+" <= "+a.add(hi[0])+"::"+k.types[0])
	}
	return where(strings.Join(conds, " AND "))
}

func textArray(exprs []string) string {
	parts := make([]string, len(exprs))
	for i, e := range exprs {
		parts[i] = e + "::text"
	}
	return "ARRAY[" + strings.Join(parts, ", ") + "]::text[]"
}

type driller struct {
	w     *worker
	p     *plan
	u     *Unit
	limit int
}

func (w *worker) drill(ctx context.Context, p *plan, u *Unit, limit int) error {
	d := &driller{w: w, p: p, u: u, limit: limit}
	for _, c := range p.columns {
		u.Columns = append(u.Columns, c.name)
	}
	return d.narrow(ctx, nil, nil, [2]int64{u.Source.Rows, u.Target.Rows}, 0)
}

func (d *driller) narrow(ctx context.Context, lo, hi []string, counts [2]int64, depth int) error {
	if counts[source] <= leafRows && counts[target] <= leafRows {
		return d.leaf(ctx, lo, hi, leafRows)
	}
	if depth >= maxDepth {
		return d.leaf(ctx, lo, hi, maxLeaf)
	}
	side := source
	if counts[target] > counts[source] {
		side = target
	}
	step := (counts[side] + fanout - 1) / fanout
	bounds, err := d.quantiles(ctx, side, lo, hi, step)
	if err != nil {
		return err
	}
	if len(bounds) == 0 {
		return d.leaf(ctx, lo, hi, maxLeaf)
	}
	var sums [2]map[int]bucketSum
	err = d.w.both(ctx, func(ctx context.Context, s *session, side int) error {
		m, err := d.buckets(ctx, s, side, lo, hi, bounds)
		sums[side] = m
		return err
	})
	if err != nil {
		return err
	}
	for b := 0; b <= len(bounds); b++ {
		if sums[source][b] == sums[target][b] {
			continue
		}
		blo, bhi := lo, hi
		if b > 0 {
			blo = bounds[b-1]
		}
		if b < len(bounds) {
			bhi = bounds[b]
		}
		if err := d.narrow(ctx, blo, bhi, [2]int64{sums[source][b].rows, sums[target][b].rows}, depth+1); err != nil {
			return err
		}
		if len(d.u.Rows) >= d.limit {
			return nil
		}
	}
	return nil
}

// quantiles are every step-th key of one side within [lo, hi), distinct and above lo.
func (d *driller) quantiles(ctx context.Context, side int, lo, hi []string, step int64) ([][]string, error) {
	s := d.w.session(side)
	k := d.p.key
	var a args
	q := fmt.Sprintf(`SELECT %s FROM (SELECT %s, row_number() OVER (ORDER BY %s) AS rn FROM %s%s) AS q WHERE q.rn %% %s = 0 ORDER BY q.rn`,
		textArray(k.aliases("q.")), k.selectKeys(), strings.Join(k.exprs, ", "),
		d.p.from[side], k.rangeWhere(&a, d.p.where[side], lo, hi), a.add(step)+"::bigint")
	rows, err := s.conn.Query(ctx, q, a...)
	if err != nil {
		return nil, fmt.Errorf("%s: drill-down quantiles: %w", s.cfg.Role, err)
	}
	defer rows.Close()
	var out [][]string
	prev := lo
	for rows.Next() {
		var b []string
		if err := rows.Scan(&b); err != nil {
			return nil, fmt.Errorf("%s: drill-down quantiles: %w", s.cfg.Role, err)
		}
		if prev != nil && equal(prev, b) {
			continue
		}
		out = append(out, b)
		prev = b
	}
	return out, rows.Err()
}

type bucketSum struct {
	rows int64
	sumA string
	sumB string
}

// buckets checksums every bucket between the bounds in one scan of [lo, hi).
func (d *driller) buckets(ctx context.Context, s *session, side int, lo, hi []string, bounds [][]string) (map[int]bucketSum, error) {
	k := d.p.key
	var a args
	var cases strings.Builder
	for i, b := range bounds {
		fmt.Fprintf(&cases, " WHEN %s < %s THEN %d", k.row("r."), k.tuple(&a, b), i)
	}
	q := fmt.Sprintf(`SELECT CASE%s ELSE %d END AS b, count(*),
	sum(hashint8extended(r.h, 0))::text, sum(hashint8extended(r.h, 1))::text
FROM (SELECT %s, %s AS h FROM %s%s OFFSET 0) AS r GROUP BY 1`,
		cases.String(), len(bounds), k.selectKeys(), d.p.rowHash(),
		d.p.from[side], k.rangeWhere(&a, d.p.where[side], lo, hi))
	rows, err := s.conn.Query(ctx, q, a...)
	if err != nil {
		return nil, fmt.Errorf("%s: drill-down checksums: %w", s.cfg.Role, err)
	}
	defer rows.Close()
	m := map[int]bucketSum{}
	for rows.Next() {
		var b int
		var bs bucketSum
		if err := rows.Scan(&b, &bs.rows, &bs.sumA, &bs.sumB); err != nil {
			return nil, fmt.Errorf("%s: drill-down checksums: %w", s.cfg.Role, err)
		}
		m[b] = bs
	}
	return m, rows.Err()
}

type leafRow struct {
	key  []string
	hash string
	vals []*string
}

// leaf fetches at most max rows of [lo, hi) from both sides and records those that
// are not on the other side, pairing them by key when the key is unique.
func (d *driller) leaf(ctx context.Context, lo, hi []string, max int) error {
	k := d.p.key
	var got [2][]leafRow
	var truncated [2]bool
	vals := make([]string, len(d.p.columns))
	for i, c := range d.p.columns {
		vals[i] = "t." + quoteIdent(c.name)
	}
	err := d.w.both(ctx, func(ctx context.Context, s *session, side int) error {
		var a args
		q := fmt.Sprintf(`SELECT %s, %s::text, %s FROM %s%s ORDER BY %s LIMIT %d`,
			textArray(k.exprs[:len(k.shown)]), d.p.rowHash(), textArray(vals),
			d.p.from[side], k.rangeWhere(&a, d.p.where[side], lo, hi), strings.Join(k.exprs, ", "), max+1)
		rows, err := s.conn.Query(ctx, q, a...)
		if err != nil {
			return fmt.Errorf("%s: drill-down rows: %w", s.cfg.Role, err)
		}
		defer rows.Close()
		for rows.Next() {
			var r leafRow
			if err := rows.Scan(&r.key, &r.hash, &r.vals); err != nil {
				return fmt.Errorf("%s: drill-down rows: %w", s.cfg.Role, err)
			}
			got[side] = append(got[side], r)
		}
		if len(got[side]) > max {
			got[side] = got[side][:max]
			truncated[side] = true
		}
		return rows.Err()
	})
	if err != nil {
		return err
	}
	if truncated[source] || truncated[target] {
		d.u.DrillNote = fmt.Sprintf("a range of rows sharing one key was cut at %d rows per side", max)
	}
	for _, r := range diffRows(got[source], got[target], k) {
		if len(d.u.Rows) >= d.limit {
			break
		}
		d.u.Rows = append(d.u.Rows, r)
	}
	return nil
}

// diffRows returns the rows of one side that the other lacks (as multisets of row
// hashes). A row lacking on each side under one key (the only one with that key on
// each side, when the key is not unique) is one RowDiff holding both: a changed row.
func diffRows(src, tgt []leafRow, k keySpec) []RowDiff {
	srcOnly, tgtOnly := lacking(src, tgt), lacking(tgt, src)
	perKey := map[string][2]int{}
	for side, rows := range [2][]leafRow{srcOnly, tgtOnly} {
		for _, r := range rows {
			n := perKey[k.show(r.key)]
			n[side]++
			perKey[k.show(r.key)] = n
		}
	}
	pairable := func(key string) bool {
		return key != "" && (k.unique || perKey[key] == [2]int{1, 1})
	}
	var out []RowDiff
	paired := map[int]bool{}
	for _, s := range srcOnly {
		rd := RowDiff{Key: k.show(s.key), Source: s.vals}
		if pairable(rd.Key) {
			for j, t := range tgtOnly {
				if !paired[j] && equal(s.key, t.key) {
					rd.Target = t.vals
					paired[j] = true
					break
				}
			}
		}
		out = append(out, rd)
	}
	for j, t := range tgtOnly {
		if !paired[j] {
			out = append(out, RowDiff{Key: k.show(t.key), Target: t.vals})
		}
	}
	return out
}

// lacking is the rows of a that b does not hold, counting duplicates.
func lacking(a, b []leafRow) []leafRow {
	have := map[string]int{}
	for _, r := range b {
		have[r.hash]++
	}
	var out []leafRow
	for _, r := range a {
		if have[r.hash] > 0 {
			have[r.hash]--
			continue
		}
		out = append(out, r)
	}
	return out
}

func (k keySpec) show(key []string) string {
	parts := make([]string, len(key))
	for i, v := range key {
		parts[i] = k.shown[i] + "=" + v
	}
	return strings.Join(parts, ", ")
}

func (k keySpec) aliases(prefix string) []string {
	out := make([]string, len(k.exprs))
	for i := range k.exprs {
		out[i] = fmt.Sprintf("%sk%d", prefix, i)
	}
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
