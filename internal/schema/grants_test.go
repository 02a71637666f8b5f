package schema

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	"github.com/tsmigrate/tsmigrate/internal/pgtools"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// The roles a statement of privileges names, as pg_dump writes them: never an
// object's name, even one spelled like a role or a keyword.
func TestRolesNamed(t *testing.T) {
	for _, c := range []struct {
		sql  string
		want []string
	}{
		{`GRANT SELECT ON TABLE public.metrics TO app_read;`, []string{"app_read"}},
		{`REVOKE ALL ON FUNCTION app.bump() FROM PUBLIC;`, nil},
		{`GRANT ALL ON FUNCTION app.bump(a integer, "to" text) TO app_read WITH GRANT OPTION;`, []string{"app_read"}},
		{`GRANT SELECT(id) ON TABLE app.devices TO app_read, "Weird ""Role""";`, []string{"app_read", `Weird "Role"`}},
		{`GRANT SELECT ON TABLE app.app_read TO app_login;`, []string{"app_login"}},
		{`GRANT SELECT ON TABLE "from"."to" TO "Reader" GRANTED BY app_owner;`, []string{"app_owner", "Reader"}},
		{`REVOKE GRANT OPTION FOR SELECT ON TABLE t FROM app_read CASCADE;`, []string{"app_read"}},
		{`ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA app GRANT SELECT ON TABLES TO app_read;`, []string{"app_owner", "app_read"}},
		{`ALTER DEFAULT PRIVILEGES FOR ROLE a, b REVOKE ALL ON FUNCTIONS FROM PUBLIC;`, []string{"a", "b"}},
		{`SET SESSION AUTHORIZATION app_owner;`, []string{"app_owner"}},
		{`RESET SESSION AUTHORIZATION;`, nil},
		{`SELECT pg_catalog.set_config('search_path', '', false);`, nil},
		{`GRANT USAGE ON SCHEMA "Mixed" TO CURRENT_USER;`, nil},
		{`GRANT SELECT ON LARGE OBJECT 20001 TO App_Read;`, []string{"app_read"}},
	} {
		if got := rolesNamed(c.sql); !slices.Equal(got, c.want) {
			t.Errorf("%s: %q, want %q", c.sql, got, c.want)
		}
	}
}

// A schema restored into a server that lacks a role its privileges name: pg_restore's
// failures of those entries are let through, and RestoreGrantsToMissingRoles gives the
// other statements of the entries (the REVOKE ... FROM PUBLIC, a GRANT to PUBLIC),
// returning those of the missing role. Once the role exists (made since), the entries
// pg_restore let through are all given when failed says so.
func TestRestoreGrantsToMissingRoles(t *testing.T) {
	ctx := context.Background()
	srv := testenv.Shared(t, testenv.PG17TS)
	tools := &pgtools.Tools{Dir: srv.ClientBin()}
	src := testenv.NewDB(t, srv, false)
	role := "gr_" + src
	testenv.MustExec(t, srv, src, "CREATE ROLE "+role+" NOLOGIN",
		"CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
		"REVOKE EXECUTE ON FUNCTION f() FROM PUBLIC", "GRANT EXECUTE ON FUNCTION f() TO "+role,
		"CREATE TABLE t (x int)", "GRANT SELECT ON t TO "+role+", PUBLIC")
	t.Cleanup(func() { srv.Exec(context.Background(), "postgres", "DROP OWNED BY "+role, "DROP ROLE "+role) })
	file := filepath.Join(t.TempDir(), "schema.dump")
	if _, err := DumpSchema(ctx, tools, cfg(t, "source", srv.URI(src)), file, nil); err != nil {
		t.Fatal(err)
	}
	dstSrv := testenv.Need(t, testenv.PG17TS, testenv.Options{})
	target := cfg(t, "target", dstSrv.URI("postgres"))
	msgs, err := RestoreSection(ctx, tools, target, file, PreData, 1, nil, nil)
	if err != nil {
		t.Fatalf("pre-data: %v", err)
	}
	if !slices.ContainsFunc(msgs, func(m Message) bool { return m.Rule == RuleGrantToMissingRole }) {
		t.Fatalf("no message let through by %s: %+v", RuleGrantToMissingRole, msgs)
	}
	acl := func() string {
		var s string
		c := testenv.Connect(t, dstSrv.SuperURI("postgres"))
		if err := c.QueryRow(ctx, `SELECT coalesce((SELECT proacl::text FROM pg_proc WHERE proname = 'f'), 'default') || ' ' ||
			coalesce((SELECT relacl::text FROM pg_class WHERE relname = 't'), 'default')`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	if got := acl(); got != "default default" {
		t.Fatalf("privileges after pg_restore: %s, want none given (each entry failed whole)", got)
	}
	left, err := RestoreGrantsToMissingRoles(ctx, tools, target, file, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0].Role != role || left[0].Statements != 2 {
		t.Errorf("left out: %+v, want 2 statements of %s", left, role)
	}
	if got, want := acl(), "{postgres=X/postgres} {postgres=arwdDxtm/postgres,=r/postgres}"; got != want {
		t.Errorf("privileges: %s, want %s", got, want)
	}
	testenv.MustExec(t, dstSrv, "postgres", "CREATE ROLE "+role+" NOLOGIN")
	if left, err = RestoreGrantsToMissingRoles(ctx, tools, target, file, nil, true); err != nil || len(left) > 0 {
		t.Fatalf("with the role made: left out %+v, %v", left, err)
	}
	if got, want := acl(), "{postgres=X/postgres,"+role+"=X/postgres} {postgres=arwdDxtm/postgres,=r/postgres,"+role+"=r/postgres}"; got != want {
		t.Errorf("privileges with the role made: %s, want %s", got, want)
	}
}
