// Package tsapi restores a database's TimescaleDB objects on a target without writing
// TimescaleDB's catalog: for a target user who may not (a managed service's database
// owner, not a superuser), or a target whose TimescaleDB is another version. From what
// the source holds (hypertables with their dimensions, chunks with their slices,
// compression settings, continuous aggregates, jobs), it calls TimescaleDB's public API
// on the target as the hypertables' owner, and pairs each source chunk with the target
// chunk of the same slices, for the data step to copy into.
//
// What is tied to TimescaleDB's version (checked on 2.19.3, Apache and full builds, and
// on 2.31.0, Apache build, as the target of an upgrade):
//   - reading: the catalog tables every role may read (hypertable, dimension, chunk,
//     chunk_constraint, dimension_slice, continuous_agg; bgw_job in _timescaledb_config
//     up to 2.24, a view there later), in a form that reads both: chunk_constraint is a
//     view from 2.28; chunk has relid instead of schema_name/table_name from 2.29 (read
//     through sqltext.TimescaleChunkTable); continuous_agg lost finalized, and
//     hypertable's compression_state went unused (status bit 4 says compression is
//     enabled, and compressed chunks have no hypertable of their own);
//   - create_hypertable and add_dimension in their named-column form (deprecated for
//     the by_range/by_hash form, which does not take associated_schema_name; still
//     there in 2.31.0, without chunk_target_size);
//   - _timescaledb_functions.create_chunk (the full build; in _timescaledb_internal
//     before 2.12) and _timescaledb_functions.cagg_watermark;
//   - the arguments of add_*_policy, add_job and alter_job as 2.19.3 has them
//     (initial_start, timezone, compress_created_before, drop_created_before,
//     fixed_schedule), which older versions partly lack.
//
// The Apache build has no call that makes a chunk of given slices: a chunk is made
// there by one row routed into the hypertable under a chunk interval that makes
// TimescaleDB cut the source's slice (see chunks.go).
package tsapi

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/inventory"
	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// Catalog reads. Checked on TimescaleDB 2.19.3 (PostgreSQL 17), Apache and full builds;
// the columns read exist unchanged from 2.0 to 2.27.
const (
	// sqlHypertables lists every hypertable but TimescaleDB's internal compressed ones
	// (compression_state 2), with its dimensions in order, and whether it is a
	// continuous aggregate's materialization hypertable. A partitioning or integer-now
	// function is named only when it is not TimescaleDB's own (the default, whose
	// schema moved between versions).
	sqlHypertables = `
SELECT h.id, h.schema_name::text, h.table_name::text, h.associated_schema_name::text, h.associated_table_prefix::text,
	EXISTS (SELECT FROM _timescaledb_catalog.continuous_agg ca WHERE ca.mat_hypertable_id = h.id),
	d.column_name::text, format_type(d.column_type, NULL), coalesce(d.num_slices, 0)::int, coalesce(d.interval_length, 0),
	d.compress_interval_length,
	coalesce(CASE WHEN d.partitioning_func IS NOT NULL AND NOT EXISTS (
		SELECT FROM pg_depend x WHERE x.classid = 'pg_proc'::regclass AND x.deptype = 'e'
			AND x.objid = to_regprocedure(format('%I.%I(anyelement)', d.partitioning_func_schema, d.partitioning_func)))
		THEN format('%I.%I', d.partitioning_func_schema, d.partitioning_func) END, ''),
	coalesce(CASE WHEN d.integer_now_func IS NOT NULL
		THEN format('%I.%I', d.integer_now_func_schema, d.integer_now_func) END, '')
FROM _timescaledb_catalog.hypertable h JOIN _timescaledb_catalog.dimension d ON d.hypertable_id = h.id
WHERE h.compression_state <> 2
ORDER BY h.id, d.id`

	// sqlCompression lists the hypertables with compression enabled (compression_state
	// 1 up to 2.2x; status bit 4 later, when compression_state went unused),
	// materialization hypertables included, with their settings as
	// timescaledb.compress_segmentby and compress_orderby take them.
	sqlCompression = `
SELECT h.schema_name::text, h.table_name::text,
	coalesce(string_agg(quote_ident(s.attname::text), ', ' ORDER BY s.segmentby_column_index)
		FILTER (WHERE s.segmentby_column_index IS NOT NULL), ''),
	coalesce(string_agg(quote_ident(s.attname::text) || CASE WHEN s.orderby_asc THEN ' ASC' ELSE ' DESC' END
		|| CASE WHEN s.orderby_nullsfirst THEN ' NULLS FIRST' ELSE ' NULLS LAST' END, ', ' ORDER BY s.orderby_column_index)
		FILTER (WHERE s.orderby_column_index IS NOT NULL), '')
FROM _timescaledb_catalog.hypertable h
LEFT JOIN timescaledb_information.compression_settings s ON s.hypertable_schema = h.schema_name AND s.hypertable_name = h.table_name
WHERE h.compression_state = 1 OR h.status & 4 = 4
GROUP BY 1, 2`

	// sqlAggregates lists the continuous aggregates in the order they were made (a
	// continuous aggregate on another comes after it): the user's view, its
	// materialization hypertable, whether it shows materialized rows only, whether its
	// materialization hypertable has indexes on the grouping columns (besides the time
	// column's), whether it is finalized (the form TimescaleDB makes since 2.7, the only
	// one from 2.2x, whose catalog has no finalized column: read as jsonb), and its
	// query: the definition of its direct view, as the session's search_path prints it;
	// and the owner of its view.
	sqlAggregates = `
SELECT ca.user_view_schema::text, ca.user_view_name::text, mh.schema_name::text, mh.table_name::text,
	ca.materialized_only,
	(SELECT count(*) FROM pg_index x WHERE x.indrelid = format('%I.%I', mh.schema_name, mh.table_name)::regclass) > 1,
	coalesce((to_jsonb(ca) ->> 'finalized')::bool, true),
	pg_get_viewdef(format('%I.%I', ca.direct_view_schema, ca.direct_view_name)::regclass),
	pg_get_userbyid((SELECT relowner FROM pg_class WHERE oid = format('%I.%I', ca.user_view_schema, ca.user_view_name)::regclass))::text
FROM _timescaledb_catalog.continuous_agg ca JOIN _timescaledb_catalog.hypertable mh ON mh.id = ca.mat_hypertable_id
ORDER BY ca.mat_hypertable_id`
)

