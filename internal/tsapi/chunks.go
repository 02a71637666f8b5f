package tsapi

import (
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
	"github.com/jackc/pgx/v5/pgtype"
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
// chunk's rows is inserted into the hypertable with the chunk interval set to one whose
// range holds the source's slice (its width when the slice is aligned to it; else an
// interval the hypertable's chunks were made with, whose range the chunks made before
// cut as they cut it on the source: chunks are made in the source's order), and deleted
// again from the chunk it went to (the INSERT returns it) in the same transaction: the
// chunk stays, empty. The intervals are set only where they change, and back to the
// source's at the end. Making a chunk reads no other chunk (a DELETE through the
// hypertable would plan over all of them: 0.24 s a chunk at 3 000 chunks). Chunks are
// made groupSize at a time, in a transaction whose statements are pipelined: three round
// trips to the target (the COMMIT only once every chunk was found to have held its
// routed rows alone) and one to the source for the group, whatever the number of chunks. A chunk whose slices still come out different is reported,
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
	// widthsOf and chunkList: the source's chunk widths per dimension and chunks, per
	// hypertable, read once.
	widthsOf  map[Name][][]int64
	chunkList map[Name][]*Chunk
}

type column struct{ name, typ string }

func newChunkMaker(ctx context.Context, src, dst *pgx.Conn, ext string, source *Layout) (*chunkMaker, error) {
	m := &chunkMaker{src: src, dst: dst, ext: ext, source: source, columns: map[Name][]column{}, changed: map[Name]bool{},
		widthsOf: map[Name][][]int64{}, chunkList: map[Name][]*Chunk{}}
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

// chunkJob is one source chunk to make on the target, and what came of it.
type chunkJob struct {
	srcH, t *Hypertable // its source hypertable and the target's
	c       *Chunk
	row     [][]byte // the Apache build: the row to route, in text format
	noRow   string   // the Apache build: why no row could be found or made for it
	chunk   string   // the target chunk made, as SQL takes it in the target session
	made    Name     // the target chunk made
	got     []Slice  // its slices
}

// groupSize is how many chunks are made in one transaction on the target, whose
// statements go in pipelined exchanges: three round trips to the target (two on the
// full build) and one to the source for as many chunks, which counts across a WAN. A
// chunk made takes a few locks to its transaction's end (its table, its indexes): 32
// keeps that to a hundred or so, under what a server's lock table is sized for.
const groupSize = 32

// makeChunks makes the target chunks of jobs (in the source's order), groupSize at a
// time, and says where each job's rows go and, where the target chunk differs, how.
func (m *chunkMaker) makeChunks(ctx context.Context, jobs []*chunkJob) ([]Placement, []string, error) {
	for lo := 0; lo < len(jobs); lo += groupSize {
		g := jobs[lo:min(len(jobs), lo+groupSize)]
		var err error
		if m.createChunk {
			err = m.byCreateChunk(ctx, g)
		} else {
			err = m.byRow(ctx, g)
		}
		if err != nil {
			return nil, nil, err
		}
	}
	ps, diffs := make([]Placement, len(jobs)), make([]string, len(jobs))
	for i, j := range jobs {
		ps[i], diffs[i] = j.placement()
	}
	return ps, diffs, nil
}

// placement says where j's rows go: into the target chunk made when it has the
// source's slices, else through the hypertable, with why.
func (j *chunkJob) placement() (Placement, string) {
	c, srcH := j.c, j.srcH
	p := Placement{Source: c.Name, Hypertable: c.Hypertable, Compressed: c.Compressed}
	switch {
	case j.noRow != "":
		p.Target, p.Routed = j.t.Name, true
		return p, fmt.Sprintf("chunk %s of %s was not made on the target: %s", c.Name.Display(), srcH.Name.Display(), j.noRow)
	case !slices.Equal(j.got, c.Slices):
		p.Target, p.Routed = j.t.Name, true
		return p, fmt.Sprintf("chunk %s of %s has the slices %s on the source, but TimescaleDB made %s with %s on the target; its rows go through the hypertable",
			c.Name.Display(), srcH.Name.Display(), slicesText(srcH, c.Slices), j.made.Display(), slicesText(srcH, j.got))
	}
	p.Target = j.made
	return p, ""
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

// byCreateChunk makes the target chunks of group g on the full build, by create_chunk,
// in one transaction: the calls in one exchange, the chunks' slices and the COMMIT in
// another.
func (m *chunkMaker) byCreateChunk(ctx context.Context, g []*chunkJob) error {
	var p pipeline
	p.add("", "BEGIN")
	for _, j := range g {
		js, err := slicesJSON(j.t, j.c)
		if err != nil {
			m.rollback(ctx)
			return err
		}
		p.add(fmt.Sprintf("create_chunk(%s, %s)", j.t.Name.Display(), js), fmt.Sprintf(sqlCreateChunk, m.fns), []byte(j.t.Name.String()), []byte(js))
	}
	res, err := m.send(ctx, &p)
	if err != nil {
		return err
	}
	p = pipeline{}
	for i, j := range g {
		if err := scanText(res[i+1], &j.made.Schema, &j.made.Name); err != nil {
			m.rollback(ctx)
			return fmt.Errorf("create_chunk(%s): %w", j.t.Name.Display(), err)
		}
		p.add("read the slices of target chunk "+j.made.Display(), fmt.Sprintf(sqlChunkSlices, m.fns), []byte(j.made.String()))
	}
	p.add("commit the chunks made", "COMMIT")
	if res, err = m.send(ctx, &p); err != nil {
		return err
	}
	for i, j := range g {
		if j.got, err = scanSlices(res[i]); err != nil {
			return fmt.Errorf("read the slices of target chunk %s: %w", j.made.Display(), err)
		}
	}
	return nil
}

// pipeline is statements to send to the target in one exchange (one round trip), with
// what each does, for its errors.
type pipeline struct {
	b    pgconn.Batch
	what []string
}

// add adds statement sql with its parameters in text format (nil: NULL).
func (p *pipeline) add(what, sql string, params ...[]byte) {
	p.b.ExecParams(sql, params, nil, nil, nil)
	p.what = append(p.what, what)
}

// send sends p's statements to the target in one round trip and reads their results.
// On an error, the transaction they began or continued is rolled back, and the error
// says what the statement that failed did.
func (m *chunkMaker) send(ctx context.Context, p *pipeline) ([]*pgconn.Result, error) {
	res, err := m.exchange(ctx, &p.b)
	if err != nil && len(res) > 0 && len(res) <= len(p.what) && p.what[len(res)-1] != "" {
		err = fmt.Errorf("%s: %w", p.what[len(res)-1], err)
	}
	return res, err
}

// scanSlices reads the slices of a chunk from r, a result of sqlChunkSlices.
func scanSlices(r *pgconn.Result) ([]Slice, error) {
	var starts, ends []int64
	if err := scanText(r, &starts, &ends); err != nil {
		return nil, err
	}
	return toSlices(starts, ends), nil
}

func toSlices(starts, ends []int64) []Slice {
	out := make([]Slice, min(len(starts), len(ends)))
	for i := range out {
		out[i] = Slice{starts[i], ends[i]}
	}
	return out
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

// SQL of the Apache build's way to make a chunk (byRow). Checked on TimescaleDB 2.19.3
// (PostgreSQL 17): an INSERT through the hypertable returns, as tableoid, the chunk the
// row went to, made for it if need be; a DELETE from that chunk alone plans and reads
// that chunk only. The values are sent as text, which the columns' input functions read
// as COPY does; OVERRIDING SYSTEM VALUE keeps an identity column's value, as COPY does.
const (
	// sqlRouteRow inserts one row into hypertable %[1]s, columns %[2]s, values %[3]s
	// ($1, $2, ...), and returns the chunk's oid and its name as this session takes it
	// in SQL (regclass's output: quoted, qualified where the search_path needs it).
	sqlRouteRow = `INSERT INTO %[1]s (%[2]s) OVERRIDING SYSTEM VALUE VALUES (%[3]s) RETURNING tableoid::oid, tableoid::regclass::text`
	// sqlDeleteRouted empties chunk %s (regclass's output), which holds the routed row only.
	sqlDeleteRouted = `DELETE FROM ONLY %s`
)

// byRow makes the target chunks of group g on the Apache build: for each, one row
// routed into the hypertable under chunk intervals that make TimescaleDB cut its
// slices, deleted again from the chunk it went to in the same transaction (see the
// comment at the top). The chunks' rows are read from the source in one exchange; on
// the target, the intervals wanted and the rows go in in one, the rows out of their
// chunks, with the chunks' names and slices, in a second, and the COMMIT in a third
// once every chunk held its routed rows alone.
func (m *chunkMaker) byRow(ctx context.Context, g []*chunkJob) error {
	if err := m.rowsOf(ctx, g); err != nil {
		return err
	}
	var p pipeline
	p.add("", "BEGIN")
	var routed []*chunkJob
	var inserts []int // the result of each routed job's INSERT
	for _, j := range g {
		if j.noRow != "" {
			continue
		}
		want := make([]Dimension, len(j.t.Dimensions))
		copy(want, j.t.Dimensions)
		for i, d := range j.srcH.Dimensions {
			if d.Open() {
				want[i].Interval = m.interval(j.srcH, i, j.c.Slices[i])
			} else {
				want[i].Partitions = partitionsFor(j.c.Slices[i], d.Partitions)
			}
		}
		for _, ch := range intervalChanges(m.ext, j.t, want) {
			args := make([][]byte, len(ch.args))
			for i, a := range ch.args {
				args[i] = []byte(fmt.Sprint(a))
			}
			p.add(fmt.Sprintf("hypertable %s: set the chunk interval of %s", j.t.Name.Display(), ch.column), ch.sql, args...)
			m.changed[j.t.Name] = true
		}
		setDimensions(j.t, want)
		cols := m.columns[j.srcH.Name]
		names, params := make([]string, len(cols)), make([]string, len(cols))
		for i, col := range cols {
			names[i], params[i] = pgx.Identifier{col.name}.Sanitize(), "$"+strconv.Itoa(i+1)
		}
		p.add(fmt.Sprintf("route a row of chunk %s into target hypertable %s", j.c.Name.Display(), j.t.Name.Display()),
			fmt.Sprintf(sqlRouteRow, j.t.Name.String(), strings.Join(names, ", "), strings.Join(params, ", ")), j.row...)
		routed = append(routed, j)
		inserts = append(inserts, len(p.what)-1)
	}
	if len(routed) == 0 {
		return nil
	}
	res, err := m.send(ctx, &p)
	if err != nil {
		return err
	}
	// The rows out of the chunks they went to (once a chunk: two rows may go to one
	// chunk, when TimescaleDB did not cut the first one's slices), the chunks' names
	// and slices.
	oids := make([][]byte, len(routed))
	held := map[string]int64{}
	var chunks []string
	for k, j := range routed {
		r := res[inserts[k]]
		if len(r.Rows) != 1 || len(r.Rows[0]) != 2 {
			m.rollback(ctx)
			return fmt.Errorf("route a row of chunk %s into target hypertable %s: %d rows inserted, want 1", j.c.Name.Display(), j.t.Name.Display(), len(r.Rows))
		}
		oids[k], j.chunk = r.Rows[0][0], string(r.Rows[0][1])
		if held[j.chunk] == 0 {
			chunks = append(chunks, j.chunk)
		}
		held[j.chunk]++
	}
	p = pipeline{}
	for _, c := range chunks {
		p.add("delete the row routed into target chunk "+c, fmt.Sprintf(sqlDeleteRouted, c))
	}
	for k, j := range routed {
		p.add("name target chunk "+j.chunk, sqlRelName, oids[k])
		p.add("read the slices of target chunk "+j.chunk, fmt.Sprintf(sqlChunkSlices, m.fns), oids[k])
	}
	if res, err = m.send(ctx, &p); err != nil {
		return err
	}
	for i, c := range chunks {
		if n := res[i].CommandTag.RowsAffected(); n != held[c] {
			m.rollback(ctx)
			return fmt.Errorf("target chunk %s held %d rows while chunks were made, %d of them routed to make chunks; the target's hypertables must be empty", c, n, held[c])
		}
	}
	for k, j := range routed {
		r := res[len(chunks)+2*k:]
		if err := scanText(r[0], &j.made.Schema, &j.made.Name); err != nil {
			m.rollback(ctx)
			return fmt.Errorf("name target chunk %s: %w", j.chunk, err)
		}
		if j.got, err = scanSlices(r[1]); err != nil {
			m.rollback(ctx)
			return fmt.Errorf("read the slices of target chunk %s: %w", j.chunk, err)
		}
	}
	// Only now: a chunk that held other rows than those routed rolled back above.
	p = pipeline{}
	p.add("commit the chunks made", "COMMIT")
	_, err = m.send(ctx, &p)
	return err
}

// rowsOf reads the row to make each chunk of group g with (see sourceRow): the chunks'
// own first rows in one exchange with the source; for an empty chunk, one made from
// another chunk's.
func (m *chunkMaker) rowsOf(ctx context.Context, g []*chunkJob) error {
	b := &pgconn.Batch{}
	for _, j := range g {
		cols, err := m.columnsOf(ctx, j.srcH.Name)
		if err != nil {
			return err
		}
		b.ExecParams(rowQuery(quotedNames(cols), j.c), nil, nil, nil, nil)
	}
	res, err := m.src.PgConn().ExecBatch(ctx, b).ReadAll()
	if err = firstErr(res, err); err != nil {
		if f := len(res) - 1; f >= 0 && f < len(g) {
			return fmt.Errorf("read a row of source chunk %s: %w", g[f].c.Name.Display(), err)
		}
		return fmt.Errorf("read rows of source chunks: %w", err)
	}
	for i, j := range g {
		if len(res[i].Rows) > 0 {
			j.row = res[i].Rows[0]
			continue
		}
		j.row, err = m.otherRow(ctx, j.srcH, j.c, m.columns[j.srcH.Name])
		var nr *noRowError
		if errors.As(err, &nr) {
			j.noRow = nr.why
		} else if err != nil {
			return err
		}
	}
	return nil
}

// exchange sends batch b's statements to the target in one round trip and reads their
// results. On an error, the transaction b began or continued is rolled back; the
// results read up to the one that failed are returned with it.
func (m *chunkMaker) exchange(ctx context.Context, b *pgconn.Batch) ([]*pgconn.Result, error) {
	res, err := m.dst.PgConn().ExecBatch(ctx, b).ReadAll()
	if err = firstErr(res, err); err != nil {
		m.rollback(ctx)
	}
	return res, err
}

// firstErr is err (a batch's), or else the first error among its results res.
func firstErr(res []*pgconn.Result, err error) error {
	for _, r := range res {
		if err != nil {
			break
		}
		err = r.Err
	}
	return err
}

// rollback ends the target's transaction, if one is open.
func (m *chunkMaker) rollback(ctx context.Context) {
	if pc := m.dst.PgConn(); !pc.IsClosed() && pc.TxStatus() != 'I' {
		pc.Exec(context.WithoutCancel(ctx), "ROLLBACK").Close()
	}
}

// scanText reads the one row of r, in text format, into dst (strings and int8 arrays).
func scanText(r *pgconn.Result, dst ...any) error {
	if len(r.Rows) != 1 {
		return fmt.Errorf("%d rows, want 1", len(r.Rows))
	}
	m := pgtype.NewMap()
	for i, d := range dst {
		if i >= len(r.Rows[0]) || i >= len(r.FieldDescriptions) {
			return fmt.Errorf("%d columns, want %d", len(r.Rows[0]), len(dst))
		}
		if err := m.Scan(r.FieldDescriptions[i].DataTypeOID, pgtype.TextFormatCode, r.Rows[0][i], d); err != nil {
			return err
		}
	}
	return nil
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
	candidates := append([]int64{h.Dimensions[dim].Interval}, m.widths(h.Name, dim)...)
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

// widths are the distinct widths the source chunks of hypertable n have in dimension
// dim (read once per hypertable: a chunk's interval is picked in constant time).
func (m *chunkMaker) widths(n Name, dim int) []int64 {
	ws, ok := m.widthsOf[n]
	if !ok {
		seen := map[[2]int64]bool{}
		for _, c := range m.chunksOf(n) {
			for i, x := range c.Slices {
				if w := x.End - x.Start; x.End > x.Start && !seen[[2]int64{int64(i), w}] {
					seen[[2]int64{int64(i), w}] = true
					for len(ws) <= i {
						ws = append(ws, nil)
					}
					ws[i] = append(ws[i], w)
				}
			}
		}
		m.widthsOf[n] = ws
	}
	if dim < len(ws) {
		return ws[dim]
	}
	return nil
}

// chunksOf lists the source chunks of hypertable n in the order they were made (read
// once per hypertable).
func (m *chunkMaker) chunksOf(n Name) []*Chunk {
	cs, ok := m.chunkList[n]
	if !ok {
		cs = m.source.ChunksOf(n)
		m.chunkList[n] = cs
	}
	return cs
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

// otherRow makes a row to make empty chunk c with, its columns' values in text format
// (nil for NULL): a row of another chunk of the hypertable in the same closed slices,
// its open dimensions' values set to the slice's start.
func (m *chunkMaker) otherRow(ctx context.Context, h *Hypertable, c *Chunk, cols []column) ([][]byte, error) {
	names := quotedNames(cols)
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
	for _, o := range m.chunksOf(c.Hypertable) {
		if o == c || !sameClosed(h, o, c) {
			continue
		}
		if row, err := m.readRow(ctx, sel, o); row != nil || err != nil {
			return row, err
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
	for _, o := range m.chunksOf(c.Hypertable) {
		if o == c {
			continue
		}
		if row, err := m.readRow(ctx, sel, o); row != nil || err != nil {
			return row, err
		}
	}
	return nil, &noRowError{"it is empty, and no chunk of its hypertable holds a row to make it with"}
}

// readRow reads the select list sel of one row of source chunk o, in text format (as
// the columns' output functions write it, which their input functions read); nil when
// o holds none.
func (m *chunkMaker) readRow(ctx context.Context, sel []string, o *Chunk) ([][]byte, error) {
	r := m.src.PgConn().ExecParams(ctx, rowQuery(sel, o), nil, nil, nil, nil).Read()
	if r.Err != nil {
		return nil, fmt.Errorf("read a row of source chunk %s: %w", o.Name.Display(), r.Err)
	}
	if len(r.Rows) == 0 {
		return nil, nil
	}
	return r.Rows[0], nil
}

// rowQuery reads select list sel of one row of source chunk o.
func rowQuery(sel []string, o *Chunk) string {
	return fmt.Sprintf("SELECT %s FROM %s LIMIT 1", strings.Join(sel, ", "), o.Name.String())
}

// quotedNames are the names of cols, quoted.
func quotedNames(cols []column) []string {
	names := make([]string, len(cols))
	for i, col := range cols {
		names[i] = pgx.Identifier{col.name}.Sanitize()
	}
	return names
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
