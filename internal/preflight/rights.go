package preflight

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/freeze"
	"github.com/tsmigrate/tsmigrate/internal/inventory"
	"github.com/tsmigrate/tsmigrate/internal/schema"
	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

func (e *env) checkSourceRead() []Finding {
	s := e.srcInv
	var denied []string
	for _, t := range s.Tables {
		if !t.Readable {
			denied = append(denied, inventory.DisplayName(t.Schema, t.Name))
		}
	}
	for _, q := range s.Sequences {
		if !q.Readable {
			denied = append(denied, "sequence "+inventory.DisplayName(q.Schema, q.Name))
		}
	}
	chunks := 0
	for _, c := range s.Chunks {
		if !c.Readable {
			chunks++
		}
	}
	if chunks > 0 {
		denied = append(denied, plural(chunks, "chunk", "chunks"))
	}
	if len(denied) > 0 {
		return []Finding{finding(Fail, "source",
			fmt.Sprintf("%s cannot read: %s", s.User.Name, list(denied)),
			fmt.Sprintf("connect as the owner of the data or a superuser, or GRANT SELECT on them (and on future chunks) to %s", inventory.Ident(s.User.Name)))}
	}
	if f, ok := e.rowSecurity(); ok {
		return []Finding{f}
	}
	return []Finding{finding(Pass, "source", fmt.Sprintf("%s can read all %s, %s and %s",
		s.User.Name, plural(len(s.Tables), "table", "tables"), plural(len(s.Sequences), "sequence", "sequences"),
		plural(len(s.Chunks), "chunk", "chunks")), "")}
}

// rowSecurity fails source-read when row-level security policies apply to the source
// user on tables it may read: pg_dump and the stream engine's copy read with
// row_security off, so that no policy hides a row, and PostgreSQL then refuses to read
// such a table ("query would be affected by row-level security policy"), after the
// freeze. pg_dump --enable-row-security is no way out: it dumps only the rows the
// policies let the user see.
func (e *env) rowSecurity() (Finding, bool) {
	s := e.srcInv
	if s.User.Superuser || s.User.BypassRLS {
		return Finding{}, false
	}
	var tables []string
	for _, t := range s.Tables {
		if t.RowSecurity && t.Readable && (t.Kind == "table" || t.Kind == "partitioned table") {
			tables = append(tables, inventory.DisplayName(t.Schema, t.Name))
		}
	}
	if len(tables) == 0 {
		return Finding{}, false
	}
	u := inventory.Ident(s.User.Name)
	return finding(Fail, "source",
		fmt.Sprintf("row-level security policies apply to %s on %s: it may not read all their rows, and the dump and the copy, which must read every row (row_security off), would fail", s.User.Name, list(tables)),
		fmt.Sprintf("as a superuser: ALTER ROLE %s BYPASSRLS; or connect as a superuser, or as the tables' owner where they do not FORCE ROW LEVEL SECURITY (pg_dump --enable-row-security would copy only the rows the policies show)", u)), true
}

func (e *env) checkFreeze(ctx context.Context) ([]Finding, error) {
	u := e.srcInv.User
	db := e.srcInv.Name
	switch {
	case u.Superuser:
		return []Finding{finding(Pass, "source", fmt.Sprintf("%s is a superuser: it may ALTER DATABASE %s to freeze writes", u.Name, db), "")}, nil
	case !u.OwnsDatabase:
		return []Finding{finding(Fail, "source",
			fmt.Sprintf("%s is neither a superuser nor the owner of %s (owner %s): it cannot ALTER DATABASE %s SET default_transaction_read_only", u.Name, db, u.DatabaseOwner, db),
			fmt.Sprintf("connect to the source as %s or a superuser, or GRANT %s TO %s", u.DatabaseOwner, inventory.Ident(u.DatabaseOwner), inventory.Ident(u.Name)))}, nil
	}
	// An owner may set default_transaction_read_only, but storing the freeze record (a
	// custom setting) needs SET on that parameter on PostgreSQL 15+: try both in a
	// transaction that is rolled back, as the freeze will run them.
	err := pgx.BeginFunc(ctx, e.src.Conn, func(tx pgx.Tx) error {
		name := pgx.Identifier{db}.Sanitize()
		if _, err := tx.Exec(ctx, "ALTER DATABASE "+name+" SET default_transaction_read_only = on"); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "ALTER DATABASE "+name+" SET "+freeze.RecordSetting+" = '{}'"); err != nil {
			return err
		}
		return errProbeDone
	})
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, errProbeDone):
		return []Finding{finding(Pass, "source", fmt.Sprintf("%s owns %s: it may ALTER DATABASE %s to freeze writes and record the freeze (tried in a rolled-back transaction)", u.Name, db, db), "")}, nil
	case errors.As(err, &pgErr) && pgErr.Code == "42501":
		return []Finding{finding(Fail, "source",
			fmt.Sprintf("%s owns %s but may not store the freeze record: %s", u.Name, db, dbconn.Reason(err)),
			fmt.Sprintf("as a superuser: GRANT SET ON PARAMETER %s TO %s", freeze.RecordSetting, inventory.Ident(u.Name)))}, nil
	}
	return nil, fmt.Errorf("try the freeze's ALTER DATABASE in a rolled-back transaction: %w", err)
}

