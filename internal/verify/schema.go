package verify

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/tsmigrate/tsmigrate/internal/freeze"
	"github.com/tsmigrate/tsmigrate/internal/schema"
	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// SchemaDiff is one difference in the schema or the TimescaleDB metadata.
type SchemaDiff struct {
	Object string `json:"object"` // e.g. "index public.metrics_ts_idx"
	What   string `json:"what"`   // "missing", "extra", or the attribute that differs
	Source string `json:"source,omitempty"`
	Target string `json:"target,omitempty"`
}

// String is the difference in one line.
func (d SchemaDiff) String() string {
	switch d.What {
	case "missing":
		return d.Object + ": missing on the target"
	case "extra":
		return d.Object + ": not on the source (extra on the target)"
	case "last_value":
		return fmt.Sprintf("%s: behind on the target: last_value source %s, target %s", d.Object, d.Source, d.Target)
	}
	if long(d.Source) || long(d.Target) {
		return fmt.Sprintf("%s: %s differs", d.Object, d.What)
	}
	return fmt.Sprintf("%s: %s differs: source %s, target %s", d.Object, d.What, d.Source, d.Target)
}

func long(s string) bool { return len(s) > 80 || strings.ContainsRune(s, '\n') }

// A fact is one attribute of one object, e.g. ("column public.t.x", "default", "0").
// Parent names the object a child belongs to, so that a missing table is reported
// once rather than with each of its columns and indexes.
type fact struct {
	parent, value string
}

// facts maps object -> attribute -> fact.
type facts map[string]map[string]fact

const none = "(none)"

var (
	relOnly  = notExtensionMember("pg_class", "c.oid")
	procOnly = notExtensionMember("pg_proc", "p.oid")
)

