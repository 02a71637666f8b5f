package verify

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/inventory"
	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// userObjects keeps what users made: no system schemas, no TimescaleDB-internal
// schemas (chunks, compressed and materialization hypertables, the catalog: those are
// compared through the hypertables and their metadata), no temporary schemas, and not
// tsmigrate's own journal schema on a target.
// It expects the namespace aliased n.
var userObjects = sqltext.UserSchema("n.nspname")

// userRel stands, in the queries on relations and what belongs to them, for the
// condition that keeps the relations users made (aliased c, the schema n):
// sqltext.UserRelation, which depends on whether the side has TimescaleDB
// (forSide fills it in). A table of the user's in _timescaledb_internal is one.
const userRel = "{user relation}"

// forSide is query q for a side that has TimescaleDB or not (timescale).
func forSide(q string, timescale bool) string {
	return strings.ReplaceAll(q, userRel, sqltext.UserRelation("n.nspname", "c.oid", "c.relkind", timescale))
}

// notExtensionMember drops objects an extension's script made (their data and
// definitions come with the extension), of catalog (pg_class, ...) and oid.
func notExtensionMember(catalog, oid string) string {
	return "NOT " + sqltext.ExtensionMember(sqltext.Catalog(catalog), oid)
}

// notTimescaleSchema is true for a schema (a column of TimescaleDB's views) that is
// not one of TimescaleDB's own.
func notTimescaleSchema(col string) string { return "NOT " + sqltext.TimescaleSchema(col) }

// tablesSQL lists the tables that hold data, with their live columns and primary key.
// Checked on PostgreSQL 15 and 17.
var tablesSQL = `SELECT n.nspname, c.relname,
	array(SELECT a.attname FROM pg_attribute a
		WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum)::text[],
	array(SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
		WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum)::text[],
	array(SELECT a.attname FROM pg_constraint k
		CROSS JOIN LATERAL unnest(k.conkey) WITH ORDINALITY AS u(attnum, ord)
		JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum
		WHERE k.conrelid = c.oid AND k.contype = 'p' ORDER BY u.ord)::text[],
	c.relpages::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND ` + userRel + `
	AND ` + notExtensionMember("pg_class", "c.oid") + `
ORDER BY 1, 2`

// timescaleSQL says whether TimescaleDB is installed (an expression).
const timescaleSQL = `EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb')`

// hypertablesSQL lists user hypertables with their primary (time) dimension.
// The information views exist with these columns in TimescaleDB 2.x (checked 2.19.3).
var hypertablesSQL = `SELECT d.hypertable_schema::text, d.hypertable_name::text,
	d.column_name::text, d.column_type::text
FROM timescaledb_information.dimensions d
WHERE d.dimension_number = 1 AND ` + notTimescaleSchema("d.hypertable_schema")

// chunksSQL lists the chunks of user hypertables: the primary dimension's range (text
// and a number to sort by) and every dimension's slice as the chunk's own CHECK
// constraints (coninhcount = 0: the hypertable's CHECK constraints are inherited ones).
// The slices are the chunk's identity across servers, where chunk names can differ;
// they are also the WHERE clause that selects the chunk's rows through its hypertable.
// show_chunk() would give the slices too, but the Apache build refuses it.
// Checked on TimescaleDB 2.19.3 (PostgreSQL 17).
var chunksSQL = `SELECT ch.hypertable_schema::text, ch.hypertable_name::text,
	ch.chunk_schema::text, ch.chunk_name::text, coalesce(ch.is_compressed, false),
	coalesce(ch.range_start::text, ch.range_start_integer::text, ''),
	coalesce(ch.range_end::text, ch.range_end_integer::text, ''),
	coalesce(extract(epoch FROM ch.range_start)::float8, ch.range_start_integer::float8, '-Infinity'),
	coalesce(extract(epoch FROM ch.range_end)::float8, ch.range_end_integer::float8, 'Infinity'),
	coalesce((SELECT string_agg(x.def, ' AND ' ORDER BY x.def) FROM (
		SELECT pg_get_expr(k.conbin, k.conrelid) AS def FROM pg_constraint k
		WHERE k.conrelid = format('%I.%I', ch.chunk_schema, ch.chunk_name)::regclass
			AND k.contype = 'c' AND k.coninhcount = 0) AS x), ''),
	(SELECT c.relpages::bigint FROM pg_class c WHERE c.oid = format('%I.%I', ch.chunk_schema, ch.chunk_name)::regclass)
FROM timescaledb_information.chunks ch
WHERE ` + notTimescaleSchema("ch.hypertable_schema") + ` OR EXISTS (
	SELECT 1 FROM timescaledb_information.continuous_aggregates ca
	WHERE ca.materialization_hypertable_schema = ch.hypertable_schema
		AND ca.materialization_hypertable_name = ch.hypertable_name)
ORDER BY 1, 2, 8, 10`

