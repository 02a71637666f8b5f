package tsapi

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// sqlObjects lists the source's objects that matter to a restore through the API, by
// the catalog and object ids a schema dump's table of contents gives them (pg_class for
// tables, views and indexes; pg_constraint, pg_trigger, pg_rewrite, pg_policy,
// pg_attrdef, pg_statistic_ext for what hangs on a table), with the relation they are
// or hang on and its role:
//   - 'made': TimescaleDB makes it on the target itself: chunks (those of compressed and
//     materialization hypertables too: the compressed ones do not inherit from their
//     hypertable, the catalog lists them), the compressed and materialization hypertables,
//     continuous aggregates' views (the user's, the partial and the direct one), what
//     hangs on them, and TimescaleDB's own triggers on hypertables (ts_insert_blocker,
//     ts_cagg_invalidation_trigger: functions of the extension);
//   - 'hypertable': hangs on a user hypertable: its post-data statements run without
//     ONLY, which TimescaleDB refuses on hypertables, and after its chunks exist.
//
// Checked on TimescaleDB 2.19.3 (PostgreSQL 17) and 2.31.0 (PostgreSQL 18): a chunk's
// table as sqltext.TimescaleChunkTable reads it (NULL for a dropped chunk, which has
// none); the other catalog columns read exist from 2.0.
var sqlObjects = `
WITH ts AS (SELECT oid FROM pg_extension WHERE extname = 'timescaledb'),
hyper AS (
	SELECT format('%I.%I', h.schema_name, h.table_name)::regclass AS rel,
		h.compression_state = 2 OR EXISTS (SELECT FROM _timescaledb_catalog.continuous_agg ca WHERE ca.mat_hypertable_id = h.id) AS internal
	FROM _timescaledb_catalog.hypertable h),
made AS (
	SELECT rel FROM hyper WHERE internal
	UNION SELECT i.inhrelid FROM pg_inherits i JOIN hyper h ON h.rel = i.inhparent
	UNION SELECT ` + sqltext.TimescaleChunkTable("c") + ` FROM _timescaledb_catalog.chunk c
	UNION SELECT format('%I.%I', v.s, v.n)::regclass FROM _timescaledb_catalog.continuous_agg ca
		CROSS JOIN LATERAL (VALUES (ca.user_view_schema, ca.user_view_name), (ca.partial_view_schema, ca.partial_view_name),
			(ca.direct_view_schema, ca.direct_view_name)) AS v(s, n)),
rels AS (
	SELECT rel, 'made' AS role FROM made
	UNION ALL SELECT rel, 'hypertable' FROM hyper WHERE NOT internal),
objects AS (
	SELECT 'pg_class'::regclass AS cat, r.rel::oid AS obj, r.rel, r.role FROM rels r
	UNION ALL SELECT 'pg_class'::regclass, x.indexrelid, r.rel, r.role FROM pg_index x JOIN rels r ON r.rel = x.indrelid
	UNION ALL SELECT 'pg_constraint'::regclass, k.oid, r.rel, r.role FROM pg_constraint k JOIN rels r ON r.rel = k.conrelid
	UNION ALL SELECT 'pg_trigger'::regclass, t.oid, r.rel,
		CASE WHEN EXISTS (SELECT FROM pg_depend d, ts WHERE d.classid = 'pg_proc'::regclass AND d.objid = t.tgfoid
			AND d.refobjid = ts.oid AND d.deptype = 'e') THEN 'made' ELSE r.role END
		FROM pg_trigger t JOIN rels r ON r.rel = t.tgrelid WHERE NOT t.tgisinternal
	UNION ALL SELECT 'pg_rewrite'::regclass, w.oid, r.rel, r.role FROM pg_rewrite w JOIN rels r ON r.rel = w.ev_class
	UNION ALL SELECT 'pg_policy'::regclass, p.oid, r.rel, r.role FROM pg_policy p JOIN rels r ON r.rel = p.polrelid
	UNION ALL SELECT 'pg_attrdef'::regclass, a.oid, r.rel, r.role FROM pg_attrdef a JOIN rels r ON r.rel = a.adrelid
	UNION ALL SELECT 'pg_statistic_ext'::regclass, s.oid, r.rel, r.role FROM pg_statistic_ext s JOIN rels r ON r.rel = s.stxrelid)
SELECT o.cat::oid, o.obj, n.nspname::text, c.relname::text, o.role,
	(SELECT n2.nspname::text FROM pg_class c2 JOIN pg_namespace n2 ON n2.oid = c2.relnamespace WHERE o.cat = 'pg_class'::regclass AND c2.oid = o.obj),
	(SELECT c2.relname::text FROM pg_class c2 WHERE o.cat = 'pg_class'::regclass AND c2.oid = o.obj)
FROM objects o JOIN pg_class c ON c.oid = o.rel JOIN pg_namespace n ON n.oid = c.relnamespace`

