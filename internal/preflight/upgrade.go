package preflight

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/inventory"
	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// What an upgrade of TimescaleDB on the way changes for the source's objects, found
// before anything changes rather than halfway through the restore: TimescaleDB's
// functions, views and their columns that the user's objects use and that the
// target's newer TimescaleDB no longer has, or has as deprecated compatibility wrappers
// (the _timescaledb_internal functions moved to _timescaledb_functions in 2.12, whose
// wrappers warn that they will go). Both sides are read, not a list: the target's
// TimescaleDB as pre-flight's probe has it (installed, or created in its rolled-back
// transaction), so whatever versions meet, what differs is what is found. Checked
// with 2.19.3 against 2.31.0 (which dropped, among others, time_bucket_ng,
// set_adaptive_chunking, cagg_migrate and most of the functions moved in 2.12).

// sqlTimescaleAPI lists what the connected database's TimescaleDB offers: its
// functions and procedures (schema, name, and whether its body says it is deprecated,
// as the 2.12 compatibility wrappers do), and its relations' columns ("" for the
// relation itself). Checked on 2.19.3 and 2.31.0.
const sqlTimescaleAPI = `
WITH member AS (SELECT d.classid, d.objid FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
	WHERE e.extname = 'timescaledb' AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e')
SELECT 'function', n.nspname::text, p.proname::text, '', bool_or(p.prosrc ~* 'is deprecated')
FROM member m JOIN pg_proc p ON p.oid = m.objid JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE m.classid = 'pg_proc'::regclass GROUP BY 2, 3
UNION ALL
SELECT 'relation', n.nspname::text, c.relname::text, coalesce(a.attname::text, ''), false
FROM member m JOIN pg_class c ON c.oid = m.objid JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE m.classid = 'pg_class'::regclass`