// sqlChunks lists the chunks of those hypertables in the order they were made, each
// with its slice in every dimension (in dimension order) and whether it is compressed
// (status bit 1, as TimescaleDB's own chunks view reads it). Dropped chunks (kept in the
// catalog for continuous aggregates up to 2.2x) have no table and are left out, as are
// OSM (tiered) chunks. The chunk's table is named as the catalog's version has it
// (sqltext.TimescaleChunkTable); chunk_constraint is a view of dimension_slice from
// 2.28 with the same columns. Checked on 2.19.3 and 2.31.0.
var sqlChunks = `
SELECT c.id, h.schema_name::text, h.table_name::text, cn.nspname::text, ct.relname::text,
	c.status & 1 = 1,
	array_agg(ds.range_start ORDER BY d.id), array_agg(ds.range_end ORDER BY d.id)
FROM _timescaledb_catalog.chunk c
JOIN pg_class ct ON ct.oid = ` + sqltext.TimescaleChunkTable("c") + `
JOIN pg_namespace cn ON cn.oid = ct.relnamespace
JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id
JOIN _timescaledb_catalog.chunk_constraint cc ON cc.chunk_id = c.id AND cc.dimension_slice_id IS NOT NULL
JOIN _timescaledb_catalog.dimension_slice ds ON ds.id = cc.dimension_slice_id
JOIN _timescaledb_catalog.dimension d ON d.id = ds.dimension_id
WHERE NOT c.osm_chunk AND h.compression_state <> 2
GROUP BY c.id, h.schema_name, h.table_name, cn.nspname, ct.relname, c.status
ORDER BY c.id`

// Layout is what one database holds of TimescaleDB's: its hypertables (materialization
// hypertables of continuous aggregates included) and their chunks.
type Layout struct {
	Hypertables []*Hypertable
	Chunks      []*Chunk // in the order they were made
	// Aggregates are the continuous aggregates, in the order they were made.
	Aggregates []*Aggregate
	byName     map[Name]*Hypertable
}