// Each query returns (object, parent, attribute, value). All checked on PostgreSQL 15,
// 17 and 18; the TimescaleDB ones on 2.19.3 and 2.31.0 (their information views).
var schemaSQL = []string{
	// the database, on both sides: not its encoding (the data is compared as
	// characters, and a target database in UTF8 holds a LATIN1 source's)
	`SELECT 'database', '', 'exists', 'yes'`,
	// its comment: only one the source has (a target's own, e.g. on a managed service's
	// database, is not the source's loss), as with settings
	`SELECT 'database', '', 'comment', shobj_description(oid, 'pg_database') FROM pg_database
	WHERE datname = current_database() AND shobj_description(oid, 'pg_database') IS NOT NULL`,
	// its own settings (ALTER DATABASE ... SET), not those a migration manages
	`SELECT 'database', '', 'setting ' || split_part(c.cfg, '=', 1), ` + settingValue + `
	FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase AND d.datname = current_database()
	CROSS JOIN LATERAL unnest(s.setconfig) AS c(cfg)
	WHERE s.setrole = 0 AND ` + notMigrationSetting,

	// large objects (their contents are not compared)
	`SELECT format('large object %s', l.oid), '', 'exists', 'yes' FROM pg_largeobject_metadata l`,

	// extensions
	`SELECT 'extension ' || quote_ident(x.extname), '', a.attr, a.val FROM pg_extension x
	CROSS JOIN LATERAL (VALUES ('version', x.extversion), ('schema', x.extnamespace::regnamespace::text)) AS a(attr, val)`,

	// schemas
	`SELECT 'schema ' || quote_ident(n.nspname), '', 'exists', 'yes' FROM pg_namespace n
	WHERE ` + userObjects + ` AND ` + notExtensionMember("pg_namespace", "n.oid"),

	// relations: kind, persistence, partitioning, view definitions (not of views over
	// TimescaleDB-internal relations: continuous aggregates, compared below)
	`SELECT format('relation %I.%I', n.nspname, c.relname), '', a.attr, a.val
	FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	CROSS JOIN LATERAL (VALUES
		('kind', CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table' WHEN 'v' THEN 'view'
			WHEN 'm' THEN 'materialized view' WHEN 'f' THEN 'foreign table' WHEN 'S' THEN 'sequence' END),
		('unlogged', (c.relpersistence = 'u')::text),
		('partition of', CASE WHEN c.relispartition THEN (SELECT i.inhparent::regclass::text FROM pg_inherits i WHERE i.inhrelid = c.oid) || ' ' || pg_get_expr(c.relpartbound, c.oid) END),
		('partition key', CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END),
		('row security', CASE WHEN c.relrowsecurity THEN CASE WHEN c.relforcerowsecurity THEN 'forced' ELSE 'enabled' END END),
		('comment', obj_description(c.oid, 'pg_class')),
		('storage parameters', (SELECT string_agg(o, ', ' ORDER BY o) FROM unnest(c.reloptions) o)),
		('TOAST storage parameters', (SELECT string_agg(o, ', ' ORDER BY o)
			FROM pg_class tc CROSS JOIN LATERAL unnest(tc.reloptions) o WHERE tc.oid = c.reltoastrelid)),
		('replica identity', CASE WHEN c.relkind IN ('r', 'p') THEN CASE c.relreplident
			WHEN 'n' THEN 'nothing' WHEN 'f' THEN 'full'
			WHEN 'i' THEN 'index ' || (SELECT quote_ident(ic.relname) FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
				WHERE i.indrelid = c.oid AND i.indisreplident) END END),
		('definition', CASE WHEN c.relkind IN ('v', 'm') AND NOT EXISTS (
			SELECT 1 FROM pg_rewrite rw JOIN pg_depend dd ON dd.classid = 'pg_rewrite'::regclass AND dd.objid = rw.oid
			JOIN pg_class dc ON dc.oid = dd.refobjid JOIN pg_namespace dn ON dn.oid = dc.relnamespace
			WHERE rw.ev_class = c.oid AND ` + sqltext.TimescaleSchema("dn.nspname") + `) THEN pg_get_viewdef(c.oid) END)
	) AS a(attr, val)
	WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND ` + userRel + ` AND ` + relOnly,

	// columns
	`SELECT format('column %I.%I.%I', n.nspname, c.relname, att.attname), format('relation %I.%I', n.nspname, c.relname), a.attr, a.val
	FROM pg_attribute att JOIN pg_class c ON c.oid = att.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
	LEFT JOIN pg_attrdef d ON d.adrelid = att.attrelid AND d.adnum = att.attnum
	CROSS JOIN LATERAL (VALUES
		('type', format_type(att.atttypid, att.atttypmod)),
		('not null', att.attnotnull::text),
		('default', CASE WHEN att.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END),
		('generated', CASE WHEN att.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END),
		('identity', CASE att.attidentity WHEN 'a' THEN 'always' WHEN 'd' THEN 'by default' END),
		('collation', CASE WHEN att.attcollation <> 0 THEN att.attcollation::regcollation::text END),
		('comment', col_description(c.oid, att.attnum)),
		-- the default is -1 up to PostgreSQL 16, NULL from 17
		('statistics target', CASE WHEN coalesce(att.attstattarget, -1) <> -1 THEN att.attstattarget::text END),
		('storage', CASE att.attstorage WHEN 'p' THEN 'plain' WHEN 'e' THEN 'external' WHEN 'm' THEN 'main' WHEN 'x' THEN 'extended' END)
	) AS a(attr, val)
	WHERE att.attnum > 0 AND NOT att.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
		AND ` + userRel + ` AND ` + relOnly,

	// constraints of tables. PostgreSQL 18 lists each column's NOT NULL as a constraint
	// of its own (contype 'n'), which earlier majors do not: the column's "not null"
	// compares it; only one that says more (NOT VALID, NO INHERIT: new in 18) is a
	// constraint here, so that a migration to 18 shows no NOT NULL constraint as extra.
	`SELECT format('constraint %I.%I.%I', n.nspname, c.relname, k.conname), format('relation %I.%I', n.nspname, c.relname), a.attr, a.val
	FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
	CROSS JOIN LATERAL (VALUES ('definition', pg_get_constraintdef(k.oid)), ('validated', k.convalidated::text)) AS a(attr, val)
	WHERE NOT (k.contype = 'n' AND k.convalidated AND NOT k.connoinherit) AND ` + userRel + ` AND ` + relOnly,

	// constraints of domains
	`SELECT format('constraint %s.%I', k.contypid::regtype, k.conname), '', 'definition', pg_get_constraintdef(k.oid)
	FROM pg_constraint k JOIN pg_type ty ON ty.oid = k.contypid JOIN pg_namespace n ON n.oid = ty.typnamespace
	WHERE ` + userObjects + ` AND ` + notExtensionMember("pg_type", "ty.oid"),

	// indexes (indisclustered is left out: CLUSTER changes it, not the data)
	`SELECT format('index %I.%I', n.nspname, ic.relname), format('relation %I.%I', n.nspname, c.relname), a.attr, a.val
	FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class c ON c.oid = i.indrelid
	JOIN pg_namespace n ON n.oid = c.relnamespace
	CROSS JOIN LATERAL (VALUES ('definition', pg_get_indexdef(i.indexrelid)), ('valid', i.indisvalid::text)) AS a(attr, val)
	WHERE ` + userRel + ` AND ` + relOnly,

	// sequences; last_value is compared as "target not behind the source"
	`SELECT format('sequence %I.%I', n.nspname, c.relname), '', a.attr, a.val
	FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
	CROSS JOIN LATERAL (VALUES ('type', format_type(s.seqtypid, NULL)), ('start', s.seqstart::text),
		('increment', s.seqincrement::text), ('min', s.seqmin::text), ('max', s.seqmax::text),
		('cycle', s.seqcycle::text),
		('last_value', CASE WHEN has_sequence_privilege(c.oid, 'SELECT') THEN pg_sequence_last_value(c.oid)::text END)
	) AS a(attr, val)
	WHERE ` + userRel + ` AND ` + relOnly,

	// functions and procedures
	`SELECT format('function %I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)), '',
		'definition', CASE WHEN p.prokind = 'a' THEN 'aggregate' ELSE pg_get_functiondef(p.oid) END
	FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
	WHERE ` + userObjects + ` AND ` + procOnly,

	// triggers (not TimescaleDB's own, such as ts_insert_blocker: their arguments hold
	// catalog ids; the hypertable metadata covers them)
	`SELECT format('trigger %I.%I.%I', n.nspname, c.relname, tg.tgname), format('relation %I.%I', n.nspname, c.relname), a.attr, a.val
	FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
	JOIN pg_proc p ON p.oid = tg.tgfoid JOIN pg_namespace pn ON pn.oid = p.pronamespace
	CROSS JOIN LATERAL (VALUES ('definition', pg_get_triggerdef(tg.oid)), ('enabled', tg.tgenabled::text)) AS a(attr, val)
	WHERE NOT tg.tgisinternal AND ` + notTimescaleSchema("pn.nspname") + ` AND ` + userRel + ` AND ` + relOnly,
}

