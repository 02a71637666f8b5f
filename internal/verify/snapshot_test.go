package verify

import (
	"context"
	"testing"

	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// A live migration verifies its copy against the source as of the replication slot's
// snapshot while the source goes on changing (SourceSnapshot, DataOnly), then, at its
// cut-over, only what changed (Only).
func TestSourceSnapshotDataOnlyAndOnly(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src, dst := twins(t, srv, srv, false,
		`CREATE TABLE a (id int PRIMARY KEY, v text)`, `INSERT INTO a SELECT g, 'v' || g FROM generate_series(1, 100) g`,
		`CREATE TABLE b (id int PRIMARY KEY, v text)`, `INSERT INTO b SELECT g, 'v' || g FROM generate_series(1, 100) g`)
	ctx := context.Background()
	holder := testenv.Connect(t, srv.SuperURI(src))
	if _, err := holder.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		t.Fatal(err)
	}
	var snap string
	if err := holder.QueryRow(ctx, "SELECT pg_export_snapshot()").Scan(&snap); err != nil {
		t.Fatal(err)
	}
	// After the snapshot: the source's rows change, and the target gets an index the
	// source lacks (a schema difference).
	testenv.MustExec(t, srv, src, `UPDATE a SET v = 'changed' WHERE id = 7`, `DELETE FROM b WHERE id = 3`)
	testenv.MustExec(t, srv, dst, `CREATE INDEX extra ON a (v)`)

	opt := pair(t, srv, src, srv, dst)
	opt.SourceSnapshot, opt.DataOnly = snap, true
	if rep := runWith(t, opt); !rep.Identical || rep.UnitsChecked != 2 || len(rep.Schema) != 0 {
		t.Errorf("data at the source's snapshot: identical %v, %d units, schema %v; want identical, 2 units, no schema compared", rep.Identical, rep.UnitsChecked, rep.Schema)
	}
	// Now, in a snapshot of its own: both tables differ, and the index.
	opt = pair(t, srv, src, srv, dst)
	if rep := runWith(t, opt); rep.UnitsDiffering != 2 || len(rep.Schema) != 1 {
		t.Errorf("now: %d units differ, schema %v; want 2 and the index", rep.UnitsDiffering, rep.Schema)
	}
	// Only b: one unit compared, the schema whole.
	opt.Only = func(u *Unit) bool { return u.Table == "public.b" }
	if rep := runWith(t, opt); rep.UnitsChecked != 1 || rep.Units[0].Table != "public.b" || rep.Units[0].Identical || len(rep.Schema) != 1 {
		t.Errorf("only b: %d units %+v, schema %v", rep.UnitsChecked, rep.Units, rep.Schema)
	}
}