// Objects sorts the entries of the source's schema dump for a restore through the API.
type Objects struct {
	role map[catalogID]string
	// relations by schema and name: tables, views and indexes, with their role, for
	// the entries (comments, privileges) that name them without ids.
	relations map[Name]string
}

type catalogID struct{ cat, obj uint32 }

// Entry roles.
const (
	RoleMade       = "made"
	RoleHypertable = "hypertable"
	// RoleAggregate: a comment or privileges of a continuous aggregate's view, which
	// TimescaleDB makes: restored once the continuous aggregate is made.
	RoleAggregate = "aggregate"
)

// sqlAggregateViews lists the continuous aggregates' views (TimescaleDB 2.x).
const sqlAggregateViews = `SELECT user_view_schema::text, user_view_name::text FROM _timescaledb_catalog.continuous_agg`

// ReadObjects reads which of the source's objects TimescaleDB makes itself and which
// hang on hypertables.
func ReadObjects(ctx context.Context, q Querier) (*Objects, error) {
	o := &Objects{role: map[catalogID]string{}, relations: map[Name]string{}}
	rows, err := q.Query(ctx, sqlObjects)
	if err != nil {
		return nil, fmt.Errorf("read TimescaleDB's objects: %w", err)
	}
	var id catalogID
	var rel Name
	var role string
	var ns, name *string
	_, err = pgx.ForEachRow(rows, []any{&id.cat, &id.obj, &rel.Schema, &rel.Name, &role, &ns, &name}, func() error {
		if o.role[id] != RoleMade { // made wins: TimescaleDB's own trigger on a hypertable
			o.role[id] = role
		}
		if ns != nil && name != nil {
			n := Name{*ns, *name}
			if o.relations[n] != RoleMade {
				o.relations[n] = role
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read TimescaleDB's objects: %w", err)
	}
	rows, err = q.Query(ctx, sqlAggregateViews)
	if err != nil {
		return nil, fmt.Errorf("read continuous aggregates: %w", err)
	}
	_, err = pgx.ForEachRow(rows, []any{&rel.Schema, &rel.Name}, func() error {
		o.relations[rel] = RoleAggregate
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read continuous aggregates: %w", err)
	}
	return o, nil
}

// Role says what a dump's entry is to a restore through the API: RoleMade (leave it
// out: TimescaleDB makes it), RoleHypertable (it hangs on a hypertable),
// RoleAggregate (a comment or privileges of a continuous aggregate), or "". An
// entry is given as pg_restore lists it: the catalog and object ids of its object
// (0 for comments and privileges), its schema and name.
func (o *Objects) Role(cat, obj uint32, schema, name string) string {
	if cat != 0 {
		return o.role[catalogID{cat, obj}]
	}
	// A comment, privileges or security label: "TABLE x", "INDEX x", "COLUMN x.c",
	// "CONSTRAINT c ON x", "TRIGGER t ON x", ...
	kind, rest, ok := strings.Cut(name, " ")
	if !ok {
		return ""
	}
	switch kind {
	case "TABLE", "VIEW", "INDEX", "SEQUENCE":
		return o.relations[Name{schema, rest}]
	case "MATERIALIZED", "FOREIGN":
		if _, n, ok := strings.Cut(rest, " "); ok {
			return o.relations[Name{schema, n}]
		}
	case "COLUMN":
		for i := strings.LastIndexByte(rest, '.'); i > 0; i = strings.LastIndexByte(rest[:i], '.') {
			if r := o.relations[Name{schema, rest[:i]}]; r != "" {
				return r
			}
		}
	case "CONSTRAINT", "TRIGGER", "POLICY", "RULE":
		if i := strings.LastIndex(rest, " ON "); i >= 0 {
			return o.relations[Name{schema, rest[i+4:]}]
		}
	}
	return ""
}
