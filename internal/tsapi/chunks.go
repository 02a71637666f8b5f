package tsapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Making chunks of given slices. Checked on TimescaleDB 2.19.3 (PostgreSQL 17).
//
// The full build has _timescaledb_functions.create_chunk(hypertable, slices), which the
// hypertable's owner may call: the chunk gets exactly the slices asked for.
//
// The Apache build refuses it ("not supported under the current apache license") and
// has no other call that makes a chunk of given slices. A chunk is made there as
// inserting a row makes one: for the row's point TimescaleDB takes, in each open
// dimension, an existing slice that holds the point, else the range of the chunk
// interval that holds it ([floor(p/i)*i, +i), floor towards minus infinity), and then
// cuts that range where it would overlap chunks already there. So one of the source
// chunk's rows is copied into the hypertable with the chunk interval set to one whose
// range holds the source's slice (its width when the slice is aligned to it; else an
// interval the hypertable's chunks were made with, whose range the chunks made before
// cut as they cut it on the source: chunks are made in the source's order), and deleted
// again in the same transaction: the chunk stays, empty. The intervals are set back to
// the source's at the end. A chunk whose slices still come out different is reported,
// and its rows go through the hypertable (TimescaleDB puts them into its chunks), so
// that nothing is lost; verify then compares that hypertable by time ranges.
const (
	// sqlLicense: "apache" or "timescale".
	sqlLicense = `SELECT coalesce(current_setting('timescaledb.license', true), '')`
	// sqlFunctionsSchema is where TimescaleDB's internal functions are: _timescaledb_functions
	// from 2.12, _timescaledb_internal before.
	sqlFunctionsSchema = `SELECT CASE WHEN to_regnamespace('_timescaledb_functions') IS NOT NULL
	THEN '_timescaledb_functions' ELSE '_timescaledb_internal' END`
	// sqlCreateChunk makes a chunk of the given slices (full build). %s: the functions' schema.
	sqlCreateChunk = `SELECT schema_name::text, table_name::text FROM %s.create_chunk($1::regclass, $2::jsonb)`
	// sqlColumns lists a table's columns that COPY carries (not generated, not dropped).
	sqlColumns = `SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
ORDER BY a.attnum`
	// sqlRelName names a relation by oid.
	sqlRelName = `SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = $1`
	// sqlChunkSlices is the slices of chunk $1 (a regclass) in dimension order (same
	// catalog as sqlChunks), its id found by chunk_id_from_relid in the functions'
	// schema %s, whatever the catalog names its table by (2.19.3, 2.31.0).
	sqlChunkSlices = `
SELECT array_agg(ds.range_start ORDER BY d.id), array_agg(ds.range_end ORDER BY d.id)
FROM _timescaledb_catalog.chunk_constraint cc
JOIN _timescaledb_catalog.dimension_slice ds ON ds.id = cc.dimension_slice_id
JOIN _timescaledb_catalog.dimension d ON d.id = ds.dimension_id
WHERE cc.chunk_id = %s.chunk_id_from_relid($1::regclass) AND cc.dimension_slice_id IS NOT NULL`
)

// Placement says where a source chunk's rows go on the target.
type Placement struct {
	Source     Name // the source chunk
	Hypertable Name // the source chunk's hypertable
	// Target is the target chunk with the same slices, or the hypertable when Routed.
	Target Name
	// Routed: no target chunk has the source chunk's slices; the rows go through the
	// hypertable, which puts them into chunks of its own.
	Routed bool
	// Compressed: the source chunk is compressed; so must the target's be.
	Compressed bool
}

// chunkMaker makes the target's chunks.
type chunkMaker struct {
	src, dst *pgx.Conn
	ext, fns string
	// createChunk: the target's build has create_chunk (the full build).
	createChunk bool
	source      *Layout
	columns     map[Name][]column // the source hypertables' columns, read once
	// changed: hypertables whose intervals were changed to make chunks.
	changed map[Name]bool
}

type column struct{ name, typ string }

