package migrate_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/freeze"
	"github.com/tsmigrate/tsmigrate/internal/journal"
	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// The shape list through the stream engine with --jobs 4: everything equal, the
// journal gone, the data phase in the summary. Without verify, the summary's rows per
// table come from the journal (partitioned tables counted).
func TestStreamEveryShapeWithJobs4(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	ctx := context.Background()
	src := testenv.NewDB(t, srv, true)
	testenv.MustExec(t, srv, src, shapes...)
	dst := "t_stream_shapes_target"
	t.Cleanup(func() { srv.Exec(ctx, "postgres", "DROP DATABASE IF EXISTS "+dst+" WITH (FORCE)") })
	unfreezeAtCleanup(t, srv, src)

	sum, err := migrate.Run(ctx, migrate.Options{Engine: migrate.EngineStream,
		Source: cfg(t, "source", srv.URI(src)), Target: cfg(t, "target", srv.URI(dst)),
		Jobs: 4, PgBin: srv.ClientBin(), FreezeGrace: time.Second, NoVerify: true,
	})
	if err != nil {
		t.Fatalf("migrate: %v\n%+v", err, sum)
	}
	if sum.Engine != "stream" || sum.Outcome != migrate.OutcomeMigrated || !sum.Frozen() || len(sum.CutOver) == 0 || len(sum.Errors) != 0 {
		t.Fatalf("summary %+v", sum)
	}
	d := sum.Databases[0]
	if d.Data == nil || d.Data.Units < 60 || d.Data.Rows < 5760 || d.Data.Bytes == 0 || d.FreezeID == "" {
		t.Fatalf("database run %+v, data %+v", d, d.Data)
	}
	assertShapeTables(t, d)
	if code, out, errOut := runCLI(t, "verify", "--source", srv.URI(src), "--target", srv.URI(dst), "--jobs", "2"); code != 0 {
		t.Fatalf("tsmigrate verify: exit %d\n%s\n%s", code, out, errOut)
	}
	assertShapesEqual(t, srv, src, dst)
	if scalar[bool](t, connect(t, srv.SuperURI(dst)), "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = '_tsmigrate')") {
		t.Error("the journal is left in the target after a good run")
	}
	if writable(t, srv, src) {
		t.Fatal("the source is writable after a successful run; it must stay frozen")
	}
}

