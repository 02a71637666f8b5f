package schema

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/pgtools"
	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// Early post-data. The stream engine builds a table's own indexes and constraints
// (primary keys, unique and exclusion constraints) in the very transaction that copies
// the table's rows, while other tables are still copying: the build overlaps with the
// copy, and a unit that fails or is killed leaves neither rows nor indexes behind.
// What depends on several tables (foreign keys, an index over a user function, which
// may read other tables), partitioned tables' indexes, NOT VALID
// checks, triggers, rules, policies and everything else of the post-data section stays
// for the section's restore after the copy, which leaves out the entries done early.
//
// The SQL of an entry is pg_restore's own (pg_restore -f - of a list of those
// entries), so it is what the documented restore would run, extras included (CLUSTER
// ON, REPLICA IDENTITY, per-column statistics targets of an index).

// TableName is a table by its raw schema and name.
type TableName struct{ Schema, Name string }

// pg_class and pg_constraint: the catalog table OIDs of a TOC entry's object
// (PostgreSQL 15, 17).
const (
	catalogPgClass      = 1259
	catalogPgConstraint = 2606
)

// sqlEarlyTables maps the INDEX and CONSTRAINT entries of the source's post-data
// section to their tables: indexes of ordinary tables (chunks included), and primary
// key, unique and exclusion constraints of ordinary tables. Foreign keys and NOT VALID
// checks are "FK CONSTRAINT" and "CHECK CONSTRAINT" entries and never asked about.
//
// Not early (built after all rows, as pg_restore orders them): an index whose
// expressions or predicate call a user function, directly or through an operator (a
// function not built in nor of an extension). PostgreSQL takes such a function's
// IMMUTABLE on trust; one that reads another table gave wrong index entries when built
// before that table's rows were in. The index records its expressions' functions and
// operators in pg_depend. Checked on PostgreSQL 15 and 17.
//
// It also gives each entry's schema and tag as pg_dump writes them (an index's name; a
// constraint's table and name, space-separated): pg_restore -l lists them unquoted,
// which cannot be split where a schema or name holds a space.
var sqlEarlyTables = `
WITH late AS (
	SELECT d.objid AS indexrelid FROM pg_depend d
	LEFT JOIN pg_operator o ON d.refclassid = 'pg_operator'::regclass AND o.oid = d.refobjid
	CROSS JOIN LATERAL (SELECT CASE WHEN d.refclassid = 'pg_proc'::regclass THEN d.refobjid ELSE o.oprcode::oid END) AS f(oid)
	WHERE d.classid = 'pg_class'::regclass AND d.refclassid IN ('pg_proc'::regclass, 'pg_operator'::regclass)
		AND f.oid >= 16384
		AND NOT ` + sqltext.ExtensionMember(sqltext.Catalog("pg_proc"), "f.oid") + `
)
SELECT 1259::oid, x.indexrelid, n.nspname, c.relname, x.indexrelid NOT IN (SELECT indexrelid FROM late), i.relname::text
FROM pg_index x JOIN pg_class c ON c.oid = x.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
	JOIN pg_class i ON i.oid = x.indexrelid
WHERE x.indexrelid = ANY($1::oid[]) AND c.relkind = 'r'
UNION ALL
SELECT 2606::oid, co.oid, n.nspname, c.relname, co.conindid NOT IN (SELECT indexrelid FROM late), c.relname || ' ' || co.conname
FROM pg_constraint co JOIN pg_class c ON c.oid = co.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE co.oid = ANY($2::oid[]) AND c.relkind = 'r' AND co.contype IN ('p', 'u', 'x')`

// earlySession is what the entries' SQL needs of the session, as pg_restore sets it
// (qualified names only, indexes in the database's default tablespace), for the
// rest of the transaction that runs it.
const earlySession = "SET LOCAL search_path = ''; SET LOCAL default_tablespace = '';\n"

// PostDataPlan is the post-data section of a schema archive, split into what can run per
// table early and the rest.
type PostDataPlan struct {
	archive string
	toc     *TOC // the post-data section's entries
	sql     map[TableName]string
	early   map[int]TableName // dump ID -> table, for the entries in sql
	// later: tables with an index built after all rows (one over a user function)
	later map[TableName]bool
	// Fallback says why nothing runs early ("" when entries do): pg_restore's script
	// held something that cannot be split per entry safely.
	Fallback string
	names    []string // the source's names that hold a line break
	// apart, when set, sorts entries for a restore through TimescaleDB's API (SetApart).
	apart Apart
	// Keys are the foreign keys that reference hypertables: not in the rest, restored
	// after timescaledb_post_restore() (see HypertableKeys).
	Keys *HypertableKeys
}