func newChunkMaker(ctx context.Context, src, dst *pgx.Conn, ext string, source *Layout) (*chunkMaker, error) {
	m := &chunkMaker{src: src, dst: dst, ext: ext, source: source, columns: map[Name][]column{}, changed: map[Name]bool{}}
	var license string
	if err := dst.QueryRow(ctx, sqlLicense).Scan(&license); err != nil {
		return nil, fmt.Errorf("read the target's TimescaleDB license: %w", err)
	}
	if err := dst.QueryRow(ctx, sqlFunctionsSchema).Scan(&m.fns); err != nil {
		return nil, fmt.Errorf("find the target's TimescaleDB functions: %w", err)
	}
	m.createChunk = license == "timescale"
	return m, nil
}

// slicesJSON is create_chunk's slices argument: {"column": [start, end], ...}.
func slicesJSON(h *Hypertable, c *Chunk) (string, error) {
	m := map[string][2]int64{}
	for i, d := range h.Dimensions {
		m[d.Column] = [2]int64{c.Slices[i].Start, c.Slices[i].End}
	}
	b, err := json.Marshal(m)
	return string(b), err
}

// make makes the target chunk of hypertable t with source chunk c's slices, and says
// where c's rows go. srcH is c's source hypertable.
func (m *chunkMaker) make(ctx context.Context, srcH, t *Hypertable, c *Chunk) (Placement, string, error) {
	p := Placement{Source: c.Name, Hypertable: c.Hypertable, Compressed: c.Compressed}
	var made Name
	var err error
	if m.createChunk {
		made, err = m.byCreateChunk(ctx, t, c)
	} else {
		made, err = m.byRow(ctx, srcH, t, c)
	}
	var nr *noRowError
	if errors.As(err, &nr) {
		p.Target, p.Routed = t.Name, true
		return p, fmt.Sprintf("chunk %s of %s was not made on the target: %s", c.Name.Display(), srcH.Name.Display(), nr.why), nil
	}
	if err != nil {
		return p, "", err
	}
	got, err := m.slicesOf(ctx, made)
	if err != nil {
		return p, "", err
	}
	if !slices.Equal(got, c.Slices) {
		p.Target, p.Routed = t.Name, true
		return p, fmt.Sprintf("chunk %s of %s has the slices %s on the source, but TimescaleDB made %s with %s on the target; its rows go through the hypertable",
			c.Name.Display(), srcH.Name.Display(), slicesText(srcH, c.Slices), made.Display(), slicesText(srcH, got)), nil
	}
	p.Target = made
	return p, "", nil
}

func slicesText(h *Hypertable, s []Slice) string {
	var parts []string
	for i, sl := range s {
		name := fmt.Sprint(i)
		if i < len(h.Dimensions) {
			name = h.Dimensions[i].Column
		}
		parts = append(parts, fmt.Sprintf("%s [%d, %d)", name, sl.Start, sl.End))
	}
	return strings.Join(parts, ", ")
}

func (m *chunkMaker) byCreateChunk(ctx context.Context, t *Hypertable, c *Chunk) (Name, error) {
	js, err := slicesJSON(t, c)
	if err != nil {
		return Name{}, err
	}
	var n Name
	if err := m.dst.QueryRow(ctx, fmt.Sprintf(sqlCreateChunk, m.fns), t.Name.String(), js).Scan(&n.Schema, &n.Name); err != nil {
		return Name{}, fmt.Errorf("create_chunk(%s, %s): %w", t.Name.Display(), js, err)
	}
	return n, nil
}

func (m *chunkMaker) slicesOf(ctx context.Context, n Name) ([]Slice, error) {
	var starts, ends []int64
	if err := m.dst.QueryRow(ctx, fmt.Sprintf(sqlChunkSlices, m.fns), n.String()).Scan(&starts, &ends); err != nil {
		return nil, fmt.Errorf("read the slices of target chunk %s: %w", n.Display(), err)
	}
	out := make([]Slice, len(starts))
	for i := range starts {
		out[i] = Slice{starts[i], ends[i]}
	}
	return out, nil
}

