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
	triedRestoring bool
	setErr         error // SET LOCAL timescaledb.restoring = on
	alterErr       error // ALTER DATABASE ... SET timescaledb.restoring = on
	triedPre       bool  // timescaledb_pre_restore() was called (not for superusers)
	preRestoreErr  error

	// The source database's own settings and comment, each given to the target
	// database as the migration will (schema.DatabaseSettings), and those it refused.
	settings        []schema.Statement
	settingsRefused []refusal
	databaseName    string // the target database's
}

// refusal is a statement the target refused, and its error.
type refusal struct {
	st  schema.Statement
	err error
}

const (
	probeName = "tsmigrate_preflight_probe"
	// restartWorkersSQL undoes a successful timescaledb_pre_restore() probe: rolling back
	// does not restart the background workers it stopped.
	restartWorkersSQL = `SELECT _timescaledb_functions.restart_background_workers()`
)

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
	installed := e.tgtInv.TimescaleDB
	switch {
	case installed != nil && (installed.Version != ts.Version || installed.Schema != ts.Schema):
		return nil // reported by timescaledb-version; nothing here would be meaningful
	case installed == nil:
		versions, _ := e.tgtInv.AvailableVersions("timescaledb")
		if !slices.Contains(versions, ts.Version) {
			return nil
		}
		p.triedExtension = true
		// As the migration creates it: in the source's schema, made first when missing.
		for _, q := range schema.TimescaleDBStatements(ts.Schema, ts.Version) {
			if p.extensionErr = tryKeep(ctx, tx, q); p.extensionErr != nil {
				p.extensionSQL = q
				return nil
			}
		}
		if err := tx.QueryRow(ctx, licenseSQL).Scan(&p.license); err != nil {
			return fmt.Errorf("probe license: %w", err)
		}
	}
	p.triedRestoring = true
	p.setErr = try(ctx, tx, "SET LOCAL timescaledb.restoring = on")
	p.alterErr = try(ctx, tx, "ALTER DATABASE "+pgx.Identifier{e.tgtInv.Name}.Sanitize()+" SET timescaledb.restoring = on")
	if e.tgtInv.User.Superuser {
		return nil
	}
	p.triedPre = true
	// The extension is in the source's schema here: installed there, or just created.
	p.preRestoreErr = try(ctx, tx, "SELECT "+pgx.Identifier{ts.Schema}.Sanitize()+".timescaledb_pre_restore()")
	if err := tx.Rollback(ctx); err != nil {
		return fmt.Errorf("probe rollback: %w", err)
	}
	if p.preRestoreErr == nil && installed != nil {
		if _, err := conn.Exec(ctx, restartWorkersSQL); err != nil {
			return fmt.Errorf("restart TimescaleDB background workers after the pre_restore probe: %w", err)
		}
	}
	return nil
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
