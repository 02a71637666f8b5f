package schema

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// Resetting a target database that a failed migration left half restored, as its own
// user, who may be no superuser and may not own the database's extensions (a managed
// service's admin role): the statements drop what the user owns and no extension made,
// whole schemas where nothing in them is another's, else object by object; they end
// restoring mode first when it is still on, and leave alone the extensions the user
// does not own (TimescaleDB created by the service) and their schemas. Checked on
// PostgreSQL 15 and 17 with TimescaleDB 2.19.3.

// resetOwned is true for an object owned by a role the current user is a member of.
func resetOwned(owner string) string { return "pg_has_role(" + owner + ", 'MEMBER')" }

const (
	// sqlResetSchemas: schemas dropped whole: the user's, holding no extension the user
	// may not drop (nor a built-in one), not public, not PostgreSQL's nor TimescaleDB's.
	sqlResetSchemas = `
SELECT n.nspname FROM pg_namespace n
WHERE n.nspname <> 'public' AND NOT %s AND NOT %s AND %s
  AND NOT EXISTS (SELECT FROM pg_extension e WHERE e.extnamespace = n.oid AND (e.oid < 16384 OR NOT %s))
ORDER BY 1`

	// sqlResetRelations: relations outside those schemas, top-level ones (a chunk or a
	// partition goes with its parent, a column's sequence with its table), TimescaleDB's
	// schemas last (what is left there once the hypertables are dropped).
	sqlResetRelations = `
SELECT c.relkind::text, format('%%I.%%I', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND NOT %s AND NOT n.nspname = ANY($1) AND %s AND NOT %s
  AND NOT c.relispartition AND NOT EXISTS (SELECT FROM pg_inherits i WHERE i.inhrelid = c.oid)
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
    AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))
ORDER BY %s, 2`

	// sqlResetObjects: routines, types (not arrays, multiranges nor tables' row types),
	// collations, text search configurations and dictionaries outside those schemas and
	// TimescaleDB's, as the DROP statement's object kind and name.
	sqlResetObjects = `
SELECT 'ROUTINE', format('%%I.%%I(%%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid))
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE NOT %[1]s AND NOT %[2]s AND NOT n.nspname = ANY($1) AND pg_has_role(p.proowner, 'MEMBER') AND NOT %[3]s
UNION ALL
SELECT CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, format('%%I.%%I', n.nspname, t.typname)
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE NOT %[1]s AND NOT %[2]s AND NOT n.nspname = ANY($1) AND pg_has_role(t.typowner, 'MEMBER') AND NOT %[4]s
  AND t.typtype IN ('b', 'c', 'd', 'e', 'r') AND NOT (t.typelem <> 0 AND t.typcategory = 'A')
  AND (t.typtype <> 'c' OR EXISTS (SELECT FROM pg_class c WHERE c.oid = t.typrelid AND c.relkind = 'c'))
UNION ALL
SELECT 'COLLATION', format('%%I.%%I', n.nspname, o.collname)
FROM pg_collation o JOIN pg_namespace n ON n.oid = o.collnamespace
WHERE NOT %[1]s AND NOT %[2]s AND NOT n.nspname = ANY($1) AND pg_has_role(o.collowner, 'MEMBER') AND NOT %[5]s
UNION ALL
SELECT 'TEXT SEARCH CONFIGURATION', format('%%I.%%I', n.nspname, o.cfgname)
FROM pg_ts_config o JOIN pg_namespace n ON n.oid = o.cfgnamespace
WHERE NOT %[1]s AND NOT %[2]s AND NOT n.nspname = ANY($1) AND pg_has_role(o.cfgowner, 'MEMBER') AND NOT %[6]s
UNION ALL
SELECT 'TEXT SEARCH DICTIONARY', format('%%I.%%I', n.nspname, o.dictname)
FROM pg_ts_dict o JOIN pg_namespace n ON n.oid = o.dictnamespace
WHERE NOT %[1]s AND NOT %[2]s AND NOT n.nspname = ANY($1) AND pg_has_role(o.dictowner, 'MEMBER') AND NOT %[7]s
UNION ALL
SELECT 'PUBLICATION', quote_ident(pubname) FROM pg_publication WHERE pg_has_role(pubowner, 'MEMBER')
UNION ALL
SELECT 'EXTENSION', quote_ident(e.extname) FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.oid >= 16384 AND pg_has_role(e.extowner, 'MEMBER') AND NOT n.nspname = ANY($1)`

	// sqlResetFacts: whether the database has large objects the user owns, and whether
	// restoring mode is left on in it.
	sqlResetFacts = `
SELECT EXISTS (SELECT FROM pg_largeobject_metadata l WHERE pg_has_role(l.lomowner, 'MEMBER')),
       EXISTS (SELECT FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
               WHERE d.datname = current_database() AND s.setrole = 0
                 AND EXISTS (SELECT FROM unnest(s.setconfig) c WHERE c LIKE 'timescaledb.restoring=%'))`

	// sqlResetJobTable: TimescaleDB's table of jobs (in _timescaledb_config up to 2.24,
	// _timescaledb_catalog after), when the user may delete from it.
	sqlResetJobTable = `
SELECT format('%I.%I', n.nspname, c.relname) FROM pg_extension e, unnest(e.extconfig) u(oid)
JOIN pg_class c ON c.oid = u.oid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE e.extname = 'timescaledb' AND c.relname = 'bgw_job' AND c.relkind = 'r' AND has_table_privilege(c.oid, 'DELETE')`

	// sqlResetLargeObjects unlinks the large objects the user owns.
	sqlResetLargeObjects = `SELECT lo_unlink(l.oid) FROM pg_largeobject_metadata l WHERE pg_has_role(l.lomowner, 'MEMBER')`
	// sqlResetJobsCatalog deletes the rows of user jobs whose function is gone (a job of
	// a hypertable goes with it), in the job table (%s) restored with the catalog: such
	// a row would collide with the next restore's.
	sqlResetJobsCatalog = `DELETE FROM %s j WHERE j.id >= 1000 AND j.hypertable_id IS NULL ` +
		`AND NOT EXISTS (SELECT FROM pg_proc p JOIN pg_namespace pn ON pn.oid = p.pronamespace WHERE pn.nspname = j.proc_schema AND p.proname = j.proc_name)`
	// sqlResetJobsAPI deletes, through TimescaleDB's API in schema %s, the user's jobs
	// whose function is gone.
	sqlResetJobsAPI = `SELECT %s.delete_job(j.job_id) FROM timescaledb_information.jobs j WHERE j.job_id >= 1000 AND j.hypertable_name IS NULL ` +
		`AND NOT EXISTS (SELECT FROM pg_proc p JOIN pg_namespace pn ON pn.oid = p.pronamespace WHERE pn.nspname = j.proc_schema AND p.proname = j.proc_name)`
	// sqlUserJobs: whether the database has user jobs (policies, add_job).
	sqlUserJobs = `SELECT EXISTS (SELECT FROM timescaledb_information.jobs WHERE job_id >= 1000)`
	// sqlResetCaggs: continuous aggregates (dropped as materialized views). The
	// statements above are one line each: the reset is printed on one line.
	sqlResetCaggs = `SELECT format('%I.%I', user_view_schema, user_view_name) FROM _timescaledb_catalog.continuous_agg ORDER BY 1`
)