// noRowError: no row could be found or made to make a chunk with.
type noRowError struct{ why string }

func (e *noRowError) Error() string { return e.why }

// columnsOf reads (once) the columns COPY carries of source hypertable n.
func (m *chunkMaker) columnsOf(ctx context.Context, n Name) ([]column, error) {
	if cols, ok := m.columns[n]; ok {
		return cols, nil
	}
	rows, _ := m.src.Query(ctx, sqlColumns, n.String())
	var c column
	var cols []column
	if _, err := pgx.ForEachRow(rows, []any{&c.name, &c.typ}, func() error { cols = append(cols, c); return nil }); err != nil {
		return nil, fmt.Errorf("read the columns of source hypertable %s: %w", n.Display(), err)
	}
	m.columns[n] = cols
	return cols, nil
}

// byRow makes the target chunk of c's slices on the Apache build: one row routed into
// the hypertable under chunk intervals that make TimescaleDB cut those slices, deleted
// again in the same transaction (see the comment at the top).
func (m *chunkMaker) byRow(ctx context.Context, srcH, t *Hypertable, c *Chunk) (Name, error) {
	cols, err := m.columnsOf(ctx, srcH.Name)
	if err != nil {
		return Name{}, err
	}
	row, err := m.sourceRow(ctx, srcH, c, cols)
	if err != nil {
		return Name{}, err
	}
	want := make([]Dimension, len(t.Dimensions))
	copy(want, t.Dimensions)
	for i, d := range srcH.Dimensions {
		if d.Open() {
			want[i].Interval = m.interval(srcH, i, c.Slices[i])
		} else {
			want[i].Partitions = partitionsFor(c.Slices[i], d.Partitions)
		}
	}
	var made Name
	err = pgx.BeginFunc(ctx, m.dst, func(tx pgx.Tx) error {
		if err := setIntervals(ctx, tx, m.ext, t, want); err != nil {
			return err
		}
		m.changed[t.Name] = true
		names := make([]string, len(cols))
		for i, col := range cols {
			names[i] = pgx.Identifier{col.name}.Sanitize()
		}
		if _, err := tx.Conn().PgConn().CopyFrom(ctx, bytes.NewReader(row),
			fmt.Sprintf("COPY %s (%s) FROM STDIN", t.Name.String(), strings.Join(names, ", "))); err != nil {
			return fmt.Errorf("route a row of chunk %s into target hypertable %s: %w", c.Name.Display(), t.Name.Display(), err)
		}
		rows, _ := tx.Query(ctx, fmt.Sprintf("DELETE FROM %s RETURNING tableoid", t.Name.String()))
		oids, err := pgx.CollectRows(rows, pgx.RowTo[uint32])
		if err != nil {
			return fmt.Errorf("delete the row routed into target hypertable %s: %w", t.Name.Display(), err)
		}
		if len(oids) != 1 {
			return fmt.Errorf("target hypertable %s held %d rows while its chunks were made; it must be empty", t.Name.Display(), len(oids))
		}
		return tx.QueryRow(ctx, sqlRelName, oids[0]).Scan(&made.Schema, &made.Name)
	})
	return made, err
}

// interval picks the chunk interval under which TimescaleDB makes dimension dim's slice
// s for a row in it: the slice's width when the slice is aligned to it; else, of the
// widths the hypertable's source chunks have in that dimension and its current
// interval, the smallest whose range holds the slice (the chunks made before cut it to
// the slice, as they did on the source). When none holds it, the width. A range that
// holds the slice is the one of every point of the slice.
func (m *chunkMaker) interval(h *Hypertable, dim int, s Slice) int64 {
	w := s.End - s.Start
	if w <= 0 {
		return h.Dimensions[dim].Interval
	}
	if lo, hi := openRange(s.Start, w); lo == s.Start && hi == s.End {
		return w
	}
	candidates := []int64{h.Dimensions[dim].Interval}
	for _, c := range m.source.ChunksOf(h.Name) {
		if x := c.Slices[dim]; x.End > x.Start {
			candidates = append(candidates, x.End-x.Start)
		}
	}
	best := int64(0)
	for _, i := range candidates {
		if i <= 0 {
			continue
		}
		if lo, hi := openRange(s.Start, i); lo <= s.Start && hi >= s.End && (best == 0 || i < best) {
			best = i
		}
	}
	if best == 0 {
		return w
	}
	return best
}

