package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/roles"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
	"github.com/tsmigrate/tsmigrate/internal/verify"
)

// summaryOf decodes migrate --json and renders it as the text summary, so that one
// run shows both.
func summaryOf(t *testing.T, stdout string) (*migrate.Summary, string) {
	t.Helper()
	var s migrate.Summary
	dec := json.NewDecoder(strings.NewReader(stdout))
	if err := dec.Decode(&s); err != nil || dec.More() {
		t.Fatalf("stdout is not one JSON document (%v):\n%s", err, stdout)
	}
	var text bytes.Buffer
	printSummary(&text, &s, false)
	return &s, text.String()
}

// frozenAs checks what a run's summary says of its one source database: frozen or not,
// by what, and whether this run unfroze it.
func frozenAs(t *testing.T, s *migrate.Summary, frozen bool, by string, unfrozen bool) {
	t.Helper()
	if s.SourceFrozen == nil || *s.SourceFrozen != frozen || len(s.Databases) != 1 {
		t.Fatalf("source_frozen %v (want %v), %d databases", s.SourceFrozen, frozen, len(s.Databases))
	}
	d := s.Databases[0]
	if d.SourceFrozen == nil || *d.SourceFrozen != frozen || !strings.Contains(d.FrozenBy, by) || (by == "") != (d.FrozenBy == "") || d.Unfrozen != unfrozen {
		t.Errorf("database %s: source_frozen %v, frozen_by %q, unfrozen %v; want %v, %q, %v", d.Source, d.SourceFrozen, d.FrozenBy, d.Unfrozen, frozen, by, unfrozen)
	}
}

// The summary says what the source is as the run ends, never "writable again
// (unfrozen)" when this run did not unfreeze it: a run that stopped before any freeze
// (unreachable target, no terminal to confirm on, a bad --pg-bin) froze nothing and says
// nothing more than its error; one that met an earlier freeze, or a refused --resume,
// leaves that freeze as it was and names it.
func TestSourceStateWhenNotMigrated(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src := timescaleSource(t, srv)
	tgt := testenv.NewDB(t, srv, false)
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	unreachable := fmt.Sprintf("postgres://postgres:not-the-password@127.0.0.1:%d/app?connect_timeout=5", port)
	args := func(target string, extra ...string) []string {
		return append([]string{"migrate", "--source", srv.URI(src), "--target", target, "--pg-bin", srv.ClientBin()}, extra...)
	}

	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"unreachable target", args(unreachable, "--yes"), "target: cannot connect"},
		{"no terminal to confirm on", args(srv.URI(tgt)), "no terminal to confirm on"},
		{"bad --pg-bin", append(args(srv.URI(tgt), "--yes"), "--pg-bin", "/nonexistent"), "--pg-bin /nonexistent"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := run(t, append(c.args, "--json")...)
			if r.code != 2 || !strings.Contains(r.stderr, c.want) {
				t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
			}
			s, text := summaryOf(t, r.stdout)
			frozenAs(t, s, false, "", false)
			if strings.Contains(text, "writable again") {
				t.Errorf("the summary says the source was unfrozen:\n%s", text)
			}
			// Without --json: the error's one line, no summary of a run that never began.
			r = run(t, c.args...)
			if lines := strings.Split(strings.TrimSpace(r.stderr), "\n"); r.code != 2 || r.stdout != "" ||
				!strings.HasPrefix(lines[len(lines)-1], "tsmigrate: ") || !strings.Contains(lines[len(lines)-1], c.want) {
				t.Errorf("exit %d, stdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
			}
		})
	}

	r := run(t, "freeze", "--source", srv.URI(src), "--yes", "--freeze-grace", "0s")
	if r.code != 0 {
		t.Fatalf("freeze: exit %d: %s", r.code, r.stderr)
	}
	t.Cleanup(func() { run(t, "unfreeze", "--source", srv.URI(src)) })
	id := strings.Fields(r.stdout[strings.Index(r.stdout, "freeze id:"):])[2]

	t.Run("frozen by an earlier freeze", func(t *testing.T) {
		r := run(t, args(srv.URI(tgt), "--yes", "--json")...)
		if r.code == 0 || !strings.Contains(r.stderr, "already frozen") {
			t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
		}
		s, text := summaryOf(t, r.stdout)
		frozenAs(t, s, true, "freeze "+id+" (postgres on ", false)
		if strings.Contains(text, "writable again") || !strings.Contains(text, "is frozen by freeze "+id) ||
			!strings.Contains(text, "not by this run: it stays so") {
			t.Errorf("summary:\n%s", text)
		}
	})
	t.Run("refused --resume", func(t *testing.T) {
		stale := testenv.StaleScratch(t)
		r := run(t, args(srv.URI(tgt), "--yes", "--resume", "--json")...)
		if r.code != 2 || !strings.Contains(r.stderr, "holds no migration journal") || strings.Contains(r.stderr, "removed") {
			t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
		}
		s, text := summaryOf(t, r.stdout)
		frozenAs(t, s, true, "freeze "+id, false)
		if strings.Contains(text, "writable again") {
			t.Errorf("summary:\n%s", text)
		}
		if _, err := os.Stat(stale); err != nil {
			t.Errorf("the killed run's directory: %v", err)
		}
	})
	t.Run("refused --worker", func(t *testing.T) {
		r := run(t, args(srv.URI(tgt), "--yes", "--worker", "--worker-wait", "1s", "--json")...)
		if r.code != 2 {
			t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
		}
		s, text := summaryOf(t, r.stdout)
		frozenAs(t, s, true, "freeze "+id, false)
		if strings.Contains(text, "writable again") {
			t.Errorf("summary:\n%s", text)
		}
	})
	r = run(t, "freeze-status", "--source", srv.URI(src))
	if !strings.Contains(r.stdout, id) {
		t.Errorf("the earlier freeze is not in place any more:\n%s", r.stdout)
	}
}