// sqlTimescaleUses lists the source's objects that use TimescaleDB's functions,
// relations or their columns, as PostgreSQL records it (pg_depend: views and
// materialized views, defaults, constraints, indexes, policies, statistics, functions
// with an SQL-standard body), with what they use and their type and identity (schema-qualified names). Left out: what
// TimescaleDB makes itself (chunks, compressed and materialization hypertables,
// continuous aggregates' views: the restore makes them anew), triggers (TimescaleDB's
// own run its functions), and the extension's own objects. Checked on 2.19.3 (PostgreSQL
// 17) and 2.31.0 (PostgreSQL 18).
var sqlTimescaleUses = `
WITH member AS (SELECT d.classid, d.objid FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
	WHERE e.extname = 'timescaledb' AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'),
made AS (
	SELECT c.oid FROM pg_class c WHERE ` + sqltext.TimescaleRelation("c.oid") + `
		AND c.oid NOT IN (SELECT to_regclass(format('%I.%I', h.hypertable_schema, h.hypertable_name))::oid
			FROM timescaledb_information.hypertables h)
	UNION SELECT to_regclass(format('%I.%I', v.s, v.n))::oid FROM _timescaledb_catalog.continuous_agg ca
		CROSS JOIN LATERAL (VALUES (ca.user_view_schema, ca.user_view_name), (ca.partial_view_schema, ca.partial_view_name),
			(ca.direct_view_schema, ca.direct_view_name)) AS v(s, n)),
uses AS (
	SELECT dep.classid, dep.objid, dep.objsubid,
		CASE WHEN dep.refclassid = 'pg_proc'::regclass THEN 'function' ELSE 'relation' END AS kind,
		rn.nspname::text AS schema, coalesce(rp.proname, rc.relname)::text AS name, coalesce(ra.attname::text, '') AS col,
		CASE dep.classid
			WHEN 'pg_rewrite'::regclass THEN (SELECT ev_class FROM pg_rewrite WHERE oid = dep.objid)
			WHEN 'pg_attrdef'::regclass THEN (SELECT adrelid FROM pg_attrdef WHERE oid = dep.objid)
			WHEN 'pg_constraint'::regclass THEN (SELECT conrelid FROM pg_constraint WHERE oid = dep.objid)
			WHEN 'pg_policy'::regclass THEN (SELECT polrelid FROM pg_policy WHERE oid = dep.objid)
			WHEN 'pg_statistic_ext'::regclass THEN (SELECT stxrelid FROM pg_statistic_ext WHERE oid = dep.objid)
			WHEN 'pg_class'::regclass THEN coalesce((SELECT indrelid FROM pg_index WHERE indexrelid = dep.objid), dep.objid)
		END AS rel
	FROM pg_depend dep JOIN member ref ON ref.classid = dep.refclassid AND ref.objid = dep.refobjid
	LEFT JOIN pg_proc rp ON dep.refclassid = 'pg_proc'::regclass AND rp.oid = dep.refobjid
	LEFT JOIN pg_class rc ON dep.refclassid = 'pg_class'::regclass AND rc.oid = dep.refobjid
	LEFT JOIN pg_attribute ra ON ra.attrelid = rc.oid AND ra.attnum = dep.refobjsubid AND dep.refobjsubid > 0
	JOIN pg_namespace rn ON rn.oid = coalesce(rp.pronamespace, rc.relnamespace)
	WHERE dep.deptype = 'n' AND dep.refclassid IN ('pg_proc'::regclass, 'pg_class'::regclass)
		AND dep.classid <> 'pg_trigger'::regclass
		AND NOT EXISTS (SELECT FROM member x WHERE x.classid = dep.classid AND x.objid = dep.objid))
SELECT DISTINCT u.kind, u.schema, u.name, u.col, o.type || ' ' || o.identity
FROM uses u CROSS JOIN LATERAL pg_identify_object(
	CASE WHEN u.classid = 'pg_rewrite'::regclass THEN 'pg_class'::regclass ELSE u.classid END,
	CASE WHEN u.classid = 'pg_rewrite'::regclass THEN u.rel ELSE u.objid END,
	CASE WHEN u.classid = 'pg_rewrite'::regclass THEN 0 ELSE u.objsubid END) AS o
WHERE u.rel IS NULL OR (NOT EXISTS (SELECT FROM made WHERE made.oid = u.rel)
	AND NOT EXISTS (SELECT FROM member x WHERE x.classid = 'pg_class'::regclass AND x.objid = u.rel))
ORDER BY 5, 2, 3, 4`

// sqlTimescaleMentions lists the source's functions and procedures whose body
// mentions one of the names $1 (whole words): PL/pgSQL and SQL bodies are text, in
// which PostgreSQL records no use; only running them would fail. Not the extension's
// own, nor functions of C or internal language (their body is a symbol).
var sqlTimescaleMentions = `
SELECT DISTINCT o.type || ' ' || o.identity, m.name
FROM pg_proc p CROSS JOIN LATERAL pg_identify_object('pg_proc'::regclass, p.oid, 0) AS o JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang
CROSS JOIN unnest($1::text[]) AS m(name)
WHERE ` + sqltext.UserSchema("n.nspname") + ` AND l.lanname NOT IN ('c', 'internal')
	AND NOT ` + sqltext.ExtensionMember(sqltext.Catalog("pg_proc"), "p.oid") + `
	AND p.prosrc ~ (E'\\m' || m.name || E'\\M')
ORDER BY 1, 2`

// sqlTimescaleJobProcs lists the source's user jobs (ids from 1000) with their
// procedure and check function.
const sqlTimescaleJobProcs = `SELECT job_id, proc_schema::text, proc_name::text, coalesce(check_schema::text, ''), coalesce(check_name::text, '')
FROM timescaledb_information.jobs WHERE job_id >= 1000 ORDER BY 1`