// More of the schema: row security policies, rules (not a view's own), enum labels
// and composite types' attributes, publications and what they publish, comments on
// other objects than relations and columns. Checked on
// PostgreSQL 15 and 17.
var moreSchemaSQL = []string{
	`SELECT format('policy %I.%I.%I', n.nspname, c.relname, p.polname), format('relation %I.%I', n.nspname, c.relname), a.attr, a.val
	FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
	CROSS JOIN LATERAL (VALUES
		('command', p.polcmd::text),
		('permissive', p.polpermissive::text),
		('roles', (SELECT string_agg(x.name, ',' ORDER BY x.name) FROM (
			SELECT CASE WHEN r = 0 THEN 'public' ELSE pg_get_userbyid(r)::text END AS name FROM unnest(p.polroles) r) AS x)),
		('using', pg_get_expr(p.polqual, p.polrelid)),
		('with check', pg_get_expr(p.polwithcheck, p.polrelid))
	) AS a(attr, val)
	WHERE ` + userRel + ` AND ` + relOnly,

	// extended statistics (CREATE STATISTICS), by the table they are on
	`SELECT format('statistics %I.%I', sn.nspname, s.stxname), format('relation %I.%I', n.nspname, c.relname), a.attr, a.val
	FROM pg_statistic_ext s JOIN pg_namespace sn ON sn.oid = s.stxnamespace
	JOIN pg_class c ON c.oid = s.stxrelid JOIN pg_namespace n ON n.oid = c.relnamespace
	CROSS JOIN LATERAL (VALUES ('definition', pg_get_statisticsobjdef(s.oid)),
		('statistics target', CASE WHEN coalesce(s.stxstattarget, -1) <> -1 THEN s.stxstattarget::text END)) AS a(attr, val)
	WHERE ` + userRel + ` AND ` + relOnly,

	`SELECT format('rule %I.%I.%I', n.nspname, c.relname, r.rulename), format('relation %I.%I', n.nspname, c.relname), a.attr, a.val
	FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
	CROSS JOIN LATERAL (VALUES ('definition', pg_get_ruledef(r.oid)), ('enabled', r.ev_enabled::text)) AS a(attr, val)
	WHERE r.rulename <> '_RETURN' AND ` + userRel + ` AND ` + relOnly,

	`SELECT format('type %s', ty.oid::regtype), '', 'enum labels', string_agg(e.enumlabel, ', ' ORDER BY e.enumsortorder)
	FROM pg_type ty JOIN pg_enum e ON e.enumtypid = ty.oid JOIN pg_namespace n ON n.oid = ty.typnamespace
	WHERE ` + userObjects + ` AND ` + notExtensionMember("pg_type", "ty.oid") + `
	GROUP BY ty.oid`,

	`SELECT format('type %s', ty.oid::regtype), '', 'attributes',
		string_agg(format('%I %s', att.attname, format_type(att.atttypid, att.atttypmod)), ', ' ORDER BY att.attnum)
	FROM pg_type ty JOIN pg_class c ON c.oid = ty.typrelid JOIN pg_namespace n ON n.oid = ty.typnamespace
	JOIN pg_attribute att ON att.attrelid = c.oid AND att.attnum > 0 AND NOT att.attisdropped
	WHERE ty.typtype = 'c' AND c.relkind = 'c' AND ` + userObjects + ` AND ` + notExtensionMember("pg_type", "ty.oid") + `
	GROUP BY ty.oid`,

	`SELECT 'publication ' || quote_ident(p.pubname), '', a.attr, a.val
	FROM pg_publication p
	CROSS JOIN LATERAL (VALUES
		('all tables', p.puballtables::text),
		('publishes', concat_ws(',', CASE WHEN p.pubinsert THEN 'insert' END, CASE WHEN p.pubupdate THEN 'update' END,
			CASE WHEN p.pubdelete THEN 'delete' END, CASE WHEN p.pubtruncate THEN 'truncate' END)),
		-- not TimescaleDB's internal tables (chunks, named by their ids) nor tsmigrate's journal
		('tables', (SELECT string_agg(format('%I.%I', t.schemaname, t.tablename), ', ' ORDER BY t.schemaname, t.tablename) FROM pg_publication_tables t
			WHERE t.pubname = p.pubname AND ` + sqltext.UserSchema("t.schemaname") + `))
	) AS a(attr, val)
	-- not the publication of a live migration (tsmigrate's, on the source until its end)
	WHERE ` + sqltext.NotLivePublication("p.pubname"),

	// comments on everything else: indexes, constraints, functions, triggers, types,
	// schemas, policies, ... (those on relations and columns are compared above). Not
	// on built-in objects (but on schemas: public is one) nor on extensions and their
	// members, whose comments come with the extension's build. Large objects are the
	// user's whatever their OID (lo_create takes any).
	// A comment is an object of its own here, so that one removed reads "missing".
	`SELECT format('comment on %s %s', o.type, o.identity),
		CASE WHEN d.classoid = 'pg_largeobject'::regclass THEN format('large object %s', d.objoid) ELSE '' END, 'text', d.description
	FROM pg_description d CROSS JOIN LATERAL pg_identify_object(d.classoid, d.objoid, d.objsubid) o
	LEFT JOIN pg_namespace n ON n.nspname = coalesce(o.schema, CASE WHEN d.classoid = 'pg_namespace'::regclass THEN o.name END)
	WHERE (d.objoid >= 16384 OR d.classoid IN ('pg_namespace'::regclass, 'pg_largeobject'::regclass))
		AND d.classoid <> 'pg_extension'::regclass
		AND (n.oid IS NULL OR ` + userObjects + `)
		AND NOT (d.classoid = 'pg_class'::regclass AND EXISTS (
			SELECT 1 FROM pg_class c WHERE c.oid = d.objoid AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')))
		AND NOT ` + sqltext.ExtensionMember("d.classoid", "d.objoid"),
}

