package sqltext

import (
	"context"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var literalSeeds = []string{
	"", "a", "'", "''", `\`, `\\`, `\'`, `'\`, `\''`, "O'Reilly", `C:\dir\`, `E'x'`, "$$", "$a$",
	"\n", "\t\r", "é€😀", "\u00a0", "--", "/*", "*/", "'; DROP TABLE t; --", `\'; SELECT 1; --`,
	`\x41`, `\u0041`, `\101`, `\b\f\n\r\t`, "?", "$1", `"`, "E", "e'", "U&'",
}

func TestLiteral(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", "''"},
		{"abc", "'abc'"},
		{"O'Reilly", "'O''Reilly'"},
		{`C:\dir`, `E'C:\\dir'`},
		{`a\'b`, `E'a\\''b'`},
		{"2024-01-01 00:00:00+00", "'2024-01-01 00:00:00+00'"},
	} {
		if got := Literal(c.in); got != c.want {
			t.Errorf("Literal(%q) = %s, want %s", c.in, got, c.want)
		}
	}
	if got := Literals([]string{"a", `b\`}); got != `'a', E'b\\'` {
		t.Errorf("Literals = %s", got)
	}
}

// readLiteral is how PostgreSQL's lexer (scan.l) reads a string literal at the start of
// q, with standard_conforming_strings scs: in ” only a doubled quote is special unless
// scs is off; in E” a backslash escapes the next character (only \\ and \' are needed
// here, so others are refused). It returns the value and the rest of q after the literal.
func readLiteral(q string, scs bool) (value, rest string, ok bool) {
	escapes := !scs
	if strings.HasPrefix(q, "E'") {
		escapes, q = true, q[1:]
	}
	if !strings.HasPrefix(q, "'") {
		return "", "", false
	}
	var b strings.Builder
	for i := 1; i < len(q); i++ {
		switch c := q[i]; {
		case c == '\'' && i+1 < len(q) && q[i+1] == '\'':
			b.WriteByte('\'')
			i++
		case c == '\'':
			return b.String(), q[i+1:], true
		case c == '\\' && escapes:
			if i+1 == len(q) || q[i+1] != '\\' && q[i+1] != '\'' {
				return "", "", false
			}
			b.WriteByte(q[i+1])
			i++
		default:
			b.WriteByte(c)
		}
	}
	return "", "", false
}

// FuzzLiteral: whatever the input, Literal gives exactly one literal token (nothing
// after its closing quote) that reads back as the input with standard_conforming_strings
// on and off. No server needed.
//
//	go test -fuzz FuzzLiteral -fuzztime 60s ./internal/sqltext
func FuzzLiteral(f *testing.F) {
	for _, s := range literalSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q := Literal(s)
		for _, scs := range []bool{true, false} {
			v, rest, ok := readLiteral(q, scs)
			if !ok || rest != "" || v != s {
				t.Fatalf("Literal(%q) = %s reads as %q (ok %v, then %q) with standard_conforming_strings %v", s, q, v, ok, rest, scs)
			}
		}
	})
}

// FuzzQuoteLiteral: a real server reads back what Literal quoted, with
// standard_conforming_strings on and off, through the extended protocol (pgx's Query)
// and the simple one (multi-statement Exec, as migrations send their statements).
// The seeds run in every test run; fuzz it with
//
//	go test -run '^$' -fuzz FuzzQuoteLiteral -fuzztime 60s ./internal/sqltext
func FuzzQuoteLiteral(f *testing.F) {
	for _, s := range literalSeeds {
		f.Add(s)
	}
	srv := testenv.Shared(f, testenv.PG15)
	ctx := context.Background()
	conns := map[string]*pgx.Conn{}
	for _, scs := range []string{"on", "off"} {
		c, err := pgx.Connect(ctx, srv.SuperURI("postgres"))
		if err != nil {
			f.Fatal(err)
		}
		f.Cleanup(func() { c.Close(context.Background()) })
		if _, err := c.Exec(ctx, "SET standard_conforming_strings = "+scs); err != nil {
			f.Fatal(err)
		}
		conns[scs] = c
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
			t.Skip("PostgreSQL text holds valid UTF-8 without NUL only")
		}
		q := "SELECT " + Literal(s) + " AS v"
		for scs, c := range conns {
			var got string
			if err := c.QueryRow(ctx, q).Scan(&got); err != nil || got != s {
				t.Fatalf("standard_conforming_strings %s, extended protocol: %s gave %q, %v; want %q", scs, q, got, err, s)
			}
			res, err := c.PgConn().Exec(ctx, q+"; SELECT 'end'").ReadAll()
			if err != nil || len(res) != 2 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) != 1 || string(res[0].Rows[0][0]) != s {
				t.Fatalf("standard_conforming_strings %s, simple protocol: %s gave %v, %v; want %q", scs, q, res, err, s)
			}
		}
	})
}

// TestConditions runs the conditions on a TimescaleDB database holding schemas named
// like TimescaleDB's, a table of the user's in _timescaledb_internal, a journal and a
// temporary table, and checks which schemas and tables each keeps: on TimescaleDB
// 2.19.3 (PostgreSQL 17), and on the newer one of PostgreSQL 18, whose catalog names
// chunks otherwise.
func TestConditions(t *testing.T) {
	for _, k := range []testenv.Kind{testenv.PG17TS, testenv.PG18TS} {
		t.Run(string(k), func(t *testing.T) { testConditions(t, testenv.Shared(t, k)) })
	}
}

func testConditions(t *testing.T, srv *testenv.Server) {
	db := testenv.NewDB(t, srv, true)
	testenv.MustExec(t, srv, db,
		`CREATE SCHEMA app`, `CREATE SCHEMA _timescaledb_mine`, `CREATE SCHEMA timescaledb_x`, `CREATE SCHEMA pgxdata`,
		`CREATE SCHEMA `+Journal, `CREATE TABLE `+Journal+`.units (id int)`,
		`CREATE TABLE app.m (t timestamptz NOT NULL, v int)`, `SELECT create_hypertable('app.m', 't')`,
		`INSERT INTO app.m VALUES ('2024-01-01', 1)`,
		`CREATE TABLE _timescaledb_mine.a (i int)`, `CREATE TABLE timescaledb_x.b (i int)`,
		`CREATE TABLE _timescaledb_internal.mine (i int)`)
	ctx := context.Background()
	c, err := pgx.Connect(ctx, srv.SuperURI(db))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, `CREATE TEMPORARY TABLE tmp (i int)`); err != nil {
		t.Fatal(err)
	}
	schemas := func(cond string) []string {
		t.Helper()
		rows, _ := c.Query(ctx, `SELECT nspname::text FROM pg_namespace n WHERE `+cond+` ORDER BY 1`)
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("%s: %v", cond, err)
		}
		return names
	}
	user := []string{"_timescaledb_mine", "app", "pgxdata", "public", "timescaledb_x"}
	if _, err := c.Exec(ctx, `SET standard_conforming_strings = off`); err != nil {
		t.Fatal(err)
	}
	// pgxdata is a user's: pg_ as a LIKE pattern without its escape would take it.
	if got := schemas(UserSchema("n.nspname")); !slices.Equal(got, user) {
		t.Errorf("UserSchema keeps %v, want %v", got, user)
	}
	// TimescaleDB's schemas are exactly those its extension made (2.19.3 makes all eight;
	// later versions leave out _timescaledb_debug).
	members := schemas(ExtensionMember(Catalog("pg_namespace"), "n.oid"))
	if got := schemas(TimescaleSchema("n.nspname")); !slices.Equal(got, members) || len(got) < len(TimescaleSchemas)-1 {
		t.Errorf("TimescaleSchema keeps %v; the extension's schemas are %v; TimescaleSchemas %v", got, members, TimescaleSchemas)
	}
	data := slices.Sorted(slices.Values(append(slices.Clone(user), members...)))
	if got := schemas(DataSchema("n.nspname")); !slices.Equal(got, data) {
		t.Errorf("DataSchema keeps %v, want %v", got, data)
	}
	for _, s := range schemas(SystemSchema("n.nspname")) {
		if !strings.HasPrefix(s, "pg_") && s != "information_schema" {
			t.Errorf("SystemSchema keeps %s", s)
		}
	}
	if got := schemas(SystemSchema("n.nspname")); !slices.Contains(got, "pg_catalog") || !slices.Contains(got, "pg_toast") ||
		!slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, "pg_temp_") }) {
		t.Errorf("SystemSchema keeps %v", got)
	}
	if got := schemas(JournalSchema("n.nspname")); !slices.Equal(got, []string{Journal}) {
		t.Errorf("JournalSchema keeps %v", got)
	}

	// The user's tables outside TimescaleDB's schemas, and the data tables (chunks and
	// the user's table in _timescaledb_internal among them), none of the extension's.
	tables := func(cond string) []string {
		t.Helper()
		rows, _ := c.Query(ctx, `SELECT format('%s.%s', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND `+cond+` AND NOT `+ExtensionMember(Catalog("pg_class"), "c.oid")+` ORDER BY 1`)
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("%s: %v", cond, err)
		}
		return names
	}
	if got, want := tables(UserSchema("n.nspname")), []string{"_timescaledb_mine.a", "app.m", "timescaledb_x.b"}; !slices.Equal(got, want) {
		t.Errorf("user tables %v, want %v", got, want)
	}
	if got := tables(DataSchema("n.nspname")); len(got) != 5 || !slices.Contains(got, "_timescaledb_internal.mine") ||
		!slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, "_timescaledb_internal._hyper_") }) {
		t.Errorf("data tables %v, want the user tables, the chunk and _timescaledb_internal.mine", got)
	}
	// The user's tables wherever they are (the hypertable's root too), not its chunk; in a
	// database without TimescaleDB, schemas named like its are the user's.
	want := []string{"_timescaledb_internal.mine", "_timescaledb_mine.a", "app.m", "timescaledb_x.b"}
	if got := tables(UserRelation("n.nspname", "c.oid", "c.relkind", true)); !slices.Equal(got, want) {
		t.Errorf("user relations %v, want %v", got, want)
	}
	if got := tables(UserRelation("n.nspname", "c.oid", "c.relkind", false)); !slices.Equal(got, tables(DataSchema("n.nspname"))) {
		t.Errorf("user relations without TimescaleDB %v, want the data tables", got)
	}
	var catalog int
	if err := c.QueryRow(ctx, `SELECT count(*) FROM pg_class c WHERE c.oid = '_timescaledb_catalog.hypertable'::regclass AND `+
		ExtensionMember(Catalog("pg_class"), "c.oid")).Scan(&catalog); err != nil || catalog != 1 {
		t.Errorf("_timescaledb_catalog.hypertable is an extension member: %d, %v", catalog, err)
	}
}

func TestSettingValue(t *testing.T) {
	for _, c := range []struct{ name, stored, want string }{
		{"work_mem", "8MB", "'8MB'"},
		{"statement_timeout", "5s", "'5s'"},
		{"search_path", `app, "$user", public`, `'app', '$user', 'public'`},
		{"Search_Path", `"a b", "c""d"`, `'a b', 'c"d'`},
		{"search_path", "", "''"},
		{"app.note", `it's`, `'it''s'`},
	} {
		if got := SettingValue(c.name, c.stored); got != c.want {
			t.Errorf("SettingValue(%q, %q) = %s, want %s", c.name, c.stored, got, c.want)
		}
	}
}