// userURI is srv's URI for db logged in as user with password pw.
func userURI(srv *testenv.Server, user, pw, db string) string {
	u, _ := url.Parse(srv.SuperURI(db))
	u.User = url.UserPassword(user, pw)
	return u.String()
}

// A run fails after its freeze and cannot undo it: the summary says the source is
// still frozen by this run, not "writable again". The source user owns the source
// database and may store the freeze record (GRANT SET ON PARAMETER); an event trigger
// on the target takes that grant away as the run restores the source's table there
// (same server), and makes that table refuse rows, so that the run fails.
func TestSourceStillFrozenWhenUnfreezeFails(t *testing.T) {
	srv := testenv.Need(t, testenv.PG17TS, testenv.Options{})
	const owner, pw = "still_frozen_owner", "pw-still-frozen"
	testenv.MustExec(t, srv, "postgres",
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", owner, pw),
		"GRANT SET ON PARAMETER tsmigrate.freeze_record TO "+owner)
	src := testenv.NewDB(t, srv, false)
	tgt := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, "postgres", "ALTER DATABASE "+src+" OWNER TO "+owner)
	testenv.MustExec(t, srv, src, `CREATE TABLE t (x int)`, `INSERT INTO t SELECT generate_series(1, 10)`, `ALTER TABLE t OWNER TO `+owner)
	onCreateTable(t, srv, tgt, "tsm_test_sabotage", `REVOKE SET ON PARAMETER tsmigrate.freeze_record FROM `+owner+`;
		EXECUTE format('ALTER TABLE %s ADD CONSTRAINT tsm_test_no_rows CHECK (false) NOT VALID', r.object_identity);`)
	t.Cleanup(func() { run(t, "unfreeze", "--source", srv.SuperURI(src)) })

	r := run(t, "migrate", "--source", userURI(srv, owner, pw, src), "--target", srv.URI(tgt), "--pg-bin", srv.ClientBin(),
		"--yes", "--freeze-grace", "0s", "--json")
	if r.code != 1 || !strings.Contains(r.stderr, "unfreezing failed") {
		t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	s, text := summaryOf(t, r.stdout)
	frozenAs(t, s, true, migrate.FrozenByThisRun, false)
	if strings.Contains(text, "writable again") || !strings.Contains(text, "is still frozen (freeze "+s.Databases[0].FreezeID+"): unfreezing failed") {
		t.Errorf("summary:\n%s", text)
	}
	if set := frozenSettings(t, srv, src); len(set) != 2 {
		t.Errorf("the source's settings: %q (want it still frozen)", set)
	}
}

