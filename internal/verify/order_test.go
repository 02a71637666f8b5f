package verify

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// What verify aggregates into one value (a publication's tables, a policy's roles, the
// database's privileges) compares equal whatever order each side holds it in: the
// target's were created in the opposite order to the source's.
func TestAggregatesCompareInAnyOrder(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	roles := make([]string, 3)
	for i := range roles {
		roles[i] = fmt.Sprintf("tsm_order_%d_%c", os.Getpid(), 'a'+i)
		testenv.MustExec(t, srv, "postgres", "CREATE ROLE "+roles[i])
	}
	t.Cleanup(func() {
		for _, r := range roles {
			srv.Exec(context.Background(), "postgres", "DROP ROLE IF EXISTS "+r)
		}
	})
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
			"ALTER PUBLICATION pub ADD TABLE "+side.z)
		for _, r := range []string{side.a, side.b, side.c} {
			testenv.MustExec(t, srv, "postgres", fmt.Sprintf("GRANT CONNECT, TEMPORARY ON DATABASE %s TO %s", side.db, r))
		}
	}
	opt := pair(t, srv, src, srv, dst)
	opt.Privileges = true
	rep := runWith(t, opt)
	if !rep.Identical() {
		t.Fatalf("the same publication, policy and privileges held in another order differ: %v", rep.Schema)
	}
}
