package verify

import (
	"fmt"
	"testing"

	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// What verify aggregates into one value (a publication's tables, a policy's roles,
// privileges of the database, a table, a schema, a function, a large object) compares
// equal whatever order each side holds it in: the target's were made in the opposite
// order to the source's.
func TestAggregatesCompareInAnyOrder(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	roles := []string{testenv.NewRole(t, srv, "tsm_order_a"), testenv.NewRole(t, srv, "tsm_order_b"), testenv.NewRole(t, srv, "tsm_order_c")}
	src := testenv.NewDB(t, srv, false)
	dst := testenv.NewDB(t, srv, false)
	for _, side := range []struct {
		db      string
		a, b, c string // the roles in the order they are named
		x, y, z string // the tables in the order they are created and published
	}{
		{src, roles[0], roles[1], roles[2], "ta", "tb", "tc"},
		{dst, roles[2], roles[1], roles[0], "tc", "tb", "ta"},
	} {
		testenv.MustExec(t, srv, side.db,
			"CREATE TABLE "+side.x+" (id int PRIMARY KEY)", "CREATE TABLE "+side.y+" (id int PRIMARY KEY)", "CREATE TABLE "+side.z+" (id int PRIMARY KEY)",
			fmt.Sprintf("CREATE POLICY p ON ta TO %s, %s, %s USING (id > 0)", side.a, side.b, side.c),
			"CREATE PUBLICATION pub FOR TABLE "+side.x,
			"ALTER PUBLICATION pub ADD TABLE "+side.y,
			"ALTER PUBLICATION pub ADD TABLE "+side.z,
			"CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", "SELECT lo_create(1000)")
		for _, r := range []string{side.a, side.b, side.c} {
			testenv.MustExec(t, srv, "postgres", fmt.Sprintf("GRANT CONNECT, TEMPORARY ON DATABASE %s TO %s", side.db, r))
			testenv.MustExec(t, srv, side.db, "GRANT SELECT ON ta TO "+r, "GRANT USAGE ON SCHEMA public TO "+r,
				"GRANT EXECUTE ON FUNCTION f() TO "+r, "GRANT SELECT ON LARGE OBJECT 1000 TO "+r)
		}
	}
	opt := pair(t, srv, src, srv, dst)
	opt.Privileges = true
	rep := runWith(t, opt)
	if !rep.Identical {
		t.Fatalf("the same publication, policy and privileges held in another order differ: %v", rep.Schema)
	}
}
