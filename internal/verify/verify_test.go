package verify

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func run(t *testing.T, srcSrv *testenv.Server, src string, dstSrv *testenv.Server, dst string, showRows int) *Report {
	t.Helper()
	opt := pair(t, srcSrv, src, dstSrv, dst)
	opt.ShowRows = showRows
	return runWith(t, opt)
}

// pair is the Options that verify database src of srcSrv against dst of dstSrv.
func pair(t *testing.T, srcSrv *testenv.Server, src string, dstSrv *testenv.Server, dst string) Options {
	t.Helper()
	s, err := dbconn.Parse("source", srcSrv.URI(src))
	if err != nil {
		t.Fatal(err)
	}
	d, err := dbconn.Parse("target", dstSrv.URI(dst))
	if err != nil {
		t.Fatal(err)
	}
	return Options{Source: s, Target: d, Jobs: 2}
}

// twins makes a database on srcSrv and one on dstSrv (TimescaleDB installed in both
// when withTS), runs fixture in each and returns their names.
func twins(t *testing.T, srcSrv, dstSrv *testenv.Server, withTS bool, fixture ...string) (src, dst string) {
	t.Helper()
	src = testenv.NewDB(t, srcSrv, withTS)
	dst = testenv.NewDB(t, dstSrv, withTS)
	testenv.MustExec(t, srcSrv, src, fixture...)
	testenv.MustExec(t, dstSrv, dst, fixture...)
	return src, dst
}

func runWith(t *testing.T, opt Options) *Report {
	t.Helper()
	rep, err := Run(context.Background(), opt)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	return rep
}

func unitOf(t *testing.T, rep *Report, table string) Unit {
	t.Helper()
	for _, u := range rep.Units {
		if u.Table == table {
			return u
		}
	}
	t.Fatalf("no unit for %s", table)
	return Unit{}
}

