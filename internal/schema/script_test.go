package schema

import (
	"strings"
	"testing"
)

// Statements end at semicolons outside strings, quoted names, dollar quotes, comments,
// parentheses and routines' BEGIN ATOMIC bodies; pg_restore's SET statements before an
// entry's comment are apart from the entry before.
func TestCutScript(t *testing.T) {
	script := `--
-- PostgreSQL database dump
--

\restrict abc123

SET statement_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);

--
-- Name: f(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.f() RETURNS text
    LANGUAGE plpgsql
    AS $_$BEGIN RETURN 'a;b' || $1; END$_$;


--
-- Name: g(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.g() RETURNS text
    LANGUAGE plpgsql
    AS $$
--
-- Name: fake; Type: TABLE; Schema: public; Owner: -
--
BEGIN RETURN 'x;'; END$$;


--
-- Name: h(integer); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.h(x integer) RETURNS integer
    LANGUAGE sql
    BEGIN ATOMIC
 SELECT CASE WHEN (x > 0) THEN 1 ELSE 2 END AS "case";
 SELECT 3;
END;


SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: t; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.t (
    "a;b" text DEFAULT E'it''s \';' /* a; /* nested; */ comment */,
    c$d text DEFAULT 'x' -- a; comment
);
COMMENT ON TABLE public.t IS 'semi;colon';


--
-- Name: t r; Type: RULE; Schema: public; Owner: -
--

CREATE RULE r AS
    ON INSERT TO public.t DO ALSO ( INSERT INTO public.t ("a;b") VALUES ('1');
 INSERT INTO public.t ("a;b") VALUES ('2');
);


\unrestrict abc123
`
	parts, why := cutScript(script)
	if why != "" {
		t.Fatal(why)
	}
	want := []struct {
		comment string
		heads   []string
	}{
		{"", []string{"SET statement_timeout = 0;", "SELECT pg_catalog.set_config('search_path', '', false);"}},
		{"-- Name: f(); Type: FUNCTION; Schema: public; Owner: -", []string{"CREATE FUNCTION public.f() RETURNS text"}},
		{"-- Name: g(); Type: FUNCTION; Schema: public; Owner: -", []string{"CREATE FUNCTION public.g() RETURNS text"}},
		{"-- Name: h(integer); Type: FUNCTION; Schema: public; Owner: -", []string{"CREATE FUNCTION public.h(x integer) RETURNS integer"}},
		{"", []string{"SET default_tablespace = '';", "SET default_table_access_method = heap;"}},
		{"-- Name: t; Type: TABLE; Schema: public; Owner: -", []string{"CREATE TABLE public.t (", "COMMENT ON TABLE public.t IS 'semi;colon';"}},
		{"-- Name: t r; Type: RULE; Schema: public; Owner: -", []string{"CREATE RULE r AS"}},
	}
	if len(parts) != len(want) {
		t.Fatalf("%d parts, want %d: %v", len(parts), len(want), parts)
	}
	for i, w := range want {
		p := parts[i]
		var heads []string
		for _, st := range p.statements {
			heads = append(heads, st.head)
		}
		if p.comment != w.comment || strings.Join(heads, "|") != strings.Join(w.heads, "|") {
			t.Errorf("part %d: %q %q, want %q %q", i, p.comment, heads, w.comment, w.heads)
		}
	}
	// Sent as written: the statements hold every byte of the script but the comments
	// before entries and the psql meta-commands.
	if st := parts[3].statements[0].text; !strings.HasSuffix(st, "SELECT 3;\nEND;") || !strings.Contains(st, `"case";`) {
		t.Errorf("BEGIN ATOMIC body cut: %q", st)
	}

	for _, bad := range []struct{ script, why string }{
		{"SET a = 1;\n\\connect other\nSET b = 2;\n", "psql meta-command"},
		{"--\n-- Name: t; Type: TABLE DATA; Schema: public; Owner: -\n--\n\nCOPY public.t (a) FROM stdin;\n1\n\\.\n", "COPY's data"},
		{"SET a = 1;\nCREATE TABLE x (a int)\n", "without its semicolon"},
		{"SET client_encoding = 'LATIN1';\nSET a = 1;\n", "encoding LATIN1"},
	} {
		if _, why := cutScript(bad.script); !strings.Contains(why, bad.why) {
			t.Errorf("%q: %q, want it refused for %q", bad.script, why, bad.why)
		}
	}
}

// Whatever the script, cutting it does not fail; the statements it gives are pieces of
// the script, in order, each ending with its semicolon.
func FuzzCutScript(f *testing.F) {
	for _, s := range []string{
		"SET a = 1;\n--\n-- Name: t; Type: TABLE; Schema: public; Owner: -\n--\n\nCREATE TABLE t (a text DEFAULT E'\\';');\n",
		"CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; END;",
		"SELECT $a$;$a$, $1, a$b, \"x;\", /* ; /* ; */ */ 1; -- ;\n",
		"CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO t VALUES (1); INSERT INTO t VALUES (2));",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, script string) {
		parts, why := cutScript(script)
		if why != "" {
			return
		}
		at := 0
		for _, p := range parts {
			for _, st := range p.statements {
				i := strings.Index(script[at:], st.text)
				if i < 0 || !strings.HasSuffix(st.text, ";") {
					t.Fatalf("statement %q is not the script's next piece ending with a semicolon", st.text)
				}
				at += i + len(st.text)
			}
		}
	})
}
