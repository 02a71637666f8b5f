package roles_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/roles"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// loginPassword is app_login's password on the source: the target must accept it.
const loginPassword = "Login-pw-7!"

// sourceRoles makes, on a fresh source server, database app as the issue describes
// it: an owner role, a login role with a password and a setting, a read-only group
// granted to it, a superuser role owning a function, grants on a schema, a table, a
// sequence and a hypertable; a role with settings in the database only; and a role
// the database does not use.
func sourceRoles(t *testing.T) (*testenv.Server, string) {
	t.Helper()
	src := testenv.Need(t, testenv.PG17TS, testenv.Options{})
	testenv.MustExec(t, src, "postgres", "CREATE DATABASE app",
		"CREATE ROLE app_owner NOLOGIN",
		"CREATE ROLE app_read NOLOGIN",
		"CREATE ROLE app_login LOGIN PASSWORD '"+loginPassword+"' CONNECTION LIMIT 7 VALID UNTIL '2099-01-02 03:04:05+00' IN ROLE app_read",
		"ALTER ROLE app_login SET statement_timeout = '5s'",
		"ALTER ROLE app_login SET search_path = app, public",
		"CREATE ROLE admin_su SUPERUSER LOGIN PASSWORD 'Su-pw-9'",
		"CREATE ROLE tuner NOLOGIN",
		"CREATE ROLE bystander LOGIN PASSWORD 'x'")
	testenv.MustExec(t, src, "app",
		"CREATE EXTENSION timescaledb",
		"ALTER ROLE tuner IN DATABASE app SET work_mem = '8MB'",
		"GRANT CREATE ON SCHEMA public TO app_owner",
		"CREATE SCHEMA app AUTHORIZATION app_owner",
		"SET ROLE app_owner",
		"CREATE TABLE app.devices (id serial PRIMARY KEY, name text)",
		"CREATE SEQUENCE app.counter",
		"CREATE TABLE public.metrics (t timestamptz NOT NULL, device int, v float8)",
		"SELECT create_hypertable('public.metrics', 't', chunk_time_interval => interval '1 day')",
		"INSERT INTO metrics SELECT '2024-01-01'::timestamptz + i * interval '6 hours', i % 3, i FROM generate_series(1, 20) i",
		"GRANT USAGE ON SCHEMA app TO app_read",
		"GRANT SELECT ON ALL TABLES IN SCHEMA app TO app_read",
		"GRANT SELECT ON public.metrics TO app_read",
		"GRANT USAGE ON SEQUENCE app.counter TO app_read",
		"ALTER DEFAULT PRIVILEGES IN SCHEMA app GRANT SELECT ON TABLES TO app_read",
		"RESET ROLE",
		"CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
		"ALTER FUNCTION public.f() OWNER TO admin_su")
	return src, "app"
}

// withUser is uri with another user and password.
func withUser(t *testing.T, uri, user, password string) string {
	t.Helper()
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(user, password)
	return u.String()
}

func plan(t *testing.T, srcURI, tgtURI string, opt roles.Options) (*roles.Source, *roles.Plan, *pgx.Conn) {
	t.Helper()
	ctx := context.Background()
	s, err := roles.ReadSource(ctx, testenv.Connect(t, srcURI))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range s.Roles {
		names = append(names, r.Name)
	}
	tc := testenv.Connect(t, tgtURI)
	tgt, err := roles.ReadTarget(ctx, tc, names)
	if err != nil {
		t.Fatal(err)
	}
	return s, roles.MakePlan(s, tgt, opt), tc
}

type roleRow struct {
	super, login, inherit bool
	connLimit             int
	validUntil            string
	config                []string
	verifier              *string
}