// openRange is the range of chunk interval i that holds point p, as TimescaleDB
// computes it (ts_dimension_calculate_open_range_default, 2.x): from p rounded down to
// a multiple of i, clamped to the int64 range.
func openRange(p, i int64) (lo, hi int64) {
	if p < 0 {
		hi = ((p + 1) / i) * i
		if hi-math.MinInt64 < i {
			return math.MinInt64, hi
		}
		return hi - i, hi
	}
	lo = (p / i) * i
	if math.MaxInt64-lo < i {
		return lo, math.MaxInt64
	}
	return lo, lo + i
}

// sourceRow reads one row to make chunk c with, in COPY's text format: a row of c;
// for an empty chunk, a row of another chunk of the hypertable in the same closed
// slices, its open dimensions' values set to the slice's start.
func (m *chunkMaker) sourceRow(ctx context.Context, h *Hypertable, c *Chunk, cols []column) ([]byte, error) {
	names := make([]string, len(cols))
	for i, col := range cols {
		names[i] = pgx.Identifier{col.name}.Sanitize()
	}
	var row bytes.Buffer
	q := fmt.Sprintf("COPY (SELECT %s FROM %s LIMIT 1) TO STDOUT", strings.Join(names, ", "), c.Name.String())
	if _, err := m.src.PgConn().CopyTo(ctx, &row, q); err != nil {
		return nil, fmt.Errorf("read a row of source chunk %s: %w", c.Name.Display(), err)
	}
	if row.Len() > 0 {
		return row.Bytes(), nil
	}
	sel := append([]string(nil), names...)
	for i, col := range cols {
		for j, d := range h.Dimensions {
			if d.Column != col.name || !d.Open() {
				continue
			}
			lit, ok := timeLiteral(c.Slices[j].Start, d.Type)
			if !ok {
				return nil, &noRowError{fmt.Sprintf("it is empty, and no row can be made for it (column %s is of type %s)", d.Column, d.Type)}
			}
			sel[i] = lit + " AS " + names[i]
		}
	}
	for _, o := range m.source.ChunksOf(c.Hypertable) {
		if o == c || !sameClosed(h, o, c) {
			continue
		}
		if ok, err := m.copyRow(ctx, &row, sel, o); ok || err != nil {
			return row.Bytes(), err
		}
	}
	// No chunk of its partition holds a row: one of another partition, its closed
	// dimensions' values set to values that TimescaleDB puts into this chunk's slices.
	for i, col := range cols {
		for j, d := range h.Dimensions {
			if d.Column != col.name || d.Open() {
				continue
			}
			v, err := m.closedValue(ctx, d, c.Slices[j])
			if err != nil {
				return nil, err
			}
			if v == "" {
				return nil, &noRowError{fmt.Sprintf("it is empty, no chunk of its partition holds a row, and no value of column %s (%s) was found that falls in its partition", d.Column, d.Type)}
			}
			sel[i] = v + " AS " + names[i]
		}
	}
	for _, o := range m.source.ChunksOf(c.Hypertable) {
		if o == c {
			continue
		}
		if ok, err := m.copyRow(ctx, &row, sel, o); ok || err != nil {
			return row.Bytes(), err
		}
	}
	return nil, &noRowError{"it is empty, and no chunk of its hypertable holds a row to make it with"}
}

// copyRow reads into row, in COPY's text format, the select list sel of one row of
// source chunk o; false when o holds none.
func (m *chunkMaker) copyRow(ctx context.Context, row *bytes.Buffer, sel []string, o *Chunk) (bool, error) {
	row.Reset()
	q := fmt.Sprintf("COPY (SELECT %s FROM %s LIMIT 1) TO STDOUT", strings.Join(sel, ", "), o.Name.String())
	if _, err := m.src.PgConn().CopyTo(ctx, row, q); err != nil {
		return false, fmt.Errorf("read a row of source chunk %s: %w", o.Name.Display(), err)
	}
	return row.Len() > 0, nil
}

