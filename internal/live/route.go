package live

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// Where a source relation's changes go.
type relKind int

const (
	relPlain       relKind = iota // a plain table: the target's table of the same name
	relChunk                      // a chunk: its hypertable on the target
	relCompressed                 // a chunk of an internal compressed hypertable: moved by TimescaleDB only
	relCatalog                    // TimescaleDB's chunk catalog: tells which hypertable a chunk is of
	relHypertables                // TimescaleDB's hypertable catalog: tells of hypertables made, renamed, dropped
	relIgnore                     // TimescaleDB's own bookkeeping (job statistics)
)

// column is a column of the target relation, in the order of the source's relation
// message.
type column struct {
	name string
	// typ is the target column's type as format_type prints it under an empty
	// search_path; values are cast from text to it.
	typ string
	// byText: the type has no equality fit to find a row by (json, xml, geometric
	// types, whose "=" compares areas), so rows are matched by their text.
	byText bool
	key    bool // part of the source's replica identity key
}

// relation is a source relation as the applier knows it.
type relation struct {
	msg    *pglogrepl.RelationMessage
	source Relation
	kind   relKind
	target Relation // relPlain, relChunk
	// hypertable: the chunk's hypertable id (relChunk, relCompressed).
	hypertable int32
	cols       []column // resolved on first use (relPlain, relChunk)
	resolved   bool
	// key: the replica identity key's columns, found on first use by touchRows.
	key *rowKey
}

// rowKey is how the rows of a plain table are told at the cut-over's verify: by the
// columns cols (at indexes idx of the relation's columns; colsJSON, as live_touched
// keeps them), or whole when none will do.
type rowKey struct {
	whole    bool
	cols     []string
	idx      []int
	colsJSON string
}

// full: rows are found by all their columns (REPLICA IDENTITY FULL on the source).
func (r *relation) full() bool { return r.msg.ReplicaIdentity == 'f' }

// chunkInfo is a row of the source's chunk catalog.
type chunkInfo struct {
	id, hypertable int32
	name           Relation
	compressedID   *int32
}

type hypertableInfo struct {
	name       Relation
	compressed bool
}

// chunkName matches the names TimescaleDB gives chunks.
var chunkName = regexp.MustCompile(`^(_hyper|compress_hyper|_dist_hyper)_[0-9]+_[0-9]+_chunk$`)

// timescaleSchemas hold TimescaleDB's catalog, functions and chunks.
var timescaleSchemas = map[string]bool{"_timescaledb_internal": true, "_timescaledb_catalog": true,
	"_timescaledb_config": true, "_timescaledb_cache": true, "_timescaledb_functions": true}

// resolve finds where rel's changes go, as of now (the chunk catalog learnt so far).
func (a *applier) resolve(rel *relation) error {
	src := Relation{rel.msg.Namespace, rel.msg.RelationName}
	rel.source = src
	switch {
	case src == chunkCatalog:
		rel.kind = relCatalog
		return nil
	case src == hypertableCatalog:
		rel.kind = relHypertables
		return nil
	case a.chunkByName[src] != nil:
		c := a.chunkByName[src]
		h, ok := a.hypertables[c.hypertable]
		if !ok {
			return &StopError{What: fmt.Sprintf("chunk %s belongs to hypertable id %d, which did not exist when the migration started: a hypertable was created on the source during the migration (DDL)", src, c.hypertable),
				Hint: ddlHint}
		}
		rel.hypertable = c.hypertable
		if h.compressed {
			rel.kind = relCompressed
			return nil
		}
		rel.kind, rel.target = relChunk, h.name
		return nil
	case timescaleSchemas[src.Schema] && chunkName.MatchString(src.Name):
		return &StopError{What: fmt.Sprintf("rows of chunk %s arrived, which TimescaleDB's chunk catalog never named", src),
			Hint: "report this: the stream did not carry the chunk's catalog row before its rows"}
	case timescaleSchemas[src.Schema]:
		rel.kind = relIgnore
		return nil
	}
	rel.kind, rel.target = relPlain, src
	return nil
}

// SQL of the applier's look-ups on the target. PostgreSQL 15, 17.
const (
	sqlTargetColumns = `SELECT a.attname::text, format_type(a.atttypid, a.atttypmod),
	t.typcategory = 'G' OR t.oid IN ('json'::regtype, 'xml'::regtype), a.atttypid::int8, a.atttypmod
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
ORDER BY a.attnum`
	// sqlTypeName: a built-in type as format_type prints it: the same on either
	// server.
	sqlTypeName = `SELECT format_type($1::int8::oid, $2)`
)

// firstNormalOID: objects below it are built into PostgreSQL (initdb), with the same
// OID on every server and major; a type from it up is the database's own (an
// extension's, a domain, an enum), whose OID differs between servers.
const firstNormalOID = 16384