// settingValue is a stored setting's value (c.cfg is "name=value"), shown for
// PostgreSQL's own settings but not for custom ones (a name with a dot: an
// extension's, or an application's, which may hold a secret): those show a digest, so
// that a difference still shows.
const settingValue = `CASE WHEN strpos(split_part(c.cfg, '=', 1), '.') > 0
	THEN 'value hidden, sha256 ' || left(encode(sha256(convert_to(substr(c.cfg, strpos(c.cfg, '=') + 1), 'UTF8')), 'hex'), 16)
	ELSE substr(c.cfg, strpos(c.cfg, '=') + 1) END`

// notMigrationSetting leaves out the database settings that a migration itself turns
// on and off: the freeze's (default_transaction_read_only, tsmigrate.freeze_record)
// and TimescaleDB's restoring mode. It expects the "name=value" aliased c.cfg.
var notMigrationSetting = `split_part(c.cfg, '=', 1) NOT IN (` + sqltext.Literals(append(slices.Clone(freeze.Settings), schema.RestoringSetting)) + `)`

// aclText is an access privilege list (a column of type aclitem[]) as text, its items
// sorted: the order in which privileges were granted changes nothing they allow.
func aclText(col string) string {
	return "(SELECT string_agg(x::text, ',' ORDER BY x::text) FROM unnest(" + col + ") x)"
}

