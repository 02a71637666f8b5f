package schema

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/exit"
)

// RestorePath is how a source's TimescaleDB objects reach the target.
type RestorePath string

const (
	// PathAuto picks PathCatalog when the target user may take it, else PathAPI.
	PathAuto RestorePath = "auto"
	// PathCatalog restores TimescaleDB's catalog rows as data, between
	// timescaledb_pre_restore() and timescaledb_post_restore() (what pg_restore does):
	// the target user must be able to run both and to write the catalog.
	PathCatalog RestorePath = "catalog"
	// PathAPI writes no catalog row: hypertables, chunks, compression, continuous
	// aggregates and jobs are made through TimescaleDB's public API as the hypertables'
	// owner, for a target user who may not write the catalog.
	PathAPI RestorePath = "api"
)

// ParseRestorePath reads --restore-path ("" is PathAuto).
func ParseRestorePath(s string) (RestorePath, error) {
	switch p := RestorePath(s); p {
	case "":
		return PathAuto, nil
	case PathAuto, PathCatalog, PathAPI:
		return p, nil
	}
	return "", exit.Usagef("write --restore-path auto, catalog or api", "invalid --restore-path %q", s)
}

// APIPathAvailable says whether this build can restore without TimescaleDB's catalog
// (PathAPI): the stream engine can (package tsapi).
var APIPathAvailable = true

// SQL that tells what the target user may do towards the catalog path, run in the
// target database once TimescaleDB is installed there (or created in a transaction).
// Checked on PostgreSQL 15-17 and TimescaleDB 2.19.3, whose functions and catalog
// tables this reads through pg_extension, not by fixed names.
const (
	// sqlRestoreFunctions: for timescaledb_pre_restore() and timescaledb_post_restore()
	// in the extension's schema, whether the current user may execute them, whether
	// they run as their owner (SECURITY DEFINER, as Timescale's images make them), and
	// that owner and whether it is a superuser (their insides, ALTER DATABASE ... SET
	// timescaledb.restoring and stopping background workers, need one).
	sqlRestoreFunctions = `
SELECT p.proname, has_function_privilege(p.oid, 'EXECUTE'), p.prosecdef, o.rolname, o.rolsuper
FROM pg_extension e JOIN pg_proc p ON p.pronamespace = e.extnamespace JOIN pg_roles o ON o.oid = p.proowner
WHERE e.extname = 'timescaledb' AND p.proname IN ('timescaledb_pre_restore', 'timescaledb_post_restore') AND p.pronargs = 0
ORDER BY p.proname DESC`
	// sqlCatalogTables: TimescaleDB's configuration tables and sequences, those pg_dump
	// dumps the rows of and the catalog path writes (COPY, setval), and whether the
	// current user may (INSERT, UPDATE on a sequence); then whether it may create
	// tables in _timescaledb_internal, where the chunks are restored.
	sqlCatalogTables = `
SELECT format('%I.%I', n.nspname, c.relname), c.relkind = 'S',
       CASE WHEN c.relkind = 'S' THEN has_sequence_privilege(c.oid, 'UPDATE') ELSE has_table_privilege(c.oid, 'INSERT') END
FROM pg_extension e, unnest(e.extconfig) u(oid)
JOIN pg_class c ON c.oid = u.oid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE e.extname = 'timescaledb'
ORDER BY 1`
	sqlInternalCreate = `SELECT coalesce(has_schema_privilege(to_regnamespace('_timescaledb_internal'), 'CREATE'), false)`
	sqlCurrentUser    = `SELECT current_user::text, rolsuper FROM pg_roles WHERE rolname = current_user`
)

// CatalogRights is what the target user may do towards the catalog path.
type CatalogRights struct {
	User      string
	Superuser bool
	// Missing says why the user cannot take the catalog path, "" when it can.
	Missing string
	// How says how it can (a superuser; the functions run as a superuser).
	How string
	// Tables are TimescaleDB's configuration tables (not sequences), quoted, which
	// the catalog path writes: pre-flight tries a write of no row into each.
	Tables []string
	// Schema is the schema TimescaleDB's functions are in, quoted.
	Schema string
	// upgrade says why the catalog path cannot be taken whatever the rights: the target
	// runs a newer TimescaleDB than the source (see Across); "" otherwise.
	upgrade string
}

// Across tells Choose the TimescaleDB versions of the migration: when the target's is
// newer than the source's (plan.Upgrade()), only the API path can take it
// (ErrCatalogVersions).
func (r *CatalogRights) Across(plan TimescaleDBTarget) {
	r.upgrade = ""
	if plan.Upgrade() {
		r.upgrade = fmt.Sprintf("the target's TimescaleDB %s is newer than the source's %s, and its catalog cannot cross versions", plan.Version, plan.Source)
	}
}