// caggsSQL lists the continuous aggregates of user views with their materialization
// hypertables: the rows a continuous aggregate has materialized are data like any
// other, held in a hypertable whose name (_materialized_hypertable_<id>) differs
// between servers when the ids do, so they are paired by the view's name.
// Checked on TimescaleDB 2.19.3, full build (PostgreSQL 17); empty on the Apache build.
const caggsSQL = `SELECT ca.view_schema::text, ca.view_name::text,
	ca.materialization_hypertable_schema::text, ca.materialization_hypertable_name::text,
	array(SELECT a.attname FROM pg_attribute a
		WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum)::text[],
	array(SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
		WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum)::text[],
	c.relpages::bigint, d.column_name::text, d.column_type::text
FROM timescaledb_information.continuous_aggregates ca
JOIN pg_class c ON c.oid = format('%I.%I', ca.materialization_hypertable_schema, ca.materialization_hypertable_name)::regclass
JOIN timescaledb_information.dimensions d ON d.hypertable_schema = ca.materialization_hypertable_schema
	AND d.hypertable_name = ca.materialization_hypertable_name AND d.dimension_number = 1
ORDER BY 1, 2`

type column struct {
	name, typ string
}

type table struct {
	schema, name string
	columns      []column
	pk           []string
	hyper        *hypertable
	pages        int64 // pg_class.relpages: an estimate of the work, to start big units first
}

func (t *table) qualified() string { return quoteIdent(t.schema) + "." + quoteIdent(t.name) }

type hypertable struct {
	timeColumn, timeType string
	chunks               []chunk
}

type chunk struct {
	schema, name       string
	compressed         bool
	start, end         string  // primary-dimension bounds as text ("" = none)
	startSort, endSort float64 // the same, as numbers to order by
	slices             string  // every dimension's CHECK expression, sorted, ANDed
	pages              int64
}

func (c chunk) qualified() string { return quoteIdent(c.schema) + "." + quoteIdent(c.name) }

func (c chunk) displayName() string { return inventory.DisplayName(c.schema, c.name) }

// tableKey names a table by schema and name, kept apart: "a.b"."c" is not "a"."b.c".
type tableKey struct{ schema, name string }

// displayName is the table as a user would type it, quoted where needed.
func (k tableKey) displayName() string { return inventory.DisplayName(k.schema, k.name) }

// contents is what one side holds: its tables, and the materialization hypertables
// of its continuous aggregates by the aggregate's (view's) name.
type contents struct {
	tables map[tableKey]*table
	caggs  map[tableKey]*table
}

func readInventory(ctx context.Context, s *session) (*contents, error) {
	inv := &contents{tables: map[tableKey]*table{}, caggs: map[tableKey]*table{}}
	var t table
	var names, types []string
	rows, _ := s.conn.Query(ctx, forSide(tablesSQL, s.timescale)) // ForEachRow returns Query's error
	_, err := pgx.ForEachRow(rows, []any{&t.schema, &t.name, &names, &types, &t.pk, &t.pages}, func() error {
		tb := t
		tb.pk = slices.Clone(t.pk)
		for i := range names {
			tb.columns = append(tb.columns, column{names[i], types[i]})
		}
		inv.tables[tableKey{tb.schema, tb.name}] = &tb
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: list tables: %w", s.cfg.Role, err)
	}

	if !s.timescale {
		return inv, nil
	}
	var schema, name string
	var h hypertable
	rows, _ = s.conn.Query(ctx, hypertablesSQL)
	_, err = pgx.ForEachRow(rows, []any{&schema, &name, &h.timeColumn, &h.timeType}, func() error {
		if t := inv.tables[tableKey{schema, name}]; t != nil {
			t.hyper = &hypertable{timeColumn: h.timeColumn, timeType: h.timeType}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: list hypertables: %w", s.cfg.Role, err)
	}
	materialized := map[tableKey]*table{} // by the materialization hypertable's name
	var view tableKey
	rows, _ = s.conn.Query(ctx, caggsSQL)
	_, err = pgx.ForEachRow(rows, []any{&view.schema, &view.name, &t.schema, &t.name, &names, &types, &t.pages,
		&h.timeColumn, &h.timeType}, func() error {
		tb := &table{schema: t.schema, name: t.name, pages: t.pages,
			hyper: &hypertable{timeColumn: h.timeColumn, timeType: h.timeType}}
		for i := range names {
			tb.columns = append(tb.columns, column{names[i], types[i]})
		}
		inv.caggs[view] = tb
		materialized[tableKey{tb.schema, tb.name}] = tb
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: list continuous aggregates: %w", s.cfg.Role, err)
	}
	var c chunk
	rows, _ = s.conn.Query(ctx, chunksSQL)
	_, err = pgx.ForEachRow(rows, []any{&schema, &name, &c.schema, &c.name, &c.compressed, &c.start, &c.end,
		&c.startSort, &c.endSort, &c.slices, &c.pages}, func() error {
		t := inv.tables[tableKey{schema, name}]
		if t == nil {
			t = materialized[tableKey{schema, name}]
		}
		if t != nil && t.hyper != nil {
			t.hyper.chunks = append(t.hyper.chunks, c)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: list chunks: %w", s.cfg.Role, err)
	}
	return inv, nil
}
