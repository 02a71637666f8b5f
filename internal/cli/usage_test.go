package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// runBinary runs the tsmigrate binary bin without a terminal and returns its exit code
// and what it wrote to stdout and stderr together, in order.
func runBinary(t *testing.T, bin string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return ee.ExitCode(), out.String()
	case err != nil:
		t.Fatal(err)
	}
	return 0, out.String()
}

// frozenSettings are the freeze's settings on database db (none when not frozen).
func frozenSettings(t *testing.T, srv *testenv.Server, db string) []string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, srv.SuperURI(db))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, _ := conn.Query(ctx, `SELECT item FROM pg_db_role_setting s, unnest(s.setconfig) item
		WHERE s.setrole = 0 AND s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())`)
	set, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// databaseExists says whether srv has database name.
func databaseExists(t *testing.T, srv *testenv.Server, name string) bool {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, srv.SuperURI("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)`, name).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

// A usage error of migrate or freeze, found before anything starts, is one line and
// exit 2: no summary of a migration that never started, nothing frozen, no target
// database created, and the temporary directory a killed run left behind neither
// removed nor announced (its notice came first). The same source database twice would
// be frozen twice (the second freeze failed "already frozen" after the first had
// frozen it).
func TestUsageErrorIsOneLine(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS) // first: under -short, nothing is built
	bin := testenv.Binary(t)
	stale := testenv.StaleScratch(t)
	src := timescaleSource(t, srv)
	tgt := testenv.NewDB(t, srv, false)
	a, b := tgt+"_a", tgt+"_b"
	t.Cleanup(func() {
		for _, n := range []string{a, b} {
			srv.Exec(context.Background(), "postgres", "DROP DATABASE IF EXISTS "+n+" WITH (FORCE)")
		}
	})
	conn := []string{"--source", srv.URI(src), "--target", srv.URI(tgt)}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"rehearsal with --resume", []string{"migrate", "--rehearsal", "--resume", "--yes"},
			"tsmigrate: --rehearsal and --resume exclude each other: a rehearsal freezes nothing and is not resumed (leave one out)"},
		{"one source database twice", []string{"migrate", "--yes", "--database", src + ":" + a, "--database", src + ":" + b},
			`tsmigrate: source database "` + src + `" is given twice (into "` + a + `" and "` + b + `") (give each source database once)`},
		{"negative --freeze-grace of migrate", []string{"migrate", "--yes", "--freeze-grace", "-5s"},
			"tsmigrate: --freeze-grace -5s (give 0 or more (0: end them at once))"},
		{"negative --freeze-grace of freeze", []string{"freeze", "--yes", "--freeze-grace", "-5s"},
			"tsmigrate: --freeze-grace -5s (give 0 or more (0: end them at once))"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append(append([]string{}, c.args...), conn...)
			if c.args[0] == "freeze" {
				args = args[:len(args)-2] // no --target
			} else {
				args = append(args, "--pg-bin", srv.ClientBin())
			}
			code, out := runBinary(t, bin, args...)
			if code != 2 || out != c.want+"\n" {
				t.Errorf("exit %d, output:\n%s\nwant exit 2 and the one line:\n%s", code, out, c.want)
			}
			if set := frozenSettings(t, srv, src); len(set) != 0 {
				t.Errorf("the source is left with %q", set)
				testenv.MustExec(t, srv, "postgres", "ALTER DATABASE "+src+" RESET ALL")
			}
			for _, n := range []string{a, b} {
				if databaseExists(t, srv, n) {
					t.Errorf("target database %s was created", n)
				}
			}
			if _, err := os.Stat(stale); err != nil {
				t.Fatalf("the killed run's directory: %v", err)
			}
		})
	}
}

// migrateJSON is the part of migrate --json these tests read.
type migrateJSON struct {
	Outcome      string `json:"outcome"`
	Error        string `json:"error"`
	SourceFrozen *bool  `json:"source_frozen"`
	Databases    []struct {
		Source       string `json:"source"`
		SourceFrozen *bool  `json:"source_frozen"`
		FrozenBy     string `json:"frozen_by"`
		Unfrozen     bool   `json:"unfrozen"`
	} `json:"databases"`
}

func decodeMigrate(t *testing.T, s string) migrateJSON {
	t.Helper()
	var m migrateJSON
	dec := json.NewDecoder(strings.NewReader(s))
	if err := dec.Decode(&m); err != nil || dec.More() {
		t.Fatalf("stdout is not one JSON document (%v):\n%s", err, s)
	}
	return m
}

// migrate --json and preflight --json print their JSON document also when a
// connection string is malformed or a login fails (exit 2), never with the password.
func TestJSONWhenNotConnected(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	good := srv.URI("postgres")
	const pw = "Sw0rdf1sh-never-shown"
	wrongPw := strings.Replace(good, testenv.SuperPassword, pw, 1)
	cases := []struct {
		name, source, target, role, want string
	}{
		{"malformed source", "postgres://app:" + pw + "@db.example:54x2/app", good, "source", "source: invalid connection string"},
		{"malformed target", good, "host=db.example password='" + pw, "target", "target: invalid connection string"},
		{"failed login", wrongPw, good, "source", "password authentication failed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			testenv.StaleScratch(t)
			r := run(t, "migrate", "--source", c.source, "--target", c.target, "--yes", "--json")
			if r.code != 2 || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("migrate: exit %d, stderr %q: want exit 2 and one line", r.code, r.stderr)
			}
			if m := decodeMigrate(t, r.stdout); m.Outcome != "failed" || !strings.Contains(m.Error, c.want) {
				t.Errorf("migrate --json: outcome %q, error %q (want failed, %q)", m.Outcome, m.Error, c.want)
			}
			if strings.Contains(r.stdout+r.stderr, pw) {
				t.Error("migrate: the password appears in the output")
			}

			r = run(t, "preflight", "--source", c.source, "--target", c.target, "--json")
			if r.code != 2 || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("preflight: exit %d, stderr %q: want exit 2 and one line", r.code, r.stderr)
			}
			rep := decode(t, r.stdout)
			if len(rep.Findings) != 1 || rep.Findings[0].Check != "connect" || rep.Findings[0].Status != "fail" ||
				rep.Findings[0].Server != c.role || !strings.Contains(rep.Findings[0].Saw, c.want) || rep.Summary.Fail != 1 {
				t.Errorf("preflight --json: %+v", rep)
			}
			if strings.Contains(r.stdout+r.stderr, pw) {
				t.Error("preflight: the password appears in the output")
			}
		})
	}
}