// errProbeDone rolls back a probe transaction whose statements all worked.
var errProbeDone = errors.New("probe done")

func (e *env) checkTerminate() []Finding {
	u := e.srcInv.User
	if u.Superuser || u.SignalBackend {
		why := "a superuser"
		if !u.Superuser {
			why = "a member of pg_signal_backend"
		}
		return []Finding{finding(Pass, "source", fmt.Sprintf("%s is %s: a freeze can end other sessions of %s", u.Name, why, e.srcInv.Name), "")}
	}
	var others []string
	for _, s := range e.srcInv.Activity.Sessions {
		if s.User != u.Name && !slices.Contains(others, s.User) {
			others = append(others, s.User)
		}
	}
	saw := fmt.Sprintf("%s may end only sessions of roles it is a member of (not a superuser, not in pg_signal_backend)", u.Name)
	if len(others) > 0 {
		saw += "; sessions of " + list(others) + " are connected now"
	}
	return []Finding{finding(Warn, "source", saw,
		fmt.Sprintf("GRANT pg_signal_backend TO %s, or freeze with --no-terminate and let those sessions finish", inventory.Ident(u.Name)))}
}

// sqlUserRelationsInTimescaleSchemas lists the source's relations a user made in one of
// TimescaleDB's schemas (a table in _timescaledb_internal, say): the restore creates
// them there. TimescaleDB 2.19.3 (PostgreSQL 15, 17).
var sqlUserRelationsInTimescaleSchemas = `SELECT n.nspname::text, c.relname::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE ` + sqltext.TimescaleSchema("n.nspname") + ` AND c.relkind IN ('r', 'p', 'S', 'f', 'v', 'm')
	AND NOT ` + sqltext.TimescaleRelation("c.oid") + ` AND NOT ` + sqltext.ExtensionMember(sqltext.Catalog("pg_class"), "c.oid") + `
	AND NOT EXISTS (SELECT FROM _timescaledb_catalog.continuous_agg ca WHERE n.nspname IN (ca.partial_view_schema, ca.direct_view_schema)
		AND c.relname IN (ca.partial_view_name, ca.direct_view_name))
ORDER BY 1, 2`

// sqlMayCreateIn says whether the current user may create in schema $1 (NULL when the
// schema does not exist).
const sqlMayCreateIn = `SELECT has_schema_privilege(to_regnamespace($1), 'CREATE')`

// userRelationsTargetRefuses names the source's relations in TimescaleDB's schemas
// that the target user may not create there.
func (e *env) userRelationsTargetRefuses(ctx context.Context) ([]string, error) {
	if e.srcInv.TimescaleDB == nil {
		return nil, nil
	}
	rows, _ := e.src.Query(ctx, sqlUserRelationsInTimescaleSchemas)
	var ns, name string
	var refused []string
	may := map[string]*bool{}
	_, err := pgx.ForEachRow(rows, []any{&ns, &name}, func() error {
		if _, ok := may[ns]; !ok {
			var b *bool
			if err := e.tgt.QueryRow(ctx, sqlMayCreateIn, ns).Scan(&b); err != nil {
				return err
			}
			may[ns] = b
		}
		if b := may[ns]; b != nil && !*b {
			refused = append(refused, inventory.DisplayName(ns, name))
		}
		return nil
	})
	return refused, err
}

