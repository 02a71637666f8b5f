// Package sqltext is the one home of SQL text that tsmigrate writes itself: string
// literals, and the conditions that say which schemas and objects hold what users made.
// Every package that puts a value into a statement, or filters catalogs for user data,
// uses these, so that a fix lands everywhere at once.
//
// Identifiers are quoted by pgx.Identifier.Sanitize.
package sqltext

import (
	"slices"
	"strings"
)

// Journal is the schema that holds tsmigrate's journal in a target while a stream
// migration runs (journal.Schema).
const Journal = "_tsmigrate"

// Literal quotes s as an SQL string literal that reads back as s whatever the session's
// standard_conforming_strings: quotes are doubled, and a value holding a backslash is an
// E” literal with its backslashes doubled (what quote_literal() gives). Statements run
// on servers and in databases where standard_conforming_strings may be off, where a
// backslash in a plain ” literal would escape the next character.
//
// PostgreSQL text cannot hold a NUL byte: a statement with one is refused by the server.
func Literal(s string) string {
	q := "'" + strings.ReplaceAll(s, "'", "''") + "'"
	if strings.Contains(s, `\`) {
		q = "E" + strings.ReplaceAll(q, `\`, `\\`)
	}
	return q
}

// Literals quotes each of ss with Literal, comma-separated: the inside of an IN list.
func Literals(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = Literal(s)
	}
	return strings.Join(q, ", ")
}

// TimescaleSchemas are the schemas TimescaleDB's extension script makes (2.x up to 2.19
// and later: _timescaledb_functions since 2.12, _timescaledb_debug since 2.14). A user's
// own schema named like them (_timescaledb_mine, timescaledb_x) holds user data. Chunks,
// compressed chunks and materialization hypertables live in _timescaledb_internal by
// default; a table a user made there is not the extension's, so conditions that leave
// these schemas out are for what is compared through TimescaleDB's own views.
var TimescaleSchemas = []string{
	"_timescaledb_cache",
	"_timescaledb_catalog",
	"_timescaledb_config",
	"_timescaledb_debug",
	"_timescaledb_functions",
	"_timescaledb_internal",
	"timescaledb_experimental",
	"timescaledb_information",
}

// The conditions below take the SQL expression that names the schema (n.nspname, a
// view's schema column) or the object; their text holds no backslash, so they mean
// the same whatever standard_conforming_strings. Checked on PostgreSQL 15, 16 and 17
// and TimescaleDB 2.19.3.

// SystemSchema is true for PostgreSQL's own schemas, the ones pg_dump never dumps:
// information_schema and every schema whose name starts with pg_ (pg_catalog,
// pg_toast, pg_temp_N, pg_toast_temp_N; no other may be created).
func SystemSchema(nspname string) string {
	return "(" + nspname + " = 'information_schema' OR starts_with(" + nspname + ", 'pg_'))"
}

// TimescaleSchema is true for one of TimescaleSchemas.
func TimescaleSchema(nspname string) string {
	return "(" + nspname + " IN (" + Literals(TimescaleSchemas) + "))"
}

// LiveName is the pattern of the names a live migration gives what it makes on the
// source, its replication slot and its publication: tsmigrate_ and 16 hex digits
// (package live). The publication is tsmigrate's, not the user's: a schema dump taken
// in the slot's snapshot holds it, and it is neither restored nor compared.
const LiveName = `^tsmigrate_[0-9a-f]{16}$`

// NotLivePublication is true for a publication name (an SQL expression) that is not a
// live migration's (LiveName).
func NotLivePublication(pubname string) string {
	return "(" + pubname + " !~ " + Literal(LiveName) + ")"
}

// JournalSchema is true for the schema of tsmigrate's journal (Journal), which a
// target holds while a stream migration runs.
func JournalSchema(nspname string) string {
	return "(" + nspname + " = " + Literal(Journal) + ")"
}

// DataSchema is true for a schema whose tables may hold data to migrate: neither
// PostgreSQL's own nor tsmigrate's journal. TimescaleDB's chunks are in these.
func DataSchema(nspname string) string {
	return "(NOT " + SystemSchema(nspname) + " AND NOT " + JournalSchema(nspname) + ")"
}

// UserSchema is true for a schema of what users made, as they see it: a DataSchema
// that is not one of TimescaleDB's (whose chunks and catalog are counted and compared
// through its hypertables and views).
func UserSchema(nspname string) string {
	return "(" + DataSchema(nspname) + " AND NOT " + TimescaleSchema(nspname) + ")"
}

// TimescaleChunkTable is an SQL expression for the table of the TimescaleDB chunk
// alias (a row of _timescaledb_catalog.chunk), as a regclass; NULL for a chunk without
// one (a dropped chunk kept in the catalog for its continuous aggregates, up to 2.2x).
// The catalog names the table by its schema_name and table_name up to 2.28, by relid
// from 2.29 (checked on 2.19.3 and 2.31.0): the row read as jsonb has one or the other,
// so the same statement reads both. Read once per chunk row: a condition on one
// relation (such as TimescaleRelation) takes the set of chunk tables, not a lookup.
func TimescaleChunkTable(alias string) string {
	j := "to_jsonb(" + alias + ")"
	return "coalesce((" + j + " ->> 'relid')::regclass, to_regclass(format('%I.%I', " + j + " ->> 'schema_name', " + j + " ->> 'table_name')))"
}

// TimescaleRelation is true for a relation TimescaleDB made for its hypertables: a
// hypertable (compressed and materialization hypertables included) or a chunk, in
// whatever schema, as TimescaleDB's catalog lists them. oid is the relation's oid.
// Only for a database that has TimescaleDB: the condition reads its catalog. The set of
// those relations is read once per statement (a hashed subplan), whatever the catalog's
// version (TimescaleChunkTable).
func TimescaleRelation(oid string) string {
	return "(" + oid + " IN (SELECT ts_rel.oid FROM (" +
		"SELECT to_regclass(format('%I.%I', ts_h.schema_name, ts_h.table_name))::oid FROM _timescaledb_catalog.hypertable ts_h" +
		" UNION ALL SELECT " + TimescaleChunkTable("ts_c") + "::oid FROM _timescaledb_catalog.chunk ts_c) AS ts_rel (oid)" +
		" WHERE ts_rel.oid IS NOT NULL))"
}

// UserRelation is true for a relation a user made, as they see it: one in a UserSchema,
// or a table, sequence or foreign table that a user made in one of TimescaleDB's
// schemas (a table in _timescaledb_internal that is neither a hypertable nor a chunk
// holds user data; the views TimescaleDB makes there for continuous aggregates are its
// own). nspname names the relation's schema, oid and relkind are the relation's
// columns; timescale says whether the database has TimescaleDB (TimescaleRelation
// reads its catalog): without it, schemas named like TimescaleDB's are the user's.
// Extension members are the caller's to leave out.
func UserRelation(nspname, oid, relkind string, timescale bool) string {
	if !timescale {
		return DataSchema(nspname)
	}
	return "(" + UserSchema(nspname) + " OR (" + TimescaleSchema(nspname) + " AND " + relkind +
		" IN ('r', 'p', 'S', 'f') AND NOT " + TimescaleRelation(oid) + "))"
}

// ExtensionMember is true for an object that an extension's script made (pg_depend
// deptype 'e'): its definition and data come with the extension. classid is the
// catalog's oid ('pg_class'::regclass, or a column holding one), objid the object's.
func ExtensionMember(classid, objid string) string {
	return "EXISTS (SELECT FROM pg_depend ext_member WHERE ext_member.classid = " + classid +
		" AND ext_member.objid = " + objid + " AND ext_member.deptype = 'e')"
}

// UsedRoles is a query of the roles the connected database names (rolname), and why
// (why: owner, grantee, policy, settings), one row per role and reason: owners of its
// objects (not of what an extension's script made: the extension's installer) and of
// the database, grantees of privileges on them and on the database (default privileges
// too), roles of row-security policies, roles with settings in the database. Built-in
// roles are left out (oid < 16384: the bootstrap superuser and the pg_ roles, which
// every server has). pg_shdepend's deptypes o, a and r; checked on PostgreSQL 15, 16
// and 17.
const UsedRoles = `
WITH db AS (SELECT oid FROM pg_database WHERE datname = current_database())
SELECT r.rolname, w.why FROM (
	SELECT s.refobjid AS role, CASE s.deptype WHEN 'o' THEN 'owner' WHEN 'a' THEN 'grantee' ELSE 'policy' END AS why
	FROM pg_shdepend s, db
	WHERE s.refclassid = 'pg_authid'::regclass AND s.deptype IN ('o', 'a', 'r')
		AND (s.dbid = db.oid OR (s.dbid = 0 AND s.classid = 'pg_database'::regclass AND s.objid = db.oid))
		AND (s.deptype <> 'o' OR NOT EXISTS (
			SELECT FROM pg_depend e WHERE e.classid = s.classid AND e.objid = s.objid AND e.deptype = 'e'))
	UNION
	SELECT s.setrole, 'settings' FROM pg_db_role_setting s, db WHERE s.setdatabase = db.oid AND s.setrole <> 0
) AS w JOIN pg_roles r ON r.oid = w.role
WHERE w.role >= 16384`

// Catalog is the oid of system catalog name as an SQL expression, for ExtensionMember.
func Catalog(name string) string { return Literal(name) + "::regclass" }

// listQuoted are the settings PostgreSQL stores as a list of double-quoted elements
// (GUC_LIST_QUOTE): each element is given as a literal of its own, as pg_dump does;
// one literal would make the whole list a single element.
var listQuoted = []string{"local_preload_libraries", "search_path", "session_preload_libraries",
	"shared_preload_libraries", "temp_tablespaces", "unix_socket_directories"}

// SettingValue is the value part of SET name TO value (ALTER DATABASE/ROLE ... SET)
// for a setting stored as value in pg_db_role_setting: one literal, or for a list
// setting one literal per element, as pg_dump writes them.
func SettingValue(name, value string) string {
	if !slices.Contains(listQuoted, strings.ToLower(name)) {
		return Literal(value)
	}
	elems := splitGUCList(value)
	if len(elems) == 0 {
		return "''"
	}
	for i, e := range elems {
		elems[i] = Literal(e)
	}
	return strings.Join(elems, ", ")
}

// splitGUCList splits a stored list setting the way PostgreSQL's SplitGUCList does:
// elements separated by commas, each bare or in double quotes ("" for a quote inside),
// whitespace around them dropped.
func splitGUCList(s string) []string {
	var out []string
	for i := 0; ; {
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if i >= len(s) {
			return out
		}
		var b strings.Builder
		if s[i] == '"' {
			for i++; i < len(s); i++ {
				if s[i] == '"' {
					if i+1 < len(s) && s[i+1] == '"' {
						b.WriteByte('"')
						i++
						continue
					}
					i++
					break
				}
				b.WriteByte(s[i])
			}
		} else {
			for ; i < len(s) && s[i] != ',' && !isSpace(s[i]); i++ {
				b.WriteByte(s[i])
			}
		}
		out = append(out, b.String())
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if i < len(s) && s[i] == ',' {
			i++
		}
	}
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}