// sqlClosedValue finds a value of type %[2]s that partitioning function %[1]s puts
// into [$1, $2): one of the integers from 0, read as that type (integer and text types
// take them), as SQL ($3 is the type's name). PostgreSQL 15, 17; TimescaleDB 2.19.3.
const sqlClosedValue = `SELECT quote_literal(v::text) || '::' || $3 FROM generate_series(0, 100000) g, LATERAL (SELECT g::text::%[2]s AS v) x
WHERE %[1]s(v) >= $1::bigint AND %[1]s(v) < $2::bigint LIMIT 1`

// closedValue is SQL for a value of closed dimension d whose partition falls in slice
// s, "" when none is found (no integer falls there, or integers do not cast to its type).
func (m *chunkMaker) closedValue(ctx context.Context, d Dimension, s Slice) (string, error) {
	fn := d.PartitioningFunc
	if fn == "" {
		fns, err := functionsSchema(ctx, m.src)
		if err != nil {
			return "", err
		}
		fn = pgx.Identifier{fns}.Sanitize() + ".get_partition_hash"
	}
	var v string
	err := pgx.BeginFunc(ctx, m.src, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, fmt.Sprintf(sqlClosedValue, fn, d.Type), s.Start, s.End, d.Type).Scan(&v)
	})
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return "", nil
	case errors.As(err, &pgErr) && (pgErr.Code == "42846" || strings.HasPrefix(pgErr.Code, "22")):
		return "", nil // cannot_coerce, or a data exception: integers are no values of the type
	case err != nil:
		return "", fmt.Errorf("find a value of %s for a chunk's partition: %w", d.Column, err)
	}
	return v, nil
}

// closedMax is the top of the range TimescaleDB hashes closed dimensions into (INT32_MAX).
const closedMax = math.MaxInt32

// partitionsFor is the number of partitions under which TimescaleDB makes closed slice s
// (range i of n: [i*w, (i+1)*w) with w = closedMax/n, the first from minus infinity, the
// last to plus infinity): current when it does, else the smallest that does, else
// current.
func partitionsFor(s Slice, current int) int {
	makes := func(n int) bool {
		w := int64(closedMax / n)
		i := int64(0)
		if s.Start != math.MinInt64 {
			if s.Start%w != 0 {
				return false
			}
			i = s.Start / w
		}
		if i >= int64(n) || (i == 0) != (s.Start == math.MinInt64) {
			return false
		}
		end := (i + 1) * w
		if i == int64(n)-1 {
			end = math.MaxInt64
		}
		return s.End == end
	}
	if current > 0 && makes(current) {
		return current
	}
	for n := 1; n <= math.MaxInt16; n++ {
		if makes(n) {
			return n
		}
	}
	return current
}

// sameClosed says whether chunks a and b have the same slices in h's closed dimensions.
func sameClosed(h *Hypertable, a, b *Chunk) bool {
	for i, d := range h.Dimensions {
		if !d.Open() && a.Slices[i] != b.Slices[i] {
			return false
		}
	}
	return true
}

// timeLiteral is SQL for internal value v of a column of type typ.
func timeLiteral(v int64, typ string) (string, bool) {
	t := time.UnixMicro(v).UTC()
	inRange := t.Year() >= 1 && t.Year() <= 9999
	switch typ {
	case "timestamp with time zone":
		return "'" + t.Format("2006-01-02 15:04:05.999999") + "+00'::timestamptz", inRange
	case "timestamp without time zone":
		return "'" + t.Format("2006-01-02 15:04:05.999999") + "'::timestamp", inRange
	case "date":
		return "'" + t.Format("2006-01-02") + "'::date", inRange
	case "smallint", "integer", "bigint":
		return strconv.FormatInt(v, 10) + "::" + typ, true
	}
	return "", false
}
