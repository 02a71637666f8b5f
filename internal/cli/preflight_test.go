package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/schema"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

type result struct {
	code           int
	stdout, stderr string
}

func run(t *testing.T, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(context.Background(), args, strings.NewReader(""), &out, &errb)
	return result{code, out.String(), errb.String()}
}

// jsonReport is the documented --json shape, decoded strictly enough to catch renames.
type jsonReport struct {
	Source   map[string]any `json:"source"`
	Target   map[string]any `json:"target"`
	Findings []struct {
		Check, Status, Server, Saw, Do string
	} `json:"findings"`
	Summary struct{ Pass, Warn, Fail int } `json:"summary"`
}

func decode(t *testing.T, s string) jsonReport {
	t.Helper()
	var r jsonReport
	dec := json.NewDecoder(strings.NewReader(s))
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("stdout is not one JSON document: %v\n%s", err, s)
	}
	if dec.More() {
		t.Fatalf("more than one JSON document on stdout:\n%s", s)
	}
	if len(r.Findings) == 0 {
		t.Fatalf("no findings:\n%s", s)
	}
	return r
}

func (r jsonReport) finding(t *testing.T, check string) (status, saw string) {
	t.Helper()
	for _, f := range r.Findings {
		if f.Check == check {
			return f.Status, f.Saw
		}
	}
	t.Fatalf("no finding of check %s", check)
	return "", ""
}

// timescaleSource is a source database with a hypertable, a table and a sequence.
func timescaleSource(t *testing.T, srv *testenv.Server) string {
	t.Helper()
	db := testenv.NewDB(t, srv, true)
	testenv.MustExec(t, srv, db,
		`CREATE TABLE metrics (time timestamptz NOT NULL, device int, value float8)`,
		`SELECT create_hypertable('metrics', 'time', chunk_time_interval => interval '1 day')`,
		`INSERT INTO metrics SELECT t, 1, 1 FROM generate_series('2025-01-01'::timestamptz, '2025-01-05', interval '1 hour') t`,
		`CREATE TABLE devices (id serial PRIMARY KEY, name text)`)
	return db
}