// Every value difference must change the checksum, and equal values must not.
// Each case is a table v<i>(id int PRIMARY KEY, x <type>) holding a on the source and
// b on the target; a twin table e<i> holds a on both sides.
func TestEveryValueDifferenceShows(t *testing.T) {
	cases := []struct {
		name, typ, a, b string
		same            bool // a and b are the same value, written differently
	}{
		{"float8 last bit", "float8", "0.1", "0.1::float8 + 1.3877787807814457e-17", false},
		{"float8 1e-6", "float8", "1234.5", "1234.500001", false},
		{"float4 last bit", "float4", "'0.1'::float4", "'0.100000009'::float4", false},
		{"float8 minus zero", "float8", "'0'", "'-0'", false},
		{"float8 NaN and Infinity", "float8", "'NaN'", "'Infinity'", false},
		{"float8 Infinity sign", "float8", "'Infinity'", "'-Infinity'", false},
		{"numeric scale", "numeric", "1.50", "1.5", false},
		{"numeric NaN", "numeric", "'NaN'", "0", false},
		{"empty string and NULL", "text", "''", "NULL", false},
		{"text trailing space", "text", "'a'", "'a '", false},
		{"text composed and decomposed é", "text", "U&'\\00E9'", "U&'e\\0301'", false},
		{"text case", "text", "'Abc'", "'abc'", false},
		{"varchar quote", "varchar(10)", `'a"b'`, `'a''b'`, false},
		{"jsonb number scale", "jsonb", `'{"a": 1}'`, `'{"a": 1.0}'`, false},
		{"jsonb nested", "jsonb", `'{"a": [1, 2]}'`, `'{"a": [2, 1]}'`, false},
		{"json whitespace", "json", `'{"a":1}'`, `'{"a": 1}'`, false},
		{"array order", "int[]", "'{1,2}'", "'{2,1}'", false},
		{"array element boundaries", "text[]", `ARRAY['a,b', 'c']`, `ARRAY['a', 'b,c']`, false},
		{"array empty string and NULL", "text[]", "ARRAY['']", "ARRAY[NULL]::text[]", false},
		{"array NULL and empty", "text[]", "'{}'", "NULL", false},
		{"timestamptz microsecond", "timestamptz", "'2024-01-01 00:00:00+00'", "'2024-01-01 00:00:00.000001+00'", false},
		{"timestamp", "timestamp", "'2024-01-01 00:00:00'", "'2024-01-01 00:00:01'", false},
		{"interval months and days", "interval", "'1 mon'", "'30 days'", false},
		{"bytea", "bytea", `'\x00'`, `'\x0000'`, false},
		{"boolean NULL", "boolean", "false", "NULL", false},
		{"money", "money", "1.5", "1.51", false},
		{"uuid", "uuid", "'00000000-0000-0000-0000-000000000001'", "'00000000-0000-0000-0000-000000000002'", false},
		{"char(n) padding", "char(3)", "'a'", "'b'", false},
		{"bpchar trailing space", "bpchar", "'a'", "'a '", false},
		{"char(n) padded alike", "char(3)", "'a'", "'a  '", true},
		{"timestamp(3)", "timestamp(3) with time zone", "'2024-01-01 00:00:00.001+00'", "'2024-01-01 00:00:00.002+00'", false},
		{"enum", "mood", "'happy'", "'sad'", false},
		{"NaN of another bit pattern", "float8", "'NaN'", "'Infinity'::float8 - 'Infinity'::float8", true},
		{"enum with other OIDs", "mood", "'sad'", "'sad'", true},
		{"timestamptz in another zone", "timestamptz", "'2024-01-01 05:30:00+05:30'", "'2024-01-01 00:00:00+00'", true},
		{"numeric written differently", "numeric", "1.50", "15.0e-1", true},
	}
	srv := testenv.Shared(t, testenv.PG17TS)
	src := testenv.NewDB(t, srv, false)
	dst := testenv.NewDB(t, srv, false)
	for _, db := range []string{src, dst} {
		// the enum's OIDs differ between the databases
		stmts := []string{`CREATE TYPE mood AS ENUM ('sad', 'happy')`}
		for i, c := range cases {
			val := c.a
			if db == dst {
				val = c.b
			}
			stmts = append(stmts,
				fmt.Sprintf("CREATE TABLE v%d (id int PRIMARY KEY, x %s)", i, c.typ),
				fmt.Sprintf("INSERT INTO v%d VALUES (1, %s)", i, val),
				fmt.Sprintf("CREATE TABLE e%d (id int PRIMARY KEY, x %s)", i, c.typ),
				fmt.Sprintf("INSERT INTO e%d VALUES (1, %s)", i, c.a))
		}
		testenv.MustExec(t, srv, db, stmts...)
	}
	// The other side's sessions print values differently; that must not matter.
	testenv.MustExec(t, srv, "postgres", fmt.Sprintf(`ALTER DATABASE %s SET extra_float_digits = 0`, dst))
	rep := run(t, srv, src, srv, dst, 1)
	if len(rep.Schema) != 0 {
		t.Errorf("schema differences: %v", rep.Schema)
	}
	for i, c := range cases {
		if u := unitOf(t, rep, fmt.Sprintf("public.v%d", i)); c.same {
			if !u.Identical {
				t.Errorf("%s: %s and %s differ: %s", c.name, c.a, c.b, u.Problem)
			}
		} else if u.Identical {
			t.Errorf("%s: %s and %s give the same checksum", c.name, c.a, c.b)
		} else if len(u.Rows) != 1 || u.Rows[0].Key != "id=1" {
			t.Errorf("%s: drill-down rows %+v", c.name, u.Rows)
		}
		if u := unitOf(t, rep, fmt.Sprintf("public.e%d", i)); !u.Identical {
			t.Errorf("%s: equal values %s differ: %s", c.name, c.a, u.Problem)
		}
	}
}