// The target database is the source database itself, reached by another address (a
// proxy's port): refused up front, exit 2, one line, the source neither frozen
// nor touched, and no advice to drop a database. An empty source database ran the
// freeze and then failed "cannot execute CREATE SCHEMA in a read-only transaction",
// advising DROP DATABASE of the source. The same holds for a target database that is
// another pair's source database.
func TestTargetIsTheSource(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	empty := testenv.NewDB(t, srv, false)
	full := timescaleSource(t, srv)
	proxy := testenv.StartProxy(t, srv)
	for _, c := range []struct{ name, db string }{{"empty", empty}, {"with data", full}} {
		t.Run(c.name, func(t *testing.T) {
			testenv.StaleScratch(t)
			for _, args := range [][]string{
				{"--source", srv.URI(c.db), "--target", proxy.URI(t, srv.URI(c.db))},
				{"--source", srv.URI(c.db), "--target", srv.URI("postgres"), "--database", c.db + ":" + c.db},
			} {
				r := run(t, append([]string{"migrate", "--yes", "--pg-bin", srv.ClientBin()}, args...)...)
				want := "tsmigrate: the target database " + c.db + " "
				if r.code != 2 || r.stdout != "" || strings.Count(r.stderr, "\n") != 1 || !strings.HasPrefix(r.stderr, want) ||
					!strings.Contains(r.stderr, "is the source database "+c.db+" itself") || strings.Contains(r.stderr, "DROP") {
					t.Errorf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
				}
				if args[2] == "--target" && len(args) == 4 {
					r := run(t, append([]string{"preflight"}, args...)...)
					if r.code != 2 || r.stdout != "" || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, "is the source database "+c.db+" itself") {
						t.Errorf("preflight: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
					}
				}
				if set := frozenSettings(t, srv, c.db); len(set) != 0 {
					t.Errorf("the source is left with %q", set)
					testenv.MustExec(t, srv, "postgres", "ALTER DATABASE "+c.db+" RESET ALL")
				}
			}
		})
	}
	// The target database of one pair is the source database of another: it would be
	// frozen as a source, then restored into, and the reset advised would drop it.
	t.Run("another source of the run", func(t *testing.T) {
		testenv.StaleScratch(t)
		fresh := empty + "_next"
		t.Cleanup(func() { srv.Exec(context.Background(), "postgres", "DROP DATABASE IF EXISTS "+fresh+" WITH (FORCE)") })
		r := run(t, "migrate", "--yes", "--pg-bin", srv.ClientBin(), "--source", srv.URI("postgres"), "--target", proxy.URI(t, srv.URI("postgres")),
			"--database", full+":"+empty, "--database", empty+":"+fresh)
		if r.code != 2 || r.stdout != "" || strings.Count(r.stderr, "\n") != 1 ||
			!strings.HasPrefix(r.stderr, "tsmigrate: the target database "+empty+" ") ||
			!strings.Contains(r.stderr, "is the source database "+empty+" itself") || strings.Contains(r.stderr, "DROP") {
			t.Errorf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
		}
		for _, db := range []string{empty, full} {
			if set := frozenSettings(t, srv, db); len(set) != 0 {
				t.Errorf("source %s is left with %q", db, set)
				testenv.MustExec(t, srv, "postgres", "ALTER DATABASE "+db+" RESET ALL")
			}
		}
		if databaseExists(t, srv, fresh) {
			t.Errorf("target database %s was created", fresh)
		}
	})
}

// migrate --json prints its document for bad usage too, as its help says: for a flag
// cobra cannot parse (an unknown flag, a flag without its value) as for a bad value
// of a known one; exit 2, one line on stderr. Before, the flags cobra refused left
// stdout empty.
func TestMigrateJSONOnBadUsage(t *testing.T) {
	for _, args := range [][]string{
		{"migrate", "--json", "--bogus"},
		{"migrate", "--bogus", "--json"},
		{"migrate", "--json", "--freeze-grace"},
		{"migrate", "--json=true", "--freeze-grace", "soon"},
		{"migrate", "--json", "--engine", "fast"},
	} {
		r := run(t, args...)
		if r.code != 2 || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%q: exit %d, stderr %q: want exit 2 and one line", args, r.code, r.stderr)
		}
		if m := decodeMigrate(t, r.stdout); m.Outcome != "failed" || m.Error == "" || !strings.Contains(r.stderr, m.Error) {
			t.Errorf("%q: outcome %q, error %q; stderr %q", args, m.Outcome, m.Error, r.stderr)
		}
	}
	// Without --json (--json=false, or a --json that is another flag's value): the line alone.
	for _, args := range [][]string{{"migrate", "--bogus", "--json=false"}, {"migrate", "--source", "--json", "--bogus"}} {
		if r := run(t, args...); r.code != 2 || r.stdout != "" {
			t.Errorf("%q: exit %d, stdout %q: want exit 2 and nothing on stdout", args, r.code, r.stdout)
		}
	}
}