// Aggregate is a continuous aggregate.
type Aggregate struct {
	View            Name // the user's view
	Materialization Name // its materialization hypertable
	// MaterializedOnly: the view shows the materialized rows only, not real-time ones.
	MaterializedOnly bool
	// GroupIndexes: its materialization hypertable has indexes on the grouping columns.
	GroupIndexes bool
	Finalized    bool
	// Query is the aggregate's SELECT, as pg_get_viewdef prints it (names qualified
	// where the reading session's search_path does not find them).
	Query string
	// Owner is the owner of its view.
	Owner string
}

// Aggregate finds a continuous aggregate by its view's name.
func (l *Layout) Aggregate(view Name) *Aggregate {
	for _, a := range l.Aggregates {
		if a.View == view {
			return a
		}
	}
	return nil
}

// Compression is a hypertable's compression settings, as
// timescaledb.compress_segmentby and compress_orderby take them.
type Compression struct {
	Segmentby, Orderby string
}

// Name is a relation by its raw schema and name.
type Name struct{ Schema, Name string }

// String is the name as SQL takes it, quoted.
func (n Name) String() string { return pgx.Identifier{n.Schema, n.Name}.Sanitize() }

// Display is the name as a user writes it: quoted only where needed.
func (n Name) Display() string { return inventory.DisplayName(n.Schema, n.Name) }

// Hypertable is one hypertable and how it is partitioned.
type Hypertable struct {
	ID   int // the catalog's id on its own server
	Name Name
	// AssociatedSchema and AssociatedPrefix name where its chunks are made.
	AssociatedSchema, AssociatedPrefix string
	// Materialization: the materialization hypertable of a continuous aggregate, made
	// with the aggregate.
	Materialization bool
	Dimensions      []Dimension
	// Compression is nil when compression is not enabled.
	Compression *Compression
}

// Dimension is one partitioning dimension of a hypertable.
type Dimension struct {
	Column string
	Type   string // format_type of the column
	// Partitions is the number of hash partitions of a closed ("space") dimension; 0 for
	// an open ("time") one.
	Partitions int
	// Interval is an open dimension's chunk interval: microseconds for time types, the
	// column's own units for integers.
	Interval int64
	// CompressInterval is the interval compressed chunks are merged up to (nil: none).
	CompressInterval *int64
	// PartitioningFunc is a user function that partitions the dimension ("" for
	// TimescaleDB's own), as schema.name, quoted.
	PartitioningFunc string
	// IntegerNow is the integer_now function of an integer time dimension ("" for none),
	// as schema.name, quoted.
	IntegerNow string
}

// Open says whether the dimension is open (time-like): chunks are cut by interval.
func (d Dimension) Open() bool { return d.Partitions == 0 }

// Chunk is one chunk and its slices.
type Chunk struct {
	ID         int // the catalog's id on its own server: the order chunks were made in
	Hypertable Name
	Name       Name
	Compressed bool
	// Slices are [start, end) per dimension, in the hypertable's dimension order, in
	// TimescaleDB's internal units (microseconds since 1970 for time types).
	Slices []Slice
}

// Slice is a chunk's range in one dimension.
type Slice struct{ Start, End int64 }

// key is a chunk's identity across servers: its hypertable and slices.
func (c *Chunk) key() string {
	var b strings.Builder
	b.WriteString(c.Hypertable.String())
	for _, s := range c.Slices {
		fmt.Fprintf(&b, " [%d,%d)", s.Start, s.End)
	}
	return b.String()
}

// Hypertable finds a hypertable by name.
func (l *Layout) Hypertable(n Name) *Hypertable { return l.byName[n] }

// ChunksOf lists the chunks of hypertable n, in the order they were made.
func (l *Layout) ChunksOf(n Name) []*Chunk {
	var out []*Chunk
	for _, c := range l.Chunks {
		if c.Hypertable == n {
			out = append(out, c)
		}
	}
	return out
}