// Values swapped between rows of one column, or between columns of one row, leave
// every column's multiset of values alone: the row hash must still change.
func TestRowStructureShows(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src := testenv.NewDB(t, srv, false)
	dst := testenv.NewDB(t, srv, false)
	for db, rows := range map[string][2]string{
		src: {"(1, 1, 2), (2, 3, 4)", "(1, 'x', NULL)"},
		dst: {"(1, 1, 4), (2, 3, 2)", "(1, NULL, 'x')"},
	} {
		testenv.MustExec(t, srv, db,
			`CREATE TABLE across (id int PRIMARY KEY, a int, b int)`,
			`INSERT INTO across VALUES `+rows[0],
			`CREATE TABLE within (id int PRIMARY KEY, a text, b text)`,
			`INSERT INTO within VALUES `+rows[1])
	}
	rep := run(t, srv, src, srv, dst, 0)
	for _, table := range []string{"public.across", "public.within"} {
		if u := unitOf(t, rep, table); u.Identical {
			t.Errorf("%s: identical", table)
		}
	}
}

// The drill-down must find the one changed row in a large unit, with no key (row text
// order), with only a time column, and with duplicates of the changed row.
func TestDrillDownFindsTheRow(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	fixture := []string{
		`CREATE TABLE plain (a int, b text, c float8)`,
		`INSERT INTO plain SELECT i % 1000, 'b' || (i % 37), i / 7.0 FROM generate_series(1, 50000) i`,
		`INSERT INTO plain SELECT 5, 'dup', 1 FROM generate_series(1, 3)`,
		`CREATE TABLE ticks (ts timestamptz NOT NULL, sym text, px numeric)`,
		`SELECT create_hypertable('ticks', 'ts', chunk_time_interval => interval '1 day')`,
		`INSERT INTO ticks SELECT '2024-03-01 00:00:00+00'::timestamptz + (i / 50) * interval '1 minute', 's' || (i % 50), i * 0.01
			FROM generate_series(0, 50 * 60 * 24 - 1) i`,
	}
	src := testenv.NewDB(t, srv, true)
	dst := testenv.NewDB(t, srv, true)
	testenv.MustExec(t, srv, src, fixture...)
	testenv.MustExec(t, srv, dst, fixture...)
	testenv.MustExec(t, srv, dst,
		`UPDATE plain SET c = c + 1e-9 WHERE a = 500 AND b = 'b32'`,
		`DELETE FROM plain WHERE ctid = (SELECT min(ctid) FROM plain WHERE b = 'dup')`,
		`UPDATE ticks SET px = 123.450 WHERE ts = '2024-03-01 13:37:00+00' AND sym = 's7'`)
	rep := run(t, srv, src, srv, dst, 10)
	if rep.Identical {
		t.Fatal("identical")
	}
	plain := unitOf(t, rep, "public.plain")
	if len(plain.Rows) != 3 {
		t.Fatalf("plain: %d rows, want 3: %+v", len(plain.Rows), plain.Rows)
	}
	got := map[string]string{}
	for _, r := range plain.Rows {
		side, vals := "source", r.Source
		if vals == nil {
			side, vals = "target", r.Target
		}
		got[side+" "+*vals[0]+" "+*vals[1]] = *vals[2]
	}
	if got["source 5 dup"] != "1" || got["source 500 b32"] == "" || got["target 500 b32"] == "" ||
		got["source 500 b32"] == got["target 500 b32"] {
		t.Errorf("plain: rows %v", got)
	}
	var ticks []Unit
	for _, u := range rep.Units {
		if u.Table == "public.ticks" && !u.Identical {
			ticks = append(ticks, u)
		}
	}
	// the time column is no key, but one row lacks on each side at that time: a change
	if len(ticks) != 1 || len(ticks[0].Rows) != 1 {
		t.Fatalf("ticks: %+v", ticks)
	}
	r := ticks[0].Rows[0]
	if r.Key != "ts=2024-03-01 13:37:00+00" || r.Source == nil || r.Target == nil || *r.Target[2] != "123.450" {
		t.Errorf("ticks: row %+v", r)
	}
}