// columns reads the target relation's columns for rel, in the order of its relation
// message. A difference is DDL on the source during the migration: a source column
// the target lacks (added, renamed), a target column the source no longer sends
// (dropped, renamed), a built-in type that differs (ALTER COLUMN ... TYPE).
func (a *applier) columns(ctx context.Context, q pgx.Tx, rel *relation) error {
	if rel.cols != nil {
		return nil
	}
	type tcol struct {
		typ    string
		byText bool
		oid    int64
		mod    int32
	}
	have := map[string]tcol{}
	var order []string
	rows, _ := q.Query(ctx, sqlTargetColumns, rel.target.quoted())
	var n string
	var c tcol
	if _, err := pgx.ForEachRow(rows, []any{&n, &c.typ, &c.byText, &c.oid, &c.mod}, func() error {
		have[n] = c
		order = append(order, n)
		return nil
	}); err != nil {
		if undefinedTable(err) || isUndefinedObject(err) {
			return &StopError{What: fmt.Sprintf("table %s, which changes on the source, is not on the target: it was created or renamed on the source during the migration (DDL)", rel.target),
				Hint: ddlHint}
		}
		return fmt.Errorf("read the columns of %s on the target: %w", rel.target, err)
	}
	altered := func(what string) error {
		return &StopError{What: fmt.Sprintf("%s was altered on the source during the migration (DDL): %s", rel.source, what), Hint: ddlHint}
	}
	var cols []column
	var missing []string
	sent := map[string]bool{}
	for _, sc := range rel.msg.Columns {
		sent[sc.Name] = true
		t, ok := have[sc.Name]
		if !ok {
			missing = append(missing, sc.Name)
			continue
		}
		if sc.DataType < firstNormalOID || t.oid < firstNormalOID {
			if int64(sc.DataType) != t.oid || sc.TypeModifier != t.mod && t.oid < firstNormalOID {
				var was string
				if sc.DataType >= firstNormalOID {
					was = fmt.Sprintf("a type of its own (OID %d)", sc.DataType)
				} else if err := q.QueryRow(ctx, sqlTypeName, int64(sc.DataType), sc.TypeModifier).Scan(&was); err != nil {
					return fmt.Errorf("name the type of column %s of %s: %w", sc.Name, rel.source, err)
				}
				return altered(fmt.Sprintf("column %s is of type %s there, of type %s in the target's %s", sc.Name, was, t.typ, rel.target))
			}
		}
		cols = append(cols, column{name: sc.Name, typ: t.typ, byText: t.byText, key: sc.Flags&1 != 0})
	}
	if len(missing) > 0 {
		return altered(fmt.Sprintf("it has column(s) %s that the target's %s lacks", strings.Join(missing, ", "), rel.target))
	}
	var gone []string
	for _, n := range order {
		if !sent[n] {
			gone = append(gone, n)
		}
	}
	if len(gone) > 0 {
		return altered(fmt.Sprintf("it no longer has column(s) %s that the target's %s has", strings.Join(gone, ", "), rel.target))
	}
	rel.cols = cols
	return nil
}

// ddlHint is what to do after DDL on the source.
const ddlHint = "start the migration over once the source's schema stays as it is"

// catalogChange learns from a change to the source's chunk catalog. A chunk of a
// user's hypertable that is dropped (drop_chunks, a retention policy) stops the
// apply: its rows leave the source without a row change in the stream.
func (a *applier) catalogChange(ctx context.Context, tx pgx.Tx, rel *relation, op byte, tuple *pglogrepl.TupleData) error {
	vals := tupleValues(rel, tuple)
	num := func(name string) (*int32, error) { return vals.int32(name) }
	id, err := num("id")
	if err != nil || id == nil {
		return fmt.Errorf("a change to TimescaleDB's chunk catalog without its id: %v", err)
	}
	old := a.chunkByID[*id]
	if op == 'D' || vals["dropped"] != nil && *vals["dropped"] == "t" {
		if old == nil {
			return nil
		}
		if h, ok := a.hypertables[old.hypertable]; ok && !h.compressed {
			// Held until the transaction's end: a DROP TABLE of the hypertable
			// deletes its chunks' rows first, then its own (hypertableChange).
			if a.pending != nil {
				return nil
			}
			a.pending = &StopError{What: fmt.Sprintf("chunk %s of hypertable %s was dropped on the source during the migration (drop_chunks or a retention policy): its rows leave the source without a row change that could be applied, and the target would keep them",
				old.name, h.name),
				Hint: "pause the hypertable's retention policy for the migration (SELECT alter_job(<job id>, scheduled => false)) and start the migration over"}
			return nil
		}
		if err := a.forget(ctx, old.name); err != nil {
			return err
		}
		delete(a.chunkByID, *id)
		delete(a.chunkByName, old.name)
		_, err := tx.Exec(ctx, `DELETE FROM _tsmigrate.live_chunks WHERE id = $1`, *id)
		return err
	}
	ht, err := num("hypertable_id")
	if err != nil {
		return err
	}
	cid, err := num("compressed_chunk_id")
	if err != nil {
		return err
	}
	if ht == nil || vals["schema_name"] == nil || vals["table_name"] == nil {
		return fmt.Errorf("a change to TimescaleDB's chunk catalog without hypertable_id, schema_name and table_name (a TimescaleDB whose catalog this tsmigrate does not know)")
	}
	c := &chunkInfo{id: *id, hypertable: *ht, name: Relation{*vals["schema_name"], *vals["table_name"]}, compressedID: cid}
	if old != nil {
		delete(a.chunkByName, old.name)
	}
	if err := a.forget(ctx, c.name); err != nil {
		return err
	}
	if old != nil && old.name != c.name {
		if err := a.forget(ctx, old.name); err != nil {
			return err
		}
	}
	a.chunkByID[c.id] = c
	a.chunkByName[c.name] = c
	_, err = tx.Exec(ctx, `INSERT INTO _tsmigrate.live_chunks (id, hypertable_id, schema_name, table_name, compressed_chunk_id)
VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET hypertable_id = EXCLUDED.hypertable_id,
	schema_name = EXCLUDED.schema_name, table_name = EXCLUDED.table_name, compressed_chunk_id = EXCLUDED.compressed_chunk_id`,
		c.id, c.hypertable, c.name.Schema, c.name.Name, c.compressedID)
	return err
}

