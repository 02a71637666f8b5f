package verify

import (
	"slices"
	"testing"

	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// --privileges compares the roles a database uses and their memberships, on
// PostgreSQL 15 (no INHERIT or SET option per membership: the member's INHERIT and
// always SET; 17's are compared by the migrate tests): identical when the target holds
// the same; a member's INHERIT, a membership's ADMIN option, a role's own setting and a
// missing role each named. The session users of both sides are left out.
func TestPrivilegesComparesRoles(t *testing.T) {
	src := testenv.Need(t, testenv.PG15, testenv.Options{})
	dst := testenv.Need(t, testenv.PG15, testenv.Options{})
	setup := []string{"CREATE ROLE v_own NOLOGIN", "CREATE ROLE v_grp NOLOGIN", "CREATE ROLE v_mem LOGIN NOINHERIT CONNECTION LIMIT 4",
		"ALTER ROLE v_mem SET work_mem = '4MB'", "GRANT v_grp TO v_mem WITH ADMIN OPTION", "CREATE ROLE v_reader NOLOGIN"}
	testenv.MustExec(t, src, "postgres", setup...)
	testenv.MustExec(t, dst, "postgres", setup...)
	fixture := []string{"CREATE TABLE t (x int)", "ALTER TABLE t OWNER TO v_own", "GRANT SELECT ON t TO v_grp", "GRANT SELECT ON t TO v_reader"}
	s, d := twins(t, src, dst, false, fixture...)
	opt := pair(t, src, s, dst, d)
	opt.Privileges = true
	if rep := runWith(t, opt); len(rep.Schema) > 0 {
		t.Fatalf("twins differ: %+v", rep.Schema)
	}
	testenv.MustExec(t, dst, "postgres", "ALTER ROLE v_mem INHERIT", "REVOKE ADMIN OPTION FOR v_grp FROM v_mem",
		"ALTER ROLE v_mem SET work_mem = '8MB'")
	testenv.MustExec(t, dst, d, "REVOKE SELECT ON t FROM v_reader")
	testenv.MustExec(t, dst, "postgres", "DROP ROLE v_reader")
	var got []string
	for _, x := range runWith(t, opt).Schema {
		got = append(got, x.String())
	}
	want := []string{
		"membership v_grp to v_mem: admin option differs: source true, target false",
		"membership v_grp to v_mem: inherit differs: source false, target true",
		`relation public.t: privileges differs: source v_grp=r/v_own,v_own=arwdDxt/v_own,v_reader=r/v_own, target v_grp=r/v_own,v_own=arwdDxt/v_own`,
		"role v_mem: inherit differs: source false, target true",
		"role v_mem: settings differs: source work_mem=4MB, target work_mem=8MB",
		"role v_reader: missing on the target",
	}
	if !slices.Equal(got, want) {
		t.Errorf("differences:\n%q\nwant\n%q", got, want)
	}
}
