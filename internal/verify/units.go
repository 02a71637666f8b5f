package verify

import (
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// Unit is one compared piece of data: a plain table, a hypertable chunk, or a time
// range of a hypertable (where the chunks of both sides do not line up).
type Unit struct {
	Kind  string `json:"kind"`  // "table", "chunk" or "range"
	Table string `json:"table"` // schema.name, quoted where needed; the hypertable for chunks and ranges
	// Aggregate: Table is a continuous aggregate, and the unit its materialized rows
	// (in its materialization hypertable on each side).
	Aggregate   bool   `json:"continuous_aggregate,omitempty"`
	Chunk       string `json:"chunk,omitempty"`
	TargetChunk string `json:"target_chunk,omitempty"` // when its name differs on the target
	Range       string `json:"range,omitempty"`        // [start, end) of the time dimension
	// KeyRows: only the rows of this many keys were compared (Options.Keys).
	KeyRows   int  `json:"key_rows,omitempty"`
	Source    Side `json:"source"`
	Target    Side `json:"target"`
	Identical bool `json:"identical"`
	// Problem says what differs, in words ("" when identical).
	Problem string `json:"problem,omitempty"`
	// NotCompared: a side could not read the unit (Problem says why), so whether it
	// differs is not known; it counts as not identical.
	NotCompared bool `json:"not_compared,omitempty"`
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
	what := "hypertable"
	if u.Aggregate {
		what = "continuous aggregate"
	}
	switch {
	case u.Chunk != "":
		return fmt.Sprintf("%s %s chunk %s", what, u.Table, u.Chunk)
	case u.Range != "":
		return fmt.Sprintf("%s %s range %s", what, u.Table, u.Range)
	case u.Aggregate:
		return what + " " + u.Table
	}
	return "table " + u.Table
}

// Name says which data the unit covers, in words.
func (u *Unit) Name() string { return u.name() }

// plan is a Unit before it runs: how to read it on each side.
type plan struct {
	Unit
	columns []column  // compared columns, in the source's order
	from    [2]string // FROM item per side, aliased t; "" when absent on that side
	where   [2]string // row filter per side, "" for none
	key     keySpec   // how the drill-down orders rows
	sortPos float64
	pages   int64 // the larger side's size estimate
	// compressed: the unit reads compressed rows on either side (Options.CompressedOnly).
	compressed bool
	// reencode: the two databases' encodings differ, so values that are text are
	// hashed as UTF-8 (convert_to), the same characters giving the same bytes.
	reencode bool
}

func (p *plan) name() string { return p.Unit.name() }

// planUnits pairs the two sides' tables and chunks into units, and the materialized
// rows of their continuous aggregates.
func planUnits(src, tgt *contents) []*plan {
	plans := planPairs(src.tables, tgt.tables, false)
	plans = append(plans, planPairs(src.caggs, tgt.caggs, true)...)
	sort.Slice(plans, func(i, j int) bool {
		if plans[i].Table != plans[j].Table {
			return plans[i].Table < plans[j].Table
		}
		return plans[i].sortPos < plans[j].sortPos
	})
	return plans
}

// planPairs plans the tables of either side, paired by name; aggregate marks them as
// continuous aggregates' materialized rows.
func planPairs(src, tgt map[tableKey]*table, aggregate bool) []*plan {
	names := map[tableKey]bool{}
	for n := range src {
		names[n] = true
	}
	for n := range tgt {
		names[n] = true
	}
	var plans []*plan
	for n := range names {
		for _, p := range planTable(n.displayName(), src[n], tgt[n]) {
			p.Aggregate = aggregate
			plans = append(plans, p)
		}
	}
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

	if s == nil || t == nil || (s.hyper == nil && t.hyper == nil) {
		// a plain table, or a table on one side only: one unit
		p := base
		for i, tb := range sides {
			if tb != nil {
				p.from[i] = tb.fromAll()
				p.pages = max(p.pages, tb.pages)
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
		p.Chunk = sc.displayName()
		if tc.schema != sc.schema || tc.name != sc.name {
			p.TargetChunk = tc.displayName()
		}
		p.Range = rangeText(sc.start, sc.end)
		p.sortPos = sc.startSort
		p.pages = max(sc.pages, tc.pages)
		if sc.compressed || tc.compressed {
			p.compressed = true
			// Compressed rows are not in the chunk table itself: read them through the
			// hypertable, over exactly the chunk's slices (tested on the full build:
			// TestCompressedAgainstUncompressedChunks).
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
	compressed := false
	for _, tb := range sides {
		if tb == nil || tb.hyper == nil {
			continue
		}
		for _, c := range tb.hyper.chunks {
			compressed = compressed || c.compressed
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
	lit := func(b string) string { return sqltext.Literal(b) + "::" + h.timeType }
	var plans []*plan
	for i := 0; i <= len(bounds); i++ {
		p := base
		p.Kind = "range"
		p.compressed = compressed
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
			p.from[j] = tb.fromAll()
			p.where[j] = strings.Join(conds, " AND ")
		}
		plans = append(plans, &p)
	}
	return plans
}

// fromAll reads all of a table's rows: a hypertable with its chunks, a plain table
// without the tables that inherit from it (they are units of their own).
func (t *table) fromAll() string {
	if t.hyper != nil {
		return t.qualified() + " AS t"
	}
	return "ONLY " + t.qualified() + " AS t"
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

// rowText is the text of a row, used to order rows that have no key: the row
// constructor's text form, in which NULL is an empty field and ” is "", every value
// is its type's output under the pinned settings, and quoting keeps fields apart.
func rowText(cols []column) string {
	parts := make([]string, len(cols))
	for i, c := range cols {
		parts[i] = "t." + quoteIdent(c.name)
	}
	return "ROW(" + strings.Join(parts, ", ") + ")::text"
}

// exactHash lists the types whose own extended hash function sees every difference
// of value (two values hash alike only when their bytes are equal), so they are hashed
// as they are, which is several times faster than through text.
// Not in the list, hashed through their text form: numeric (1.50 and 1.5 hash alike),
// float4/8 (-0 and 0; handled below), interval ('1 mon' and '30 days'), jsonb (its
// numbers), citext (case), enums (their hash is of the OID), and anything unknown.
// Checked on PostgreSQL 15 and 17.
var exactHash = map[string]bool{
	"smallint": true, "integer": true, "bigint": true, "boolean": true, "date": true,
	"uuid": true, "bytea": true,
	"timestamp with time zone": true, "timestamp without time zone": true,
	"time without time zone": true,
}

var typmod = regexp.MustCompile(`\(\d+(,\d+)?\)`)

// hashedValue is the expression whose hash stands for one column's value. With
// reencode, text (and every value hashed through its text) is hashed as its UTF-8
// bytes, which convert_to makes from either database's encoding: the characters
// compare, not their bytes in a LATIN1 and a UTF8 database.
func hashedValue(c column, reencode bool) string {
	col := "t." + quoteIdent(c.name)
	base := typmod.ReplaceAllString(c.typ, "") // timestamp(3) with time zone -> timestamp with time zone
	switch {
	case exactHash[base]:
		return col
	case c.typ == "double precision":
		// the bits, so that -0 and 0 differ; NaN made canonical first (NaNs of other
		// bit patterns are equal in SQL, and a text copy makes them canonical)
		return fmt.Sprintf(`float8send(CASE WHEN %s = 'NaN'::float8 THEN 'NaN'::float8 ELSE %[1]s END)`, col)
	case c.typ == "real":
		return fmt.Sprintf(`float4send(CASE WHEN %s = 'NaN'::float4 THEN 'NaN'::float4 ELSE %[1]s END)`, col)
	case base == "text" || base == "character varying" || base == "character" || base == "name":
		if reencode {
			return "convert_to(" + col + ", 'UTF8')"
		}
		// bytes, whatever the column's collation says is equal (character(n) values
		// are padded to n: their trailing spaces are all alike)
		return col + ` COLLATE "C"`
	case c.typ == "bpchar":
		// character without a length keeps the trailing spaces it was given, which its
		// hash and its cast to text drop: its output text keeps them
		if reencode {
			return "convert_to(textin(bpcharout(" + col + ")), 'UTF8')"
		}
		return "textin(bpcharout(" + col + `)) COLLATE "C"`
	}
	if reencode {
		return "convert_to(" + col + "::text, 'UTF8')"
	}
	return col + `::text COLLATE "C"`
}

// rowHash is a 64-bit hash of a row: hash_record_extended (PostgreSQL 14+) combines
// each column's hash by position, NULL included, so moving a value to another column
// or turning ” into NULL changes it.
func (p *plan) rowHash() string {
	parts := make([]string, len(p.columns))
	for i, c := range p.columns {
		parts[i] = hashedValue(c, p.reencode)
	}
	return "hash_record_extended(ROW(" + strings.Join(parts, ", ") + "), 0)"
}

// checksumSQL counts a unit's rows and sums two different mixes of each row's hash:
// order-independent, duplicate-sensitive (a sum, not an xor), one scan, no rows sent.
// The mixes (hashint8extended) make the sums non-linear in the column hashes, so
// values swapped between rows show. sum(bigint) accumulates in numeric: no overflow.
// OFFSET 0 keeps the row hash computed once per row.
// Checked on PostgreSQL 15 and 17.
const checksumSQL = `SELECT count(*),
	coalesce(sum(hashint8extended(r.h, 0)), 0)::text,
	coalesce(sum(hashint8extended(r.h, 1)), 0)::text
FROM (SELECT %s AS h FROM %s%s OFFSET 0) AS r`

// insufficientPrivilege is SQLSTATE 42501: a table the user may not read.
const insufficientPrivilege = "42501"

// pgCode is the SQLSTATE of a server error in err's chain, or "".
func pgCode(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

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
		q := fmt.Sprintf(checksumSQL, p.rowHash(), p.from[side], where(p.where[side]))
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
	if code := pgCode(err); code == insufficientPrivilege {
		u.Problem = "cannot be read: " + dbconn.Reason(err)
		u.NotCompared = true
		u.Duration = time.Since(start)
		return u, w.rollback(ctx)
	} else if err != nil {
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
		if err := w.drill(ctx, p, &u, showRows); pgCode(err) != "" {
			// e.g. a key whose type differs on the target: the unit still differs
			u.DrillNote = "drill-down failed: " + dbconn.Reason(err)
			u.Duration = time.Since(start)
			return u, w.rollback(ctx)
		} else if err != nil {
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