// Querier is a connection or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// ReadLayout reads the hypertables and chunks of the database q is connected to.
func ReadLayout(ctx context.Context, q Querier) (*Layout, error) {
	l := &Layout{byName: map[Name]*Hypertable{}}
	rows, err := q.Query(ctx, sqlHypertables)
	if err != nil {
		return nil, fmt.Errorf("read hypertables: %w", err)
	}
	var (
		id         int
		h          Hypertable
		d          Dimension
		byID       = map[int]*Hypertable{}
		compressIn *int64
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &h.Name.Schema, &h.Name.Name, &h.AssociatedSchema, &h.AssociatedPrefix,
		&h.Materialization, &d.Column, &d.Type, &d.Partitions, &d.Interval, &compressIn, &d.PartitioningFunc, &d.IntegerNow}, func() error {
		ht := byID[id]
		if ht == nil {
			ht = &Hypertable{ID: id, Name: h.Name, AssociatedSchema: h.AssociatedSchema, AssociatedPrefix: h.AssociatedPrefix,
				Materialization: h.Materialization}
			byID[id] = ht
			l.Hypertables = append(l.Hypertables, ht)
			l.byName[ht.Name] = ht
		}
		dim := d
		if compressIn != nil {
			v := *compressIn
			dim.CompressInterval = &v
		}
		ht.Dimensions = append(ht.Dimensions, dim)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read hypertables: %w", err)
	}
	var n Name
	var cs Compression
	rows, err = q.Query(ctx, sqlCompression)
	if err != nil {
		return nil, fmt.Errorf("read compression settings: %w", err)
	}
	_, err = pgx.ForEachRow(rows, []any{&n.Schema, &n.Name, &cs.Segmentby, &cs.Orderby}, func() error {
		if h := l.byName[n]; h != nil {
			c := cs
			h.Compression = &c
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read compression settings: %w", err)
	}
	var a Aggregate
	rows, err = q.Query(ctx, sqlAggregates)
	if err != nil {
		return nil, fmt.Errorf("read continuous aggregates: %w", err)
	}
	_, err = pgx.ForEachRow(rows, []any{&a.View.Schema, &a.View.Name, &a.Materialization.Schema, &a.Materialization.Name,
		&a.MaterializedOnly, &a.GroupIndexes, &a.Finalized, &a.Query, &a.Owner}, func() error {
		ag := a
		l.Aggregates = append(l.Aggregates, &ag)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read continuous aggregates: %w", err)
	}
	rows, err = q.Query(ctx, sqlChunks)
	if err != nil {
		return nil, fmt.Errorf("read chunks: %w", err)
	}
	var c Chunk
	var starts, ends []int64
	_, err = pgx.ForEachRow(rows, []any{&c.ID, &c.Hypertable.Schema, &c.Hypertable.Name, &c.Name.Schema, &c.Name.Name,
		&c.Compressed, &starts, &ends}, func() error {
		ch := c
		ch.Slices = make([]Slice, len(starts))
		for i := range starts {
			ch.Slices[i] = Slice{starts[i], ends[i]}
		}
		l.Chunks = append(l.Chunks, &ch)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read chunks: %w", err)
	}
	sort.SliceStable(l.Chunks, func(i, j int) bool { return l.Chunks[i].ID < l.Chunks[j].ID })
	for _, ch := range l.Chunks {
		if h := l.byName[ch.Hypertable]; h != nil && len(h.Dimensions) != len(ch.Slices) {
			return nil, fmt.Errorf("chunk %s has %d slices, its hypertable %d dimensions", ch.Name.Display(), len(ch.Slices), len(h.Dimensions))
		}
	}
	return l, nil
}

// Pair is a source chunk and the target chunk with the same slices.
type Pair struct {
	Source, Target *Chunk
}

// PairChunks pairs the chunks of src and dst by hypertable and slices. hypertable maps a
// source hypertable's name to the target's (the same name, but for materialization
// hypertables, which are named by id). It returns the pairs and the source chunks
// without a partner.
func PairChunks(src, dst *Layout, hypertable func(Name) (Name, bool)) (pairs []Pair, missing []*Chunk) {
	onTarget := map[string]*Chunk{}
	for _, c := range dst.Chunks {
		onTarget[c.key()] = c
	}
	for _, c := range src.Chunks {
		n, ok := hypertable(c.Hypertable)
		if !ok {
			missing = append(missing, c)
			continue
		}
		k := Chunk{Hypertable: n, Slices: c.Slices}
		if t := onTarget[k.key()]; t != nil {
			pairs = append(pairs, Pair{Source: c, Target: t})
		} else {
			missing = append(missing, c)
		}
	}
	return pairs, missing
}

// sameDimensions says whether two hypertables are partitioned by the same columns, the
// same way (open or closed; intervals and numbers of partitions aside).
func sameDimensions(a, b *Hypertable) bool {
	return slices.EqualFunc(a.Dimensions, b.Dimensions, func(x, y Dimension) bool {
		return x.Column == y.Column && x.Open() == y.Open()
	})
}