// Where the two sides cut a hypertable into different chunks, its data is compared by
// time ranges, and the schema part names the difference in chunk interval.
func TestChunksThatDoNotLineUp(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src := testenv.NewDB(t, srv, true)
	dst := testenv.NewDB(t, srv, true)
	for db, interval := range map[string]string{src: "1 day", dst: "3 days"} {
		testenv.MustExec(t, srv, db,
			`CREATE TABLE m (ts timestamptz NOT NULL, v int)`,
			`SELECT create_hypertable('m', 'ts', chunk_time_interval => interval '`+interval+`')`,
			`INSERT INTO m SELECT '2024-01-01 00:00:00+00'::timestamptz + i * interval '1 hour', i FROM generate_series(0, 24 * 7) i`)
	}
	rep := run(t, srv, src, srv, dst, 0)
	if rep.UnitsDiffering != 0 || rep.SourceRows != 169 || rep.TargetRows != 169 {
		t.Errorf("data: %d differing, rows %d/%d", rep.UnitsDiffering, rep.SourceRows, rep.TargetRows)
	}
	for _, u := range rep.Units {
		if u.Kind != "range" {
			t.Errorf("unit %s is a %s, want a range", u.Name(), u.Kind)
		}
	}
	var lines []string
	for _, d := range rep.Schema {
		lines = append(lines, d.String())
	}
	all := strings.Join(lines, "\n")
	if !strings.Contains(all, "hypertable public.m dimension 1: chunk interval differs: source 1 day, target 3 days") ||
		!strings.Contains(all, "hypertable public.m: number of chunks differs") {
		t.Errorf("schema differences:\n%s", all)
	}

	// A row the target lacks, in the middle of a target chunk, shows in its range.
	testenv.MustExec(t, srv, dst, `DELETE FROM m WHERE v = 30`)
	rep = run(t, srv, src, srv, dst, 5)
	var diff []Unit
	for _, u := range rep.Units {
		if !u.Identical {
			diff = append(diff, u)
		}
	}
	if len(diff) != 1 || diff[0].Range != "[2024-01-02 00:00:00+00, 2024-01-03 00:00:00+00)" ||
		len(diff[0].Rows) != 1 || diff[0].Rows[0].Target != nil || *diff[0].Rows[0].Source[1] != "30" {
		t.Errorf("differing units: %+v", diff)
	}
}

// A hypertable on the source that is a plain table on the target is compared by time
// ranges; one missing on the target is one unit, not one per chunk.
func TestHypertableAgainstPlainTable(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src := testenv.NewDB(t, srv, true)
	dst := testenv.NewDB(t, srv, true)
	for _, db := range []string{src, dst} {
		testenv.MustExec(t, srv, db, `CREATE TABLE m (ts timestamptz NOT NULL, v int)`)
	}
	testenv.MustExec(t, srv, src,
		`SELECT create_hypertable('m', 'ts', chunk_time_interval => interval '1 day')`,
		`CREATE TABLE gone (ts timestamptz NOT NULL)`,
		`SELECT create_hypertable('gone', 'ts', chunk_time_interval => interval '1 day')`,
		`INSERT INTO gone SELECT '2024-01-01 00:00:00+00'::timestamptz + i * interval '1 hour' FROM generate_series(0, 71) i`)
	for _, db := range []string{src, dst} {
		testenv.MustExec(t, srv, db,
			`INSERT INTO m SELECT '2024-01-01 00:00:00+00'::timestamptz + i * interval '1 hour', i FROM generate_series(0, 71) i`)
	}
	rep := run(t, srv, src, srv, dst, 0)
	var ranges int
	for _, u := range rep.Units {
		switch {
		case u.Table == "public.m" && (u.Kind != "range" || !u.Identical):
			t.Errorf("m: %s %s: %s", u.Kind, u.Range, u.Problem)
		case u.Table == "public.m":
			ranges++
		case u.Table == "public.gone" && (u.Problem != "missing on the target" || u.Source.Rows != 72):
			t.Errorf("gone: %+v", u)
		}
	}
	if ranges != 5 || rep.UnitsChecked != 6 {
		t.Errorf("%d ranges of m, %d units", ranges, rep.UnitsChecked)
	}
	var lines []string
	for _, d := range rep.Schema {
		lines = append(lines, d.String())
	}
	if got := strings.Join(lines, "\n"); got != "hypertable public.m: missing on the target\n"+
		"index public.m_ts_idx: missing on the target\nrelation public.gone: missing on the target" {
		t.Errorf("schema differences:\n%s", got)
	}
}