// ReadCatalogRights reads what the connected user may do towards the catalog path in
// the connected database, which must have TimescaleDB (installed, or created in the
// caller's transaction).
func ReadCatalogRights(ctx context.Context, q interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}) (*CatalogRights, error) {
	r := &CatalogRights{}
	if err := q.QueryRow(ctx, sqlCurrentUser).Scan(&r.User, &r.Superuser); err != nil {
		return nil, fmt.Errorf("read the target user: %w", err)
	}
	var extSchema string
	if err := q.QueryRow(ctx, `SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'timescaledb'`).Scan(&extSchema); err != nil {
		return nil, fmt.Errorf("read the target's TimescaleDB schema: %w", err)
	}
	r.Schema = pgx.Identifier{extSchema}.Sanitize()
	if r.Superuser {
		r.How = r.User + " is a superuser"
		return r, nil
	}
	var missing []string
	type fn struct {
		name, owner              string
		execute, definer, ownerS bool
	}
	var fns []fn
	var f fn
	rows, _ := q.Query(ctx, sqlRestoreFunctions)
	if _, err := pgx.ForEachRow(rows, []any{&f.name, &f.execute, &f.definer, &f.owner, &f.ownerS}, func() error {
		fns = append(fns, f)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read the rights on timescaledb_pre_restore() and timescaledb_post_restore(): %w", err)
	}
	if len(fns) != 2 {
		return nil, fmt.Errorf("the target's TimescaleDB has %d of timescaledb_pre_restore() and timescaledb_post_restore()", len(fns))
	}
	// The same reason for both functions is said once.
	var reasons []string
	names := map[string][]string{}
	for _, f := range fns {
		var why string
		switch {
		case !f.execute:
			why = "no EXECUTE privilege"
		case !f.definer:
			why = "not SECURITY DEFINER, and they need a superuser"
		case !f.ownerS:
			why = "SECURITY DEFINER, but owned by " + f.owner + ", no superuser"
		default:
			continue
		}
		if names[why] == nil {
			reasons = append(reasons, why)
		}
		names[why] = append(names[why], f.name+"()")
	}
	for _, why := range reasons {
		missing = append(missing, fmt.Sprintf("may not run %s (%s)", strings.Join(names[why], " and "), why))
	}
	var denied []string
	var name string
	var seq, ok bool
	rows, _ = q.Query(ctx, sqlCatalogTables)
	if _, err := pgx.ForEachRow(rows, []any{&name, &seq, &ok}, func() error {
		if !ok {
			denied = append(denied, name)
		}
		if !seq {
			r.Tables = append(r.Tables, name)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read the rights on TimescaleDB's catalog: %w", err)
	}
	if len(denied) > 0 {
		n := len(denied)
		if n > 3 {
			denied = append(denied[:3], fmt.Sprintf("and %d more", n-3))
		}
		missing = append(missing, "may not write TimescaleDB's catalog ("+strings.Join(denied, ", ")+")")
	}
	var internal bool
	if err := q.QueryRow(ctx, sqlInternalCreate).Scan(&internal); err != nil {
		return nil, fmt.Errorf("read the rights on schema _timescaledb_internal: %w", err)
	}
	if !internal {
		missing = append(missing, "may not create tables in schema _timescaledb_internal")
	}
	if len(missing) > 0 {
		r.Missing = r.User + " " + strings.Join(missing, "; ")
		return r, nil
	}
	r.How = fmt.Sprintf("%s may run timescaledb_pre_restore() and timescaledb_post_restore() (SECURITY DEFINER, owned by superuser %s) and write TimescaleDB's catalog", r.User, fns[0].owner)
	return r, nil
}

// PathChoice is the restore path a migration takes, why, and, when it cannot take it,
// what is wrong and what to do.
type PathChoice struct {
	Path    RestorePath
	Why     string
	Problem string // "" when the path can be taken
	Do      string
}

// Choose picks the restore path for want (PathAuto: the catalog path when the user may
// take it), for the dump engine (pg_restore, which writes the catalog) or the stream
// engine.
func (r *CatalogRights) Choose(want RestorePath, dumpEngine bool) PathChoice {
	c := PathChoice{Path: want, Why: r.How}
	switch {
	case r.upgrade != "" && want == PathCatalog:
		c.Why = r.upgrade
		c.Problem = "--restore-path catalog, but " + r.upgrade
		c.Do = "leave out --restore-path catalog: tsmigrate then restores through TimescaleDB's API, which crosses versions"
		return c
	case r.upgrade != "":
		c.Path, c.Why = PathAPI, r.upgrade
	case want == PathCatalog:
		if r.Missing != "" {
			c.Why = r.Missing
			c.Problem = "--restore-path catalog, but " + r.Missing
			c.Do = "leave out --restore-path catalog (tsmigrate then restores without TimescaleDB's catalog), or connect as a superuser, or have one make timescaledb_pre_restore() and timescaledb_post_restore() SECURITY DEFINER and GRANT EXECUTE on them, and ALL on TimescaleDB's catalog tables and sequences, to " + pgx.Identifier{r.User}.Sanitize()
			return c
		}
		c.Why = "--restore-path catalog: " + r.How
		return c
	case want == PathAPI:
		c.Why = "--restore-path api"
	default:
		if r.Missing == "" {
			c.Path = PathCatalog
			return c
		}
		c.Path, c.Why = PathAPI, r.Missing
	}
	switch {
	case !APIPathAvailable:
		c.Problem = "this tsmigrate cannot restore without TimescaleDB's catalog yet, and " + c.Why
		c.Do = "connect to the target as a superuser, or as a role that may run timescaledb_pre_restore() and timescaledb_post_restore() and write TimescaleDB's catalog"
	case dumpEngine:
		c.Problem = "the dump engine restores TimescaleDB's catalog with pg_restore, which it cannot here: " + c.Why
		c.Do = "use --engine stream, which restores through TimescaleDB's API"
	}
	return c
}
