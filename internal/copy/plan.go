package copy

import (
	"context"
	"fmt"
	"slices"
	"sort"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/inventory"
	"github.com/tsmigrate/tsmigrate/internal/journal"
	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// Which table data to copy follows pg_dump's own rules (pg_dump.c of PostgreSQL 17:
// selectDumpableNamespace, checkExtensionMembership, makeTableDataInfo,
// processExtensionTables):
//   - schemas whose names start with pg_ and information_schema are not dumped;
//   - extension members are not dumped, except the extension's configuration tables
//     (pg_extension.extconfig), whose rows are dumped as far as their condition
//     (extcondition) keeps them, in foreign-key order, and its configuration sequences;
//   - views, materialized views (refreshed in post-data), foreign tables and
//     partitioned parents hold no table data; leaf partitions do;
//   - unlogged tables are dumped; temporary tables are not visible.
//
// TimescaleDB hypertable roots hold no rows (COPY TO of one prints "hypertable data
// are in the chunks"); their chunks are ordinary tables and are copied one by one.
// Checked on PostgreSQL 15 and 17 with TimescaleDB 2.19.3, and PostgreSQL 18 with 2.31.0.
var (
	// memberCond is true for extension members.
	memberCond = sqltext.ExtensionMember(sqltext.Catalog("pg_class"), "c.oid")

	// nsCond is true for the schemas pg_dump dumps, except tsmigrate's journal: chunks
	// are in TimescaleDB's schemas.
	nsCond = sqltext.DataSchema("n.nspname")

	// tablesSQL takes sizes from the catalog's statistics, which lock nothing: a
	// size function locks its table until the end of the transaction, and a database
	// with tens of thousands of chunks would run out of lock slots.
	dataTablesCond = `c.relkind = 'r' AND c.relpersistence IN ('p', 'u') AND ` + nsCond + ` AND NOT ` + memberCond

	tablesSQL = `SELECT c.oid, n.nspname, c.relname,
	(c.relpages::bigint + coalesce(t.relpages, 0)) * current_setting('block_size')::bigint,
	greatest(c.reltuples, 0)::bigint, c.relpages::bigint, c.reltuples < 0,
	coalesce(pg_relation_filenode(c.oid), 0)::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_class t ON t.oid = c.reltoastrelid
WHERE ` + dataTablesCond

	// exactSizesSQL measures the tables that may be split.
	exactSizesSQL = `SELECT o, pg_table_size(o), pg_relation_size(o) / current_setting('block_size')::bigint
FROM unnest($1::oid[]) o`

	// hypertableRootsSQL lists hypertables (compressed ones included) and chunks.
	hypertableRootsSQL = `SELECT c.oid FROM _timescaledb_catalog.hypertable h
JOIN pg_namespace n ON n.nspname = h.schema_name JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = h.table_name`
	chunksSQL = `SELECT c.oid, ht.schema_name, ht.table_name, ht.compression_state = 2 FROM _timescaledb_catalog.chunk h
JOIN _timescaledb_catalog.hypertable ht ON ht.id = h.hypertable_id
JOIN pg_class c ON c.oid = ` + sqltext.TimescaleChunkTable("h")

	sequencesSQL = `SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'S' AND ` + nsCond + ` AND NOT ` + memberCond

	// The relations whose columns columnsSQL describes (a subquery, not an array
	// parameter: with thousands of chunks, "= ANY($1)" makes a slow plan).
	dataTableOIDs = `SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE ` + dataTablesCond
)

const (
	largeObjectsSQL = `SELECT count(*) FROM pg_largeobject_metadata`

	// configSQL: configuration tables and sequences of the extensions pg_dump dumps
	// (not the built-in ones, such as plpgsql).
	configSQL = `SELECT c.oid, n.nspname, c.relname, c.relkind::text, coalesce(e.extcondition[u.i], ''),
	pg_table_size(c.oid), greatest(c.reltuples, 0)::bigint, e.extname::text
FROM pg_extension e, unnest(e.extconfig) WITH ORDINALITY u(oid, i)
JOIN pg_class c ON c.oid = u.oid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE e.oid >= 16384 AND c.relkind IN ('r', 'S')`

	// configTableOIDs: with dataTableOIDs, the relations whose columns columnsSQL describes.
	configTableOIDs = `SELECT u.oid FROM pg_extension e, unnest(e.extconfig) u(oid) WHERE e.oid >= 16384`

	configFKSQL = `SELECT conrelid, confrelid FROM pg_constraint
WHERE contype = 'f' AND conrelid = ANY($1) AND confrelid = ANY($1) AND conrelid <> confrelid`

	// columnsSQL (head, relations, tail) gives each table's copied columns (generated and dropped ones left
	// out, as COPY does), the cast each is read through ("" for none), and whether
	// binary COPY is safe for all of them. It is not when a type reached from the
	// column (through domains, arrays, composites, ranges) has no binary send/receive;
	// when it is a reg* type (binary form is an OID, which differs between servers);
	// when a user-defined type sits inside an array or composite (their binary form
	// carries the element type's OID, which array_recv and record_recv check against
	// the target's); or when it is xml. What a type reaches is followed once per type
	// (reach, from each column type in use), not once per column: thousands of chunks
	// share their hypertable's few types (5 000 chunks: 1.4 s against 0.06 s).
	//
	// xml's output function, text or binary, drops a document's XML declaration
	// (<?xml version="1.0"?>, unless it says more than the defaults), which the value
	// holds: an xml column, a domain over xml, or an array of either is read through
	// its cast to text (or text[]), which is the value as stored, and its text arrives
	// in xml's input function, which keeps it (the target session has xmloption
	// content, as pg_restore's). Checked on PostgreSQL 15 and 17. xml inside a
	// composite or range type still loses it.
	columnsSQLHead = `WITH RECURSIVE cols AS (
	SELECT a.attrelid, a.attnum, a.attname, a.atttypid
	FROM pg_attribute a
	WHERE a.attrelid IN (`
	columnsSQLTail = `) AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
), types AS (
	SELECT DISTINCT atttypid AS typ FROM cols
), reach(root, typ, nested) AS (
	SELECT typ, typ, false FROM types
	UNION
	SELECT r.root, x.typ, r.nested OR t.typcategory = 'A' OR t.typtype = 'c'
	FROM reach r JOIN pg_type t ON t.oid = r.typ
	CROSS JOIN LATERAL (
		SELECT t.typelem WHERE t.typelem <> 0
		UNION ALL SELECT t.typbasetype WHERE t.typtype = 'd'
		UNION ALL SELECT a2.atttypid FROM pg_attribute a2
			WHERE t.typrelid <> 0 AND a2.attrelid = t.typrelid AND a2.attnum > 0 AND NOT a2.attisdropped
		UNION ALL SELECT rg.rngsubtype FROM pg_range rg WHERE rg.rngtypid = t.oid
	) x(typ)
), badtypes AS (
	SELECT DISTINCT r.root FROM reach r JOIN pg_type t ON t.oid = r.typ
	WHERE t.typsend = 0 OR t.typreceive = 0
		OR t.oid IN (24, 2202, 2203, 2204, 2205, 2206, 3734, 3769, 4089, 4096, 4191, 142)
		OR (r.nested AND t.oid >= 16384)
), bad AS (
	SELECT DISTINCT c.attrelid FROM cols c JOIN badtypes b ON b.root = c.atttypid
), xmlish(oid, arr) AS (
	SELECT 142::oid, false
	UNION
	SELECT t.oid, x.arr OR t.typcategory = 'A' FROM xmlish x JOIN pg_type t
		ON t.typtype = 'd' AND t.typbasetype = x.oid OR t.typcategory = 'A' AND t.typelem = x.oid AND NOT x.arr
)
SELECT c.attrelid, array_agg(c.attname::text ORDER BY c.attnum),
	array_agg(CASE WHEN x.arr THEN 'text[]' WHEN x.oid IS NOT NULL THEN 'text' ELSE '' END ORDER BY c.attnum),
	b.attrelid IS NULL
FROM cols c LEFT JOIN bad b ON b.attrelid = c.attrelid LEFT JOIN xmlish x ON x.oid = c.atttypid
GROUP BY c.attrelid, b.attrelid`
)

// querier runs catalog queries in the source transaction that sees the snapshot.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

type relation struct {
	oid          uint32
	schema, name string
	kind         string // r or S (config)
	condition    string
	bytes, rows  int64
	pages        int64
	filenode     int64
	columns      []string
	casts        []string // the cast each column is read through, "" for none
	binary       bool
	hypertable   string // of a chunk
	extension    string // of a configuration table
	target       *ChunkTarget
}

// plan lists the units of a migration by reading the source's catalogs in tx, which
// sees the run's snapshot; targets are Options.ChunkTargets.
func plan(ctx context.Context, tx querier, rangeBytes int64, jobs int, targets map[TableName]ChunkTarget) ([]journal.Unit, error) {
	var units []journal.Unit

	config, err := planConfig(ctx, tx, targets != nil)
	if err != nil {
		return nil, err
	}
	units = append(units, config...)

	hasTS := false
	if err := tx.QueryRow(ctx, `SELECT to_regclass('_timescaledb_catalog.hypertable') IS NOT NULL
		AND to_regclass('_timescaledb_catalog.chunk') IS NOT NULL`).Scan(&hasTS); err != nil {
		return nil, fmt.Errorf("look for TimescaleDB catalog: %w", err)
	}
	roots, chunks, compressed := map[uint32]bool{}, map[uint32]string{}, map[uint32]bool{}
	if hasTS {
		if err := collectOIDs(ctx, tx, hypertableRootsSQL, roots); err != nil {
			return nil, fmt.Errorf("list hypertables: %w", err)
		}
		if err := collectChunks(ctx, tx, chunks, compressed); err != nil {
			return nil, fmt.Errorf("list chunks: %w", err)
		}
	}

	rows, err := tx.Query(ctx, tablesSQL)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	var tables []*relation
	var measure []uint32 // tables that may be split: big, or never vacuumed nor analyzed
	for rows.Next() {
		r := &relation{kind: "r"}
		var unknown bool
		if err := rows.Scan(&r.oid, &r.schema, &r.name, &r.bytes, &r.rows, &r.pages, &unknown, &r.filenode); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list tables: %w", err)
		}
		if roots[r.oid] {
			continue
		}
		r.hypertable = chunks[r.oid]
		if targets != nil && r.hypertable != "" {
			if compressed[r.oid] {
				continue // a compressed chunk's data: read decompressed through its chunk
			}
			t, ok := targets[TableName{r.schema, r.name}]
			if !ok {
				rows.Close()
				return nil, fmt.Errorf("no target chunk for source chunk %s of hypertable %s", inventory.DisplayName(r.schema, r.name), r.hypertable)
			}
			r.target = &t
		}
		tables = append(tables, r)
		if r.hypertable == "" && rangeBytes > 0 && (unknown || r.bytes >= rangeBytes/2) {
			measure = append(measure, r.oid)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	if err := exactSizes(ctx, tx, tables, measure); err != nil {
		return nil, err
	}
	if err := describeColumns(ctx, tx, tables, dataTableOIDs); err != nil {
		return nil, err
	}
	if rangeBytes > 0 {
		var total int64
		for _, r := range tables {
			total += r.bytes
		}
		rangeBytes = max(rangeBytes, total/int64(jobs))
	}
	for _, r := range tables {
		units = append(units, tableUnits(r, rangeBytes)...)
	}

	var nseq, nlo int64
	if err := tx.QueryRow(ctx, sequencesSQL).Scan(&nseq); err != nil {
		return nil, fmt.Errorf("count sequences: %w", err)
	}
	if nseq > 0 {
		units = append(units, journal.Unit{ID: "sequences", Phase: journal.PhaseData, Kind: journal.KindSequences,
			EstRows: nseq, PageHi: -1})
	}
	if err := tx.QueryRow(ctx, largeObjectsSQL).Scan(&nlo); err != nil {
		return nil, fmt.Errorf("count large objects: %w", err)
	}
	if nlo > 0 {
		units = append(units, journal.Unit{ID: "large-objects", Phase: journal.PhaseData, Kind: journal.KindLargeObjects,
			EstRows: nlo, EstBytes: nlo * 8192, PageHi: -1})
	}
	return units, nil
}

func collectOIDs(ctx context.Context, tx querier, sql string, into map[uint32]bool) error {
	rows, err := tx.Query(ctx, sql)
	if err != nil {
		return err
	}
	oids, err := pgx.CollectRows(rows, pgx.RowTo[uint32])
	for _, o := range oids {
		into[o] = true
	}
	return err
}

// exactSizes replaces the catalog's estimates of the tables oids by their sizes.
func exactSizes(ctx context.Context, tx querier, tables []*relation, oids []uint32) error {
	if len(oids) == 0 {
		return nil
	}
	byOID := make(map[uint32]*relation, len(tables))
	for _, r := range tables {
		byOID[r.oid] = r
	}
	rows, err := tx.Query(ctx, exactSizesSQL, oids)
	if err != nil {
		return fmt.Errorf("measure tables: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var oid uint32
		var bytes, pages int64
		if err := rows.Scan(&oid, &bytes, &pages); err != nil {
			return fmt.Errorf("measure tables: %w", err)
		}
		byOID[oid].bytes, byOID[oid].pages = bytes, pages
	}
	return rows.Err()
}

// collectChunks maps each chunk to its hypertable's display name, and marks the chunks
// of compressed hypertables (the data of compressed chunks).
func collectChunks(ctx context.Context, tx querier, into map[uint32]string, compressed map[uint32]bool) error {
	rows, err := tx.Query(ctx, chunksSQL)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var oid uint32
		var schema, table string
		var data bool
		if err := rows.Scan(&oid, &schema, &table, &data); err != nil {
			return err
		}
		into[oid] = inventory.DisplayName(schema, table)
		compressed[oid] = data
	}
	return rows.Err()
}

// describeColumns fills in the columns of rels; the subquery which lists their oids.
func describeColumns(ctx context.Context, tx querier, rels []*relation, which string) error {
	if len(rels) == 0 {
		return nil
	}
	byOID := make(map[uint32]*relation, len(rels))
	for _, r := range rels {
		byOID[r.oid] = r
	}
	rows, err := tx.Query(ctx, columnsSQLHead+which+columnsSQLTail)
	if err != nil {
		return fmt.Errorf("describe columns: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var oid uint32
		var cols, casts []string
		var binary bool
		if err := rows.Scan(&oid, &cols, &casts, &binary); err != nil {
			return fmt.Errorf("describe columns: %w", err)
		}
		if r := byOID[oid]; r != nil {
			r.columns, r.binary = cols, binary
			if slices.ContainsFunc(casts, func(c string) bool { return c != "" }) {
				r.casts = casts
			}
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("describe columns: %w", err)
	}
	return nil
}

// tableUnits is one unit for a chunk or a table up to rangeBytes, else ctid page
// ranges of at most about rangeBytes each, the last one open-ended.
func tableUnits(r *relation, rangeBytes int64) []journal.Unit {
	base := journal.Unit{Phase: journal.PhaseData, Schema: r.schema, Table: r.name, Parent: r.hypertable, Columns: r.columns, Casts: r.casts,
		Binary: r.binary, PageHi: -1, EstBytes: r.bytes, EstRows: r.rows}
	if t := r.target; t != nil {
		base.TargetSchema, base.TargetTable, base.Decompress = t.Table.Schema, t.Table.Name, t.Compressed
	}
	id := inventory.DisplayName(r.schema, r.name)
	if r.hypertable != "" || rangeBytes <= 0 || r.bytes <= rangeBytes || r.pages < 2 {
		u := base
		u.ID, u.Kind = "table "+id, journal.KindTable
		return []journal.Unit{u}
	}
	n := (r.bytes + rangeBytes - 1) / rangeBytes
	if n > r.pages {
		n = r.pages
	}
	step := (r.pages + n - 1) / n
	var us []journal.Unit
	for lo := int64(0); lo < r.pages; lo += step {
		u := base
		u.Kind, u.PageLo, u.PageHi, u.Filenode = journal.KindRange, lo, lo+step, r.filenode
		if u.PageHi >= r.pages {
			u.PageHi = -1
		}
		u.ID = fmt.Sprintf("range %s %d-%d", id, u.PageLo, u.PageHi)
		u.EstBytes, u.EstRows = r.bytes/n, r.rows/n
		us = append(us, u)
	}
	return us
}

// planConfig lists the extension configuration tables (in foreign-key order) and
// sequences as config-phase units; without TimescaleDB's when noTimescale.
func planConfig(ctx context.Context, tx querier, noTimescale bool) ([]journal.Unit, error) {
	rows, err := tx.Query(ctx, configSQL)
	if err != nil {
		return nil, fmt.Errorf("list extension configuration tables: %w", err)
	}
	var rels []*relation
	for rows.Next() {
		r := &relation{}
		if err := rows.Scan(&r.oid, &r.schema, &r.name, &r.kind, &r.condition, &r.bytes, &r.rows, &r.extension); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list extension configuration tables: %w", err)
		}
		if noTimescale && r.extension == "timescaledb" {
			continue
		}
		rels = append(rels, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list extension configuration tables: %w", err)
	}
	var tables, seqs []*relation
	for _, r := range rels {
		if r.kind == "S" {
			seqs = append(seqs, r)
		} else {
			tables = append(tables, r)
		}
	}
	if err := describeColumns(ctx, tx, tables, configTableOIDs); err != nil {
		return nil, err
	}
	ordered, err := fkOrder(ctx, tx, tables)
	if err != nil {
		return nil, err
	}
	var units []journal.Unit
	for _, r := range ordered {
		id := inventory.DisplayName(r.schema, r.name)
		units = append(units, journal.Unit{ID: "config " + id, Phase: journal.PhaseConfig, Ord: len(units),
			Kind: journal.KindConfig, Schema: r.schema, Table: r.name, Columns: r.columns, Casts: r.casts,
			Condition: r.condition, PageHi: -1, EstBytes: r.bytes, EstRows: r.rows})
	}
	for _, r := range seqs {
		id := inventory.DisplayName(r.schema, r.name)
		units = append(units, journal.Unit{ID: "config-seq " + id, Phase: journal.PhaseConfig, Ord: len(units),
			Kind: journal.KindConfigSeq, Schema: r.schema, Table: r.name, PageHi: -1, EstRows: 1})
	}
	return units, nil
}

// fkOrder sorts tables so that referenced tables come before the tables referring to
// them, as pg_dump orders configuration table data. Self-references need no order
// (foreign-key checks run at the end of each COPY); a cycle between tables, which
// no extension here has, leaves the tables of the cycle in name order.
func fkOrder(ctx context.Context, tx querier, tables []*relation) ([]*relation, error) {
	sort.Slice(tables, func(i, j int) bool {
		return tables[i].schema+"."+tables[i].name < tables[j].schema+"."+tables[j].name
	})
	oids := make([]uint32, len(tables))
	for i, r := range tables {
		oids[i] = r.oid
	}
	rows, err := tx.Query(ctx, configFKSQL, oids)
	if err != nil {
		return nil, fmt.Errorf("read foreign keys of configuration tables: %w", err)
	}
	deps := map[uint32][]uint32{}
	for rows.Next() {
		var from, to uint32
		if err := rows.Scan(&from, &to); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read foreign keys of configuration tables: %w", err)
		}
		deps[from] = append(deps[from], to)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read foreign keys of configuration tables: %w", err)
	}
	byOID := map[uint32]*relation{}
	for _, r := range tables {
		byOID[r.oid] = r
	}
	var out []*relation
	state := map[uint32]int{} // 1 visiting, 2 done
	var visit func(r *relation)
	visit = func(r *relation) {
		if state[r.oid] != 0 {
			return
		}
		state[r.oid] = 1
		for _, d := range deps[r.oid] {
			if dr := byOID[d]; dr != nil {
				visit(dr)
			}
		}
		state[r.oid] = 2
		out = append(out, r)
	}
	for _, r := range tables {
		visit(r)
	}
	return out, nil
}