// tuple is a catalog row's values as text, by column name (nil: NULL, or not sent).
type tuple map[string]*string

func tupleValues(rel *relation, t *pglogrepl.TupleData) tuple {
	vals := tuple{}
	for i, c := range rel.msg.Columns {
		if i < len(t.Columns) && t.Columns[i].DataType == pglogrepl.TupleDataTypeText {
			v := string(t.Columns[i].Data)
			vals[c.Name] = &v
		}
	}
	return vals
}

func (t tuple) int32(name string) (*int32, error) {
	v := t[name]
	if v == nil {
		return nil, nil
	}
	n, err := strconv.ParseInt(*v, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("TimescaleDB catalog column %s: %q: %w", name, *v, err)
	}
	n32 := int32(n)
	return &n32, nil
}

// hypertableChange stops the apply at a change to the source's hypertable catalog
// that is DDL: a hypertable made (create_hypertable, a continuous aggregate, the
// compressed hypertable of compression enabled), renamed, or dropped. Other updates
// (TimescaleDB's own bookkeeping) pass.
func (a *applier) hypertableChange(rel *relation, op byte, old, new *pglogrepl.TupleData) error {
	t := new
	if op == 'D' {
		t = old
	}
	if t == nil {
		return fmt.Errorf("apply: a change to TimescaleDB's hypertable catalog without its row")
	}
	vals := tupleValues(rel, t)
	id, err := vals.int32("id")
	if err != nil || id == nil {
		return fmt.Errorf("apply: a change to TimescaleDB's hypertable catalog without its id: %v", err)
	}
	var name *Relation
	if s, n := vals["schema_name"], vals["table_name"]; s != nil && n != nil {
		name = &Relation{*s, *n}
	}
	h, known := a.hypertables[*id]
	switch {
	case op == 'D' && known:
		a.pending = &StopError{What: fmt.Sprintf("hypertable %s was dropped on the source during the migration (DDL)", h.name), Hint: ddlHint}
		return nil
	case !known && name != nil:
		return &StopError{What: fmt.Sprintf("hypertable %s was created on the source during the migration (create_hypertable, a continuous aggregate, or compression enabled: DDL)", *name),
			Hint: ddlHint}
	case !known:
		return &StopError{What: fmt.Sprintf("hypertable id %d was created on the source during the migration (DDL)", *id), Hint: ddlHint}
	case name != nil && *name != h.name:
		return &StopError{What: fmt.Sprintf("hypertable %s was renamed to %s on the source during the migration (DDL)", h.name, *name), Hint: ddlHint}
	}
	return nil
}

// forget drops what was resolved of the source relation name, which the catalog now
// says otherwise about, once what is buffered for it is sent.
func (a *applier) forget(ctx context.Context, name Relation) error {
	for _, r := range a.rels {
		if r.resolved && r.source == name {
			if err := a.flush(ctx); err != nil {
				return err
			}
			r.cols, r.resolved = nil, false
		}
	}
	return nil
}

// chunkOfCompressed is the chunk whose rows the compressed chunk id holds.
func (a *applier) chunkOfCompressed(id int32) *chunkInfo {
	for _, c := range a.chunkByID {
		if c.compressedID != nil && *c.compressedID == id {
			return c
		}
	}
	return nil
}