// privilegesSQL compares owners and access privileges (Options.Privileges), and the
// settings of roles in the database.
var privilegesSQL = []string{
	// the database's own privileges, its owner's left out (owners differ between servers)
	`SELECT 'database', '', 'privileges', (SELECT string_agg(x.item, ', ' ORDER BY x.item) FROM (
			SELECT format('%s=%s%s', coalesce(r.rolname::text, 'PUBLIC'), a.privilege_type,
				CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' END) AS item
			FROM pg_database d CROSS JOIN LATERAL aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
			LEFT JOIN pg_roles r ON r.oid = a.grantee
			WHERE d.datname = current_database() AND a.grantee <> d.datdba) AS x)`,
	`SELECT 'database', '', format('setting of role %s: %s', r.rolname, split_part(c.cfg, '=', 1)), ` + settingValue + `
	FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase AND d.datname = current_database()
	JOIN pg_roles r ON r.oid = s.setrole
	CROSS JOIN LATERAL unnest(s.setconfig) AS c(cfg)`,
	`SELECT format('relation %I.%I', n.nspname, c.relname), '', a.attr, a.val
	FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	CROSS JOIN LATERAL (VALUES ('owner', pg_get_userbyid(c.relowner)::text), ('privileges', ` + aclText("c.relacl") + `)) AS a(attr, val)
	WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND ` + userRel + ` AND ` + relOnly,
	`SELECT format('large object %s', l.oid), '', a.attr, a.val FROM pg_largeobject_metadata l
	CROSS JOIN LATERAL (VALUES ('owner', pg_get_userbyid(l.lomowner)::text), ('privileges', ` + aclText("l.lomacl") + `)) AS a(attr, val)`,
	`SELECT 'schema ' || quote_ident(n.nspname), '', a.attr, a.val FROM pg_namespace n
	CROSS JOIN LATERAL (VALUES ('owner', pg_get_userbyid(n.nspowner)::text), ('privileges', ` + aclText("n.nspacl") + `)) AS a(attr, val)
	WHERE ` + userObjects + ` AND ` + notExtensionMember("pg_namespace", "n.oid"),
	`SELECT format('function %I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)), '', a.attr, a.val
	FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
	CROSS JOIN LATERAL (VALUES ('owner', pg_get_userbyid(p.proowner)::text), ('privileges', ` + aclText("p.proacl") + `)) AS a(attr, val)
	WHERE ` + userObjects + ` AND ` + procOnly,
}