// Verify works between servers of different majors, here PostgreSQL 15 and 17: the
// text forms it hashes are the same.
func TestAcrossMajors(t *testing.T) {
	srv15 := testenv.Shared(t, testenv.PG15)
	srv17 := testenv.Shared(t, testenv.PG17TS)
	fixture := []string{
		`CREATE TABLE t (id bigserial PRIMARY KEY, f float8, r real, n numeric, ts timestamptz, j jsonb, a int[], s text)`,
		`INSERT INTO t (f, r, n, ts, j, a, s) SELECT i / 3.0, i / 7.0, i / 11.0, '2024-01-01 00:00:00+00'::timestamptz + i * interval '1 second',
			jsonb_build_object('k', i / 3.0), ARRAY[i, -i], repeat('x', i % 9) FROM generate_series(1, 2000) i`,
	}
	src, dst := twins(t, srv15, srv17, false, fixture...)
	rep := run(t, srv15, src, srv17, dst, 0)
	if !rep.Identical {
		t.Errorf("PostgreSQL 15 and 17 differ: %v %+v", rep.Schema, rep.Units)
	}
}

// On a managed-like server the admin is no superuser and TLS is required; verify
// needs nothing more than reading the user's own tables and the catalogs.
func TestAsNonSuperuserOverTLS(t *testing.T) {
	srv := testenv.Need(t, testenv.PG17TS, testenv.Options{Managed: true})
	ctx := context.Background()
	const other = "otherdb"
	if err := srv.Exec(ctx, "postgres", "CREATE DATABASE "+other+" OWNER "+testenv.ManagedAdmin); err != nil {
		t.Fatal(err)
	}
	for _, db := range []string{testenv.ManagedDB, other} {
		testenv.MustExec(t, srv, db, "CREATE EXTENSION IF NOT EXISTS timescaledb")
		conn, err := pgx.Connect(ctx, srv.URI(db))
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{
			`CREATE TABLE m (ts timestamptz NOT NULL, v float8, id bigserial, PRIMARY KEY (id, ts))`,
			`SELECT create_hypertable('m', 'ts', chunk_time_interval => interval '1 day')`,
			`INSERT INTO m (ts, v) SELECT '2024-01-01 00:00:00+00'::timestamptz + i * interval '1 hour', i / 3.0 FROM generate_series(0, 71) i`,
		} {
			if _, err := conn.Exec(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		conn.Close(ctx)
	}
	rep := run(t, srv, testenv.ManagedDB, srv, other, 0)
	if !rep.Identical || rep.UnitsChecked != 3 || rep.SourceRows != 72 {
		t.Errorf("report: schema %v, %d units, %d rows", rep.Schema, rep.UnitsChecked, rep.SourceRows)
	}

	// A table the admin may not read cannot be called identical; the rest is checked.
	for _, db := range []string{testenv.ManagedDB, other} {
		testenv.MustExec(t, srv, db, `CREATE TABLE secret (a int)`)
	}
	rep = run(t, srv, testenv.ManagedDB, srv, other, 3)
	if rep.Identical || rep.UnitsDiffering != 1 || rep.UnitsChecked != 4 {
		t.Fatalf("report: %d of %d units differ", rep.UnitsDiffering, rep.UnitsChecked)
	}
	if u := unitOf(t, rep, "public.secret"); !strings.Contains(u.Problem, "cannot be read: permission denied for table secret (SQLSTATE 42501)") {
		t.Errorf("secret: %q", u.Problem)
	}
}

// Names that need quoting (mixed case, spaces, dots, non-ASCII) work everywhere verify
// builds SQL: tables, hypertables and their time column, keys for the drill-down. Two
// tables whose schema and name differ only in where the dot falls stay two units.
func TestQuotedNames(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	fixture := []string{
		`CREATE SCHEMA "Sales Data"`,
		`CREATE TABLE "Sales Data"."Mëtrics" ("Zeit" timestamptz NOT NULL, "ID" int, "Wert" float8, PRIMARY KEY ("ID", "Zeit"))`,
		`SELECT create_hypertable('"Sales Data"."Mëtrics"', 'Zeit', chunk_time_interval => interval '1 day')`,
		`INSERT INTO "Sales Data"."Mëtrics" SELECT '2024-01-01 00:00:00+00'::timestamptz + i * interval '1 hour', i, i / 3.0 FROM generate_series(0, 71) i`,
		`CREATE SCHEMA "a.b"`, `CREATE SCHEMA a`,
		`CREATE TABLE "a.b".c (x int)`, `INSERT INTO "a.b".c VALUES (1)`,
		`CREATE TABLE a."b.c" (x int)`, `INSERT INTO a."b.c" VALUES (1), (2)`,
	}
	src := testenv.NewDB(t, srv, true)
	dst := testenv.NewDB(t, srv, true)
	testenv.MustExec(t, srv, src, fixture...)
	testenv.MustExec(t, srv, dst, fixture...)
	rep := run(t, srv, src, srv, dst, 0)
	if !rep.Identical || rep.UnitsChecked != 5 || rep.SourceRows != 75 {
		t.Fatalf("identical databases: schema %v, %d units (want 5), %d rows (want 75)", rep.Schema, rep.UnitsChecked, rep.SourceRows)
	}

	testenv.MustExec(t, srv, dst,
		`UPDATE "Sales Data"."Mëtrics" SET "Wert" = 0 WHERE "ID" = 30`,
		`DELETE FROM a."b.c" WHERE x = 2`)
	rep = run(t, srv, src, srv, dst, 3)
	var diff []string
	for _, u := range rep.Units {
		if u.Identical {
			continue
		}
		diff = append(diff, u.Name())
		if len(u.Rows) != 1 {
			t.Errorf("%s: drill-down rows %+v, want 1", u.Name(), u.Rows)
		}
	}
	if len(diff) != 2 || !strings.HasPrefix(diff[0], `hypertable "Sales Data"."Mëtrics" chunk _timescaledb_internal.`) || diff[1] != `table a."b.c"` {
		t.Errorf("differing units %q, want a chunk of \"Sales Data\".\"Mëtrics\" and a.\"b.c\"", diff)
	}
	if u := unitOf(t, rep, `a."b.c"`); u.Source.Rows != 2 || u.Target.Rows != 1 {
		t.Errorf(`a."b.c": %+v`, u)
	}
}

// Row security and its policies, rules, enum labels, composite types, comments and
// publications are compared: equal on equal databases (PostgreSQL 15 against 17), and
// each change on the target shows.
func TestMoreSchemaShows(t *testing.T) {
	srv15 := testenv.Shared(t, testenv.PG15)
	srv17 := testenv.Shared(t, testenv.PG17TS)
	fixture := []string{
		`CREATE TYPE mood AS ENUM ('ok', 'sad')`,
		`CREATE TYPE pair AS (a int, b text)`,
		`CREATE TABLE t (id int PRIMARY KEY, m mood, p pair)`,
		`COMMENT ON TABLE t IS 'the table'`,
		`COMMENT ON COLUMN t.m IS 'how it feels'`,
		`ALTER TABLE t ENABLE ROW LEVEL SECURITY`,
		`CREATE POLICY own ON t USING (id > 0) WITH CHECK (id < 1000)`,
		`CREATE TABLE log (id int)`,
		`CREATE RULE keep AS ON DELETE TO t DO ALSO INSERT INTO log VALUES (OLD.id)`,
		`CREATE PUBLICATION pub FOR TABLE t WITH (publish = 'insert, update')`,
		`CREATE INDEX t_m ON t (m)`,
		`COMMENT ON INDEX t_m IS 'by mood'`,
		`COMMENT ON CONSTRAINT t_pkey ON t IS 'the key'`,
		`CREATE FUNCTION one() RETURNS int LANGUAGE sql AS 'SELECT 1'`,
		`COMMENT ON FUNCTION one() IS 'one'`,
		`COMMENT ON TYPE mood IS 'moods'`,
		`COMMENT ON SCHEMA public IS 'ours'`,
	}
	src, dst := twins(t, srv15, srv17, false, fixture...)
	testenv.MustExec(t, srv15, "postgres", "ALTER DATABASE "+src+" SET app.secret = 'sesame-1'", "COMMENT ON DATABASE "+src+" IS 'ours'")
	testenv.MustExec(t, srv17, "postgres", "ALTER DATABASE "+dst+" SET app.secret = 'sesame-1'", "COMMENT ON DATABASE "+dst+" IS 'ours'",
		"ALTER DATABASE "+dst+" SET work_mem = '9MB'") // the target's own: not the source's loss
	// A live migration's publication on the source is tsmigrate's, not the user's.
	testenv.MustExec(t, srv15, src, "CREATE PUBLICATION tsmigrate_0123456789abcdef FOR TABLE t")
	if rep := run(t, srv15, src, srv17, dst, 0); !rep.Identical {
		t.Fatalf("equal schemas differ: %v", rep.Schema)
	}
	testenv.MustExec(t, srv17, "postgres", "ALTER DATABASE "+dst+" SET app.secret = 'sesame-2'", "COMMENT ON DATABASE "+dst+" IS NULL")
	testenv.MustExec(t, srv17, dst,
		`ALTER TYPE mood ADD VALUE 'happy'`,
		`ALTER TYPE pair ADD ATTRIBUTE c int`,
		`COMMENT ON TABLE t IS 'another'`,
		`COMMENT ON COLUMN t.m IS NULL`,
		`ALTER TABLE t FORCE ROW LEVEL SECURITY`,
		`ALTER POLICY own ON t USING (id > 1)`,
		`ALTER TABLE t DISABLE RULE keep`,
		`ALTER PUBLICATION pub SET (publish = 'insert')`,
		`ALTER PUBLICATION pub ADD TABLE log`,
		`COMMENT ON INDEX t_m IS 'by feeling'`,
		`COMMENT ON CONSTRAINT t_pkey ON t IS NULL`,
		`COMMENT ON FUNCTION one() IS 'uno'`,
		`COMMENT ON TYPE mood IS NULL`,
		`COMMENT ON SCHEMA public IS 'theirs'`)
	rep := run(t, srv15, src, srv17, dst, 0)
	var all []string
	for _, d := range rep.Schema {
		all = append(all, d.String())
	}
	got := strings.Join(all, "\n")
	for _, want := range []string{
		"type public.mood", "enum labels", "type public.pair", "attributes",
		"relation public.t", "comment", "column public.t.m", "row security",
		"policy public.t.own", "using",
		"rule public.t.keep", "enabled",
		"publication pub", "publishes", "tables",
		"comment on index public.t_m: text differs: source by mood, target by feeling",
		"comment on table constraint t_pkey on public.t: missing on the target",
		"comment on function public.one(): text differs: source one, target uno",
		"comment on type public.mood: missing on the target",
		"comment on schema public: text differs: source ours, target theirs",
		"database: setting app.secret differs: source value hidden, sha256 ", "database: comment differs: source ours, target (none)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the differences do not show %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "sesame") {
		t.Errorf("a custom setting's value shows:\n%s", got)
	}
}
