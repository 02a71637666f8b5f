package verify

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// hashCases are values of every type verify hashes, each way hashedValue has for it:
// the types hashed as they are (exactHash), floats by their bits, character types by
// their bytes, bpchar by its output text, and a sample of the types hashed through
// their text form (the fallback for every other type). since is the first major
// that has the values (0: all majors verify compares).
var hashCases = []struct {
	typ    string
	values []string
	since  int
}{
	{"smallint", []string{"0", "1", "-1", "32767", "-32768"}, 0},
	{"integer", []string{"0", "1", "-1", "2147483647", "-2147483648"}, 0},
	{"bigint", []string{"0", "1", "-1", "9223372036854775807", "-9223372036854775808"}, 0},
	{"boolean", []string{"true", "false"}, 0},
	{"date", []string{"'2024-02-29'", "'0001-01-01'", "'5874897-12-31'", "'infinity'", "'-infinity'", "'4713-01-01 BC'"}, 0},
	{"uuid", []string{"'00000000-0000-0000-0000-000000000000'", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'"}, 0},
	{"bytea", []string{`'\x'`, `'\x00'`, `'\xdeadbeef'`, `'\x0000'`}, 0},
	{"timestamp with time zone", []string{"'2024-01-01 00:00:00+00'", "'2024-01-01 05:30:00.000001+05:30'", "'infinity'", "'-infinity'", "'1900-01-01 00:00:00+00'", "'4713-01-01 00:00:00+00 BC'"}, 0},
	{"timestamp(3) with time zone", []string{"'2024-01-01 00:00:00.001+00'"}, 0},
	{"timestamp without time zone", []string{"'2024-01-01 00:00:00'", "'2024-06-30 23:59:59.999999'", "'infinity'", "'294276-12-31 23:59:59'"}, 0},
	{"time without time zone", []string{"'00:00'", "'23:59:59.999999'", "'24:00'"}, 0},
	{"double precision", []string{"0", "'-0'", "0.1", "1e308", "5e-324", "'NaN'", "'Infinity'", "'-Infinity'", "1234.500001", "0.1::float8 + 1.3877787807814457e-17"}, 0},
	{"real", []string{"0", "'-0'", "0.1", "'0.100000009'", "3.4e38", "'NaN'", "'Infinity'"}, 0},
	{"text", []string{"''", "' '", "'a '", "'Abc'", `U&'\00E9'`, `U&'e\0301'`, "'😀'", `E'line\nbreak'`, "'a,b'"}, 0},
	{"character varying(10)", []string{"''", `'a"b'`, "'a''b'"}, 0},
	{"character(3)", []string{"'a'", "'ab'", "''"}, 0},
	{"name", []string{"'a'", "'Mixed Case'"}, 0},
	{"bpchar", []string{"'a'", "'a '", "''"}, 0},
	{"numeric", []string{"0", "1.50", "1.5", "15.0e-1", "-0.0", "'NaN'", "1e-100", "123456789012345678901234567890.123456789", "'Infinity'", "'-Infinity'"}, 0},
	{"numeric(10,2)", []string{"1.5", "0", "-99999999.99"}, 0},
	{"interval", []string{"'1 mon'", "'30 days'", "'1 day 00:00:01'", "'-1 year -2 mons +3 days -04:05:06.000007'", "'0'"}, 0},
	{"interval", []string{"'infinity'", "'-infinity'"}, 17},
	{"jsonb", []string{`'{"a": 1}'`, `'{"a": 1.0}'`, `'{"b": [1, 2, {"c": null}], "a": "x"}'`, "'[]'", `'"é"'`, "'1e2'"}, 0},
	{"json", []string{`'{"a":1}'`, `'{"a": 1}'`, "'[1, 2]'"}, 0},
	{"integer[]", []string{"'{}'", "'{1,2}'", "'{2,1}'", "'{{1,2},{3,4}}'", "'{NULL}'", "'[0:1]={1,2}'"}, 0},
	{"text[]", []string{"ARRAY['a,b', 'c']", "ARRAY['a', 'b,c']", "ARRAY['']", "ARRAY[NULL]::text[]", `ARRAY['"q"', 'sp ace', 'back\slash']`}, 0},
	{"money", []string{"1.5", "1.51", "-0.01", "0"}, 0},
	{"inet", []string{"'192.168.0.1'", "'192.168.0.1/24'", "'::1'", "'2001:db8::/32'"}, 0},
	{"cidr", []string{"'10.0.0.0/8'", "'2001:db8::/32'"}, 0},
	{"macaddr", []string{"'08:00:2b:01:02:03'"}, 0},
	{"time with time zone", []string{"'12:00:00+05:30'", "'00:00:00-12'"}, 0},
	{"point", []string{"'(1,2)'", "'(0.1,-0)'"}, 0},
	{"box", []string{"'((0,0),(1,1))'"}, 0},
	{"bit varying", []string{"B''", "B'101'", "B'0001'"}, 0},
	{"bit(3)", []string{"B'101'"}, 0},
	{"tsvector", []string{"'a fat cat'", "'cat:3 fat:2,4'"}, 0},
	{"xml", []string{"'<a>x</a>'", "'<b/>'"}, 0},
	{"int4range", []string{"'[1,3)'", "'empty'", "'(,5]'"}, 0},
	{"tstzrange", []string{"'[2024-01-01 00:00:00+00,2024-01-02 00:00:00+00)'"}, 0},
	{"oid", []string{"0", "4294967295"}, 0},
	{"mood", []string{"'sad'", "'happy'"}, 0},
	{"pair", []string{"ROW(1, 'a')::pair", "ROW(NULL, '')::pair", "ROW(2, NULL)::pair"}, 0},
}

// Verify compares a source and a target of different PostgreSQL majors (a migration
// that upgrades on the way): each value's hash, as verify computes it, must be the same
// on both. For each type verify handles (its own hash, the bits of floats, the bytes of
// text, the output text of every other type), every value is hashed on PostgreSQL 17
// and on PostgreSQL 18 (the upgrade the test servers have), 15 and 16 (the older
// majors they have; not the values those lack), one row hash per value (both ways: as the bytes are, and
// re-encoded to UTF-8 as between databases of different encodings) with the two mixes
// of it that checksums sum, and the hashes compared; the text forms of the types
// hashed through text are compared too, so that a text form that changed between
// majors shows here, not as a false difference in a migration.
func TestHashesAcrossMajors(t *testing.T) {
	srv17 := testenv.Shared(t, testenv.PG17TS)
	srv18 := testenv.Shared(t, testenv.PG18TS)
	ctx := context.Background()
	read := func(srv *testenv.Server, major int) map[string]string {
		t.Helper()
		db := testenv.NewDB(t, srv, false)
		testenv.MustExec(t, srv, db, `CREATE TYPE mood AS ENUM ('sad', 'happy')`, `CREATE TYPE pair AS (a int, b text)`)
		conn, err := pgx.Connect(ctx, srv.SuperURI(db))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, PinSettings); err != nil {
			t.Fatal(err)
		}
		// The pinned search_path is pg_catalog: the test's types are public's.
		if _, err := conn.Exec(ctx, `SET search_path = pg_catalog, public`); err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, c := range hashCases {
			if c.since > major {
				continue
			}
			col := column{name: "x", typ: c.typ}
			var vals []string
			for i, v := range c.values {
				vals = append(vals, fmt.Sprintf("(%d, (%s)::%s)", i+1, v, c.typ))
			}
			// Both ways verify hashes: the bytes as they are, and as UTF-8 (reencode,
			// between databases of different encodings); and the two mixes of each row
			// hash that checksumSQL and the drill-down sum.
			q := fmt.Sprintf(`SELECT ord, concat_ws(' ', h, hashint8extended(h, 0), hashint8extended(h, 1),
				u, hashint8extended(u, 0), hashint8extended(u, 1)), x
			FROM (SELECT ord, %s AS h, %s AS u, t.x::text AS x FROM (VALUES %s) AS t(ord, x) OFFSET 0) AS r`,
				(&plan{columns: []column{col}}).rowHash(), (&plan{columns: []column{col}, reencode: true}).rowHash(), strings.Join(vals, ", "))
			rows, err := conn.Query(ctx, q)
			if err != nil {
				t.Fatalf("%s: %v\n%s", c.typ, err, q)
			}
			var ord int
			var hash string
			var text *string
			if _, err := pgx.ForEachRow(rows, []any{&ord, &hash, &text}, func() error {
				v := "NULL"
				if text != nil {
					v = *text
				}
				out[c.typ+" "+c.values[ord-1]] = hash + " " + v
				return nil
			}); err != nil {
				t.Fatalf("%s: %v", c.typ, err)
			}
		}
		return out
	}
	// PostgreSQL 17 against 18 (the upgrade the test servers have), and against the
	// older majors of the test servers, 15 and 16 (plain PostgreSQL).
	base := read(srv17, 17)
	for _, o := range []struct {
		major int
		srv   *testenv.Server
	}{{18, srv18}, {15, testenv.Shared(t, testenv.PG15)}, {16, testenv.Shared(t, testenv.PG16)}} {
		b := read(o.srv, o.major)
		var diffs []string
		for k, v := range b {
			if base[k] != v {
				diffs = append(diffs, fmt.Sprintf("%s: PostgreSQL 17 %q, %d %q", k, base[k], o.major, v))
			}
		}
		slices.Sort(diffs)
		if len(diffs) > 0 {
			t.Errorf("hashes or text forms differ between PostgreSQL 17 and %d:\n%s", o.major, strings.Join(diffs, "\n"))
		}
		if n := len(read(srv17, o.major)); len(b) != n || n < 150 {
			t.Errorf("%d values read on PostgreSQL %d, %d on 17", len(b), o.major, n)
		}
	}
}

// Across majors verify reports a changed value as it does within one: the last bit
// of a float, ” against NULL, 1.50 against 1.5, each in a table of its own, found
// down to its row; an unchanged table is identical. The schema shows its one real
// difference (a column's NOT NULL and default), and not what only the versions make
// differ (PostgreSQL 18's NOT NULL constraints; the newer PostgreSQL and TimescaleDB
// are said, not counted).
func TestDifferencesAcrossMajors(t *testing.T) {
	srv17 := testenv.Shared(t, testenv.PG17TS)
	srv18 := testenv.Shared(t, testenv.PG18TS)
	cases := []struct{ name, typ, a, b string }{
		{"float8 last bit", "float8", "0.1", "0.1::float8 + 1.3877787807814457e-17"},
		{"empty string and NULL", "text", "''", "NULL"},
		{"numeric scale", "numeric", "1.50", "1.5"},
		{"unchanged", "numeric", "1.50", "1.50"},
	}
	src := testenv.NewDB(t, srv17, true)
	dst := testenv.NewDB(t, srv18, true)
	for _, side := range []struct {
		srv *testenv.Server
		db  string
		b   bool
	}{{srv17, src, false}, {srv18, dst, true}} {
		// a real schema difference: the target's column lost its NOT NULL and default
		sdef := `CREATE TABLE s (a int NOT NULL DEFAULT 1)`
		if side.b {
			sdef = `CREATE TABLE s (a int)`
		}
		stmts := []string{sdef, `CREATE TABLE m (t timestamptz NOT NULL, v float8)`, `SELECT create_hypertable('m', 't')`,
			`INSERT INTO m SELECT '2025-01-01'::timestamptz + g * interval '1 hour', g / 3.0 FROM generate_series(1, 500) g`}
		for i, c := range cases {
			val := c.a
			if side.b {
				val = c.b
			}
			stmts = append(stmts, fmt.Sprintf("CREATE TABLE v%d (id int PRIMARY KEY, x %s)", i, c.typ),
				fmt.Sprintf("INSERT INTO v%d SELECT g, %s FROM generate_series(1, 3) g", i, c.a),
				fmt.Sprintf("UPDATE v%d SET x = %s WHERE id = 2", i, val))
		}
		testenv.MustExec(t, side.srv, side.db, stmts...)
	}
	rep := run(t, srv17, src, srv18, dst, 1)
	var diffs []string
	for _, d := range rep.Schema {
		diffs = append(diffs, d.String())
	}
	if got, want := strings.Join(diffs, "\n"), "column public.s.a: default differs: source 1, target (none)\ncolumn public.s.a: not null differs: source true, target false"; got != want {
		t.Errorf("schema differences between PostgreSQL 17 and 18:\n%s\nwant:\n%s", got, want)
	}
	if up := strings.Join(rep.Upgrades, "; "); !strings.Contains(up, "PostgreSQL 17.") || !strings.Contains(up, "extension timescaledb 2.") {
		t.Errorf("verify says of the versions: %q", up)
	}
	for i, c := range cases {
		u := unitOf(t, rep, fmt.Sprintf("public.v%d", i))
		switch {
		case c.a == c.b && !u.Identical:
			t.Errorf("%s: equal values differ across majors: %s", c.name, u.Problem)
		case c.a != c.b && u.Identical:
			t.Errorf("%s: %s and %s give the same checksum across majors", c.name, c.a, c.b)
		case c.a != c.b && (len(u.Rows) != 1 || u.Rows[0].Key != "id=2"):
			t.Errorf("%s: drill-down rows %+v", c.name, u.Rows)
		}
	}
	for _, u := range rep.Units {
		if u.Table == "public.m" && !u.Identical {
			t.Errorf("hypertable m differs across majors: %s %s", u.Name(), u.Problem)
		}
	}
}

// PostgreSQL 16 prints a view over one table without qualifying its columns, 15 with:
// across those majors the same view compares equal (made again on the target from the
// source's text, it prints as the target's), and is said in the upgrades; a view that
// really differs (another condition, another column) still shows, as does one the
// target lacks.
func TestViewsAcrossMajors(t *testing.T) {
	srv15 := testenv.Shared(t, testenv.PG15)
	srv18 := testenv.Shared(t, testenv.PG18TS)
	src := testenv.NewDB(t, srv15, false)
	dst := testenv.NewDB(t, srv18, false)
	common := []string{`CREATE TABLE r (id int PRIMARY KEY, a int, b text)`, `CREATE TABLE s (id int, c text)`,
		`CREATE VIEW same AS SELECT id, a + 1 AS a1, upper(b) AS ub FROM r WHERE a > 0`,
		`CREATE MATERIALIZED VIEW msame AS SELECT a, count(*) FROM r GROUP BY a`,
		`CREATE VIEW joined AS SELECT r.id, s.c FROM r JOIN s USING (id)`}
	testenv.MustExec(t, srv15, src, append(slices.Clone(common),
		`CREATE VIEW cond AS SELECT id, b FROM r WHERE a > 0`,
		`CREATE VIEW cols AS SELECT id, a FROM r`,
		`CREATE VIEW gone AS SELECT id FROM r`)...)
	testenv.MustExec(t, srv18, dst, append(slices.Clone(common),
		`CREATE VIEW cond AS SELECT id, b FROM r WHERE a > 1`,
		`CREATE VIEW cols AS SELECT id, a AS b FROM r`)...)
	rep := run(t, srv15, src, srv18, dst, 1)
	var diffs []string
	for _, d := range rep.Schema {
		diffs = append(diffs, d.Object+": "+d.What)
	}
	want := "column public.cols.a: missing\ncolumn public.cols.b: extra\nrelation public.cols: definition\nrelation public.cond: definition\nrelation public.gone: missing"
	if got := strings.Join(diffs, "\n"); got != want {
		t.Errorf("schema differences between PostgreSQL 15 and 18:\n%s\nwant:\n%s", got, want)
	}
	if up := strings.Join(rep.Upgrades, "; "); !strings.Contains(up, "view definitions printed differently by PostgreSQL 15 and 18 (2)") {
		t.Errorf("verify says of the versions: %q", up)
	}
}