// readRole reads role name as the superuser of s ("" verifier when absent).
func readRole(t *testing.T, s *testenv.Server, name string) (roleRow, bool) {
	t.Helper()
	var r roleRow
	err := testenv.Connect(t, s.SuperURI("postgres")).QueryRow(context.Background(), `
		SELECT a.rolsuper, a.rolcanlogin, a.rolinherit, a.rolconnlimit, coalesce(to_char(a.rolvaliduntil AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), ''),
			coalesce(r.rolconfig, '{}'), a.rolpassword FROM pg_authid a JOIN pg_roles r USING (oid) WHERE a.rolname = $1`, name).
		Scan(&r.super, &r.login, &r.inherit, &r.connLimit, &r.validUntil, &r.config, &r.verifier)
	if err == pgx.ErrNoRows {
		return r, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return r, true
}

func members(t *testing.T, s *testenv.Server, role string) []string {
	t.Helper()
	rows, _ := testenv.Connect(t, s.SuperURI("postgres")).Query(context.Background(), `
		SELECT m.rolname FROM pg_auth_members a JOIN pg_roles m ON m.oid = a.member
		WHERE a.roleid = $1::regrole AND m.rolname <> 'tsdbadmin' ORDER BY 1`, role)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// As tsdbadmin into the cloud-like target, read by the source's superuser: the roles
// the database uses are created with the source's verifiers, attributes, settings and
// memberships; SUPERUSER is left out and named; unused roles stay behind; app_login
// logs into the target with its source password. No verifier is in the plan's or the
// report's text or JSON.
func TestCarryRolesAsSuperuserSource(t *testing.T) {
	src, db := sourceRoles(t)
	tgt := testenv.Need(t, testenv.PG17TS, testenv.Options{Flavour: testenv.CloudLike})
	s, p, tc := plan(t, src.SuperURI(db), tgt.URI(testenv.ManagedDB), roles.Options{})
	var names []string
	for _, r := range s.Roles {
		names = append(names, r.Name)
	}
	if want := []string{"admin_su", "app_login", "app_owner", "app_read", "tuner"}; !slices.Equal(names, want) {
		t.Fatalf("roles used: %v, want %v", names, want)
	}
	if !s.PasswordsReadable {
		t.Fatal("the superuser may not read the verifiers?")
	}
	rep, err := p.Apply(context.Background(), tc)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Created, names) || len(rep.Refused) > 0 {
		t.Fatalf("created %v, refused %v", rep.Created, rep.Refused)
	}
	if len(rep.DroppedAttributes) != 1 || rep.DroppedAttributes[0].Role != "admin_su" || !slices.Equal(rep.DroppedAttributes[0].Attributes, []string{"SUPERUSER"}) {
		t.Errorf("dropped attributes: %+v", rep.DroppedAttributes)
	}
	if !slices.Equal(rep.PasswordsCarried, []string{"admin_su", "app_login"}) || len(rep.WithoutPassword) > 0 {
		t.Errorf("passwords carried %v, without %v", rep.PasswordsCarried, rep.WithoutPassword)
	}
	for _, n := range names {
		want, _ := readRole(t, src, n)
		got, ok := readRole(t, tgt, n)
		if !ok {
			t.Errorf("role %s missing on the target", n)
			continue
		}
		if want.super {
			want.super = false // left out: tsdbadmin may not give it
		}
		if fmt.Sprint(got.super, got.login, got.inherit, got.connLimit, got.validUntil, got.config) !=
			fmt.Sprint(want.super, want.login, want.inherit, want.connLimit, want.validUntil, want.config) {
			t.Errorf("role %s on the target differs:\n source %v %v %v %v %q %v\n target %v %v %v %v %q %v", n,
				want.super, want.login, want.inherit, want.connLimit, want.validUntil, want.config,
				got.super, got.login, got.inherit, got.connLimit, got.validUntil, got.config)
		}
		if (want.verifier == nil) != (got.verifier == nil) || want.verifier != nil && *want.verifier != *got.verifier {
			t.Errorf("role %s: the target's password verifier is not the source's", n)
		}
	}
	if _, ok := readRole(t, tgt, "bystander"); ok {
		t.Error("bystander, which the database does not use, was created")
	}
	if got := members(t, tgt, "app_read"); !slices.Equal(got, []string{"app_login"}) {
		t.Errorf("members of app_read on the target: %v", got)
	}
	login := testenv.Connect(t, withUser(t, tgt.URI(testenv.ManagedDB), "app_login", loginPassword))
	var timeout string
	if err := login.QueryRow(context.Background(), "SHOW statement_timeout").Scan(&timeout); err != nil || timeout != "5s" {
		t.Errorf("app_login on the target: statement_timeout %q, %v", timeout, err)
	}
	js, _ := json.Marshal(rep)
	text := fmt.Sprintf("%v %+v %#v %+v %#v %s", p, p, p, rep, s, js)
	for _, n := range []string{"admin_su", "app_login"} {
		r, _ := readRole(t, src, n)
		if strings.Contains(text, *r.verifier) || strings.Contains(text, "SCRAM-SHA-256$") {
			t.Errorf("a password verifier is in the plan's or report's text: %s", text)
		}
	}
}

// Read by a source user who is no superuser (and so may not read the verifiers): the
// roles are created without passwords, and the login roles are listed for their
// passwords to be set.
func TestCarryRolesWithoutVerifiers(t *testing.T) {
	src, db := sourceRoles(t)
	// (pg_read_all_data would let it: pg_authid is a table like the others.)
	testenv.MustExec(t, src, "postgres", "CREATE ROLE reader LOGIN PASSWORD 'Reader-pw-3'")
	tgt := testenv.Need(t, testenv.PG17TS, testenv.Options{Flavour: testenv.CloudLike})
	s, p, tc := plan(t, withUser(t, src.SuperURI(db), "reader", "Reader-pw-3"), tgt.URI(testenv.ManagedDB), roles.Options{})
	if s.PasswordsReadable {
		t.Fatal("reader may read pg_authid?")
	}
	rep, err := p.Apply(context.Background(), tc)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.PasswordsCarried) > 0 || !slices.Equal(rep.WithoutPassword, []string{"admin_su", "app_login"}) {
		t.Errorf("passwords carried %v, without %v", rep.PasswordsCarried, rep.WithoutPassword)
	}
	for _, n := range []string{"admin_su", "app_login", "app_owner", "app_read", "tuner"} {
		r, ok := readRole(t, tgt, n)
		if !ok || r.verifier != nil {
			t.Errorf("role %s on the target: exists %v, with a verifier %v", n, ok, ok && r.verifier != nil)
		}
	}
}