// onCreateTable has database db run the PL/pgSQL statements do for every table created
// in its schema public (r.object_identity names it), pre-flight's probe left out, by an
// event trigger named name. Its function is in pg_catalog, where pre-flight's
// target-empty does not look.
func onCreateTable(t *testing.T, srv *testenv.Server, db, name, do string) {
	t.Helper()
	testenv.MustExec(t, srv, db,
		`CREATE FUNCTION pg_catalog.`+name+`() RETURNS event_trigger LANGUAGE plpgsql AS $$
		DECLARE r record;
		BEGIN
			FOR r IN SELECT * FROM pg_event_trigger_ddl_commands()
				WHERE command_tag = 'CREATE TABLE' AND schema_name = 'public' AND object_identity NOT LIKE '%tsmigrate_preflight_probe'
			LOOP
				`+do+`
			END LOOP;
		END $$`,
		`CREATE EVENT TRIGGER `+name+` ON ddl_command_end WHEN TAG IN ('CREATE TABLE') EXECUTE FUNCTION pg_catalog.`+name+`()`)
}

// The text summary says when each of the target's TimescaleDB jobs runs: next at its
// time, at once when the source's scheduler never planned it, or not at all; the first
// jobsShown, then how many more.
func TestSummaryListsJobs(t *testing.T) {
	next := time.Date(2027, 1, 2, 3, 4, 5, 0, time.FixedZone("CET", 3600))
	jobs := []migrate.JobSchedule{
		{Job: "job public.tick on the database", ID: 1000, Scheduled: true, NextStart: &next},
		{Job: "job _timescaledb_functions.policy_compression on public.m", ID: 1001, Scheduled: true},
		{Job: "job public.tick on the database #2", ID: 1002},
	}
	for i := range jobsShown {
		jobs = append(jobs, migrate.JobSchedule{Job: fmt.Sprintf("job public.other on public.h%d", i), ID: 1003 + i})
	}
	var b strings.Builder
	printSummary(&b, &migrate.Summary{Outcome: migrate.OutcomeMigrated, Databases: []*migrate.DatabaseRun{{Source: "app", Target: "app2", Jobs: jobs}}}, false)
	out := b.String()
	for _, want := range []string{
		"  TimescaleDB jobs of app2, given the source's schedules once verified:\n",
		"    job public.tick on the database: next at 2027-01-02T02:04:05Z\n",
		"    job _timescaledb_functions.policy_compression on public.m: as soon as the target's scheduler sees it (never planned on the source)\n",
		"    job public.tick on the database #2: not scheduled\n",
		"    job public.other on public.h6: not scheduled\n",
		"    and 3 more (see --json)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the summary lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "public.h7:") {
		t.Errorf("the summary lists more than %d jobs:\n%s", jobsShown, out)
	}
}

// The text summary of a --roles run says which roles were created, which kept another
// attribute set, which exist already and how they differ, what the target refused,
// which login roles have no password yet and how to set one, and which objects kept
// another owner and why.
func TestSummaryListsRoles(t *testing.T) {
	s := &migrate.Summary{Outcome: migrate.OutcomeMigrated, Target: "tsdbadmin@host:5432/defaultdb",
		Roles: &roles.Report{Created: []string{"admin_su", "app_login"}, WithoutPassword: []string{"admin_su", "app_login"},
			DroppedAttributes: []roles.Dropped{{Role: "admin_su", Attributes: []string{"SUPERUSER"}}},
			Existing:          []roles.Existing{{Role: "app_read", Differences: []string{"LOGIN on the source, NOLOGIN on the target"}}},
			Memberships:       []string{"app_read to app_login"},
			Refused:           []roles.Refusal{{What: "setting log_statement of role app_login", Reason: "permission denied (SQLSTATE 42501)"}}},
		Databases: []*migrate.DatabaseRun{{Source: "app", Target: "defaultdb", Owners: &roles.OwnersReport{Set: 12,
			NotSet: []roles.NotSet{{Owner: "postgres", Reason: "the target user may not act as the role (SET ROLE)", Count: 1, Objects: []string{"function public.f()"}}}}}}}
	var b strings.Builder
	printSummary(&b, s, false)
	out := b.String()
	for _, want := range []string{
		"\nroles (--roles):\n  created: admin_su, app_login\n",
		"  memberships given: app_read to app_login\n",
		"  admin_su created without SUPERUSER (the target user may not give it)\n",
		"  app_read exists on the target already, left as it is; it differs: LOGIN on the source, NOLOGIN on the target\n",
		"  refused by the target: setting log_statement of role app_login: permission denied (SQLSTATE 42501)\n",
		"  created WITHOUT a password (the source user may not read the verifiers): admin_su, app_login\n",
		`    set each before the applications log in: connected with psql to tsdbadmin@host:5432/defaultdb, \password ROLE (psql sends a verifier, never the password)` + "\n",
		"  owners: 12 objects of defaultdb given their source owners\n",
		"    1 objects of role postgres keep another owner (function public.f()): the target user may not act as the role (SET ROLE)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the summary lacks %q:\n%s", want, out)
		}
	}
}