// timescaleReplacements say what to use instead of TimescaleDB functions that later
// versions dropped with no function of the same name elsewhere (the update script
// 2.19.3 -> 2.31.0, and TimescaleDB's changelog).
var timescaleReplacements = map[string]string{
	"time_bucket_ng":        "time_bucket, which takes origin, offset and timezone",
	"set_adaptive_chunking": "set_chunk_time_interval; adaptive chunking is gone",
	"cagg_migrate":          "nothing, every continuous aggregate is in the finalized form",
}

// timescaleAPI is what a TimescaleDB offers: functions by key (schema and name; true
// when deprecated), relations and their columns by key (schema, name and column, ""
// for the relation itself).
type timescaleAPI struct {
	functions map[string]bool
	names     map[string][]string // function name -> keys of each of that name
	relations map[string]bool
}

// apiKey is the key of schema.name (and column) in a timescaleAPI.
func apiKey(parts ...string) string { return strings.Join(parts, "\x00") }

// readTimescaleAPI reads what the TimescaleDB of the database q is in offers.
func readTimescaleAPI(ctx context.Context, q interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}) (*timescaleAPI, error) {
	api := &timescaleAPI{functions: map[string]bool{}, names: map[string][]string{}, relations: map[string]bool{}}
	rows, _ := q.Query(ctx, sqlTimescaleAPI)
	var kind, schema, name, col string
	var deprecated bool
	_, err := pgx.ForEachRow(rows, []any{&kind, &schema, &name, &col, &deprecated}, func() error {
		if kind == "function" {
			k := apiKey(schema, name)
			api.functions[k] = deprecated
			api.names[name] = append(api.names[name], k)
			return nil
		}
		api.relations[apiKey(schema, name, col)] = true
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read TimescaleDB's functions and views: %w", err)
	}
	return api, nil
}

// upgradeUse is one use by a source object of what the target's TimescaleDB lacks or
// has only as a deprecated wrapper.
type upgradeUse struct{ object, what, instead string }

func (u upgradeUse) String() string {
	s := u.object + " uses " + u.what
	if u.instead != "" {
		s += " (instead: " + u.instead + ")"
	}
	return s
}

// checkTimescaleUpgrade names the source's objects that the target's newer TimescaleDB
// treats differently: a fail for those the restore or a job would fail on (uses
// PostgreSQL records, jobs), a warning for bodies that mention a removed function (they
// would fail when run) and for uses of deprecated functions.
func (e *env) checkTimescaleUpgrade(ctx context.Context) ([]Finding, error) {
	plan, api := e.tsPlan, e.probe.tsAPI
	switch {
	case e.srcInv.TimescaleDB == nil || !plan.Upgrade():
		return []Finding{finding(Pass, "source", "no upgrade of TimescaleDB on the way", "")}, nil
	case api == nil:
		return []Finding{finding(Warn, "target", "not tried: the target's TimescaleDB could not be read (see timescaledb-version)", "fix timescaledb-version first")}, nil
	}
	to := "TimescaleDB " + plan.Version
	src, err := readTimescaleAPI(ctx, e.src)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	var removed, deprecated, mentioned []upgradeUse
	note := func(obj, kind, schema, name, col string) {
		if kind == "relation" {
			what := inventory.DisplayName(schema, name)
			if col != "" {
				what = "column " + inventory.Ident(col) + " of " + what
			}
			if !api.relations[apiKey(schema, name, col)] {
				removed = append(removed, upgradeUse{object: obj, what: what})
			}
			return
		}
		what := inventory.DisplayName(schema, name) + "()"
		dep, ok := api.functions[apiKey(schema, name)]
		switch {
		case !ok:
			removed = append(removed, upgradeUse{object: obj, what: what, instead: api.instead(schema, name)})
		case dep:
			deprecated = append(deprecated, upgradeUse{object: obj, what: what, instead: api.instead(schema, name)})
		}
	}
	rows, _ := e.src.Query(ctx, sqlTimescaleUses)
	var kind, schema, name, col, obj string
	if _, err := pgx.ForEachRow(rows, []any{&kind, &schema, &name, &col, &obj}, func() error {
		note(obj, kind, schema, name, col)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read what the source's objects use of TimescaleDB: %w", err)
	}
	var id int
	var check, checkName string
	rows, _ = e.src.Query(ctx, sqlTimescaleJobProcs)
	if _, err := pgx.ForEachRow(rows, []any{&id, &schema, &name, &check, &checkName}, func() error {
		job := fmt.Sprintf("job %d", id)
		if _, ok := src.functions[apiKey(schema, name)]; ok {
			note(job, "function", schema, name, "")
		}
		if _, ok := src.functions[apiKey(check, checkName)]; ok && checkName != "" {
			note(job+" (its check function)", "function", check, checkName, "")
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read the source's jobs: %w", err)
	}
	// The names of functions the source's TimescaleDB has and the target's has nowhere,
	// or only as deprecated wrappers: what a function's body text may call.
	var names []string
	for k, srcDep := range src.functions {
		if dep, ok := api.functions[k]; !ok || dep && !srcDep {
			names = append(names, regexp.QuoteMeta(k[strings.IndexByte(k, 0)+1:]))
		}
	}
	slices.Sort(names)
	if names = slices.Compact(names); len(names) > 0 {
		rows, _ = e.src.Query(ctx, sqlTimescaleMentions, names)
		var fn, mention string
		if _, err := pgx.ForEachRow(rows, []any{&fn, &mention}, func() error {
			mentioned = append(mentioned, upgradeUse{object: fn, what: mention + "() in its body"})
			return nil
		}); err != nil {
			return nil, fmt.Errorf("read the source's functions' bodies: %w", err)
		}
	}
	text := func(us []upgradeUse) string {
		s := make([]string, len(us))
		for i, u := range us {
			s[i] = u.String()
		}
		if len(s) > listMax {
			return fmt.Sprintf("%s; and %d more", strings.Join(s[:listMax], "; "), len(s)-listMax)
		}
		return strings.Join(s, "; ")
	}
	var out []Finding
	if len(removed) > 0 {
		out = append(out, finding(Fail, "source",
			fmt.Sprintf("%s of the source %s what %s no longer has, and would fail the restore or their job: %s",
				plural(len(removed), "object", "objects"), verb(len(removed), "uses", "use"), to, text(removed)),
			"change or drop them on the source before migrating (to what each \"instead\" names), or migrate to a target with the source's TimescaleDB version"))
	}
	if len(mentioned)+len(deprecated) > 0 {
		var saw []string
		if len(mentioned) > 0 {
			saw = append(saw, fmt.Sprintf("%s of the source %s functions %s no longer has or has deprecated, and would fail or warn when run: %s",
				plural(len(mentioned), "function", "functions"), verb(len(mentioned), "names", "name"), to, text(mentioned)))
		}
		if len(deprecated) > 0 {
			saw = append(saw, fmt.Sprintf("%s of the source %s functions %s has only as deprecated wrappers, to be removed: %s",
				plural(len(deprecated), "object", "objects"), verb(len(deprecated), "uses", "use"), to, text(deprecated)))
		}
		out = append(out, finding(Warn, "source", strings.Join(saw, "; and "), "change them to what the newer version has (what each \"instead\" names) when convenient"))
	}
	if len(out) == 0 {
		out = append(out, finding(Pass, "source", fmt.Sprintf("no object of the source uses a TimescaleDB function or view that %s removed or deprecated", to), ""))
	}
	return out, nil
}

// verb is one or many by n.
func verb(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// instead says what TimescaleDB api has for function schema.name: a function of the
// same name in another of its schemas, not deprecated (the functions moved to
// _timescaledb_functions in 2.12), else a known replacement, else "".
func (api *timescaleAPI) instead(schema, name string) string {
	self := apiKey(schema, name)
	for _, k := range api.names[name] {
		if k != self && !api.functions[k] {
			return inventory.DisplayName(k[:strings.IndexByte(k, 0)], name) + "()"
		}
	}
	return timescaleReplacements[name]
}