// A role the target has already, with other attributes, is reported with how it
// differs and left as it is; --roles-update gives it the source's attributes and
// memberships.
func TestCarryRolesExisting(t *testing.T) {
	src, db := sourceRoles(t)
	tgt := testenv.Need(t, testenv.PG17TS, testenv.Options{Flavour: testenv.CloudLike})
	admin := testenv.Connect(t, tgt.URI(testenv.ManagedDB))
	if _, err := admin.Exec(context.Background(), "CREATE ROLE app_login NOLOGIN CONNECTION LIMIT 2"); err != nil {
		t.Fatal(err)
	}
	before, _ := readRole(t, tgt, "app_login")
	_, p, tc := plan(t, src.SuperURI(db), tgt.URI(testenv.ManagedDB), roles.Options{})
	rep, err := p.Apply(context.Background(), tc)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(rep.Created, "app_login") || len(rep.Existing) != 1 || rep.Existing[0].Role != "app_login" {
		t.Fatalf("created %v, existing %+v", rep.Created, rep.Existing)
	}
	want := []string{"LOGIN on the source, NOLOGIN on the target", "CONNECTION LIMIT 7 on the source, 2 on the target",
		"VALID UNTIL 2099-01-02 03:04:05.000000+00 on the source, none on the target",
		"own settings (statement_timeout, search_path) on the source, () on the target",
		"membership app_read to app_login not on the target"}
	if !slices.Equal(rep.Existing[0].Differences, want) {
		t.Errorf("differences:\n%s\nwant\n%s", strings.Join(rep.Existing[0].Differences, "\n"), strings.Join(want, "\n"))
	}
	after, _ := readRole(t, tgt, "app_login")
	if fmt.Sprint(after) != fmt.Sprint(before) || len(members(t, tgt, "app_read")) > 0 {
		t.Errorf("app_login was changed: %v, then %v; members of app_read %v", before, after, members(t, tgt, "app_read"))
	}

	_, p, tc = plan(t, src.SuperURI(db), tgt.URI(testenv.ManagedDB), roles.Options{Update: true})
	rep, err = p.Apply(context.Background(), tc)
	if err != nil {
		t.Fatal(err)
	}
	after, _ = readRole(t, tgt, "app_login")
	if !slices.Equal(rep.Updated, []string{"app_login"}) || !after.login || after.connLimit != 7 || !slices.Equal(members(t, tgt, "app_read"), []string{"app_login"}) {
		t.Errorf("--roles-update: updated %v, refused %v; app_login %+v, members of app_read %v", rep.Updated, rep.Refused, after, members(t, tgt, "app_read"))
	}
}