// ResetStatements are the statements that, run in order as the connected user in the
// connected database, drop what a failed migration restored there: see above.
func ResetStatements(ctx context.Context, conn *pgx.Conn) ([]string, error) {
	var out []string
	var extSchema string
	_, tsSchema, ts, err := installedTimescaleDB(ctx, conn)
	if err != nil {
		return nil, err
	}
	if ts {
		extSchema = pgx.Identifier{tsSchema}.Sanitize()
	}
	var hasLO, restoring bool
	if err := conn.QueryRow(ctx, sqlResetFacts).Scan(&hasLO, &restoring); err != nil {
		return nil, fmt.Errorf("read the target for its reset: %w", err)
	}
	if ts && restoring {
		// Twice, as PostRestore does: the first may leave the scheduler stopped.
		out = append(out, fmt.Sprintf(sqlPostRestore, extSchema), fmt.Sprintf(sqlPostRestore, extSchema))
	}
	// Continuous aggregates go with their hypertables (DROP TABLE ... CASCADE), also
	// where the hypertable lacks its invalidation trigger, restored with post-data,
	// which DROP MATERIALIZED VIEW of the aggregate would drop ("trigger
	// ts_cagg_invalidation_trigger for table ... does not exist"); DROP VIEW of one is
	// refused. What is left of them is dropped after the tables.
	var caggs []string
	if ts {
		rows, _ := conn.Query(ctx, sqlResetCaggs)
		if caggs, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return nil, fmt.Errorf("list the target's continuous aggregates: %w", err)
		}
	}
	q := fmt.Sprintf(sqlResetSchemas, sqltext.SystemSchema("n.nspname"), sqltext.TimescaleSchema("n.nspname"),
		resetOwned("n.nspowner"), resetOwned("e.extowner"))
	rows, _ := conn.Query(ctx, q)
	schemas, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list the target's schemas: %w", err)
	}
	for _, s := range schemas {
		out = append(out, "DROP SCHEMA IF EXISTS "+pgx.Identifier{s}.Sanitize()+" CASCADE")
	}
	q = fmt.Sprintf(sqlResetRelations, sqltext.SystemSchema("n.nspname"), resetOwned("c.relowner"),
		sqltext.ExtensionMember(sqltext.Catalog("pg_class"), "c.oid"), sqltext.TimescaleSchema("n.nspname"))
	rows, _ = conn.Query(ctx, q, schemas)
	var kind, name string
	if _, err := pgx.ForEachRow(rows, []any{&kind, &name}, func() error {
		if !slices.Contains(caggs, name) {
			out = append(out, "DROP "+relationKinds[kind]+" IF EXISTS "+name+" CASCADE")
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list the target's relations: %w", err)
	}
	for _, c := range caggs {
		out = append(out, "DROP MATERIALIZED VIEW IF EXISTS "+c+" CASCADE")
	}
	q = fmt.Sprintf(sqlResetObjects, sqltext.SystemSchema("n.nspname"), sqltext.TimescaleSchema("n.nspname"),
		sqltext.ExtensionMember(sqltext.Catalog("pg_proc"), "p.oid"), sqltext.ExtensionMember(sqltext.Catalog("pg_type"), "t.oid"),
		sqltext.ExtensionMember(sqltext.Catalog("pg_collation"), "o.oid"), sqltext.ExtensionMember(sqltext.Catalog("pg_ts_config"), "o.oid"),
		sqltext.ExtensionMember(sqltext.Catalog("pg_ts_dict"), "o.oid"))
	rows, _ = conn.Query(ctx, q, schemas)
	var extensions []string
	if _, err := pgx.ForEachRow(rows, []any{&kind, &name}, func() error {
		if kind == "EXTENSION" {
			extensions = append(extensions, "DROP EXTENSION IF EXISTS "+name+" CASCADE")
			return nil
		}
		out = append(out, "DROP "+kind+" IF EXISTS "+name+" CASCADE")
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list the target's functions, types and other objects: %w", err)
	}
	if hasLO {
		out = append(out, sqlResetLargeObjects)
	}
	var userJobs bool
	if ts {
		if err := conn.QueryRow(ctx, sqlUserJobs).Scan(&userJobs); err != nil {
			return nil, fmt.Errorf("look for the target's jobs: %w", err)
		}
	}
	if userJobs {
		var jobs string
		err := conn.QueryRow(ctx, sqlResetJobTable).Scan(&jobs)
		switch {
		case err == nil:
			out = append(out, fmt.Sprintf(sqlResetJobsCatalog, jobs))
		case errors.Is(err, pgx.ErrNoRows):
			out = append(out, fmt.Sprintf(sqlResetJobsAPI, extSchema))
		default:
			return nil, fmt.Errorf("look for TimescaleDB's job table: %w", err)
		}
	}
	return append(out, extensions...), nil
}

// relationKinds name relkinds in DROP statements.
var relationKinds = map[string]string{"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE", "f": "FOREIGN TABLE"}