// A row the target rejects (a constraint only the target has) fails the run with exit 1
// naming the table and the server's reason. With --keep-frozen-on-failure the source
// stays frozen for --resume; once it is unfrozen, --resume is refused.
func TestStreamRejectedRowThenResumeRefused(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	ctx := context.Background()
	src := testenv.NewDB(t, srv, true)
	dst := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, src, "CREATE TABLE orders (id int PRIMARY KEY, amount numeric)",
		"INSERT INTO orders SELECT g, g FROM generate_series(1, 500) g",
		"CREATE TABLE m (t timestamptz NOT NULL, v int)", "SELECT create_hypertable('m', 't')",
		"INSERT INTO m SELECT '2025-01-01'::timestamptz + g * interval '1 hour', g FROM generate_series(1, 500) g")
	unfreezeAtCleanup(t, srv, src)

	sum, err := migrate.Run(ctx, migrate.Options{Engine: migrate.EngineStream, KeepFrozenOnFailure: true,
		Source: cfg(t, "source", srv.URI(src)), Target: cfg(t, "target", srv.URI(dst)),
		Jobs: 2, PgBin: srv.ClientBin(), FreezeGrace: time.Second,
		OnEvent: func(e migrate.Event) {
			// The schema is in the target now: give it a constraint the source lacks.
			if e.Type == migrate.EventPhase && e.Phase == migrate.PhaseCopy {
				testenv.MustExec(t, srv, dst, "ALTER TABLE orders ADD CONSTRAINT small_amount CHECK (amount < 100)")
			}
		},
	})
	if exit.Code(err) != exit.Failed {
		t.Fatalf("exit %d (%v), want 1", exit.Code(err), err)
	}
	for _, want := range []string{"public.orders", `violates check constraint "small_amount"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if sum.Outcome != migrate.OutcomeFailed || !sum.Frozen() || len(sum.Resume) == 0 || len(sum.ResetTarget) == 0 {
		t.Fatalf("summary %+v", sum)
	}
	if writable(t, srv, src) {
		t.Fatal("--keep-frozen-on-failure: the source was unfrozen")
	}

	// Unfrozen in between: the source may have changed, resuming is refused.
	if _, err := freeze.Unfreeze(ctx, cfg(t, "source", srv.URI(src))); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI(t, "migrate", "--resume", "--yes", "--pg-bin", srv.ClientBin(),
		"--source", srv.URI(src), "--target", srv.URI(dst))
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	if code != exit.Usage || !strings.Contains(lines[len(lines)-1], "cannot resume: source database "+src+" is not frozen any more") ||
		!strings.Contains(lines[len(lines)-1], "reset the target") {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	if !writable(t, srv, src) {
		t.Fatal("a refused resume froze the source")
	}
}

// A target whose journal another tsmigrate wrote in another format: --resume and
// --worker refuse it with one line naming the version that wrote it, exit 2, changing
// nothing; a new run fails in pre-flight with one line.
func TestStreamJournalOfAnotherFormatRefused(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	ctx := context.Background()
	src, dst := testenv.NewDB(t, srv, true), testenv.NewDB(t, srv, true)
	testenv.MustExec(t, srv, src, "CREATE TABLE p (id int PRIMARY KEY)", "INSERT INTO p SELECT generate_series(1, 10)")
	unfreezeAtCleanup(t, srv, src)
	target := connect(t, srv.SuperURI(dst))
	if _, err := journal.Open(ctx, target, "freeze-of-another-version"); err != nil {
		t.Fatal(err)
	}
	testenv.MustExec(t, srv, dst, "UPDATE _tsmigrate.run SET format = 99, tsmigrate_version = 'v9.9.9'")
	const state = `SELECT (SELECT row_to_json(r)::text FROM _tsmigrate.run r) || ' ' ||
	(SELECT string_agg(c.relname, ',' ORDER BY c.relname) FROM pg_class c WHERE c.relnamespace = '_tsmigrate'::regnamespace)`
	before := scalar[string](t, target, state)

	for _, c := range []struct{ flag, verb, hint string }{
		{"--resume", "resume", "finish it with the tsmigrate that wrote it"},
		{"--worker", "join", "a --worker only joins"},
	} {
		code, out, errOut := runCLI(t, "migrate", c.flag, "--yes", "--pg-bin", srv.ClientBin(),
			"--source", srv.URI(src), "--target", srv.URI(dst))
		want := "cannot " + c.verb + ": target database " + dst + ": its migration journal was written by tsmigrate v9.9.9 (journal format 99)"
		if line := errorLine(errOut); code != exit.Usage || !strings.Contains(line, want) || !strings.Contains(line, c.hint) {
			t.Errorf("%s: exit %d, want 2 and one line saying %q and %q\n%s\n%s", c.flag, code, want, c.hint, out, errOut)
		}
		if !writable(t, srv, src) {
			t.Fatalf("%s: a refused run froze the source", c.flag)
		}
		if after := scalar[string](t, target, state); after != before {
			t.Fatalf("%s: a refused run changed the journal:\n%s\n%s", c.flag, before, after)
		}
	}

	code, out, errOut := runCLI(t, "migrate", "--yes", "--pg-bin", srv.ClientBin(), "--source", srv.URI(src), "--target", srv.URI(dst))
	if code != exit.Blocked || !strings.Contains(errorLine(errOut), "not empty: schema _tsmigrate") {
		t.Errorf("new run: exit %d, want 3 and one line naming the journal's schema\n%s\n%s", code, out, errOut)
	}
	if !writable(t, srv, src) {
		t.Fatal("a refused new run froze the source")
	}
	if after := scalar[string](t, target, state); after != before {
		t.Fatalf("a refused new run changed the journal:\n%s\n%s", before, after)
	}
}

// errorLine is the one line of stderr that says why tsmigrate failed ("" when there is
// not exactly one).
func errorLine(stderr string) string {
	var lines []string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(l, "tsmigrate: ") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 {
		return ""
	}
	return lines[0]
}

// bigSource makes a hypertable of many small chunks and a plain table, so that a data
// phase with one job lasts a few seconds.
func bigSource(t *testing.T, srv *testenv.Server) string {
	src := testenv.NewDB(t, srv, true)
	testenv.MustExec(t, srv, src,
		"CREATE TABLE m (t timestamptz NOT NULL, v int, s text)",
		"SELECT create_hypertable('m', 't', chunk_time_interval => interval '1 hour')",
		"INSERT INTO m SELECT '2025-01-01'::timestamptz + g * interval '10 seconds', g, md5(g::text) FROM generate_series(1, 360 * 300) g",
		"CREATE TABLE p (id serial PRIMARY KEY, body text)",
		"INSERT INTO p (body) SELECT repeat(md5(g::text), 8) FROM generate_series(1, 50000) g")
	return src
}

// proc is a tsmigrate process whose stderr is read line by line.
type proc struct {
	cmd    *exec.Cmd
	stdout strings.Builder
	mu     sync.Mutex
	lines  []string
	done   chan struct{}
}

func startTsmigrate(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), done: make(chan struct{})}
	// A TMPDIR of its own: what it leaves when killed stays out of the other runs'
	// way (left for testenv.Main to remove: its children may still write there).
	tmp, err := os.MkdirTemp("", "proc-")
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	p.cmd.Stdout = &p.stdout
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.cmd.Process.Kill() })
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
		}
		io.Copy(io.Discard, stderr)
	}()
	return p
}

// events counts the progress JSON lines of type typ so far, and returns the planned units.
func (p *proc) events(typ string) (n, planned int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.lines {
		if !strings.HasPrefix(l, "{") {
			continue
		}
		var e struct {
			Type  string            `json:"type"`
			Units []json.RawMessage `json:"units"`
		}
		if json.Unmarshal([]byte(l), &e) == nil {
			if e.Type == typ {
				n++
			}
			if e.Type == "planned" {
				planned = len(e.Units)
			}
		}
	}
	return n, planned
}

// output is the stderr read so far.
func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// saw says whether a line of stderr so far starts with prefix.
func (p *proc) saw(prefix string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

// sessionsGone waits until database db has no session of tsmigrate's (its own, its
// pg_dump's and pg_restore's) left: a killed run's end when the server notices, after
// the statement they run.
func sessionsGone(t *testing.T, c *pgx.Conn, db string) {
	t.Helper()
	testenv.Eventually(t, time.Minute, func() error {
		if n := scalar[int](t, c, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'tsmigrate'", db); n > 0 {
			return fmt.Errorf("%d tsmigrate sessions still on database %s", n, db)
		}
		return nil
	})
}

func (p *proc) waitFor(t *testing.T, typ string, n int) {
	t.Helper()
	testenv.Eventually(t, 90*time.Second, func() error {
		if got, _ := p.events(typ); got >= n {
			return nil
		}
		select {
		case <-p.done:
			t.Fatalf("tsmigrate ended before %d %q events\n%s\n%s", n, typ, p.stdout.String(), strings.Join(p.lines, "\n"))
		default:
		}
		return fmt.Errorf("no %d %q events", n, typ)
	})
}

func (p *proc) wait(t *testing.T) (int, *migrate.Summary) {
	t.Helper()
	<-p.done
	err := p.cmd.Wait()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var sum migrate.Summary
	if err := json.Unmarshal([]byte(p.stdout.String()), &sum); err != nil {
		t.Fatalf("summary: %v\n%s\n%s", err, p.stdout.String(), strings.Join(p.lines, "\n"))
	}
	return code, &sum
}

// tableSums reads each user table's row count and checksum.
func tableSums(t *testing.T, srv *testenv.Server, db string) map[string]string {
	t.Helper()
	c := connect(t, srv.SuperURI(db))
	out := map[string]string{}
	for _, q := range []string{
		"SELECT count(*) || ' ' || md5(string_agg(m::text, ',' ORDER BY t)) FROM m",
		"SELECT count(*) || ' ' || md5(string_agg(p::text, ',' ORDER BY id)) FROM p",
		"SELECT count(*)::text FROM timescaledb_information.chunks",
		"SELECT last_value::text FROM p_id_seq",
	} {
		out[q] = scalar[string](t, c, q)
	}
	return out
}

func assertSumsEqual(t *testing.T, srv *testenv.Server, src, dst string) {
	t.Helper()
	want, got := tableSums(t, srv, src), tableSums(t, srv, dst)
	for q, w := range want {
		if got[q] != w {
			t.Errorf("%s: source %s, target %s", q, w, got[q])
		}
	}
}

// SIGKILL of tsmigrate in the middle of the data phase leaves the source frozen and the
// journal in the target; --resume then finishes: every table and chunk equal, none doubled,
// and the freeze proof covers both runs, from the first run's freeze to the end of the
// resumed copy.
func TestStreamKillThenResume(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src := bigSource(t, srv)
	dst := testenv.NewDB(t, srv, false)
	unfreezeAtCleanup(t, srv, src)
	done, total, planned, killedAt := killInDataPhase(t, srv, src, dst)

	resumedAt := time.Now()
	sum, errOut := resume(t, srv, src, dst)
	d := sum.Databases[0]
	if d.Data == nil || d.Data.Skipped < done || d.Data.Units+d.Data.Skipped != total || d.Identical == nil || !*d.Identical {
		t.Fatalf("resumed: data %+v (killed with %d of %d done, %d planned), identical %v", d.Data, done, total, planned, d.Identical)
	}
	for _, ph := range sum.Phases {
		if ph.Phase == migrate.PhaseFreeze || ph.Phase == migrate.PhasePreData {
			t.Errorf("the resumed run did the %s phase again", ph.Phase)
		}
	}
	p := d.FreezeProof
	if !sum.Resumed || p == nil || !p.Start.Before(killedAt) || !p.End.After(resumedAt) {
		t.Fatalf("the freeze proof does not span both runs (killed at %s, resumed at %s): %+v", killedAt, resumedAt, p)
	}
	note := "proof: no write to the source from the freeze (first run, " + p.Start.Format(time.TimeOnly) + ") until the end of the copy"
	if !strings.Contains(errOut, note) {
		t.Errorf("no %q among the notes:\n%s", note, errOut)
	}
	assertSumsEqual(t, srv, src, dst)
	if writable(t, srv, src) {
		t.Fatal("the source is writable after the resumed run")
	}
}

// resume runs tsmigrate migrate --resume --jobs 2 of src into dst, which must succeed,
// and returns its summary and its stderr.
func resume(t *testing.T, srv *testenv.Server, src, dst string) (*migrate.Summary, string) {
	t.Helper()
	code, out, errOut := runCLI(t, "migrate", "--resume", "--yes", "--jobs", "2", "--progress", "plain", "--json",
		"--pg-bin", srv.ClientBin(), "--source", srv.URI(src), "--target", srv.URI(dst))
	if code != 0 {
		t.Fatalf("resume: exit %d\n%s\n%s", code, out, errOut)
	}
	var sum migrate.Summary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatal(err)
	}
	return &sum, errOut
}

// Two tsmigrate processes on one migration: the second joins with --worker; every
// unit is copied exactly once, and the data arrives equal.
func TestStreamWorkerSharesDataPhase(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src := bigSource(t, srv)
	dst := testenv.NewDB(t, srv, false)
	unfreezeAtCleanup(t, srv, src)
	bin := testenv.Binary(t)
	conn := []string{"--pg-bin", srv.ClientBin(), "--source", srv.URI(src), "--target", srv.URI(dst), "--progress", "json", "--json"}

	first := startTsmigrate(t, bin, append([]string{"migrate", "--yes", "--jobs", "1", "--freeze-grace", "1s"}, conn...)...)
	first.waitFor(t, "done", 3)
	worker := startTsmigrate(t, bin, append([]string{"migrate", "--worker", "--jobs", "1"}, conn...)...)
	assertShared(t, first, worker)
	assertSumsEqual(t, srv, src, dst)
}

// Ctrl-C (SIGINT) in the data phase, without --keep-frozen-on-failure: exit 130, the
// source unfrozen as issue A wants of an aborted migration, the reset printed, and no
// resume offered.
func TestStreamInterruptUnfreezes(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src := bigSource(t, srv)
	dst := testenv.NewDB(t, srv, false)
	unfreezeAtCleanup(t, srv, src)
	p := startTsmigrate(t, testenv.Binary(t), "migrate", "--yes", "--jobs", "1", "--freeze-grace", "1s", "--progress", "json", "--json",
		"--pg-bin", srv.ClientBin(), "--source", srv.URI(src), "--target", srv.URI(dst))
	p.waitFor(t, "done", 5)
	p.cmd.Process.Signal(syscall.SIGINT)
	code, sum := p.wait(t)
	if code != exit.Interrupted || sum.Outcome != migrate.OutcomeInterrupted || sum.Frozen() || len(sum.ResetTarget) == 0 || len(sum.Resume) != 0 {
		t.Fatalf("exit %d, summary %+v", code, sum)
	}
	if !writable(t, srv, src) {
		t.Fatal("the source is still frozen after Ctrl-C")
	}
}

// A subscription in the source database arrives on the target as pg_dump writes it,
// disabled and not connected; the server's warning about that is known, not an error
// (both engines).
func TestSubscriptionArrivesDisabled(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	ctx := context.Background()
	for _, engine := range []string{migrate.EngineStream, migrate.EngineDump} {
		t.Run(engine, func(t *testing.T) {
			src := testenv.NewDB(t, srv, true)
			dst := "t_subscription_" + engine
			dropSub := []string{`ALTER SUBSCRIPTION sub_a SET (slot_name = NONE)`, `DROP SUBSCRIPTION sub_a`}
			t.Cleanup(func() {
				srv.Exec(ctx, dst, dropSub...)
				srv.Exec(ctx, "postgres", "DROP DATABASE IF EXISTS "+dst+" WITH (FORCE)")
			})
			testenv.MustExec(t, srv, src, `CREATE TABLE t (id int PRIMARY KEY)`, `INSERT INTO t SELECT generate_series(1, 10)`,
				`CREATE SUBSCRIPTION sub_a CONNECTION 'host=127.0.0.1 port=1 dbname=x' PUBLICATION p WITH (connect = false)`)
			t.Cleanup(func() { srv.Exec(ctx, src, dropSub...) })
			unfreezeAtCleanup(t, srv, src)
			sum, err := migrate.Run(ctx, migrate.Options{Engine: engine,
				Source: cfg(t, "source", srv.SuperURI(src)), Target: cfg(t, "target", srv.SuperURI(dst)),
				Jobs: 2, PgBin: srv.ClientBin(), FreezeGrace: time.Second, NoVerify: true})
			if err != nil {
				t.Fatalf("migrate: %v\n%+v", err, sum.Errors)
			}
			known := false
			for _, m := range sum.Databases[0].Messages {
				known = known || m.Rule == "subscription-not-connected"
			}
			if !known {
				t.Errorf("the subscription's warning is not among the known messages: %+v", sum.Databases[0].Messages)
			}
			if enabled := scalar[bool](t, connect(t, srv.SuperURI(dst)), "SELECT subenabled FROM pg_subscription WHERE subname = 'sub_a'"); enabled {
				t.Error("the target's subscription is enabled")
			}
		})
	}
}