// A migrate that fails in verify on data lists the first differing units in its text
// summary, with the rows verify narrowed them to, then how many more; identical units
// are not listed.
func TestSummaryListsDifferingUnits(t *testing.T) {
	one := "1"
	rep := &verify.Report{Units: []verify.Unit{{Kind: "table", Table: "public.same", Identical: true}}}
	for i := 1; i <= summaryDifferences+2; i++ {
		rep.Units = append(rep.Units, verify.Unit{Kind: "chunk", Table: "public.m", Chunk: fmt.Sprintf("_hyper_1_%d_chunk", i),
			Problem: fmt.Sprintf("rows %d / %d", 10*i, 10*i-1)})
	}
	rep.Units[1].Columns = []string{"x"}
	rep.Units[1].Rows = []verify.RowDiff{{Source: []*string{&one}}}
	rep.UnitsDiffering = summaryDifferences + 2
	var b strings.Builder
	printSummary(&b, &migrate.Summary{Outcome: migrate.OutcomeFailed, Databases: []*migrate.DatabaseRun{{Source: "app", Target: "app2",
		Verify: rep, Identical: new(false)}}}, false)
	out := b.String()
	for _, want := range []string{
		"  verify: DIFFERENT\n    DIFF hypertable public.m chunk _hyper_1_1_chunk: rows 10 / 9\n      only on the source: (x='1')\n",
		"    DIFF hypertable public.m chunk _hyper_1_5_chunk: rows 50 / 49\n",
		"    and 2 more (tsmigrate verify --database app:app2 lists them all)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the summary lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "public.same") || strings.Contains(out, "_hyper_1_6_chunk") {
		t.Errorf("the summary lists an identical unit, or more than %d:\n%s", summaryDifferences, out)
	}
}

// The text summary says how many units the copy ran at once and why.
func TestSummarySaysJobs(t *testing.T) {
	var b strings.Builder
	printSummary(&b, &migrate.Summary{Outcome: migrate.OutcomeMigrated, Databases: []*migrate.DatabaseRun{{Source: "app", Target: "app2",
		Data: &migrate.DataCopy{Units: 1000, Jobs: 11, JobsWhy: "round trips of 10ms to the target"}}}}, false)
	if want := "  11 units at once: round trips of 10ms to the target\n"; !strings.Contains(b.String(), want) {
		t.Errorf("the summary lacks %q:\n%s", want, b.String())
	}
}

// The time per phase is a table whose columns line up whatever the length of the
// names (database-settings, timescaledb-api and verify-schema pushed the database
// and time columns out of line).
func TestSummaryPhaseColumnsAligned(t *testing.T) {
	s := &migrate.Summary{Outcome: migrate.OutcomeMigrated, Phases: []migrate.PhaseTime{
		{Phase: "freeze", Duration: time.Second},
		{Phase: "database-settings", Database: "app", Duration: 2 * time.Second},
		{Phase: "copy", Database: "a_database_name_of_thirty_chars", Duration: 3 * time.Second},
	}}
	var b strings.Builder
	printSummary(&b, s, false)
	_, table, _ := strings.Cut(b.String(), "time per phase:\n")
	lines := strings.Split(table, "\n")[:3]
	for _, l := range lines {
		if len(l) != len(lines[0]) { // the times are right-aligned, of one width
			t.Fatalf("phase lines not aligned:\n%s", strings.Join(lines, "\n"))
		}
	}
	if !strings.HasPrefix(lines[2], "  copy              a_database_name_of_thirty_chars ") {
		t.Errorf("columns: %q", lines[2])
	}
}
