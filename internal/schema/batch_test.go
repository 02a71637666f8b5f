package schema

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tsmigrate/tsmigrate/internal/pgtools"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// A pre-data section of 300 tables and routines whose bodies hold semicolons, dollar
// quotes, a fake entry comment and BEGIN ATOMIC, restored in batches: in a handful of
// round trips where pg_restore takes one an entry, and the same schema; then analyzed
// in a few round trips too. An entry that
// fails is told as pg_restore tells it (its object, the server's error, the hint), and
// the entries around it, in its batch and after, are restored.
func TestRestoreSectionInBatches(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	ctx := context.Background()
	tools := &pgtools.Tools{Dir: srv.ClientBin()}
	src := testenv.NewDB(t, srv, false)
	sql := []string{
		`CREATE FUNCTION f(x int) RETURNS text LANGUAGE plpgsql AS $_$BEGIN RETURN 'a;b' || x; END$_$`,
		"CREATE FUNCTION g() RETURNS text LANGUAGE plpgsql AS $$\n--\n-- Name: fake; Type: TABLE; Schema: public; Owner: -\n--\nBEGIN RETURN 'x;'; END$$",
		`CREATE FUNCTION h(x int) RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN x > 0 THEN 1 ELSE 2 END; SELECT x + 10; END`,
		`CREATE TABLE "semi;colon" ("a;b" text DEFAULT E'it''s \\;', c$d text DEFAULT ';')`,
		`COMMENT ON TABLE "semi;colon" IS 'one; two'`,
		`CREATE RULE twice AS ON INSERT TO "semi;colon" DO ALSO (INSERT INTO "semi;colon" (c$d) VALUES ('r1'); INSERT INTO "semi;colon" (c$d) VALUES ('r2'))`,
	}
	for i := range 300 {
		sql = append(sql, fmt.Sprintf(`CREATE TABLE t%03d (id int, v text DEFAULT 'v;%d')`, i, i))
	}
	testenv.MustExec(t, srv, src, sql...)
	archive := filepath.Join(t.TempDir(), "schema.dump")
	if _, err := DumpSchema(ctx, tools, cfg(t, "source", srv.SuperURI(src)), archive, nil); err != nil {
		t.Fatal(err)
	}
	restore := func(db string) (int64, []Message, error) {
		p := testenv.StartProxy(t, srv)
		before := p.Stats()
		msgs, err := RestoreSection(ctx, tools, cfg(t, "target", p.URI(t, srv.SuperURI(db))), archive, PreData, 1, nil, nil)
		return p.Stats().Sub(before).RoundTrips, msgs, err
	}

	dst := testenv.NewDB(t, srv, false)
	trips, msgs, err := restore(dst)
	if err != nil || len(msgs) != 0 {
		t.Fatalf("restore: %v %v", err, msgs)
	}
	t.Logf("pre-data of %d tables and 3 routines in %d round trips", 301, trips)
	if trips > 10 {
		t.Errorf("pre-data took %d round trips to the target, want 10 at most", trips)
	}
	if _, err := RestoreSection(ctx, tools, cfg(t, "target", srv.SuperURI(dst)), archive, PostData, 1, nil, nil); err != nil {
		t.Fatal(err)
	}
	for q, want := range map[string]int64{
		"SELECT count(*) FROM pg_tables WHERE schemaname = 'public'":                               301,
		"SELECT length(f(7)) + length(g()) + h(5)":                                                 int64(len("a;b7") + len("x;") + 15),
		"SELECT count(*) FROM pg_rules WHERE rulename = 'twice'":                                   1,
		`SELECT count(*) FROM pg_description WHERE description = 'one; two'`:                       1,
		`SELECT count(*) FROM t150 WHERE false`:                                                    0,
		`SELECT count(*) FROM pg_attrdef WHERE pg_get_expr(adbin, adrelid) = $$'it''s \;'::text$$`: 1,
	} {
		if got := count(t, srv, dst, q); got != want {
			t.Errorf("%s: %d, want %d", q, got, want)
		}
	}

	// ANALYZE of 301 small tables takes a few round trips too, and covers them all.
	p := testenv.StartProxy(t, srv)
	if err := Analyze(ctx, cfg(t, "target", p.URI(t, srv.SuperURI(dst))), 2, nil); err != nil {
		t.Fatal(err)
	}
	t.Logf("ANALYZE of 301 tables in %d round trips", p.Stats().RoundTrips)
	if trips := p.Stats().RoundTrips; trips > 20 {
		t.Errorf("ANALYZE of 301 tables took %d round trips, want 20 at most", trips)
	}
	if n := count(t, srv, dst, "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' AND reltuples < 0"); n != 0 {
		t.Errorf("%d tables not analyzed", n)
	}

	// A table the target holds already: its CREATE TABLE fails, the others are made.
	clash := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, clash, `CREATE TABLE t150 (other int)`)
	_, _, err = restore(clash)
	var me *MessageError
	if !errors.As(err, &me) || len(me.Messages) != 1 {
		t.Fatalf("restore into a target holding t150: %v, want one message", err)
	}
	m := me.Messages[0]
	if m.Object != "TABLE public.t150" || m.TOCID == 0 || !strings.Contains(m.Text, `relation "t150" already exists`) ||
		!strings.Contains(m.Hint, "drop it there") || !strings.Contains(strings.Join(m.Lines, "\n"), "Command was: CREATE TABLE public.t150") {
		t.Errorf("message %+v", m)
	}
	if n := count(t, srv, clash, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"); n != 301 {
		t.Errorf("%d tables on the target, want the 300 others and its own t150", n)
	}
	if n := count(t, srv, clash, "SELECT count(*) FROM information_schema.columns WHERE table_name = 't150' AND column_name = 'other'"); n != 1 {
		t.Error("the target's own t150 was changed")
	}
}