// SplitPostData reads the post-data section of archive (a schema dump of the source
// src is connected to, whose catalog must not have changed since the dump: the
// source is frozen) and finds each table's early entries and their SQL.
func SplitPostData(ctx context.Context, tools *pgtools.Tools, src *pgx.Conn, archive string) (*PostDataPlan, error) {
	toc, err := listTOC(ctx, tools, "--section="+PostData, archive)
	if err != nil {
		return nil, err
	}
	p := &PostDataPlan{archive: archive, toc: toc, sql: map[TableName]string{}, early: map[int]TableName{}, later: map[TableName]bool{}}
	if p.names, err = LineBreakNames(ctx, src); err != nil {
		return nil, err
	}
	if p.Keys, err = FindHypertableKeys(ctx, src, toc, archive); err != nil {
		return nil, err
	}
	var idx, con []uint32
	for _, e := range toc.Entries {
		switch {
		case e.Desc == "INDEX" && e.CatalogTable == catalogPgClass:
			idx = append(idx, e.OID)
		case e.Desc == "CONSTRAINT" && e.CatalogTable == catalogPgConstraint:
			con = append(con, e.OID)
		}
	}
	if len(idx)+len(con) == 0 {
		return p, nil
	}
	type key struct{ cat, oid uint32 }
	tables := map[key]TableName{}
	tags := map[key]string{}
	rows, _ := src.Query(ctx, sqlEarlyTables, idx, con)
	var k key
	var t TableName
	var early bool
	var tag string
	if _, err := pgx.ForEachRow(rows, []any{&k.cat, &k.oid, &t.Schema, &t.Name, &early, &tag}, func() error {
		if early {
			tables[k] = t
			tags[k] = tag
		} else {
			p.later[t] = true
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("find the tables of indexes and constraints: %w", err)
	}
	var entries []TOCEntry
	for _, e := range toc.Entries {
		if t, ok := tables[key{e.CatalogTable, e.OID}]; ok && (e.Desc == "INDEX" || e.Desc == "CONSTRAINT") {
			e.Schema, e.Name = sanitizeLine(t.Schema), sanitizeLine(tags[key{e.CatalogTable, e.OID}])
			entries = append(entries, e)
			p.early[e.ID] = t
		}
	}
	if len(entries) == 0 {
		return p, nil
	}
	script, err := p.entriesSQL(ctx, tools, entries, "early")
	if err != nil {
		return nil, err
	}
	blocks, why := splitScript(script, entries)
	if why != "" {
		p.Fallback, p.early = why, map[int]TableName{}
		return p, nil
	}
	for i, e := range entries {
		t := p.early[e.ID]
		if p.sql[t] == "" {
			p.sql[t] = earlySession
		}
		p.sql[t] += blocks[i] + "\n"
	}
	return p, nil
}

// SQL is the SQL that builds table t's early entries ("" when it has none), to run in
// a transaction (it sets its session with SET LOCAL).
func (p *PostDataPlan) SQL(t TableName) string { return p.sql[t] }

// IndexesLater says whether table t has an index that is built after all rows even
// though the table's other indexes are built early: ANALYZE, which also samples
// expression indexes, must wait for it.
func (p *PostDataPlan) IndexesLater(t TableName) bool { return p.later[t] }

// scriptEntry is pg_restore's comment before each entry of a plain script
// (PostgreSQL 12-17): "-- Name: <tag>; Type: <desc>; Schema: <schema>; Owner: <owner>".
const scriptEntry = "-- Name: "

// splitScript cuts pg_restore's plain script of entries into one block of SQL per
// entry (in the order of entries), or says why it cannot. pg_restore may write them
// in another order than listed; the comment before each one names it. A block must
// hold nothing that changes the session, since pg_restore sets what the next entry
// needs (default_tablespace, say) before that entry's comment, in the previous block.
//
// Each entry is known by its comment as pg_restore --no-owner writes it, compared whole
// (no field is split off: a name may hold "; " or a space): entries must hold Schema
// and Name as pg_restore prints them (sanitizeLine).
func splitScript(script []byte, entries []TOCEntry) ([]string, string) {
	at := map[string]int{}
	for i, e := range entries {
		k := scriptHeader(e)
		if _, dup := at[k]; dup {
			return nil, "two entries are named " + e.Object()
		}
		at[k] = i
	}
	blocks := make([]string, len(entries))
	seen := make([]bool, len(entries))
	cur := -1
	var b strings.Builder
	flush := func() {
		if cur >= 0 {
			blocks[cur] = strings.TrimSpace(b.String())
		}
		b.Reset()
	}
	sc := bufio.NewScanner(bytes.NewReader(script))
	sc.Buffer(make([]byte, 64*1024), 64*1024*1024)
	var prev string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, scriptEntry) && prev == "--":
			flush()
			k := line
			if j := strings.LastIndex(k, noOwner); j >= 0 {
				k = k[:j+len(noOwner)] // without a "; Tablespace: ..." after it
			}
			i, ok := at[k]
			if !ok || seen[i] {
				return nil, fmt.Sprintf("pg_restore wrote an entry that was not asked for once: %q", strings.TrimPrefix(line, "-- "))
			}
			cur, seen[i] = i, true
		case strings.HasPrefix(line, `\restrict `) || strings.HasPrefix(line, `\unrestrict `):
			// psql meta-commands of pg_dump 17.6 and later, around the script.
		case strings.HasPrefix(line, `\`):
			return nil, "pg_restore's script holds a psql meta-command: " + line
		case line == "--" || strings.HasPrefix(line, "-- "):
		case cur < 0:
			if strings.HasPrefix(line, "SET default_tablespace = ") && line != "SET default_tablespace = '';" {
				return nil, "an index or constraint is in a tablespace of its own"
			}
		case strings.HasPrefix(line, "SET ") || strings.HasPrefix(line, "SELECT pg_catalog.set_config("):
			return nil, "pg_restore changes session settings between entries: " + line
		default:
			b.WriteString(line)
			b.WriteByte('\n')
		}
		prev = line
	}
	if err := sc.Err(); err != nil {
		return nil, err.Error()
	}
	flush()
	for i, ok := range seen {
		if !ok || blocks[i] == "" {
			return nil, "pg_restore wrote no SQL for " + entries[i].Object()
		}
	}
	return blocks, ""
}

// noOwner ends the comment of an entry that pg_restore --no-owner writes.
const noOwner = "; Owner: -"

// scriptHeader is the comment pg_restore --no-owner writes before entry e in a plain
// script (PostgreSQL 12-17, _printTocEntry), without the "; Tablespace: ..." that
// follows for an entry in a tablespace of its own.
func scriptHeader(e TOCEntry) string {
	schema := e.Schema
	if schema == "" {
		schema = "-"
	}
	return scriptEntry + e.Name + "; Type: " + e.Desc + "; Schema: " + schema + noOwner
}

// sanitizeLine is a name as pg_restore prints it in a TOC listing or a script's
// comments (sanitize_line): line breaks turned into spaces.
func sanitizeLine(s string) string {
	return strings.NewReplacer("\n", " ", "\r", " ").Replace(s)
}

// inRest says whether RestoreRest restores e (when it is of the post-data section):
// every entry but the early entries of the tables done says were built with their
// rows, and the foreign keys to hypertables (Keys).
func (p *PostDataPlan) inRest(e TOCEntry, done func(TableName) bool) bool {
	if p.Keys.Holds(e) || p.apart != nil && p.apart(e) != "" {
		return false
	}
	t, early := p.early[e.ID]
	return !early || !done(t)
}

// RestoreRest restores the post-data section of the archive into the target but the
// early entries of the tables done says were built with their rows, and but the
// entries on says are on the target already (nil: none, a first run), with jobs
// workers, classifying what pg_restore prints.
func (p *PostDataPlan) RestoreRest(ctx context.Context, tools *pgtools.Tools, target *dbconn.Config, jobs int, done func(TableName) bool, on *RestOnTarget, onMessage func(Message)) ([]Message, error) {
	list := filepath.Join(filepath.Dir(p.archive), filepath.Base(p.archive)+".post.list")
	n, err := p.toc.WriteList(list, func(e TOCEntry) bool {
		return p.inRest(e, done) && (on == nil || !on.Present[e.ID])
	})
	if err != nil {
		return nil, err
	}
	defer os.Remove(list)
	if n == 0 {
		return nil, nil
	}
	return restoreList(ctx, RestoreOptions{Tools: tools, Target: target, Archive: p.archive, OnMessage: onMessage, Names: p.names},
		p.toc, list, jobs, "--section="+PostData)
}
