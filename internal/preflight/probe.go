package preflight

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/freeze"
	"github.com/tsmigrate/tsmigrate/internal/inventory"
	"github.com/tsmigrate/tsmigrate/internal/schema"
	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// targetProbe is what the target's user could actually do, tried inside one transaction
// that is rolled back, so that the report can quote the server's own errors. Checked on
// PostgreSQL 15-17 and TimescaleDB 2.19.3 (Apache build), plain and managed-like.
type targetProbe struct {
	ran bool // the transaction ran (the target is not a standby)

	createSchemaErr error // CREATE SCHEMA (tried when the source has schemas besides public)
	triedSchema     bool
	createTableErr  error // CREATE TABLE in public (tried when public exists)
	triedTable      bool

	// TimescaleDB parts, tried when the source uses TimescaleDB and the target can
	// install its version.
	triedExtension bool   // CREATE EXTENSION timescaledb (in the source's schema, at its version) was needed
	extensionSQL   string // the statement that failed (the schema's CREATE, or the extension's)
	extensionErr   error  // and its error
	license        string
	// The restore path (schema.RestorePath) the migration will take, why, and what
	// that path needs, tried.
	triedRestoring bool
	path           schema.PathChoice
	pathTried      string // what was tried, for the finding ("" when nothing needed trying)
	pathSQL        string // the statement that failed
	pathErr        error  // and its error

	// tsAPI is what the target's TimescaleDB offers (functions, views and their
	// columns), read when it is newer than the source's (see checkTimescaleUpgrade).
	tsAPI *timescaleAPI

	// The source database's own settings and comment, each given to the target
	// database as the migration will (schema.DatabaseSettings), and those it refused.
	settings        []schema.Statement
	settingsRefused []refusal
	databaseName    string // the target database's

	// roles: migrate --roles's plan, tried (Options.Roles).
	roles rolesProbe
}

// refusal is a statement the target refused, and its error.
type refusal struct {
	st  schema.Statement
	err error
}

const probeName = "tsmigrate_preflight_probe"

// probeTarget fills e.probe. Errors the user must see are kept in the probe; only a
// failure of the probe's own transaction is returned.
func (e *env) probeTarget(ctx context.Context) error {
	if e.tgtInv.Server.InRecovery {
		return nil
	}
	p := &e.probe
	conn := e.tgt.Conn
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	p.ran = true

	if e.sourceNeedsSchemas() {
		p.triedSchema = true
		p.createSchemaErr = try(ctx, tx, "CREATE SCHEMA "+probeName)
	}
	if slices.ContainsFunc(e.tgtInv.Schemas, func(s inventory.Schema) bool { return s.Name == "public" }) {
		p.triedTable = true
		p.createTableErr = try(ctx, tx, "CREATE TABLE public."+probeName+" (x int)")
	}
	if e.opt.Roles {
		if err := e.tryRoles(ctx, tx); err != nil {
			return err
		}
	}
	set, err := schema.ReadDatabaseSettings(ctx, e.src.Conn, freeze.Settings...)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	p.databaseName = e.tgtInv.Name
	p.settings = set.Statements(p.databaseName)
	if len(p.settings) > 0 {
		if err := p.trySettings(ctx, tx, conn); err != nil {
			return err
		}
	}

	ts := e.srcInv.TimescaleDB
	if ts == nil {
		return nil
	}
	installed, plan := e.tgtInv.TimescaleDB, e.tsPlan
	switch {
	case plan.Problem != "" || (installed != nil && installed.Schema != ts.Schema),
		plan.Upgrade() && e.opt.Engine == EngineDump:
		return nil // reported by timescaledb-version; nothing here would be meaningful
	case installed == nil:
		p.triedExtension = true
		// As the migration creates it: in the source's schema, made first when missing,
		// at the version it picks.
		for _, q := range schema.TimescaleDBStatements(ts.Schema, plan.Version) {
			if p.extensionErr = tryKeep(ctx, tx, q); p.extensionErr != nil {
				p.extensionSQL = q
				return nil
			}
		}
		if err := tx.QueryRow(ctx, licenseSQL).Scan(&p.license); err != nil {
			return fmt.Errorf("probe license: %w", err)
		}
	}
	if plan.Upgrade() {
		if p.tsAPI, err = readTimescaleAPI(ctx, tx); err != nil {
			return fmt.Errorf("probe: %w", err)
		}
	}
	p.triedRestoring = true
	rights, err := schema.ReadCatalogRights(ctx, tx)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	rights.Across(plan)
	p.path = rights.Choose(e.opt.RestorePath, e.opt.Engine == EngineDump)
	switch {
	case p.path.Problem != "":
	case p.path.Path == schema.PathCatalog && !rights.Superuser:
		p.tryCatalogPath(ctx, tx, rights)
	case p.path.Path == schema.PathAPI:
		p.tryAPIPath(ctx, tx, rights.Schema)
	}
	return nil
}