// From PostgreSQL 15, whose memberships have no INHERIT or SET option of their own, to
// 17: the membership arrives with its ADMIN option and the member's INHERIT, and the
// role that owns the table is made, with its verifier.
func TestCarryRolesFromPG15(t *testing.T) {
	src := testenv.Need(t, testenv.PG15, testenv.Options{})
	testenv.MustExec(t, src, "postgres", "CREATE DATABASE app",
		"CREATE ROLE old_owner LOGIN PASSWORD 'Old-owner-1'", "CREATE ROLE old_group NOLOGIN",
		"CREATE ROLE old_member NOLOGIN NOINHERIT", "GRANT old_group TO old_member WITH ADMIN OPTION")
	testenv.MustExec(t, src, "app", "CREATE TABLE t (x int)", "ALTER TABLE t OWNER TO old_owner", "GRANT SELECT ON t TO old_group")
	tgt := testenv.Need(t, testenv.PG17TS, testenv.Options{Flavour: testenv.CloudLike})
	s, p, tc := plan(t, src.SuperURI("app"), tgt.URI(testenv.ManagedDB), roles.Options{})
	if s.Major != 15 || len(s.Memberships) != 1 || s.Memberships[0].Inherit != nil {
		t.Fatalf("source: major %d, memberships %+v", s.Major, s.Memberships)
	}
	rep, err := p.Apply(context.Background(), tc)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Created, []string{"old_group", "old_member", "old_owner"}) || len(rep.Refused) > 0 {
		t.Fatalf("created %v, refused %v", rep.Created, rep.Refused)
	}
	var admin, inherit, set bool
	if err := testenv.Connect(t, tgt.SuperURI("postgres")).QueryRow(context.Background(), `
		SELECT admin_option, inherit_option, set_option FROM pg_auth_members
		WHERE roleid = 'old_group'::regrole AND member = 'old_member'::regrole`).Scan(&admin, &inherit, &set); err != nil {
		t.Fatal(err)
	}
	if !admin || inherit || !set {
		t.Errorf("old_group to old_member on the target: admin %v, inherit %v, set %v; want true, false (NOINHERIT member), true", admin, inherit, set)
	}
	want, _ := readRole(t, src, "old_owner")
	got, _ := readRole(t, tgt, "old_owner")
	if want.verifier == nil || got.verifier == nil || *want.verifier != *got.verifier {
		t.Error("old_owner's verifier is not the source's")
	}
}

// REPLICATION and BYPASSRLS, which tsdbadmin has not, are left out of the role that
// has them, and named; the role is made with the rest of its attributes.
func TestCarryRolesDropsReplicationAndBypassRLS(t *testing.T) {
	src := testenv.Need(t, testenv.PG17TS, testenv.Options{})
	testenv.MustExec(t, src, "postgres", "CREATE DATABASE app", "CREATE ROLE repl LOGIN REPLICATION BYPASSRLS CREATEDB")
	testenv.MustExec(t, src, "app", "CREATE TABLE t (x int)", "ALTER TABLE t OWNER TO repl")
	tgt := testenv.Need(t, testenv.PG17TS, testenv.Options{Flavour: testenv.CloudLike})
	_, p, tc := plan(t, src.SuperURI("app"), tgt.URI(testenv.ManagedDB), roles.Options{})
	rep, err := p.Apply(context.Background(), tc)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Created, []string{"repl"}) || len(rep.Refused) > 0 {
		t.Fatalf("created %v, refused %v", rep.Created, rep.Refused)
	}
	if len(rep.DroppedAttributes) != 1 || rep.DroppedAttributes[0].Role != "repl" ||
		!slices.Equal(rep.DroppedAttributes[0].Attributes, []string{"REPLICATION", "BYPASSRLS"}) {
		t.Errorf("dropped attributes: %+v", rep.DroppedAttributes)
	}
	var login, createDB, replication, bypass bool
	if err := testenv.Connect(t, tgt.SuperURI("postgres")).QueryRow(context.Background(),
		"SELECT rolcanlogin, rolcreatedb, rolreplication, rolbypassrls FROM pg_roles WHERE rolname = 'repl'").
		Scan(&login, &createDB, &replication, &bypass); err != nil {
		t.Fatal(err)
	}
	if !login || !createDB || replication || bypass {
		t.Errorf("repl on the target: login %v, createdb %v, replication %v, bypassrls %v; want true, true, false, false", login, createDB, replication, bypass)
	}
}
