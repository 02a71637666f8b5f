package verify

import (
	"strings"
	"testing"

	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// Schemas of the user's named like TimescaleDB's (_timescaledb_mine, timescaledb_x) and
// a table of the user's in _timescaledb_internal hold user data: equal on equal
// databases (the hypertable's chunks, in the same schema, are not taken for tables),
// and rows deleted or a table dropped on the target show.
func TestUserDataInTimescaleNamedSchemas(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	fixture := []string{
		`CREATE SCHEMA _timescaledb_mine`, `CREATE SCHEMA timescaledb_x`,
		`CREATE TABLE _timescaledb_mine.a (id int PRIMARY KEY)`, `INSERT INTO _timescaledb_mine.a SELECT generate_series(1, 10)`,
		`CREATE TABLE timescaledb_x.b (id int PRIMARY KEY)`, `INSERT INTO timescaledb_x.b SELECT generate_series(1, 10)`,
		`CREATE TABLE _timescaledb_internal.mine (id serial PRIMARY KEY, v text)`,
		`INSERT INTO _timescaledb_internal.mine (v) SELECT 'v' || g FROM generate_series(1, 10) g`,
		`CREATE TABLE m (ts timestamptz NOT NULL, v int)`, `SELECT create_hypertable('m', 'ts')`,
		`INSERT INTO m SELECT '2025-01-01'::timestamptz + g * interval '1 day', g FROM generate_series(1, 20) g`,
	}
	src, dst := twins(t, srv, srv, true, fixture...)
	rep := run(t, srv, src, srv, dst, 0)
	if !rep.Identical() {
		t.Fatalf("equal databases differ: %v %+v", rep.Schema, rep.Units)
	}
	for _, name := range []string{"_timescaledb_mine.a", "timescaledb_x.b", "_timescaledb_internal.mine"} {
		if u := unitOf(t, rep, name); u.Source.Rows != 10 {
			t.Errorf("%s: %+v", name, u)
		}
	}
	for _, u := range rep.Units {
		if u.Kind == "table" && strings.Contains(u.Table, "_hyper_") {
			t.Errorf("a chunk is compared as a table: %+v", u)
		}
	}
	testenv.MustExec(t, srv, dst, `DELETE FROM _timescaledb_mine.a WHERE id = 1`, `DROP TABLE timescaledb_x.b`,
		`DELETE FROM _timescaledb_internal.mine WHERE id = 2`)
	rep = run(t, srv, src, srv, dst, 0)
	for _, name := range []string{"_timescaledb_mine.a", "timescaledb_x.b", "_timescaledb_internal.mine"} {
		if u := unitOf(t, rep, name); u.Identical {
			t.Errorf("%s reads identical after the target lost rows: %+v", name, u)
		}
	}
	if !strings.Contains(schemaText(rep), "relation timescaledb_x.b: missing on the target") {
		t.Errorf("the dropped table does not show: %s", schemaText(rep))
	}
}

func schemaText(rep *Report) string {
	var all []string
	for _, d := range rep.Schema {
		all = append(all, d.String())
	}
	return strings.Join(all, "\n")
}