// UserJobs is a subquery of TimescaleDB's user jobs (ids from 1000: policies and
// add_job jobs), the columns of timescaledb_information.jobs and job_name: the job as
// it is named on either server, by what it acts on, since ids differ between servers
// ("job <procedure> on <hypertable>", "... on continuous aggregate <view>", "... on the
// database"), with " #n" after the first of several alike, in id order. format's %I
// refuses NULL (SQLSTATE 22004), so a job without hypertable is named with CASE.
// Package migrate gives the target the source's job schedules by these names.
// Checked on TimescaleDB 2.19.3, full build.
const UserJobs = `(SELECT j.name || CASE WHEN j.n > 1 THEN ' #' || j.n ELSE '' END AS job_name, j.*
	FROM (SELECT format('job %I.%I on %s', j.proc_schema, j.proc_name, CASE
			WHEN ca.view_name IS NOT NULL THEN format('continuous aggregate %I.%I', ca.view_schema, ca.view_name)
			WHEN j.hypertable_name IS NOT NULL THEN format('%I.%I', j.hypertable_schema, j.hypertable_name)
			ELSE 'the database' END) AS name,
		row_number() OVER (PARTITION BY j.proc_schema, j.proc_name, j.hypertable_schema, j.hypertable_name ORDER BY j.job_id) AS n,
		j.*
		FROM timescaledb_information.jobs j
		LEFT JOIN timescaledb_information.continuous_aggregates ca
			ON ca.materialization_hypertable_schema = j.hypertable_schema AND ca.materialization_hypertable_name = j.hypertable_name
		WHERE j.job_id >= 1000) AS j)`

