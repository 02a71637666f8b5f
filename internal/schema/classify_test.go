package schema

import (
	"errors"
	"strings"
	"testing"

	"github.com/tsmigrate/tsmigrate/internal/pgtools"
)

func classifyLines(toc *TOC, text string) Result {
	c := NewClassifier(toc, nil)
	for _, l := range strings.Split(strings.TrimPrefix(text, "\n"), "\n") {
		c.Line(0, l)
	}
	return c.Finish()
}

// Each harmless rule with the output that triggers it, as printed by the programs.
func TestHarmlessMessages(t *testing.T) {
	cases := []struct {
		name, rule, out string
		n               int // messages
	}{
		{"circular fk, pg_dump 17", "timescaledb-circular-fk", `
pg_dump: warning: there are circular foreign-key constraints on this table:
pg_dump: detail: hypertable
pg_dump: hint: You might not be able to restore the dump without using --disable-triggers or temporarily dropping the constraints.
pg_dump: hint: Consider using a full dump instead of a --data-only dump to avoid this problem.
pg_dump: warning: there are circular foreign-key constraints on this table:
pg_dump: detail: chunk
pg_dump: hint: You might not be able to restore the dump without using --disable-triggers or temporarily dropping the constraints.
pg_dump: hint: Consider using a full dump instead of a --data-only dump to avoid this problem.
pg_dump: warning: there are circular foreign-key constraints on this table:
pg_dump: detail: continuous_agg
pg_dump: hint: You might not be able to restore the dump without using --disable-triggers or temporarily dropping the constraints.
pg_dump: hint: Consider using a full dump instead of a --data-only dump to avoid this problem.`, 3},
		{"circular fk, the seed's older format", "timescaledb-circular-fk", `
pg_dump: warning: there are circular foreign-key constraints on this table:
pg_dump: hypertable
pg_dump: You might not be able to restore the dump without using --disable-triggers or temporarily dropping the constraints.
pg_dump: Consider using a full dump instead of a --data-only dump to avoid this problem.`, 1},
		{"hypertable notice (pg_dump -v)", "timescaledb-hypertable-data-in-chunks", `
pg_dump: dumping contents of table "public.metrics"
pg_dump: NOTICE:  hypertable data are in the chunks, no data will be copied
DETAIL:  Data for hypertables are stored in the chunks of a hypertable so COPY TO of a hypertable will not copy any data.
HINT:  Use "COPY (SELECT * FROM <hypertable>) TO ..." to copy all data in hypertable, or copy each chunk individually.
pg_dump: dumping contents of table "public.devices"`, 1},
		{"subscription restored, PostgreSQL 17", "subscription-not-connected", `
pg_restore: creating SUBSCRIPTION "sub1"
pg_restore: WARNING:  subscription was created, but is not connected
HINT:  To initiate replication, you must manually create the replication slot, enable the subscription, and refresh the subscription.
pg_restore: creating SUBSCRIPTION TABLE "sub1 t"`, 1},
		{"subscription restored, PostgreSQL 15", "subscription-not-connected", `
pg_restore: creating SUBSCRIPTION "sub1"
pg_restore: WARNING:  tables were not subscribed, you will have to run ALTER SUBSCRIPTION ... REFRESH PUBLICATION to subscribe the tables`, 1},
		{"comment on extension, pg_restore -v", "comment-on-extension-not-owner", `
pg_restore: creating COMMENT "EXTENSION timescaledb"
pg_restore: while PROCESSING TOC:
pg_restore: from TOC entry 4142; 0 0 COMMENT EXTENSION timescaledb 
pg_restore: error: could not execute query: ERROR:  must be owner of extension timescaledb
Command was: COMMENT ON EXTENSION timescaledb IS 'Enables scalable inserts and complex queries for time-series data (Apache 2 Edition)';


pg_restore: warning: errors ignored on restore: 1`, 1},
		{"comment on extension, the seed's text without -v", "comment-on-extension-not-owner", `
pg_restore: error: could not execute query: ERROR:  must be owner of extension timescaledb
Command was: COMMENT ON EXTENSION timescaledb IS 'Enables scalable inserts and complex queries for time-series data';
`, 1},
		{"privileges naming a role the target lacks, pg_restore 17", RuleGrantToMissingRole, `
pg_restore: from TOC entry 4096; 0 0 ACL FUNCTION bump() app_owner
pg_restore: error: could not execute query: ERROR:  role "app_read" does not exist
Command was: REVOKE ALL ON FUNCTION app.bump() FROM PUBLIC;
GRANT ALL ON FUNCTION app.bump() TO app_read;

pg_restore: while PROCESSING TOC:
pg_restore: from TOC entry 2528; 826 17194 DEFAULT ACL DEFAULT PRIVILEGES FOR TABLES app_owner
pg_restore: error: could not execute query: ERROR:  role "app_read" does not exist
Command was: ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA app GRANT SELECT ON TABLES TO app_read;
`, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := classifyLines(nil, c.out)
			if len(res.Messages) != c.n {
				t.Fatalf("%d messages, want %d: %+v", len(res.Messages), c.n, res.Messages)
			}
			for _, m := range res.Messages {
				if !m.Harmless || m.Rule != c.rule || m.Reason == "" {
					t.Fatalf("message %+v: want harmless by %s with a reason", m, c.rule)
				}
			}
			if err := Check(res.Messages[0].Program, nil, res); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Near misses of the harmless rules, and real errors, are errors with the object and a hint.
func TestErrors(t *testing.T) {
	toc, err := ParseTOC(strings.NewReader("303; 1259 17248 TABLE public devices postgres\n4177; 0 17248 TABLE DATA public devices postgres\n"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, out, object, text, hint string
	}{
		{"conflicting table", `
pg_restore: processing item 303 TABLE devices
pg_restore: creating TABLE "public.devices"
pg_restore: while PROCESSING TOC:
pg_restore: from TOC entry 303; 1259 17248 TABLE devices postgres
pg_restore: error: could not execute query: ERROR:  relation "devices" already exists
Command was: CREATE TABLE public.devices (
    id integer NOT NULL,
    name text
);

`, "TABLE public.devices", `could not execute query: ERROR:  relation "devices" already exists`, "already holds"},
		{"copy failure without TOC listing", `
pg_restore: from TOC entry 4177; 0 17248 TABLE DATA devices postgres
pg_restore: error: COPY failed for table "devices": ERROR:  insert or update on table "devices" violates foreign key constraint "d_fkey"
DETAIL:  Key (id)=(1) is not present in table "x".`, "TABLE DATA public.devices", `COPY failed for table "devices": ERROR:  insert or update on table "devices" violates foreign key constraint "d_fkey"`, "reference"},
		{"circular fk on a user table", `
pg_dump: warning: there are circular foreign-key constraints on this table:
pg_dump: detail: employees
pg_dump: hint: You might not be able to restore the dump without using --disable-triggers or temporarily dropping the constraints.`, "", "there are circular foreign-key constraints on this table:", "fix the cause"},
		{"comment on extension with another command", `
pg_restore: error: could not execute query: ERROR:  must be owner of extension timescaledb
Command was: ALTER EXTENSION timescaledb UPDATE;`, "", "could not execute query: ERROR:  must be owner of extension timescaledb", "privilege"},
		{"hypertable notice with an extra line", `
pg_dump: NOTICE:  hypertable data are in the chunks, no data will be copied
DETAIL:  something else`, "", "NOTICE:  hypertable data are in the chunks, no data will be copied", "fix the cause"},
		{"subscription warning with an extra line", `
pg_restore: WARNING:  subscription was created, but is not connected
DETAIL:  something else`, "", "WARNING:  subscription was created, but is not connected", "fix the cause"},
		{"transaction_timeout", `
pg_restore: error: could not execute query: ERROR:  unrecognized configuration parameter "transaction_timeout"
Command was: SET transaction_timeout = 0;`, "", `could not execute query: ERROR:  unrecognized configuration parameter "transaction_timeout"`, "--pg-bin"},
		{"a policy naming a role the target lacks", `
pg_restore: error: could not execute query: ERROR:  role "app_read" does not exist
Command was: CREATE POLICY readers ON app.devices FOR SELECT TO app_read USING ((id < 4));`, "", `could not execute query: ERROR:  role "app_read" does not exist`, "--roles"},
		{"a stray unprefixed line", `
pg_restore: processing item 3 TABLE x
something nobody expects`, "", "something nobody expects", "does not recognise"},
		{"a fatal pg_dump error", `
pg_dump: error: query failed: ERROR:  permission denied for table secret
pg_dump: detail: Query was: LOCK TABLE public.secret IN ACCESS SHARE MODE`, "", "query failed: ERROR:  permission denied for table secret", "privilege"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := classifyLines(toc, c.out)
			errs := res.Errors()
			if len(errs) != 1 {
				t.Fatalf("%d errors, want 1: %+v", len(errs), res.Messages)
			}
			m := errs[0]
			if m.Object != c.object || m.Text != c.text || !strings.Contains(m.Hint, c.hint) {
				t.Fatalf("got object %q text %q hint %q; want %q, %q, hint with %q", m.Object, m.Text, m.Hint, c.object, c.text, c.hint)
			}
			var me *MessageError
			if err := Check("pg_restore", nil, res); !errors.As(err, &me) {
				t.Fatalf("Check with exit 0 = %v; want a MessageError (exit 0 is not trusted)", err)
			}
		})
	}
}

// pg_restore's exit status is not trusted either way.
func TestCheckDoesNotTrustTheExitStatus(t *testing.T) {
	harmless := classifyLines(nil, `
pg_restore: error: could not execute query: ERROR:  must be owner of extension timescaledb
Command was: COMMENT ON EXTENSION timescaledb IS 'x';
pg_restore: warning: errors ignored on restore: 1`)
	exit1 := &pgtools.ExitError{Program: "pg_restore", Code: 1}
	if err := Check("pg_restore", exit1, harmless); err != nil {
		t.Fatalf("exit 1 with only harmless errors counted by pg_restore: %v", err)
	}
	silent := classifyLines(nil, "pg_restore: processing item 3 TABLE x")
	if err := Check("pg_restore", exit1, silent); err == nil || !errors.As(err, new(*pgtools.ExitError)) {
		t.Fatalf("exit 1 with nothing printed: %v; want a failure", err)
	}
	if err := Check("pg_dump", exit1, harmless); err == nil {
		t.Fatal("pg_dump exit 1 passed")
	}
}

func TestParseTOCLine(t *testing.T) {
	cases := []struct {
		in                        string
		id                        int
		desc, schema, name, owner string
	}{
		{"4154; 0 17137 TABLE DATA public metrics postgres", 4154, "TABLE DATA", "public", "metrics", "postgres"},
		{"4184; 0 0 COMMENT - EXTENSION timescaledb ", 4184, "COMMENT", "", "EXTENSION timescaledb", ""},
		{"2; 3079 16385 EXTENSION - timescaledb ", 2, "EXTENSION", "", "timescaledb", ""},
		{"3991; 2606 17255 CONSTRAINT public devices devices_pkey postgres", 3991, "CONSTRAINT", "public", "devices devices_pkey", "postgres"},
		{"4194; 0 0 SEQUENCE SET public devices_id_seq postgres", 4194, "SEQUENCE SET", "public", "devices_id_seq", "postgres"},
		{"4185; 0 0 SEQUENCE OWNED BY public devices_id_seq postgres", 4185, "SEQUENCE OWNED BY", "public", "devices_id_seq", "postgres"},
		{"5000; 0 0 TABLE DATA Sch My Table Ünï postgres", 5000, "TABLE DATA", "Sch", "My Table Ünï", "postgres"},
	}
	for _, c := range cases {
		e, ok := ParseTOCLine(c.in)
		if !ok || e.ID != c.id || e.Desc != c.desc || e.Schema != c.schema || e.Name != c.name || e.Owner != c.owner {
			t.Errorf("ParseTOCLine(%q) = %+v, %v", c.in, e, ok)
		}
	}
}

// The line parser and classifier never panic, never lose an error line, and never call
// a message harmless that carries a line its rule does not account for.
func FuzzClassifier(f *testing.F) {
	f.Add("pg_restore: error: could not execute query: ERROR:  x\nCommand was: SELECT 1;")
	f.Add("pg_dump:pg_dump: finished item 1 TABLE DATA a\n dumping contents of table \"b\"")
	f.Add("pg_restore: from TOC entry 1; 0 0 COMMENT EXTENSION timescaledb \npg_restore: error: could not execute query: ERROR:  must be owner of extension timescaledb\nCommand was: COMMENT ON EXTENSION timescaledb IS 'x';")
	f.Add("pg_dump: warning: there are circular foreign-key constraints on this table:\npg_dump: detail: chunk")
	f.Add("3991; 2606 17255 CONSTRAINT public devices devices_pkey postgres")
	f.Fuzz(func(t *testing.T, text string) {
		ParseTOCLine(text)
		parseFromTOC(text)
		res := classifyLines(nil, text)
		for _, l := range strings.Split(text, "\n") {
			if !strings.Contains(l, "error:") && !strings.Contains(l, "ERROR:") {
				continue
			}
			found := false
			for _, m := range res.Messages {
				for _, ml := range m.Lines {
					if strings.Contains(ml, "error:") || strings.Contains(ml, "ERROR:") {
						found = true
					}
				}
			}
			if !found {
				t.Fatalf("error line %q is in no message: %+v", l, res.Messages)
			}
		}
		for _, m := range res.Messages {
			if m.Harmless && m.Rule == "" {
				t.Fatalf("harmless without a rule: %+v", m)
			}
		}
	})
}

// pg_dump and pg_restore print names raw: a name with a line break cuts its progress
// line, or the context line naming the entry of an error, in two. The rest is read as
// part of that line when it is the rest of one of the source's names that hold a line
// break; any other unprefixed line after such a line is still shown.
func TestNameWithLineBreak(t *testing.T) {
	names := []string{"odd\nschema", "it's\n a \"name\"", "new\nline"}
	classify := func(toc *TOC, names []string, text string) Result {
		c := NewClassifier(toc, nil)
		c.names = names
		for _, l := range strings.Split(strings.TrimPrefix(text, "\n"), "\n") {
			c.Line(0, l)
		}
		return c.Finish()
	}
	progress := `
pg_dump: dumping contents of table "odd
schema.it's
 a "name""
pg_dump: dumping contents of table "public.devices"`
	if res := classify(nil, names, progress); len(res.Messages) != 0 || res.Progress != 2 {
		t.Errorf("progress line with line breaks: %+v", res)
	}
	if res := classify(nil, nil, progress); len(res.Errors()) == 0 {
		t.Errorf("line breaks of names not known to the classifier: no error: %+v", res)
	}
	if res := classify(nil, names, `
pg_dump: dumping contents of table "public.new
something else"`); len(res.Errors()) != 1 {
		t.Errorf("a line that is not the rest of the name: %+v", res)
	}

	toc, err := ParseTOC(strings.NewReader("12; 1259 16390 TABLE public new line postgres\n"))
	if err != nil {
		t.Fatal(err)
	}
	res := classify(toc, names, `
pg_restore: creating TABLE "public.new
line"
pg_restore: while PROCESSING TOC:
pg_restore: from TOC entry 12; 1259 16390 TABLE new
line postgres
pg_restore: error: could not execute query: ERROR:  permission denied for schema public
Command was: CREATE TABLE public."new
line" (id integer);`)
	if errs := res.Errors(); len(errs) != 1 || errs[0].TOCID != 12 || errs[0].Object != "TABLE public.new line" ||
		len(errs[0].Lines) != 5 || !strings.Contains(errs[0].Lines[1], "TABLE new\nline postgres") {
		t.Errorf("error of an entry whose name has a line break: %+v", res.Messages)
	}
}