func TestPreflightMatchingTimescaleServers(t *testing.T) {
	src := testenv.Shared(t, testenv.PG17TS)
	tgt := testenv.Need(t, testenv.PG17TS, testenv.Options{})
	sdb := timescaleSource(t, src)
	tdb := testenv.NewDB(t, tgt, false)

	r := run(t, "preflight", "--source", src.URI(sdb), "--target", tgt.URI(tdb), "--json")
	if r.code != 0 {
		t.Fatalf("exit %d, want 0\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	rep := decode(t, r.stdout)
	if rep.Summary.Fail != 0 || rep.Source["timescaledb"] != "2.19.3" {
		t.Errorf("summary %+v, source %v", rep.Summary, rep.Source)
	}
	for check, want := range map[string]string{
		"postgres-major": "pass", "timescaledb-version": "pass", "target-empty": "pass",
		"target-restore-mode": "pass", "source-read": "pass", "size": "warn",
	} {
		if st, saw := rep.finding(t, check); st != want {
			t.Errorf("%s: %s (%s), want %s", check, st, saw, want)
		}
	}
	if strings.Contains(r.stdout+r.stderr, testenv.SuperPassword) {
		t.Error("the password appears in the output")
	}

	// Without --json and without a terminal: plain lines, no colour.
	r = run(t, "preflight", "--source", src.URI(sdb), "--target", tgt.URI(tdb))
	if r.code != 0 || strings.Contains(r.stdout, "\x1b[") || !strings.Contains(r.stdout, "PASS  postgres-major") {
		t.Errorf("exit %d, plain output:\n%s", r.code, r.stdout)
	}
}

// Managed-like targets (TLS only, defaultdb owned by the non-superuser tsdbadmin, the
// extension created by the superuser): target-restore-mode says which restore path the
// migration takes and why, having tried what it needs, and the target database's
// TimescaleDB scheduler is still running afterwards. On the cloud-like target
// tsdbadmin takes the catalog path through the SECURITY DEFINER pre/post restore (the
// probe stopped the scheduler and could not restart it before: "restart TimescaleDB
// background workers after the pre_restore probe: must be superuser to restart
// background workers", exit 1); the bare owner cannot, and is told what it lacks.
func TestPreflightManagedTarget(t *testing.T) {
	src := testenv.Shared(t, testenv.PG17TS)
	sdb := timescaleSource(t, src)
	for _, fl := range []testenv.Flavour{testenv.CloudLike, testenv.BareOwner} {
		t.Run(string(fl), func(t *testing.T) {
			tgt := testenv.Need(t, testenv.PG17TS, testenv.Options{Flavour: fl})
			r := run(t, "preflight", "--source", src.URI(sdb), "--target", tgt.URI(testenv.ManagedDB), "--json")
			testenv.MustSchedulerRun(t, tgt, testenv.ManagedDB)
			if strings.Contains(r.stdout+r.stderr, testenv.ManagedPassword) {
				t.Error("the password appears in the output")
			}
			wantCode, wantStatus, wantSaw := 0, "pass", []string{
				"catalog path", "tsdbadmin may run timescaledb_pre_restore() and timescaledb_post_restore() (SECURITY DEFINER, owned by superuser postgres)",
				"tried in a rolled-back transaction: writes of no row into", "timescaledb_pre_restore() and timescaledb_post_restore())"}
			if fl == testenv.BareOwner {
				wantSaw = []string{"tsdbadmin may not run timescaledb_pre_restore() and timescaledb_post_restore() (not SECURITY DEFINER, and they need a superuser)",
					"may not write TimescaleDB's catalog", "may not create tables in schema _timescaledb_internal"}
				if schema.APIPathAvailable {
					wantSaw = append(wantSaw, "catalog-less path", "tried in a rolled-back transaction: a hypertable, and a chunk")
				} else {
					wantCode, wantStatus = 3, "fail"
					wantSaw = append(wantSaw, "cannot restore without TimescaleDB's catalog yet")
				}
			}
			if r.code != wantCode {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, wantCode, r.stdout, r.stderr)
			}
			if fl == testenv.BareOwner {
				preflightBareDumpEngine(t, src.URI(sdb), tgt)
			}
			rep := decode(t, r.stdout)
			if rep.Target["tls"] != true {
				t.Errorf("target not reached over TLS: %v", rep.Target)
			}
			st, saw := rep.finding(t, "target-restore-mode")
			t.Logf("target-restore-mode: %s: %s", st, saw)
			if st != wantStatus {
				t.Errorf("target-restore-mode: %s, want %s: %s", st, wantStatus, saw)
			}
			for _, w := range wantSaw {
				if !strings.Contains(saw, w) {
					t.Errorf("target-restore-mode: %q does not say %q", saw, w)
				}
			}
			if strings.Contains(saw, "ALTER DATABASE") {
				t.Errorf("target-restore-mode promises what migrate never does: %s", saw)
			}
			if st, saw := rep.finding(t, "target-create"); st != "pass" {
				t.Errorf("target-create: %s: %s", st, saw)
			}
			// Restoring mode is not left on in the target database.
			g, err := pgx.Connect(context.Background(), tgt.URI(testenv.ManagedDB))
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close(context.Background())
			var restoring string
			if err := g.QueryRow(context.Background(), "SELECT current_setting('timescaledb.restoring')").Scan(&restoring); err != nil || restoring != "off" {
				t.Errorf("a new session on the target has timescaledb.restoring = %s (%v)", restoring, err)
			}
		})
	}
}

// preflightBareDumpEngine checks that pre-flight for the dump engine into the bare
// owner's target fails, saying in one line that the dump engine cannot work there.
func preflightBareDumpEngine(t *testing.T, source string, tgt *testenv.Server) {
	t.Helper()
	r := run(t, "preflight", "--engine", "dump", "--source", source, "--target", tgt.URI(testenv.ManagedDB), "--json")
	if r.code != 3 {
		t.Fatalf("--engine dump: exit %d, want 3\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	st, saw := decode(t, r.stdout).finding(t, "target-restore-mode")
	want := "the dump engine restores TimescaleDB's catalog with pg_restore, which it cannot here: tsdbadmin may not run timescaledb_pre_restore()"
	if !schema.APIPathAvailable {
		want = "cannot restore without TimescaleDB's catalog yet"
	}
	if st != "fail" || !strings.Contains(saw, want) || strings.Contains(saw, "\n") {
		t.Errorf("--engine dump: target-restore-mode: %s: %q, want fail, one line saying %q", st, saw, want)
	}
	testenv.MustSchedulerRun(t, tgt, testenv.ManagedDB)
}

// A target of an older major (PostgreSQL 16 to 15) fails postgres-major, naming both;
// a newer one (15 to 16) is an upgrade on the way, which passes, saying so.
func TestPreflightMajorMismatch(t *testing.T) {
	src, tgt := testenv.Shared(t, testenv.PG16), testenv.Shared(t, testenv.PG15)
	sdb, tdb := testenv.NewDB(t, src, false), testenv.NewDB(t, tgt, false)
	r := run(t, "preflight", "--source", src.URI(sdb), "--target", tgt.URI(tdb))
	if r.code != 3 {
		t.Fatalf("exit %d, want 3\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	line := lineWith(r.stdout, "postgres-major")
	if !strings.HasPrefix(line, "FAIL") || !strings.Contains(line, "PostgreSQL 16") || !strings.Contains(line, "PostgreSQL 15") {
		t.Errorf("postgres-major line: %q", line)
	}
	if !strings.Contains(r.stderr, "1 of") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("stderr: %q", r.stderr)
	}
	r = run(t, "preflight", "--source", tgt.URI(tdb), "--target", src.URI(sdb))
	if line := lineWith(r.stdout, "postgres-major"); r.code != 0 || !strings.HasPrefix(line, "PASS") || !strings.Contains(line, "upgrade from PostgreSQL 15") {
		t.Errorf("15 to 16: exit %d, postgres-major line: %q", r.code, line)
	}
}

func lineWith(s, word string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, " "+word+" ") {
			return l
		}
	}
	return ""
}

func TestPreflightLeftoverTable(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	sdb := timescaleSource(t, srv)
	tdb := testenv.NewDB(t, srv, true)
	testenv.MustExec(t, srv, tdb, `CREATE TABLE leftover_from_last_try (x int)`)
	r := run(t, "preflight", "--source", srv.URI(sdb), "--target", srv.URI(tdb), "--json")
	if r.code != 3 {
		t.Fatalf("exit %d, want 3\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	st, saw := decode(t, r.stdout).finding(t, "target-empty")
	if st != "fail" || !strings.Contains(saw, "public.leftover_from_last_try") {
		t.Errorf("target-empty: %s: %s", st, saw)
	}
}

// PostgreSQL 17 dropped adminpack; no pair of servers here with the same major differs
// in extensions, so the missing extension comes with a major mismatch.
func TestPreflightMissingExtension(t *testing.T) {
	src, tgt := testenv.Shared(t, testenv.PG15), testenv.Shared(t, testenv.PG17TS)
	sdb, tdb := testenv.NewDB(t, src, false), testenv.NewDB(t, tgt, false)
	testenv.MustExec(t, src, sdb, `CREATE EXTENSION adminpack`, `CREATE EXTENSION hstore`)
	r := run(t, "preflight", "--source", src.URI(sdb), "--target", tgt.URI(tdb), "--json")
	if r.code != 3 {
		t.Fatalf("exit %d, want 3\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	st, saw := decode(t, r.stdout).finding(t, "extensions")
	if st != "fail" || !strings.Contains(saw, "adminpack") || strings.Contains(saw, "hstore") {
		t.Errorf("extensions: %s: %s", st, saw)
	}
}

// Bad input and unreachable servers: exit 2, one line on stderr, nothing on stdout, and
// the password nowhere (with --json, see TestJSONWhenNotConnected).
func TestPreflightCannotConnect(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	good := srv.URI("postgres")
	const pw = "Sw0rdf1sh-never-shown"
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	wrongPw := strings.Replace(good, testenv.SuperPassword, pw, 1)
	cases := []struct {
		name, source, target, want string
	}{
		{"malformed URI", "postgres://app:" + pw + "@db.example:54x2/app", good, "source: invalid connection string"},
		{"malformed key=value", "host=db.example password='" + pw, good, "source: invalid connection string"},
		{"unreachable port", good, fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/app?connect_timeout=5", pw, port), "target: cannot connect"},
		{"wrong password", wrongPw, good, "password authentication failed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := run(t, "preflight", "--source", c.source, "--target", c.target)
			if r.code != 2 {
				t.Fatalf("exit %d, want 2\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
			}
			if r.stdout != "" || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, c.want) {
				t.Errorf("stdout %q, stderr %q (want one line with %q)", r.stdout, r.stderr, c.want)
			}
			if strings.Contains(r.stdout+r.stderr, pw) {
				t.Errorf("the password appears in the output: %s", r.stderr)
			}
		})
	}
}

// preflight --live: the hypertable without a primary key fails live-replica-identity
// (exit 3, what to do said); with --replica-identity-full it warns, and every live
// check has run and passed but that one.
func TestPreflightLive(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	sdb := timescaleSource(t, srv)
	tdb := testenv.NewDB(t, srv, false)

	r := run(t, "preflight", "--live", "--source", srv.URI(sdb), "--target", srv.URI(tdb))
	if r.code != 3 || !strings.Contains(r.stdout, "FAIL  live-replica-identity") || !strings.Contains(r.stdout, "hypertable public.metrics") ||
		!strings.Contains(r.stdout, "do: add a primary key to each, or run with --replica-identity-full") {
		t.Errorf("exit %d, want 3\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	r = run(t, "preflight", "--live", "--replica-identity-full", "--source", srv.URI(sdb), "--target", srv.URI(tdb), "--json")
	if r.code != 0 {
		t.Fatalf("exit %d, want 0\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	rep := decode(t, r.stdout)
	for check, want := range map[string]string{
		"live-wal-level": "pass", "live-slots": "pass", "live-wal-senders": "pass", "live-replication": "pass",
		"live-publication": "pass", "live-replica-identity": "warn",
	} {
		if st, saw := rep.finding(t, check); st != want {
			t.Errorf("%s: %s (%s), want %s", check, st, saw, want)
		}
	}
	if r := run(t, "preflight", "--source", srv.URI(sdb), "--target", srv.URI(tdb)); r.code != 0 || strings.Contains(r.stdout, "live-") {
		t.Errorf("without --live: exit %d\n%s", r.code, r.stdout)
	}
}