// timescaleSchemaSQL is the TimescaleDB metadata, through its information views
// (never its catalog tables, whose ids differ between servers). Jobs and continuous
// aggregates are named by what they act on, not by ids (UserJobs); a job's config loses
// its hypertable ids for the same reason. format's %I refuses NULL (SQLSTATE 22004), so
// a job without check function is named with CASE. Checked on TimescaleDB
// 2.19.3, full build (user jobs, policies, continuous aggregates, compression).
var timescaleSchemaSQL = []string{
	`SELECT format('hypertable %I.%I', h.hypertable_schema, h.hypertable_name), format('relation %I.%I', h.hypertable_schema, h.hypertable_name), a.attr, a.val
	FROM timescaledb_information.hypertables h
	CROSS JOIN LATERAL (VALUES ('number of dimensions', h.num_dimensions::text), ('number of chunks', h.num_chunks::text),
		('compression enabled', h.compression_enabled::text)) AS a(attr, val)
	WHERE ` + notTimescaleSchema("h.hypertable_schema"),

	`SELECT format('hypertable %I.%I dimension %s', d.hypertable_schema, d.hypertable_name, d.dimension_number), format('hypertable %I.%I', d.hypertable_schema, d.hypertable_name), a.attr, a.val
	FROM timescaledb_information.dimensions d
	CROSS JOIN LATERAL (VALUES ('column', d.column_name::text), ('type', d.column_type::text),
		('kind', d.dimension_type::text), ('chunk interval', coalesce(d.time_interval::text, d.integer_interval::text)),
		('integer now function', d.integer_now_func::text), ('partitions', d.num_partitions::text)) AS a(attr, val)
	WHERE ` + notTimescaleSchema("d.hypertable_schema"),

	`SELECT format('compression setting %I.%I.%I', s.hypertable_schema, s.hypertable_name, s.attname), format('hypertable %I.%I', s.hypertable_schema, s.hypertable_name), a.attr, a.val
	FROM timescaledb_information.compression_settings s
	CROSS JOIN LATERAL (VALUES ('segmentby position', s.segmentby_column_index::text),
		('orderby position', s.orderby_column_index::text), ('orderby asc', s.orderby_asc::text),
		('orderby nulls first', s.orderby_nullsfirst::text)) AS a(attr, val)
	WHERE ` + notTimescaleSchema("s.hypertable_schema"),

	`SELECT format('continuous aggregate %I.%I', c.view_schema, c.view_name), '', a.attr, a.val
	FROM timescaledb_information.continuous_aggregates c
	CROSS JOIN LATERAL (VALUES ('materialized only', c.materialized_only::text),
		('compression enabled', c.compression_enabled::text), ('definition', c.view_definition)) AS a(attr, val)`,

	`SELECT j.job_name, '', a.attr, a.val
	FROM ` + UserJobs + ` AS j
	CROSS JOIN LATERAL (VALUES ('schedule interval', j.schedule_interval::text), ('max runtime', j.max_runtime::text),
		('max retries', j.max_retries::text), ('retry period', j.retry_period::text), ('scheduled', j.scheduled::text),
		('fixed schedule', j.fixed_schedule::text), ('config', (j.config - 'hypertable_id' - 'mat_hypertable_id')::text),
		('check function', CASE WHEN j.check_name IS NOT NULL THEN format('%I.%I', j.check_schema, j.check_name) END)) AS a(attr, val)`,
}

// timescalePrivilegesSQL compares, per hypertable, the owners and privileges of its
// chunks (whose names differ between servers), per continuous aggregate the owner of
// its materialization hypertable and of that one's chunks (each set of distinct
// values), and the role each job runs as. Checked on TimescaleDB 2.19.3.
var timescalePrivilegesSQL = []string{
	`SELECT format('hypertable %I.%I', h.hypertable_schema, h.hypertable_name), format('relation %I.%I', h.hypertable_schema, h.hypertable_name), a.attr, a.val
	FROM timescaledb_information.hypertables h
	CROSS JOIN LATERAL (SELECT string_agg(DISTINCT pg_get_userbyid(c.relowner)::text, ', ') AS owners,
			string_agg(DISTINCT coalesce(` + aclText("c.relacl") + `, '(default)'), ' | ') AS acls
		FROM timescaledb_information.chunks ch
		JOIN pg_namespace n ON n.nspname = ch.chunk_schema JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = ch.chunk_name
		WHERE ch.hypertable_schema = h.hypertable_schema AND ch.hypertable_name = h.hypertable_name) AS x
	CROSS JOIN LATERAL (VALUES ('chunk owners', x.owners), ('chunk privileges', x.acls)) AS a(attr, val)
	WHERE ` + notTimescaleSchema("h.hypertable_schema"),

	`SELECT format('continuous aggregate %I.%I', ca.view_schema, ca.view_name), '', a.attr, a.val
	FROM timescaledb_information.continuous_aggregates ca
	JOIN pg_namespace n ON n.nspname = ca.materialization_hypertable_schema
	JOIN pg_class m ON m.relnamespace = n.oid AND m.relname = ca.materialization_hypertable_name
	CROSS JOIN LATERAL (SELECT string_agg(DISTINCT pg_get_userbyid(c.relowner)::text, ', ') AS owners
		FROM timescaledb_information.chunks ch
		JOIN pg_namespace cn ON cn.nspname = ch.chunk_schema JOIN pg_class c ON c.relnamespace = cn.oid AND c.relname = ch.chunk_name
		WHERE ch.hypertable_schema = ca.materialization_hypertable_schema AND ch.hypertable_name = ca.materialization_hypertable_name) AS x
	CROSS JOIN LATERAL (VALUES ('materialization owner', pg_get_userbyid(m.relowner)::text),
		('materialization chunk owners', x.owners)) AS a(attr, val)`,

	`SELECT j.job_name, '', 'owner', j.owner::text FROM ` + UserJobs + ` AS j`,
}

