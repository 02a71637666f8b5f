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
	if !rep.Identical {
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

// A table's settings that change how it is stored, planned or replicated are
// compared: extended statistics, storage parameters (its TOAST table's too),
// per-column statistics targets, replica identity and column storage. Equal on equal
// databases (PostgreSQL 15 against 17); each change on the target shows.
func TestTableSettingsShow(t *testing.T) {
	srv15 := testenv.Shared(t, testenv.PG15)
	srv17 := testenv.Shared(t, testenv.PG17TS)
	fixture := []string{
		`CREATE TABLE t (id int PRIMARY KEY, a int, b int, s text)`,
		`CREATE UNIQUE INDEX t_a ON t (a) WHERE a IS NOT NULL`,
		`CREATE UNIQUE INDEX t_b ON t (b)`,
		`ALTER TABLE t ALTER COLUMN b SET NOT NULL`,
		`CREATE STATISTICS t_ab (ndistinct, dependencies) ON a, b FROM t`,
		`ALTER STATISTICS t_ab SET STATISTICS 300`,
		`ALTER TABLE t SET (fillfactor = 70, autovacuum_enabled = off, toast.autovacuum_enabled = off)`,
		`ALTER TABLE t ALTER COLUMN a SET STATISTICS 500`,
		`ALTER TABLE t REPLICA IDENTITY USING INDEX t_b`,
		`ALTER TABLE t ALTER COLUMN s SET STORAGE EXTERNAL`,
		`CREATE TABLE u (id int, s text)`,
	}
	src, dst := twins(t, srv15, srv17, false, fixture...)
	if rep := run(t, srv15, src, srv17, dst, 0); !rep.Identical {
		t.Fatalf("equal schemas differ: %v", rep.Schema)
	}
	testenv.MustExec(t, srv17, dst,
		`ALTER STATISTICS t_ab SET STATISTICS 200`,
		`CREATE STATISTICS u_s ON id, s FROM u`,
		`ALTER TABLE t SET (fillfactor = 80)`,
		`ALTER TABLE t RESET (toast.autovacuum_enabled)`,
		`ALTER TABLE t ALTER COLUMN a SET STATISTICS -1`,
		`ALTER TABLE t ALTER COLUMN b SET STATISTICS 50`,
		`ALTER TABLE t REPLICA IDENTITY USING INDEX t_pkey`,
		`ALTER TABLE u REPLICA IDENTITY FULL`,
		`ALTER TABLE t ALTER COLUMN s SET STORAGE MAIN`,
		`ALTER TABLE u ALTER COLUMN s SET STORAGE PLAIN`)
	got := schemaText(run(t, srv15, src, srv17, dst, 0))
	mustShow(t, got,
		"statistics public.t_ab: statistics target differs: source 300, target 200",
		"statistics public.u_s: not on the source",
		"relation public.t: storage parameters differs: source autovacuum_enabled=off, fillfactor=70, target autovacuum_enabled=off, fillfactor=80",
		"relation public.t: TOAST storage parameters differs: source autovacuum_enabled=off, target (none)",
		"column public.t.a: statistics target differs: source 500, target (none)",
		"column public.t.b: statistics target differs: source (none), target 50",
		"relation public.t: replica identity differs: source index t_b, target index t_pkey",
		"relation public.u: replica identity differs: source (none), target full",
		"column public.t.s: storage differs: source external, target main",
		"column public.u.s: storage differs: source extended, target plain",
	)
}

// Large objects' comments (whatever their OID), and with --privileges their owners and
// privileges, are compared; a large object missing on the target shows too.
func TestLargeObjectMetadataShows(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	role := testenv.NewRole(t, srv, "tsm_lo")
	src, dst := twins(t, srv, srv, false,
		`SELECT lo_create(1000)`, `COMMENT ON LARGE OBJECT 1000 IS 'below 16384'`,
		`SELECT lo_from_bytea(20001, 'hello')`, `COMMENT ON LARGE OBJECT 20001 IS 'first'`,
		`GRANT SELECT ON LARGE OBJECT 20001 TO `+role,
		`SELECT lo_from_bytea(20002, 'world')`)
	opt := pair(t, srv, src, srv, dst)
	opt.Privileges = true
	if rep := runWith(t, opt); !rep.Identical {
		t.Fatalf("equal databases differ: %v", rep.Schema)
	}
	testenv.MustExec(t, srv, dst, `COMMENT ON LARGE OBJECT 1000 IS 'changed'`, `COMMENT ON LARGE OBJECT 20001 IS NULL`,
		`REVOKE SELECT ON LARGE OBJECT 20001 FROM `+role, `SELECT lo_unlink(20002)`)
	got := schemaText(runWith(t, opt))
	mustShow(t, got,
		"comment on large object 1000: text differs: source below 16384, target changed",
		"comment on large object 20001: missing on the target",
		"large object 20001: privileges differs",
		"large object 20002: missing on the target",
	)
	if got := schemaText(run(t, srv, src, srv, dst, 0)); !strings.Contains(got, "large object 20002: missing on the target") ||
		strings.Contains(got, "privileges") {
		t.Errorf("without --privileges: %s", got)
	}
}

// mustShow fails the test for each of wants that the schema differences got do not hold.
func mustShow(t *testing.T, got string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(got, want) {
			t.Errorf("the differences do not show %q:\n%s", want, got)
		}
	}
}
