package migrate_test

import (
	"context"
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/freeze"
	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
	"github.com/tsmigrate/tsmigrate/internal/verify"
)

const appLoginPassword = "App-login-pw-5"

// rolesServer is a source server holding the roles of the example: an owner
// role, a login role with a password and a setting, a read-only group granted to it,
// a superuser role, and a role with a setting in the database only.
func rolesServer(t *testing.T) *testenv.Server {
	t.Helper()
	src := testenv.Need(t, testenv.PG17TS, testenv.Options{})
	testenv.MustExec(t, src, "postgres",
		"CREATE ROLE app_owner NOLOGIN",
		"CREATE ROLE app_read NOLOGIN",
		"CREATE ROLE app_login LOGIN PASSWORD '"+appLoginPassword+"' IN ROLE app_read",
		"ALTER ROLE app_login SET statement_timeout = '7s'",
		"CREATE ROLE admin_su SUPERUSER LOGIN PASSWORD 'Admin-su-pw-1'",
		"CREATE ROLE tuner NOLOGIN")
	return src
}

// rolesDatabase is a new database on src (rolesServer) whose objects belong to
// app_owner (one function to admin_su), with grants on a schema, tables, a sequence
// and a hypertable (its chunks too), default privileges, a row-security policy, a
// column grant, and settings of roles in the database.
func rolesDatabase(t *testing.T, src *testenv.Server) string {
	t.Helper()
	db := testenv.NewDB(t, src, true)
	testenv.MustExec(t, src, db,
		"ALTER ROLE tuner IN DATABASE "+db+" SET work_mem = '8MB'",
		"ALTER ROLE app_login IN DATABASE "+db+" SET search_path = app, public",
		"GRANT CREATE ON SCHEMA public TO app_owner",
		"CREATE SCHEMA app AUTHORIZATION app_owner",
		"SET ROLE app_owner",
		"CREATE TABLE app.devices (id serial PRIMARY KEY, name text, secret text)",
		"INSERT INTO app.devices (name, secret) SELECT 'd' || i, 's' || i FROM generate_series(1, 5) i",
		"CREATE SEQUENCE app.counter",
		"CREATE TABLE public.metrics (t timestamptz NOT NULL, device int, v float8)",
		"SELECT create_hypertable('public.metrics', 't', chunk_time_interval => interval '1 day')",
		"INSERT INTO metrics SELECT '2024-01-01'::timestamptz + i * interval '6 hours', i % 3, i FROM generate_series(1, 20) i",
		"CREATE VIEW app.latest AS SELECT device, max(t) AS t FROM public.metrics GROUP BY device",
		"CREATE FUNCTION app.bump() RETURNS bigint LANGUAGE sql AS 'SELECT nextval(''app.counter'')'",
		"GRANT USAGE ON SCHEMA app TO app_read",
		"GRANT SELECT (id, name) ON app.devices TO app_read",
		"GRANT SELECT ON app.latest TO app_read",
		"GRANT SELECT ON public.metrics TO app_read",
		"GRANT USAGE ON SEQUENCE app.counter TO app_read",
		"REVOKE EXECUTE ON FUNCTION app.bump() FROM PUBLIC",
		"GRANT EXECUTE ON FUNCTION app.bump() TO app_read",
		"ALTER DEFAULT PRIVILEGES IN SCHEMA app GRANT SELECT ON TABLES TO app_read",
		"ALTER TABLE app.devices ENABLE ROW LEVEL SECURITY",
		"CREATE POLICY readers ON app.devices FOR SELECT TO app_read USING (id < 4)",
		"RESET ROLE",
		"CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
		"ALTER FUNCTION public.f() OWNER TO admin_su",
		"GRANT CONNECT ON DATABASE "+db+" TO app_read")
	unfreezeAtCleanup(t, src, db)
	return db
}

// managedTargets are the managed-like targets of a migration as tsdbadmin, with the
// engines each takes: the cloud-like one either (the catalog path), the bare owner's
// the stream engine (the API path).
var managedTargets = []struct {
	flavour testenv.Flavour
	engine  string
}{{testenv.CloudLike, migrate.EngineStream}, {testenv.CloudLike, migrate.EngineDump}, {testenv.BareOwner, migrate.EngineStream}}