func readFacts(ctx context.Context, s *session, privileges bool) (facts, error) {
	queries := append(append([]string(nil), schemaSQL...), moreSchemaSQL...)
	if privileges {
		queries = append(queries, privilegesSQL...)
	}
	if s.timescale {
		queries = append(queries, timescaleSchemaSQL...)
	}
	if s.timescale && privileges {
		queries = append(queries, timescalePrivilegesSQL...)
	}
	f := facts{}
	for _, q := range queries {
		rows, err := s.conn.Query(ctx, forSide(q, s.timescale))
		if err != nil {
			return nil, fmt.Errorf("%s: read schema: %w", s.cfg.Role, err)
		}
		for rows.Next() {
			var obj, parent, attr string
			var val *string
			if err := rows.Scan(&obj, &parent, &attr, &val); err != nil {
				rows.Close()
				return nil, fmt.Errorf("%s: read schema: %w", s.cfg.Role, err)
			}
			v := none
			if val != nil {
				v = *val
			}
			if f[obj] == nil {
				f[obj] = map[string]fact{}
			}
			f[obj][attr] = fact{parent: parent, value: v}
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("%s: read schema: %w", s.cfg.Role, err)
		}
	}
	return f, nil
}

// compareFacts lists every object missing on one side and every attribute that
// differs, sorted by object.
func compareFacts(src, tgt facts) []SchemaDiff {
	var out []SchemaDiff
	parentOf := func(m map[string]fact) string {
		for _, f := range m {
			return f.parent
		}
		return ""
	}
	for obj, sa := range src {
		ta, ok := tgt[obj]
		if !ok {
			if p := parentOf(sa); p == "" || tgt[p] != nil {
				out = append(out, SchemaDiff{Object: obj, What: "missing"})
			}
			continue
		}
		for attr, sf := range sa {
			tf, ok := ta[attr]
			tv := none
			if ok {
				tv = tf.value
			}
			if attr == "last_value" {
				if behind(sf.value, tv, sa["increment"].value) {
					out = append(out, SchemaDiff{Object: obj, What: attr, Source: sf.value, Target: tv})
				}
				continue
			}
			if sf.value != tv {
				out = append(out, SchemaDiff{Object: obj, What: attr, Source: sf.value, Target: tv})
			}
		}
	}
	for obj, ta := range tgt {
		if _, ok := src[obj]; !ok {
			if p := parentOf(ta); p == "" || src[p] != nil {
				out = append(out, SchemaDiff{Object: obj, What: "extra"})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Object != out[j].Object {
			return out[i].Object < out[j].Object
		}
		return out[i].What < out[j].What
	})
	return out
}

// behind says whether the target's sequence would hand out values the source already
// did: its last value is before the source's in the direction of the increment.
func behind(src, tgt, increment string) bool {
	if src == none {
		return false
	}
	if tgt == none {
		return true
	}
	s, err1 := strconv.ParseInt(src, 10, 64)
	t, err2 := strconv.ParseInt(tgt, 10, 64)
	if err1 != nil || err2 != nil {
		return src != tgt
	}
	if strings.HasPrefix(increment, "-") {
		return t > s
	}
	return t < s
}