func (e *env) checkTargetCreate(ctx context.Context) ([]Finding, error) {
	p := e.probe
	u := e.tgtInv.User.Name
	refused, err := e.userRelationsTargetRefuses(ctx)
	if err != nil {
		return nil, fmt.Errorf("list the source's relations in TimescaleDB's schemas: %w", err)
	}
	switch {
	case !p.ran:
		return []Finding{finding(Fail, "target", "the target is a standby: nothing can be created there", "connect to the primary server")}, nil
	case p.triedSchema && p.createSchemaErr != nil:
		return []Finding{finding(Fail, "target",
			fmt.Sprintf("%s cannot create schemas in %s: %s", u, e.tgtInv.Name, dbconn.Reason(p.createSchemaErr)),
			fmt.Sprintf("GRANT CREATE ON DATABASE %s TO %s, or connect as the database owner", inventory.Ident(e.tgtInv.Name), inventory.Ident(u)))}, nil
	case p.triedTable && p.createTableErr != nil:
		return []Finding{finding(Fail, "target",
			fmt.Sprintf("%s cannot create tables in schema public: %s", u, dbconn.Reason(p.createTableErr)),
			fmt.Sprintf("GRANT CREATE ON SCHEMA public TO %s, or connect as the database owner", inventory.Ident(u)))}, nil
	case !p.triedTable && !e.tgtInv.User.CanCreate:
		return []Finding{finding(Fail, "target",
			fmt.Sprintf("the target has no schema public and %s may not create schemas in %s", u, e.tgtInv.Name),
			fmt.Sprintf("GRANT CREATE ON DATABASE %s TO %s", inventory.Ident(e.tgtInv.Name), inventory.Ident(u)))}, nil
	case len(refused) > 0:
		return []Finding{finding(Fail, "target",
			fmt.Sprintf("the source has relations of its own in TimescaleDB's schemas, which %s may not create there: %s", u, list(refused)),
			"move them into a schema of your own on the source (ALTER TABLE ... SET SCHEMA), or have a superuser GRANT CREATE on that schema to "+inventory.Ident(u))}, nil
	}
	return []Finding{finding(Pass, "target", fmt.Sprintf("%s can create objects in %s (tried in a rolled-back transaction)", u, e.tgtInv.Name), "")}, nil
}

func (e *env) checkRestoreMode() []Finding {
	p := e.probe
	u := e.tgtInv.User.Name
	switch {
	case e.srcInv.TimescaleDB == nil:
		return []Finding{finding(Pass, "target", "the source does not use TimescaleDB: no restoring mode is needed", "")}
	case !p.triedRestoring && e.tsPlan.Upgrade() && e.opt.Engine == EngineDump:
		return []Finding{finding(Warn, "target", "not tried: the dump engine cannot cross TimescaleDB versions (see timescaledb-version)", "use --engine stream")}
	case !p.triedRestoring:
		return []Finding{finding(Warn, "target", "not tried: TimescaleDB could not be set up on the target (see timescaledb-version)", "fix timescaledb-version first")}
	case p.path.Problem != "":
		return []Finding{finding(Fail, "target", p.path.Problem, p.path.Do)}
	}
	tried := ""
	if p.pathTried != "" {
		tried = " (tried in a rolled-back transaction: " + p.pathTried + ")"
	}
	const catalog = "catalog path (TimescaleDB's catalog restored between timescaledb_pre_restore() and timescaledb_post_restore())"
	const api = "catalog-less path (no row written into TimescaleDB's catalog; TimescaleDB's API as the hypertables' owner)"
	switch {
	case p.path.Path == schema.PathCatalog && p.pathErr != nil:
		return []Finding{finding(Fail, "target",
			fmt.Sprintf("%s: %s; but %s fails: %s", catalog, p.path.Why, p.pathSQL, dbconn.Reason(p.pathErr)),
			"connect to the target as a superuser, or use --restore-path api (TimescaleDB's API as the hypertables' owner)")}
	case p.path.Path == schema.PathCatalog:
		return []Finding{finding(Pass, "target", catalog+": "+p.path.Why+tried, "")}
	case p.pathErr != nil:
		return []Finding{finding(Fail, "target",
			fmt.Sprintf("%s: %s; but %s fails: %s", api, p.path.Why, p.pathSQL, dbconn.Reason(p.pathErr)),
			fmt.Sprintf("connect to the target as the owner of the database or a superuser, or GRANT %s what the error names", inventory.Ident(u)))}
	}
	return []Finding{finding(Pass, "target", api+": "+p.path.Why+tried, "")}
}
