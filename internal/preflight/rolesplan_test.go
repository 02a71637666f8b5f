package preflight_test

import (
	"context"
	"strings"
	"testing"

	"github.com/tsmigrate/tsmigrate/internal/preflight"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// Pre-flight with --roles into the cloud-like target, tried in its rolled-back
// transaction: which roles would be created and which exist, the SUPERUSER that would
// be left out, the membership in a role of the target's own that the target user may
// not grant, whether the verifiers can be carried (by the source's superuser: yes;
// by its database owner: no, the login roles named); afterwards the target has none
// of the roles. Without --roles there is no roles finding.
func TestRolesPlanCheck(t *testing.T) {
	src := testenv.Need(t, testenv.PG17TS, testenv.Options{})
	testenv.MustExec(t, src, "postgres",
		"CREATE ROLE pf_owner NOLOGIN", "CREATE ROLE pf_read NOLOGIN",
		"CREATE ROLE pf_login LOGIN PASSWORD 'Pf-login-1' IN ROLE pf_read",
		"CREATE ROLE pf_su SUPERUSER LOGIN PASSWORD 'Pf-su-1'",
		"CREATE ROLE pf_dbowner LOGIN PASSWORD 'Pf-dbowner-1'",
		"CREATE DATABASE app OWNER pf_dbowner")
	testenv.MustExec(t, src, "app", "CREATE EXTENSION timescaledb",
		"CREATE TABLE t (x int)", "ALTER TABLE t OWNER TO pf_owner", "GRANT SELECT ON t TO pf_read",
		"CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", "ALTER FUNCTION f() OWNER TO pf_su",
		"ALTER ROLE pf_login IN DATABASE app SET work_mem = '8MB'")
	tgt := testenv.Need(t, testenv.PG17TS, testenv.Options{Flavour: testenv.CloudLike})
	testenv.MustExec(t, tgt, "postgres", "CREATE ROLE pf_read NOLOGIN")

	run := func(source string, roles bool) *preflight.Report {
		t.Helper()
		r, err := preflight.Run(context.Background(), preflight.Options{Roles: roles,
			Source: config(t, "source", source), Target: config(t, "target", tgt.URI(testenv.ManagedDB))})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := run(src.SuperURI("app"), true)
	var saw []string
	for _, f := range r.Findings {
		if f.Check == "roles" {
			saw = append(saw, string(f.Status)+": "+f.Saw)
		}
	}
	all := strings.Join(saw, "\n")
	for _, w := range []string{
		"pass: tried in a rolled-back transaction: would create pf_dbowner, pf_login, pf_owner, pf_su; exist on the target already, left as they are: pf_read",
		"warn: the target user tsdbadmin may not give these attributes (a managed service's admin is no superuser); the roles would be created without them: pf_su without SUPERUSER",
		"pass: the password verifiers of pf_dbowner, pf_login, pf_su would be carried",
		// pf_read is the target superuser's: tsdbadmin may not grant it.
		`warn: the target refused: membership pf_read to pf_login: permission denied to grant role "pf_read"`,
	} {
		if !strings.Contains(all, w) {
			t.Errorf("roles findings lack %q:\n%s", w, all)
		}
	}
	// The database setting of pf_login is tried after the role was: accepted.
	expect(t, r, "database-settings", preflight.Pass, "work_mem of role pf_login")
	if n := scalarOn(t, tgt, "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'pf\\_%'"); n != 1 {
		t.Errorf("%d pf_ roles on the target after pre-flight, want 1 (pf_read, made by the test)", n)
	}

	r = run(userURI(src, "pf_dbowner", "Pf-dbowner-1", "app"), true)
	f := findingsOf(r, "roles")
	if !strings.Contains(f, "warn: the source user pf_dbowner may not read the roles' password verifiers (pg_authid; a superuser or a member of pg_read_all_data may): these login roles would be created without a password: pf_dbowner, pf_login, pf_su") {
		t.Errorf("roles findings by a source user who is no superuser:\n%s", f)
	}
	if f := findingsOf(run(src.SuperURI("app"), false), "roles"); f != "" {
		t.Errorf("roles findings without --roles: %s", f)
	}
}

func findingsOf(r *preflight.Report, check string) string {
	var out []string
	for _, f := range r.Findings {
		if f.Check == check {
			out = append(out, string(f.Status)+": "+f.Saw)
		}
	}
	return strings.Join(out, "\n")
}

func scalarOn(t *testing.T, s *testenv.Server, q string) int64 {
	t.Helper()
	c := connectSuper(t, s)
	var n int64
	if err := c.QueryRow(context.Background(), q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