// tryCatalogPath tries what the catalog path needs of a user who is no superuser: a
// write of no row into each of TimescaleDB's catalog tables (the privileges are
// checked all the same), then timescaledb_pre_restore() and timescaledb_post_restore()
// in one statement. pre_restore stops the database's background workers, which no
// rollback restarts: post_restore, in the same statement so that nothing can come in
// between, starts them again (restarting them stays a superuser's right where the
// owner runs both as SECURITY DEFINER functions). Its privileges are checked before
// either runs.
func (p *targetProbe) tryCatalogPath(ctx context.Context, tx pgx.Tx, rights *schema.CatalogRights) {
	p.pathTried = fmt.Sprintf("writes of no row into %d catalog tables, timescaledb_pre_restore() and timescaledb_post_restore()", len(rights.Tables))
	for _, t := range rights.Tables {
		q := "INSERT INTO " + t + " SELECT * FROM " + t + " WHERE false"
		if p.pathErr = try(ctx, tx, q); p.pathErr != nil {
			p.pathSQL = q
			return
		}
	}
	q := fmt.Sprintf("SELECT %[1]s.timescaledb_pre_restore(), %[1]s.timescaledb_post_restore()", rights.Schema)
	if p.pathErr = try(ctx, tx, q); p.pathErr != nil {
		p.pathSQL = q
	}
}

// tryAPIPath tries what the catalog-less path needs: a hypertable made by the user,
// and a chunk made by one row, in public when the user may create tables there, else
// in a schema of its own.
func (p *targetProbe) tryAPIPath(ctx context.Context, tx pgx.Tx, extSchema string) {
	p.pathTried = "a hypertable, and a chunk made by a row"
	inSchema := "public"
	stmts := []string{}
	if !p.triedTable || p.createTableErr != nil {
		inSchema = probeName
		stmts = append(stmts, "CREATE SCHEMA "+probeName)
	}
	table := pgx.Identifier{inSchema, probeName}.Sanitize()
	stmts = append(stmts,
		"CREATE TABLE "+table+" (t timestamptz NOT NULL, v int)",
		"SELECT "+extSchema+".create_hypertable("+sqltext.Literal(table)+"::regclass, 't')",
		"INSERT INTO "+table+" VALUES ('2000-01-01', 1)")
	for _, q := range stmts {
		if p.pathErr = tryKeep(ctx, tx, q); p.pathErr != nil {
			p.pathSQL = q
			return
		}
	}
}

const licenseSQL = `SELECT coalesce(current_setting('timescaledb.license', true), '')`

// try runs sql under a savepoint and returns its error, undoing it either way.
func try(ctx context.Context, tx pgx.Tx, sql string) error {
	return trySQL(ctx, tx, sql, false)
}

// tryKeep is try that keeps what sql did when it succeeds.
func tryKeep(ctx context.Context, tx pgx.Tx, sql string) error {
	return trySQL(ctx, tx, sql, true)
}

func trySQL(ctx context.Context, tx pgx.Tx, sql string, keep bool) error {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return err
	}
	if _, err := sp.Exec(ctx, sql); err != nil {
		if rbErr := sp.Rollback(ctx); rbErr != nil {
			return fmt.Errorf("%w (and rolling back to the savepoint: %v)", err, rbErr)
		}
		return err
	}
	if keep {
		return sp.Commit(ctx) // releases the savepoint; the outer transaction still rolls back
	}
	return sp.Rollback(ctx)
}

// errNotHeld is a statement the target accepted without doing it (a REVOKE by a role
// without the grant option only warns).
var errNotHeld = errors.New("accepted, but the target does not hold it afterwards")

// trySettings tries p.settings on the target under a savepoint that is rolled back,
// keeping each one that works until the end so that reading the target's settings
// back shows those accepted without effect too.
func (p *targetProbe) trySettings(ctx context.Context, tx pgx.Tx, conn *pgx.Conn) error {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	defer sp.Rollback(context.WithoutCancel(ctx))
	var kept []schema.Statement
	for _, st := range p.settings {
		if err := tryKeep(ctx, sp, st.SQL); err != nil {
			p.settingsRefused = append(p.settingsRefused, refusal{st, err})
		} else {
			kept = append(kept, st)
		}
	}
	on, err := schema.ReadDatabaseSettings(ctx, conn, freeze.Settings...)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	held := on.Held(p.databaseName)
	for _, st := range kept {
		if !held(st) {
			p.settingsRefused = append(p.settingsRefused, refusal{st, errNotHeld})
		}
	}
	return sp.Rollback(ctx)
}

func (e *env) sourceNeedsSchemas() bool {
	for _, s := range e.srcInv.Schemas {
		if s.Name != "public" {
			return true
		}
	}
	return false
}
