package preflight

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/inventory"
	"github.com/tsmigrate/tsmigrate/internal/schema"
	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// sqlXMLColumns lists the columns of the user's tables (hypertables and partitioned
// tables as a whole) that hold xml: of type xml, a domain over it, or an array of
// either (arr). Checked on PostgreSQL 15 and 17.
var sqlXMLColumns = `
WITH RECURSIVE xmlish(oid, arr) AS (
	SELECT 'xml'::regtype::oid, false
	UNION
	SELECT t.oid, x.arr OR t.typcategory = 'A' FROM xmlish x JOIN pg_type t
		ON t.typtype = 'd' AND t.typbasetype = x.oid OR t.typcategory = 'A' AND t.typelem = x.oid AND NOT x.arr
)
SELECT n.nspname, c.relname, a.attname, x.arr
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN xmlish x ON x.oid = a.atttypid
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p') AND NOT c.relispartition
	AND ` + sqltext.UserSchema("n.nspname") + ` AND NOT ` + sqltext.ExtensionMember(sqltext.Catalog("pg_class"), "c.oid") + `
ORDER BY 1, 2, 3`

// sqlXMLDeclared says whether a table's xml values (v, of the subquery %s over the
// table as r: a column's values, or each element of its arrays; $1, when given, the
// chunks to read, by name) hold one that xml's output changes (drops its XML
// declaration): its text, the value as stored, differs from its output.
const sqlXMLDeclared = `SELECT EXISTS (SELECT FROM (%s) AS x WHERE v::text IS DISTINCT FROM xml_out(v)::text)`

// checkXML: xml's output drops a document's XML declaration (<?xml version="1.0"?>),
// which verify then finds missing, so a migration that carries such a value through
// xml's output cannot succeed. The dump engine carries every value so (pg_dump writes
// xml's output); the stream engine reads xml through its text, which keeps it, except
// in compressed chunks on the catalog path, which travel in TimescaleDB's compressed
// form, whose text and binary forms hold xml's output (checked on 2.19.3; the API path
// reads them decompressed). The columns that hold such values where the migration
// would lose them fail the check, before the freeze: for the dump engine every xml
// column of the source is read once, for the stream engine only the compressed chunks
// of hypertables with xml columns (a partially compressed chunk's own rows, which it
// carries, are read with them).
func (e *env) checkXML(ctx context.Context) ([]Finding, error) {
	dump := e.opt.Engine == EngineDump
	compressed := map[string][]string{} // "schema.hypertable" -> its compressed chunks
	for _, c := range e.srcInv.Chunks {
		if c.Compressed && e.probe.path.Path == schema.PathCatalog {
			k := c.HypertableSchema + "." + c.HypertableName
			compressed[k] = append(compressed[k], pgx.Identifier{c.Schema, c.Name}.Sanitize())
		}
	}
	if !dump && len(compressed) == 0 {
		return nil, nil
	}
	rows, _ := e.src.Query(ctx, sqlXMLColumns)
	type col struct {
		schema, table, name string
		arr                 bool
	}
	var cols []col
	var c col
	if _, err := pgx.ForEachRow(rows, []any{&c.schema, &c.table, &c.name, &c.arr}, func() error {
		cols = append(cols, c)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("source: list the xml columns: %w", err)
	}
	var read, declared []string
	for _, c := range cols {
		chunks := compressed[c.schema+"."+c.table]
		if !dump && len(chunks) == 0 {
			continue
		}
		t, v := pgx.Identifier{c.schema, c.table}.Sanitize(), "r."+pgx.Identifier{c.name}.Sanitize()
		sub := fmt.Sprintf("SELECT %s::xml AS v FROM %s AS r", v, t)
		if c.arr {
			sub = fmt.Sprintf("SELECT u.v FROM %s AS r CROSS JOIN LATERAL unnest(%s::xml[]) AS u(v)", t, v)
		}
		var args []any
		if !dump {
			sub += " WHERE r.tableoid = ANY($1::regclass[]::oid[])"
			args = append(args, chunks)
		}
		name := inventory.DisplayName(c.schema, c.table) + "." + inventory.Ident(c.name)
		read = append(read, name)
		var has bool
		if err := e.src.QueryRow(ctx, fmt.Sprintf(sqlXMLDeclared, sub), args...).Scan(&has); err != nil {
			return nil, fmt.Errorf("source: read column %s: %w", name, err)
		}
		if has {
			declared = append(declared, name)
		}
	}
	switch {
	case len(read) == 0:
		return nil, nil
	case len(declared) == 0 && dump:
		return []Finding{finding(Pass, "source", fmt.Sprintf("%s of the source's xml hold no document with an XML declaration", plural(len(read), "column", "columns")), "")}, nil
	case len(declared) == 0:
		return []Finding{finding(Pass, "source", fmt.Sprintf("the compressed chunks of %s of xml hold no document with an XML declaration", plural(len(read), "column", "columns")), "")}, nil
	case dump:
		return []Finding{finding(Fail, "source",
			fmt.Sprintf("%s hold XML documents with a declaration (<?xml ...?>), which the dump engine loses (pg_dump writes xml's output, which drops it) and --engine stream carries, but in compressed chunks: %s",
				plural(len(declared), "column", "columns"), list(declared)),
			"migrate with --engine stream (the default): with --engine dump verify would find these values different")}, nil
	}
	return []Finding{finding(Fail, "source",
		fmt.Sprintf("the compressed chunks of %s hold XML documents with a declaration (<?xml ...?>), which TimescaleDB's compressed form loses when copied (it holds xml's output, which drops it): %s",
			plural(len(declared), "column", "columns"), list(declared)),
		"decompress those chunks on the source (SELECT decompress_chunk(c, true) FROM show_chunks('<hypertable>') c) and migrate; compress them again on the target")}, nil
}
