package preflight_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/preflight"
	"github.com/tsmigrate/tsmigrate/internal/schema"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func config(t *testing.T, role, uri string) *dbconn.Config {
	t.Helper()
	c, err := dbconn.Parse(role, uri)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// userURI is srv's URI for db logged in as user with password pw.
func userURI(srv *testenv.Server, user, pw, db string) string {
	u, _ := url.Parse(srv.SuperURI(db))
	u.User = url.UserPassword(user, pw)
	return u.String()
}

func runPreflight(t *testing.T, source, target string) *preflight.Report {
	t.Helper()
	return runPreflightPath(t, source, target, "")
}

// runPreflightPath runs pre-flight for a migration with --restore-path path.
func runPreflightPath(t *testing.T, source, target string, path schema.RestorePath) *preflight.Report {
	t.Helper()
	r, err := preflight.Run(context.Background(), preflight.Options{
		Source: config(t, "source", source), Target: config(t, "target", target), RestorePath: path})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func find(t *testing.T, r *preflight.Report, check string) preflight.Finding {
	t.Helper()
	for _, f := range r.Findings {
		if f.Check == check {
			return f
		}
	}
	t.Fatalf("no finding of %s", check)
	return preflight.Finding{}
}

func expect(t *testing.T, r *preflight.Report, check string, st preflight.Status, words ...string) {
	t.Helper()
	f := find(t, r, check)
	if f.Status != st {
		t.Errorf("%s: %s, want %s: %s", check, f.Status, st, f.Saw)
		return
	}
	for _, w := range words {
		if !strings.Contains(f.Saw, w) {
			t.Errorf("%s: %q does not mention %q", check, f.Saw, w)
		}
	}
}

var roleSeq int

// role creates a login role with a password, dropped at the end of the test.
func role(t *testing.T, srv *testenv.Server, attrs string) string {
	t.Helper()
	roleSeq++
	return roleNamed(t, srv, fmt.Sprintf("pf_user_%d", roleSeq), attrs)
}

// roleNamed is role with a name of the caller's, which may need quoting in SQL.
func roleNamed(t *testing.T, srv *testenv.Server, name, attrs string) string {
	t.Helper()
	id := pgx.Identifier{name}.Sanitize()
	testenv.MustExec(t, srv, "postgres", fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD 'pw-%s' %s", id, name, attrs))
	t.Cleanup(func() {
		srv.Exec(context.Background(), "postgres", "DROP OWNED BY "+id, "DROP ROLE IF EXISTS "+id)
	})
	return name
}

// A source user that neither owns the database nor may read all of it; a target user
// that may create objects but neither run timescaledb_pre_restore() nor write
// TimescaleDB's catalog. The source user's name needs quoting: the SQL the findings
// tell to run quotes it.
func TestRights(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src, tgt := testenv.NewDB(t, srv, true), testenv.NewDB(t, srv, false)
	roleSeq++
	reader := roleNamed(t, srv, fmt.Sprintf("PF Reader-ü %d", roleSeq), "")
	owner := role(t, srv, "")
	testenv.MustExec(t, srv, src,
		`CREATE TABLE m (time timestamptz NOT NULL, v int)`,
		`SELECT create_hypertable('m', 'time')`,
		`INSERT INTO m VALUES (now(), 1)`,
		`CREATE TABLE secret (x int)`,
		`GRANT SELECT ON m TO `+pgx.Identifier{reader}.Sanitize())
	testenv.MustExec(t, srv, "postgres", "ALTER DATABASE "+tgt+" OWNER TO "+owner)

	r := runPreflight(t, userURI(srv, reader, "pw-"+reader, src), userURI(srv, owner, "pw-"+owner, tgt))
	expect(t, r, "source-read", preflight.Fail, "public.secret")
	if saw := find(t, r, "source-read").Saw; strings.Contains(saw, "chunk") || strings.Contains(saw, "public.m") {
		t.Errorf("source-read: the hypertable granted to %s and its chunks are reported unreadable: %s", reader, saw)
	}
	expect(t, r, "source-freeze", preflight.Fail, reader, "owner postgres")
	expect(t, r, "source-terminate", preflight.Warn, reader)
	quoted := pgx.Identifier{reader}.Sanitize()
	if do := find(t, r, "source-terminate").Do; !strings.Contains(do, "GRANT pg_signal_backend TO "+quoted+",") {
		t.Errorf("source-terminate: %q does not quote the role as %s", do, quoted)
	}
	if do := find(t, r, "source-freeze").Do; !strings.Contains(do, "GRANT postgres TO "+quoted) {
		t.Errorf("source-freeze: %q does not quote the role as %s", do, quoted)
	}
	expect(t, r, "target-create", preflight.Pass)
	expect(t, r, "timescaledb-version", preflight.Pass)
	expect(t, r, "target-restore-mode", preflight.Pass, "catalog-less path",
		owner+" may not run timescaledb_pre_restore() and timescaledb_post_restore() (not SECURITY DEFINER, and they need a superuser)",
		"may not write TimescaleDB's catalog (_timescaledb_catalog.")
	if !r.Failed() {
		t.Error("report does not fail")
	}
	catalog := runPreflightPath(t, userURI(srv, reader, "pw-"+reader, src), userURI(srv, owner, "pw-"+owner, tgt), schema.PathCatalog)
	expect(t, catalog, "target-restore-mode", preflight.Fail, "--restore-path catalog, but "+owner+" may not run timescaledb_pre_restore()")
	// The probe left nothing behind on the target.
	r = runPreflight(t, srv.SuperURI(src), srv.SuperURI(tgt))
	expect(t, r, "target-empty", preflight.Pass)
	if r.Target.TimescaleDB != "" {
		t.Errorf("the probe left TimescaleDB %s installed on the target", r.Target.TimescaleDB)
	}
}

// Activity worth knowing before a freeze is reported as warnings.
func TestSourceActivity(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src, tgt := testenv.NewDB(t, srv, false), testenv.NewDB(t, srv, false)
	slot := "pf_slot_" + src
	testenv.MustExec(t, srv, src,
		`CREATE UNLOGGED TABLE cache (k text)`,
		`SELECT lo_create(0)`,
		// The slot first: creating a logical slot waits for open transactions, prepared ones too.
		`SELECT pg_create_logical_replication_slot('`+slot+`', 'pgoutput')`,
		`BEGIN; INSERT INTO cache VALUES ('x'); PREPARE TRANSACTION 'pf_prepared'`,
		`CREATE SUBSCRIPTION pf_sub CONNECTION 'host=127.0.0.1 port=1 dbname=x' PUBLICATION p WITH (connect = false)`)
	t.Cleanup(func() {
		srv.Exec(context.Background(), src, `ROLLBACK PREPARED 'pf_prepared'`, `SELECT pg_drop_replication_slot('`+slot+`')`,
			`ALTER SUBSCRIPTION pf_sub SET (slot_name = NONE)`, `DROP SUBSCRIPTION pf_sub`)
	})
	r := runPreflight(t, srv.SuperURI(src), srv.SuperURI(tgt))
	expect(t, r, "unlogged-tables", preflight.Warn, "public.cache")
	expect(t, r, "large-objects", preflight.Warn, "1 large object")
	expect(t, r, "prepared-transactions", preflight.Warn, "pf_prepared")
	expect(t, r, "replication-slots", preflight.Warn, slot, "logical pgoutput")
	expect(t, r, "subscriptions", preflight.Warn, "pf_sub (disabled)", "connect = false")
	if do := find(t, r, "subscriptions").Do; !strings.Contains(do, "copy_data = false") {
		t.Errorf("subscriptions: %q does not say to refresh without copying the rows again", do)
	}
	expect(t, r, "timescaledb-version", preflight.Pass, "does not use TimescaleDB")
	if r.Failed() {
		t.Errorf("activity alone fails preflight: %+v", r.Findings)
	}
}

func TestUnreachableTarget(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	_, err = preflight.Run(context.Background(), preflight.Options{
		Source: config(t, "source", srv.SuperURI("postgres")),
		Target: config(t, "target", fmt.Sprintf("host=127.0.0.1 port=%d user=x password=not-the-password", port))})
	var e *exit.Error
	if !errors.As(err, &e) || e.Code != exit.Usage || !strings.HasPrefix(e.Msg, "target: cannot connect") {
		t.Fatalf("error %v, want an exit-2 error naming the target", err)
	}
}

// The owner of the source database may set default_transaction_read_only, but on
// PostgreSQL 15+ not the freeze record (a custom setting) until a superuser grants SET
// on it: pre-flight tries both, rolls back, and says which grant is missing.
func TestSourceOwnerFreezeRecord(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src, tgt := testenv.NewDB(t, srv, true), testenv.NewDB(t, srv, false)
	owner := role(t, srv, "")
	testenv.MustExec(t, srv, "postgres", "ALTER DATABASE "+src+" OWNER TO "+owner)
	srcURI := userURI(srv, owner, "pw-"+owner, src)

	r := runPreflight(t, srcURI, srv.SuperURI(tgt))
	expect(t, r, "source-freeze", preflight.Fail, owner, "may not store the freeze record", "SQLSTATE 42501")
	if do := find(t, r, "source-freeze").Do; !strings.Contains(do, "GRANT SET ON PARAMETER tsmigrate.freeze_record TO "+owner) {
		t.Errorf("source-freeze: %q does not give the grant", do)
	}
	var settings int
	conn := connectSuper(t, srv)
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = $1`, src).Scan(&settings); err != nil || settings != 0 {
		t.Fatalf("the probe left %d database settings behind (%v)", settings, err)
	}

	testenv.MustExec(t, srv, "postgres", "GRANT SET ON PARAMETER tsmigrate.freeze_record TO "+owner)
	r = runPreflight(t, srcURI, srv.SuperURI(tgt))
	expect(t, r, "source-freeze", preflight.Pass, owner, "rolled-back transaction")
}

func connectSuper(t *testing.T, srv *testenv.Server) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), srv.SuperURI("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// The source database's own settings, privileges and comment are tried on the target
// in the rolled-back transaction: a target user who owns the database but is no
// superuser is refused one reserved to superusers and another role's, named without
// their values; a superuser is given all of them; a user who owns nothing is refused
// the settings, and its REVOKE is seen to change nothing. The target keeps none.
func TestDatabaseSettings(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src, tgt := testenv.NewDB(t, srv, false), testenv.NewDB(t, srv, false)
	owner := role(t, srv, "")
	other := role(t, srv, "")
	testenv.MustExec(t, srv, "postgres", "ALTER DATABASE "+tgt+" OWNER TO "+owner,
		"ALTER DATABASE "+src+" SET log_min_duration_statement = '123s'",
		"ALTER DATABASE "+src+" SET search_path = public, \"$user\"",
		"ALTER ROLE "+other+" IN DATABASE "+src+" SET work_mem = '3MB'",
		"COMMENT ON DATABASE "+src+" IS 'the app'")

	r := runPreflight(t, srv.SuperURI(src), userURI(srv, owner, "pw-"+owner, tgt))
	expect(t, r, "database-settings", preflight.Warn,
		`log_min_duration_statement (permission denied to set parameter "log_min_duration_statement" (SQLSTATE 42501))`,
		"work_mem of role "+other+" (permission denied to alter role",
		"gives the target database its search_path, comment")
	f := find(t, r, "database-settings")
	if strings.Contains(f.Saw+f.Do, "123s") || strings.Contains(f.Saw+f.Do, "3MB") {
		t.Errorf("database-settings shows a value: %s / %s", f.Saw, f.Do)
	}
	if !strings.Contains(f.Do, "ALTER DATABASE ... SET; ALTER ROLE ... IN DATABASE ... SET") {
		t.Errorf("database-settings does not say how to give them: %s", f.Do)
	}
	r = runPreflight(t, srv.SuperURI(src), srv.SuperURI(tgt))
	expect(t, r, "database-settings", preflight.Pass, "log_min_duration_statement, search_path, work_mem of role "+other+", comment will be given")

	// A user who may connect and create but owns nothing: ALTER DATABASE is refused,
	// and a REVOKE it may not make changes nothing (the server only warns).
	testenv.MustExec(t, srv, "postgres", "REVOKE TEMPORARY ON DATABASE "+src+" FROM PUBLIC")
	r = runPreflight(t, srv.SuperURI(src), userURI(srv, other, "pw-"+other, tgt))
	expect(t, r, "database-settings", preflight.Warn, "search_path (must be owner of database "+tgt,
		"revoke of TEMPORARY from PUBLIC (accepted, but the target does not hold it afterwards)")

	conn, err := pgx.Connect(context.Background(), srv.SuperURI(tgt))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	var comment *string
	if err := conn.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
		WHERE d.datname = current_database()), shobj_description(d.oid, 'pg_database') FROM pg_database d WHERE d.datname = current_database()`).Scan(&n, &comment); err != nil {
		t.Fatal(err)
	}
	if n != 0 || comment != nil {
		t.Errorf("the probe left %d settings and comment %v on the target", n, comment)
	}
}

// TimescaleDB in another schema than public on the source passes, tried there on the
// target; installed on the target in another schema than the source's, it blocks the
// migration before anything changes, saying what to do.
func TestTimescaleSchema(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	// The source's extension in a schema other than public: the probe creates it there
	// on the target, then reads the rights on timescaledb_pre_restore() there (the
	// target user, a non-superuser owner, may not run it on a stock server: the finding
	// says so, not that the function is missing), and leaves nothing behind.
	src, tgt := testenv.NewDB(t, srv, false), testenv.NewDB(t, srv, false)
	owner := role(t, srv, "")
	testenv.MustExec(t, srv, src, `CREATE SCHEMA "Ext Schema"`, `CREATE EXTENSION timescaledb SCHEMA "Ext Schema"`)
	testenv.MustExec(t, srv, "postgres", "ALTER DATABASE "+tgt+" OWNER TO "+owner)
	r := runPreflight(t, srv.SuperURI(src), userURI(srv, owner, "pw-"+owner, tgt))
	expect(t, r, "timescaledb-version", preflight.Pass, "in schema Ext Schema", "CREATE EXTENSION tried")
	expect(t, r, "target-restore-mode", preflight.Pass, "catalog-less path", owner+" may not run timescaledb_pre_restore() and timescaledb_post_restore()")
	r = runPreflightPath(t, srv.SuperURI(src), userURI(srv, owner, "pw-"+owner, tgt), schema.PathCatalog)
	expect(t, r, "target-restore-mode", preflight.Fail, owner+" may not run timescaledb_pre_restore() and timescaledb_post_restore()")
	r = runPreflight(t, srv.SuperURI(src), srv.SuperURI(tgt))
	expect(t, r, "target-empty", preflight.Pass)
	if r.Target.TimescaleDB != "" {
		t.Errorf("the probe left TimescaleDB %s installed on the target", r.Target.TimescaleDB)
	}
	c, err := pgx.Connect(context.Background(), srv.SuperURI(tgt))
	if err != nil {
		t.Fatal(err)
	}
	var left bool
	err = c.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'Ext Schema')`).Scan(&left)
	c.Close(context.Background())
	if err != nil || left {
		t.Errorf("the probe left schema \"Ext Schema\" on the target (%v)", err)
	}

	// The target holding it in the source's schema already: that schema is no user object.
	testenv.MustExec(t, srv, tgt, `CREATE SCHEMA "Ext Schema"`, `CREATE EXTENSION timescaledb SCHEMA "Ext Schema"`)
	r = runPreflight(t, srv.SuperURI(src), srv.SuperURI(tgt))
	expect(t, r, "timescaledb-version", preflight.Pass, "installed on both in schema Ext Schema")
	expect(t, r, "target-empty", preflight.Pass)

	// The target holding it in another schema than the source's.
	src2, tgt2 := testenv.NewDB(t, srv, true), testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, tgt2, `CREATE SCHEMA ext`, `CREATE EXTENSION timescaledb SCHEMA ext`)
	r = runPreflight(t, srv.SuperURI(src2), srv.SuperURI(tgt2))
	expect(t, r, "timescaledb-version", preflight.Fail, "the target database has TimescaleDB installed in schema ext, the source in public")
	if do := find(t, r, "timescaledb-version").Do; !strings.Contains(do, `DROP EXTENSION timescaledb; CREATE EXTENSION timescaledb SCHEMA "public" VERSION`) {
		t.Errorf("timescaledb-version does not say what to do: %s", do)
	}
	r = runPreflight(t, srv.SuperURI(tgt), srv.SuperURI(tgt2))
	if do := find(t, r, "timescaledb-version").Do; !strings.Contains(do, `CREATE SCHEMA IF NOT EXISTS "Ext Schema"; CREATE EXTENSION timescaledb SCHEMA "Ext Schema" VERSION`) {
		t.Errorf("timescaledb-version does not say what to do: %s", do)
	}
}

// A table of the user's own in TimescaleDB's schema _timescaledb_internal on the
// source: a target user who may not create tables there (the database's owner and
// nothing more) is told so by target-create, naming it; a superuser passes.
func TestUserTableInTimescaleSchema(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src := testenv.NewDB(t, srv, true)
	testenv.MustExec(t, srv, src, `CREATE TABLE _timescaledb_internal."My Notes" (id int)`)
	dst, ownerURI := testenv.NewOwnerDB(t, srv)
	r := runPreflight(t, srv.SuperURI(src), ownerURI)
	expect(t, r, "target-create", preflight.Fail, `_timescaledb_internal."My Notes"`, "may not create there")
	r = runPreflight(t, srv.SuperURI(src), srv.SuperURI(dst))
	expect(t, r, "target-create", preflight.Pass)
}

// A target database that already holds extensions the source's does not (or at another
// version) fails extensions: the restore creates an extension only where there is none,
// so they would stay, and verify would report them after the whole copy. One that
// managed services install in every database (pg_stat_statements) is the target's own:
// named, not blocking.
func TestTargetOwnExtensions(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, src, `CREATE EXTENSION hstore`, `CREATE TABLE t (x int)`)

	own := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, own, `CREATE EXTENSION pg_stat_statements`, `CREATE EXTENSION hstore`)
	r := runPreflight(t, srv.SuperURI(src), srv.SuperURI(own))
	expect(t, r, "extensions", preflight.Pass, "the target database's own pg_stat_statements", "verify leaves it out")
	if r.Failed() {
		t.Errorf("a managed service's extension blocks: %+v", r.Findings)
	}

	extra := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, extra, `CREATE EXTENSION pg_stat_statements`, `CREATE EXTENSION hstore VERSION '1.7'`, `CREATE EXTENSION citext`)
	r = runPreflight(t, srv.SuperURI(src), srv.SuperURI(extra))
	expect(t, r, "extensions", preflight.Fail, "extensions the source database does not have: citext ",
		"extensions at another version than the source's: hstore 1.7 (the source's: 1.8)", "own pg_stat_statements")
	if f := find(t, r, "extensions"); !strings.Contains(f.Do, "DROP EXTENSION") {
		t.Errorf("extensions: do %q", f.Do)
	}

	// A newer version on the target is an upgrade on the way, which verify says as one.
	older := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, older, `CREATE EXTENSION hstore VERSION '1.7'`, `CREATE TABLE t (x int)`)
	newer := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, newer, `CREATE EXTENSION hstore`)
	r = runPreflight(t, srv.SuperURI(older), srv.SuperURI(newer))
	expect(t, r, "extensions", preflight.Pass, "newer versions than the source's of hstore 1.8 (the source's: 1.7): an upgrade on the way")
}

// The source database grants privileges to roles, and names roles in a row-security
// policy, that the target server does not have: restoring them would fail after the
// freeze. granted-roles fails, naming them and how they are used, and pointing at
// --roles, until they exist there.
func TestRolesOnlyOnSource(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	other := testenv.Need(t, testenv.PG17TS, testenv.Options{})
	reader := role(t, srv, "")
	roleSeq++
	pol := roleNamed(t, srv, fmt.Sprintf("Policy Role %d", roleSeq), "")
	src := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, src, `CREATE TABLE t (x int)`, `GRANT SELECT ON t TO `+reader,
		`ALTER TABLE t ENABLE ROW LEVEL SECURITY`, `CREATE POLICY p ON t TO `+pgx.Identifier{pol}.Sanitize()+` USING (true)`)
	tgt := testenv.NewDB(t, other, false)

	r := runPreflight(t, srv.SuperURI(src), other.SuperURI(tgt))
	expect(t, r, "granted-roles", preflight.Fail, reader+" (privileges)", pgx.Identifier{pol}.Sanitize()+" (row-security policies)")
	if do := find(t, r, "granted-roles").Do; !strings.Contains(do, "--roles") || !strings.Contains(do, "CREATE ROLE "+reader) || !strings.Contains(do, "CREATE ROLE "+pgx.Identifier{pol}.Sanitize()) {
		t.Errorf("roles: do %q", do)
	}
	// With --roles the migration creates them first: nothing to block, the roles
	// check says it would create them.
	withRoles, err := preflight.Run(context.Background(), preflight.Options{Roles: true,
		Source: config(t, "source", srv.SuperURI(src)), Target: config(t, "target", other.SuperURI(tgt))})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range withRoles.Findings {
		if f.Status == preflight.Fail {
			t.Errorf("with --roles: %s fails: %s", f.Check, f.Saw)
		}
	}
	if f := findingsOf(withRoles, "roles"); !strings.Contains(f, "would create") || !strings.Contains(f, reader) {
		t.Errorf("with --roles, roles findings: %s", f)
	}
	testenv.MustExec(t, other, "postgres", "CREATE ROLE "+reader, "CREATE ROLE "+pgx.Identifier{pol}.Sanitize())
	r = runPreflight(t, srv.SuperURI(src), other.SuperURI(tgt))
	expect(t, r, "granted-roles", preflight.Pass, reader, pol)
}

// Row-level security that applies to the source user: pg_dump and the copy read with
// row_security off and would fail after the freeze, so source-read fails before. A
// user with BYPASSRLS, or the owner of a table that does not force row security,
// passes.
func TestSourceReadRowSecurity(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	reader := role(t, srv, "")
	src, tgt := testenv.NewDB(t, srv, false), testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, src, `CREATE TABLE t (x int)`, `INSERT INTO t SELECT generate_series(1, 10)`,
		`ALTER TABLE t ENABLE ROW LEVEL SECURITY`, `CREATE POLICY few ON t FOR SELECT USING (x < 5)`,
		`CREATE TABLE mine (x int)`, `ALTER TABLE mine OWNER TO `+reader, `ALTER TABLE mine ENABLE ROW LEVEL SECURITY`,
		`GRANT SELECT ON t TO `+reader)
	uri := userURI(srv, reader, "pw-"+reader, src)
	r := runPreflight(t, uri, srv.SuperURI(tgt))
	expect(t, r, "source-read", preflight.Fail, "row-level security policies apply to "+reader+" on public.t:")
	if f := find(t, r, "source-read"); strings.Contains(f.Saw, "mine") || !strings.Contains(f.Do, "ALTER ROLE "+reader+" BYPASSRLS") {
		t.Errorf("source-read: %+v", f)
	}
	testenv.MustExec(t, srv, src, `ALTER TABLE mine FORCE ROW LEVEL SECURITY`)
	expect(t, runPreflight(t, uri, srv.SuperURI(tgt)), "source-read", preflight.Fail, "public.mine, public.t:")
	testenv.MustExec(t, srv, "postgres", "ALTER ROLE "+reader+" BYPASSRLS")
	expect(t, runPreflight(t, uri, srv.SuperURI(tgt)), "source-read", preflight.Pass)
}

// A source and target on one server share its client sessions: connections counts the
// sessions of both sides against it.
func TestConnectionsOneServer(t *testing.T) {
	srv := testenv.Need(t, testenv.PG17TS, testenv.Options{Settings: map[string]string{"max_connections": "20"}})
	src, tgt := testenv.NewDB(t, srv, false), testenv.NewDB(t, srv, false)
	check := func(jobs int) preflight.Finding {
		r, err := preflight.Run(context.Background(), preflight.Options{Jobs: jobs,
			Source: config(t, "source", srv.SuperURI(src)), Target: config(t, "target", srv.SuperURI(tgt))})
		if err != nil {
			t.Fatal(err)
		}
		return find(t, r, "connections")
	}
	if f := check(5); f.Status != preflight.Fail || !strings.Contains(f.Saw, "8 client sessions on the source and 13 on the target") ||
		!strings.Contains(f.Saw, "both are on one server, which takes") || !strings.Contains(f.Saw, ": too few") || !strings.Contains(f.Do, "migrate with --jobs 4 or fewer") {
		t.Errorf("--jobs 5: %+v", f)
	}
	if f := check(4); f.Status != preflight.Pass {
		t.Errorf("--jobs 4: %+v", f)
	}
}