// verifyPrivilegesIdentical fails the test unless verify --privileges of the two
// databases finds them identical.
func verifyPrivilegesIdentical(t *testing.T, srcURI, tgtURI string) {
	t.Helper()
	rep, err := verify.Run(context.Background(), verify.Options{Source: cfg(t, "source", srcURI),
		Target: cfg(t, "target", tgtURI), Privileges: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Schema) > 0 || rep.UnitsDiffering > 0 {
		b, _ := json.MarshalIndent(rep.Schema, "", " ")
		t.Errorf("verify --privileges: %d units differ; schema differences:\n%s", rep.UnitsDiffering, b)
	}
}

// withUserURI is uri with another user and password.
func withUserURI(t *testing.T, uri, user, password string) string {
	t.Helper()
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(user, password)
	return u.String()
}

// verifierOf is role's password verifier on s ("" when none), read as the superuser.
func verifierOf(t *testing.T, s *testenv.Server, role string) string {
	t.Helper()
	var v *string
	if err := connect(t, s.SuperURI("postgres")).QueryRow(context.Background(),
		"SELECT rolpassword FROM pg_authid WHERE rolname = $1", role).Scan(&v); err != nil {
		t.Fatalf("role %s: %v", role, err)
	}
	if v == nil {
		return ""
	}
	return *v
}

// migrate --roles as tsdbadmin into the managed-like targets: the cloud-like one with
// either engine (the catalog path), the bare owner with the stream engine (the API
// path). The roles exist with the source's verifiers, memberships and settings;
// admin_su without SUPERUSER, named by the run; every owner and grant equal (verify
// --privileges identical, the chunks' too); app_login logs in with its password and
// reads its tables as on the source (row security, column grant). No verifier in the
// summary, its JSON, the events, nor the warnings.
func TestRolesIntoManagedTargets(t *testing.T) {
	src := rolesServer(t)
	for _, c := range managedTargets {
		engine := c.engine
		t.Run(string(c.flavour)+"/"+engine, func(t *testing.T) {
			ctx := context.Background()
			db := rolesDatabase(t, src)
			tgt := testenv.Need(t, testenv.PG17TS, testenv.Options{Flavour: c.flavour})
			var events []string
			sum, err := migrate.Run(ctx, migrate.Options{Engine: engine, Roles: true,
				Source: cfg(t, "source", src.URI(db)), Target: cfg(t, "target", tgt.URI(testenv.ManagedDB)),
				Jobs: 2, PgBin: src.ClientBin(), FreezeGrace: time.Second,
				OnEvent: func(e migrate.Event) { b, _ := json.Marshal(e); events = append(events, string(b)) }})
			if err != nil {
				t.Fatalf("migrate: %v; schema differences: %s\n%s", err, schemaDiffs(sum), strings.Join(events, "\n"))
			}
			if o := sum.Databases[0].Owners; o == nil || o.Set == 0 || len(o.NotSet) > 0 {
				t.Errorf("owners: %+v", o)
			}
			if sum.Roles == nil || !slices.Equal(sum.Roles.Created, []string{"admin_su", "app_login", "app_owner", "app_read", "tuner"}) {
				t.Fatalf("roles: %+v", sum.Roles)
			}
			if !slices.ContainsFunc(sum.Warnings, func(w string) bool { return strings.Contains(w, "admin_su") && strings.Contains(w, "SUPERUSER") }) {
				t.Errorf("no warning names admin_su's SUPERUSER: %q", sum.Warnings)
			}
			for _, r := range []string{"admin_su", "app_login"} {
				if v := verifierOf(t, src, r); v == "" || verifierOf(t, tgt, r) != v {
					t.Errorf("role %s: the target's password verifier is not the source's", r)
				}
			}
			tc := connect(t, tgt.SuperURI(testenv.ManagedDB))
			if super := scalar[bool](t, tc, "SELECT rolsuper FROM pg_roles WHERE rolname = 'admin_su'"); super {
				t.Error("admin_su is a superuser on the target")
			}
			if got := scalar[string](t, tc, `SELECT string_agg(m.rolname, ',') FROM pg_auth_members a
				JOIN pg_roles m ON m.oid = a.member WHERE a.roleid = 'app_read'::regrole AND m.rolname <> 'tsdbadmin'`); got != "app_login" {
				t.Errorf("members of app_read on the target: %s", got)
			}
			verifyPrivilegesIdentical(t, src.URI(db), tgt.URI(testenv.ManagedDB))
			login := connect(t, withUserURI(t, tgt.URI(testenv.ManagedDB), "app_login", appLoginPassword))
			if n := scalar[int64](t, login, "SELECT count(*) FROM metrics"); n != 20 {
				t.Errorf("app_login reads %d rows of metrics, want 20", n)
			}
			if n := scalar[int64](t, login, "SELECT count(name) FROM devices"); n != 3 {
				t.Errorf("app_login reads %d devices (search_path app, row security), want 3", n)
			}
			if _, err := login.Exec(ctx, "SELECT secret FROM app.devices"); err == nil {
				t.Error("app_login reads app.devices.secret, which it was not granted")
			}
			if v := scalar[string](t, login, "SHOW statement_timeout"); v != "7s" {
				t.Errorf("app_login's statement_timeout on the target: %s", v)
			}
			js, _ := json.Marshal(sum)
			all := string(js) + strings.Join(events, "\n") + strings.Join(sum.Warnings, "\n")
			for _, r := range []string{"admin_su", "app_login"} {
				if strings.Contains(all, verifierOf(t, src, r)) || strings.Contains(all, "SCRAM-SHA-256$") {
					t.Errorf("a password verifier is in the run's summary or events")
				}
			}
		})
	}
}

// migrate --roles by a source user who is no superuser (the source database's owner,
// granted what it reads, BYPASSRLS for the table with row security), as tsdbadmin into
// each managed-like target, which has one of the roles already with other attributes:
// the roles are created without passwords and the summary lists the login roles to set
// a password for; migrator is created without BYPASSRLS, named; the existing role is reported with how it differs, and left as it is
// (verify --privileges names the difference too, and nothing else). Then, into a new
// target, --roles-update gives it the source's attributes: verify is identical.
func TestRolesWithoutVerifiersAndExisting(t *testing.T) {
	src := rolesServer(t)
	testenv.MustExec(t, src, "postgres", "CREATE ROLE migrator LOGIN BYPASSRLS PASSWORD 'Migrator-pw-2'",
		"GRANT SET ON PARAMETER tsmigrate.freeze_record TO migrator")
	// app_read exists on the target already: LOGIN, a connection limit (NOLOGIN, none
	// on the source), without the membership of app_login.
	target := func(t *testing.T, flavour testenv.Flavour) *testenv.Server {
		tgt := testenv.Need(t, testenv.PG17TS, testenv.Options{Flavour: flavour})
		if _, err := connect(t, tgt.URI(testenv.ManagedDB)).Exec(context.Background(), "CREATE ROLE app_read LOGIN CONNECTION LIMIT 3"); err != nil {
			t.Fatal(err)
		}
		return tgt
	}
	privileges := func(t *testing.T, db string, tgt *testenv.Server) []string {
		rep, err := verify.Run(context.Background(), verify.Options{Source: cfg(t, "source", src.SuperURI(db)),
			Target: cfg(t, "target", tgt.URI(testenv.ManagedDB)), Privileges: true})
		if err != nil {
			t.Fatal(err)
		}
		var diffs []string
		for _, d := range rep.Schema {
			diffs = append(diffs, d.String())
		}
		return diffs
	}
	for _, c := range managedTargets {
		t.Run(string(c.flavour)+"/"+c.engine, func(t *testing.T) {
			ctx := context.Background()
			db := rolesDatabase(t, src)
			testenv.MustExec(t, src, "postgres", "ALTER DATABASE "+db+" OWNER TO migrator")
			testenv.MustExec(t, src, db, "GRANT USAGE ON SCHEMA app TO migrator",
				"GRANT SELECT ON ALL TABLES IN SCHEMA app, public TO migrator", "GRANT SELECT ON ALL SEQUENCES IN SCHEMA app TO migrator")
			tgt := target(t, c.flavour)
			opt := migrate.Options{Engine: c.engine, Roles: true,
				Source: cfg(t, "source", withUserURI(t, src.URI(db), "migrator", "Migrator-pw-2")), Target: cfg(t, "target", tgt.URI(testenv.ManagedDB)),
				Jobs: 2, PgBin: src.ClientBin(), FreezeGrace: time.Second}
			sum, err := migrate.Run(ctx, opt)
			if err != nil {
				t.Fatalf("migrate: %v; schema differences: %s", err, schemaDiffs(sum))
			}
			r := sum.Roles
			if r == nil || len(r.PasswordsCarried) > 0 || !slices.Equal(r.WithoutPassword, []string{"admin_su", "app_login", "migrator"}) {
				t.Fatalf("roles: %+v", r)
			}
			if !slices.ContainsFunc(sum.Warnings, func(w string) bool {
				return strings.Contains(w, "without a password") && strings.Contains(w, "app_login") && strings.Contains(w, `\password`)
			}) {
				t.Errorf("no warning says which roles need a password, and how: %q", sum.Warnings)
			}
			for _, n := range []string{"admin_su", "app_login", "migrator"} {
				if verifierOf(t, tgt, n) != "" {
					t.Errorf("role %s has a password on the target", n)
				}
			}
			if !slices.ContainsFunc(sum.Warnings, func(w string) bool { return strings.Contains(w, "role migrator was created without BYPASSRLS") }) {
				t.Errorf("no warning names migrator's BYPASSRLS, left out: %q", sum.Warnings)
			}
			if len(r.Existing) != 1 || r.Existing[0].Role != "app_read" || len(r.Existing[0].Differences) == 0 {
				t.Errorf("existing roles: %+v", r.Existing)
			}
			if !slices.ContainsFunc(sum.Warnings, func(w string) bool {
				return strings.Contains(w, "role app_read exists on the target and differs") && strings.Contains(w, "left as it is")
			}) {
				t.Errorf("no warning names the existing app_read: %q", sum.Warnings)
			}
			tc := connect(t, tgt.SuperURI(testenv.ManagedDB))
			if login, limit := scalar[bool](t, tc, "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'app_read'"),
				scalar[int](t, tc, "SELECT rolconnlimit FROM pg_roles WHERE rolname = 'app_read'"); !login || limit != 3 {
				t.Errorf("the existing app_read was changed: login %v, connection limit %d", login, limit)
			}
			want := []string{"role app_read: connection limit differs: source -1, target 3", "role app_read: login differs: source false, target true"}
			if diffs := privileges(t, db, tgt); !slices.Equal(diffs, want) {
				t.Errorf("verify --privileges:\n%s\nwant\n%s", strings.Join(diffs, "\n"), strings.Join(want, "\n"))
			}
			if c.flavour != testenv.CloudLike || c.engine != migrate.EngineStream {
				return
			}
			tgt = target(t, c.flavour)
			opt.Target, opt.RolesUpdate = cfg(t, "target", tgt.URI(testenv.ManagedDB)), true
			if _, err := freeze.Unfreeze(ctx, cfg(t, "source", src.URI(db))); err != nil {
				t.Fatal(err)
			}
			if sum, err = migrate.Run(ctx, opt); err != nil {
				t.Fatalf("migrate --roles-update: %v; schema differences: %s", err, schemaDiffs(sum))
			}
			if !slices.Equal(sum.Roles.Updated, []string{"app_read"}) {
				t.Errorf("--roles-update: updated %v, refused %v", sum.Roles.Updated, sum.Roles.Refused)
			}
			if diffs := privileges(t, db, tgt); len(diffs) > 0 {
				t.Errorf("verify --privileges after --roles-update:\n%s", strings.Join(diffs, "\n"))
			}
		})
	}
}

// migrate --roles on TimescaleDB's full build, as tsdbadmin into the cloud-like target
// (either engine) and the bare owner (stream): a compressed hypertable, a continuous
// aggregate and a user job, all app_owner's, granted to app_read. verify --privileges
// is identical (the chunks', the compressed chunks' and the materialization
// hypertable's owners included), and the job belongs to app_owner.
func TestRolesFullBuild(t *testing.T) {
	src := testenv.Need(t, testenv.PG17TSL, testenv.Options{})
	// A job runs as its owner, who must be able to log in.
	testenv.MustExec(t, src, "postgres", "CREATE ROLE app_owner LOGIN", "CREATE ROLE app_read NOLOGIN",
		"CREATE ROLE app_login LOGIN PASSWORD '"+appLoginPassword+"' IN ROLE app_read")
	for _, c := range managedTargets {
		t.Run(string(c.flavour)+"/"+c.engine, func(t *testing.T) {
			ctx := context.Background()
			db := testenv.NewDB(t, src, true)
			testenv.MustExec(t, src, db, "GRANT CREATE ON SCHEMA public TO app_owner", "SET ROLE app_owner",
				"CREATE TABLE m (t timestamptz NOT NULL, dev int NOT NULL, v double precision)",
				"SELECT create_hypertable('m', 't', chunk_time_interval => interval '1 day')",
				`INSERT INTO m SELECT '2025-01-01'::timestamptz + g * interval '10 minutes', g % 5, g FROM generate_series(0, 5*144 - 1) g`,
				"ALTER TABLE m SET (timescaledb.compress, timescaledb.compress_segmentby = 'dev')",
				"SELECT compress_chunk(c) FROM show_chunks('m') c ORDER BY c LIMIT 2",
				`CREATE MATERIALIZED VIEW m_daily WITH (timescaledb.continuous) AS
				 SELECT time_bucket('1 day', t) AS day, dev, avg(v) AS av FROM m GROUP BY 1, 2 WITH DATA`,
				`CREATE PROCEDURE tick(job_id int, config jsonb) LANGUAGE plpgsql AS $$ BEGIN PERFORM 1; END $$`,
				"SELECT add_job('tick', '1 hour', initial_start => now() + interval '1 day')",
				"GRANT SELECT ON m, m_daily TO app_read",
				"RESET ROLE")
			unfreezeAtCleanup(t, src, db)
			tgt := testenv.Need(t, testenv.PG17TSL, testenv.Options{Flavour: c.flavour})
			sum, err := migrate.Run(ctx, migrate.Options{Engine: c.engine, Roles: true,
				Source: cfg(t, "source", src.URI(db)), Target: cfg(t, "target", tgt.URI(testenv.ManagedDB)),
				Jobs: 2, PgBin: src.ClientBin(), FreezeGrace: time.Second})
			if err != nil {
				t.Fatalf("migrate: %v; schema differences: %s; warnings %q", err, schemaDiffs(sum), sum.Warnings)
			}
			if o := sum.Databases[0].Owners; o == nil || len(o.NotSet) > 0 {
				t.Errorf("owners: %+v", o)
			}
			// The freeze pauses the source's jobs; the target's are scheduled.
			if _, err := freeze.Unfreeze(ctx, cfg(t, "source", src.URI(db))); err != nil {
				t.Fatal(err)
			}
			verifyPrivilegesIdentical(t, src.URI(db), tgt.URI(testenv.ManagedDB))
			tc := connect(t, tgt.SuperURI(testenv.ManagedDB))
			if owner := scalar[string](t, tc, "SELECT owner::text FROM timescaledb_information.jobs WHERE proc_name = 'tick'"); owner != "app_owner" {
				t.Errorf("the job belongs to %s on the target, want app_owner", owner)
			}
			login := connect(t, withUserURI(t, tgt.URI(testenv.ManagedDB), "app_login", appLoginPassword))
			if n := scalar[int64](t, login, "SELECT count(*) FROM m"); n != 5*144 {
				t.Errorf("app_login reads %d rows of m", n)
			}
			if n := scalar[int64](t, login, "SELECT count(*) FROM m_daily"); n != 25 {
				t.Errorf("app_login reads %d rows of m_daily", n)
			}
		})
	}
}

// A migrate --roles as tsdbadmin into the cloud-like target that fails during the
// copy: the reset it prints, run as tsdbadmin, drops what the run restored and (its
// last step) the roles it created; the migration then succeeds, creating them again.
func TestRolesResetAfterFailure(t *testing.T) {
	ctx := context.Background()
	src := rolesServer(t)
	db := rolesDatabase(t, src)
	tgt := testenv.Need(t, testenv.PG17TS, testenv.Options{Flavour: testenv.CloudLike})
	opt := migrate.Options{Engine: migrate.EngineStream, Roles: true,
		Source: cfg(t, "source", src.URI(db)), Target: cfg(t, "target", tgt.URI(testenv.ManagedDB)),
		Jobs: 2, PgBin: src.ClientBin(), FreezeGrace: time.Second,
		OnEvent: func(e migrate.Event) {
			if e.Type == migrate.EventPhase && e.Phase == migrate.PhaseCopy {
				testenv.MustExec(t, tgt, testenv.ManagedDB, "ALTER TABLE app.devices ADD CONSTRAINT few CHECK (id < 3)")
			}
		}}
	sum, err := migrate.Run(ctx, opt)
	if err == nil || sum.Outcome != migrate.OutcomeFailed {
		t.Fatalf("the run did not fail: %v", err)
	}
	admin := connect(t, tgt.URI(testenv.ManagedDB))
	var ran int
	for _, s := range sum.ResetTarget {
		for _, mark := range []string{"as " + testenv.ManagedAdmin + ", drop what the run restored: ", "DROP ROLE"} {
			if _, sql, ok := strings.Cut(s, mark); ok {
				if mark == "DROP ROLE" {
					_, sql, _ = strings.Cut(s, "after the steps above: ")
				}
				if _, err := admin.Exec(ctx, sql); err != nil {
					t.Fatalf("the reset step %q as %s: %v", sql, testenv.ManagedAdmin, err)
				}
				ran++
			}
		}
	}
	if ran != 2 {
		t.Fatalf("reset steps: %q", sum.ResetTarget)
	}
	tc := connect(t, tgt.SuperURI("postgres"))
	if n := scalar[int64](t, tc, "SELECT count(*) FROM pg_roles WHERE rolname IN ('admin_su', 'app_login', 'app_owner', 'app_read', 'tuner')"); n != 0 {
		t.Errorf("%d of the run's roles are left after the reset", n)
	}
	opt.OnEvent = nil
	sum, err = migrate.Run(ctx, opt)
	if err != nil {
		t.Fatalf("the migration after the reset: %v; %s", err, schemaDiffs(sum))
	}
	if len(sum.Roles.Created) != 5 {
		t.Errorf("roles created by the second run: %v", sum.Roles.Created)
	}
	verifyPrivilegesIdentical(t, src.URI(db), tgt.URI(testenv.ManagedDB))
}

// migrate without --roles, as tsdbadmin into the managed-like targets, which have none
// of the source's roles, with either engine (the bare owner's: stream): the run
// succeeds as before (every object the target user's); each role the privileges name
// that the target lacks is named once, in a warning, not as a restore error; the other
// statements of the same entries are given: app.bump() is not executable by PUBLIC on
// the target, and PUBLIC reads app.latest, as on the source. A row-security policy
// naming such a role is no grant: it fails the run (without --roles), so the source
// here has none.
func TestWithoutRolesGrantsToMissingRoles(t *testing.T) {
	src := rolesServer(t)
	for _, c := range managedTargets {
		t.Run(string(c.flavour)+"/"+c.engine, func(t *testing.T) {
			ctx := context.Background()
			db := rolesDatabase(t, src)
			testenv.MustExec(t, src, db, "DROP POLICY readers ON app.devices", "GRANT SELECT ON app.latest TO PUBLIC")
			tgt := testenv.Need(t, testenv.PG17TS, testenv.Options{Flavour: c.flavour})
			sum, err := migrate.Run(ctx, migrate.Options{Engine: c.engine,
				Source: cfg(t, "source", src.URI(db)), Target: cfg(t, "target", tgt.URI(testenv.ManagedDB)),
				Jobs: 2, PgBin: src.ClientBin(), FreezeGrace: time.Second})
			if err != nil {
				t.Fatalf("migrate: %v; schema differences: %s; warnings %q", err, schemaDiffs(sum), sum.Warnings)
			}
			if len(sum.Errors) > 0 {
				t.Errorf("restore errors: %+v", sum.Errors)
			}
			var left []string
			for _, g := range sum.Databases[0].GrantsLeftOut {
				left = append(left, g.Role)
			}
			if !slices.Equal(left, []string{"app_owner", "app_read"}) {
				t.Errorf("grants left out for roles %v, want app_owner, app_read", left)
			}
			for _, role := range []string{"app_owner", "app_read"} {
				n := 0
				for _, w := range sum.Warnings {
					if strings.Contains(w, "role "+role+" does not exist on the target") {
						n++
					}
				}
				if n != 1 {
					t.Errorf("%d warnings name the missing role %s, want 1: %q", n, role, sum.Warnings)
				}
			}
			tc := connect(t, tgt.SuperURI(testenv.ManagedDB))
			if n := scalar[int64](t, tc, "SELECT count(*) FROM pg_roles WHERE rolname IN ('app_owner', 'app_read', 'app_login')"); n != 0 {
				t.Errorf("%d of the source's roles were created on the target without --roles", n)
			}
			if public := scalar[bool](t, tc, `SELECT EXISTS (SELECT FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
				WHERE p.oid = 'app.bump()'::regprocedure AND a.grantee = 0)`); public {
				t.Error("app.bump() is executable by PUBLIC on the target; the source revoked it")
			}
			if public := scalar[bool](t, tc, `SELECT EXISTS (SELECT FROM pg_class c, aclexplode(c.relacl) a
				WHERE c.oid = 'app.latest'::regclass AND a.grantee = 0 AND a.privilege_type = 'SELECT')`); !public {
				t.Error("PUBLIC may not read app.latest on the target; the source granted it, beside a grant to app_read")
			}
			if owner := scalar[string](t, tc, "SELECT tableowner FROM pg_tables WHERE tablename = 'metrics'"); owner != testenv.ManagedAdmin {
				t.Errorf("metrics belongs to %s on the target, want %s", owner, testenv.ManagedAdmin)
			}
		})
	}
}
