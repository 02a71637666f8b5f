package migrate_test

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/freeze"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// SIGINT to the tsmigrate process while pg_dump copies a big table: exit 130, pg_dump
// stopped, the source writable again, the reset printed. Meanwhile pg_dump's command
// line holds no password.
func TestInterruptDuringDump(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src := testenv.NewDB(t, srv, true)
	dst := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, src, "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS a FROM generate_series(1, 1500000) g")

	bin := testenv.Binary(t)
	dumps := t.TempDir()
	cmd := exec.Command(bin, "migrate", "--engine", "dump", "--yes", "--jobs", "2", "--freeze-grace", "1s", "--pg-bin", srv.ClientBin(),
		"--dump-dir", dumps, "--source", srv.URI(src), "--target", srv.URI(dst))
	var stdout strings.Builder
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	var errLines []string
	var pastDump atomic.Bool
	inDump := make(chan struct{})
	stderrDone := make(chan struct{})
	go func() {
		defer close(stderrDone)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			errLines = append(errLines, sc.Text())
			if strings.HasPrefix(sc.Text(), "==> dump") {
				close(inDump)
			}
			if strings.HasPrefix(sc.Text(), "==> restore") {
				pastDump.Store(true)
			}
		}
	}()
	select {
	case <-inDump:
	case <-time.After(60 * time.Second):
		t.Fatal("the dump did not start")
	}
	// Wait until pg_dump writes the big table's data, then look at its command line.
	deadline := time.Now().Add(20 * time.Second)
	for {
		files, _ := filepath.Glob(filepath.Join(dumps, "*", "*.dat*"))
		if len(files) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("pg_dump wrote no data file")
		}
		time.Sleep(20 * time.Millisecond)
	}
	seen := 0
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), "pg_dump") || strings.Contains(string(b), "tsmigrate\x00migrate") {
			continue
		}
		seen++
		if strings.Contains(string(b), testenv.SuperPassword) {
			t.Fatalf("pg_dump's command line holds the password: %q", b)
		}
	}
	if seen == 0 {
		t.Fatal("no pg_dump process found while dumping")
	}
	t0 := time.Now()
	cmd.Process.Signal(syscall.SIGINT)
	if pastDump.Load() {
		t.Fatal("the dump ended before the signal: make the table bigger")
	}
	<-stderrDone
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exit.Interrupted {
		t.Fatalf("exit: %v, want %d\n%s\n%s", err, exit.Interrupted, stdout.String(), strings.Join(errLines, "\n"))
	}
	if d := time.Since(t0); d > 15*time.Second {
		t.Errorf("took %v to stop", d)
	}
	out := stdout.String()
	for _, want := range []string{"INTERRUPTED", "the source is writable again", "to reset the target", `DROP DATABASE "` + dst + `"`} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if !writable(t, srv, src) {
		t.Fatal("the source is still frozen after the interrupt")
	}
	c := connect(t, srv.SuperURI("postgres"))
	sessionsGone(t, c, src) // pg_dump's
	if _, err := os.Stat(filepath.Join(dumps, src+".dump")); !os.IsNotExist(err) {
		t.Errorf("the partial dump is left behind: %v", err)
	}
}

// killInDataPhase starts a stream migration of src into dst and SIGKILLs it once 20 data
// units are done: the source stays frozen, the journal in the target. It returns the
// units done and recorded, the units the run had planned, and when it was killed.
func killInDataPhase(t *testing.T, srv *testenv.Server, src, dst string) (done, total, planned int, killedAt time.Time) {
	t.Helper()
	p := startTsmigrate(t, testenv.Binary(t), "migrate", "--yes", "--jobs", "1", "--freeze-grace", "1s", "--progress", "json", "--json",
		"--pg-bin", srv.ClientBin(), "--source", srv.URI(src), "--target", srv.URI(dst))
	p.waitFor(t, "done", 20)
	killedAt = time.Now()
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.cmd.Wait()
	_, planned = p.events("")
	if writable(t, srv, src) {
		t.Fatal("the source is writable after tsmigrate was killed")
	}
	g := connect(t, srv.SuperURI(dst))
	sessionsGone(t, g, dst) // the killed sessions' transactions end shortly after
	done = scalar[int](t, g, "SELECT count(*) FROM _tsmigrate.units WHERE state = 'done'")
	total = scalar[int](t, g, "SELECT count(*) FROM _tsmigrate.units")
	t.Logf("killed with %d of %d units done", done, total)
	if done == 0 || done >= total {
		t.Fatalf("killed with %d of %d units done: not in the middle of the data phase", done, total)
	}
	return done, total, planned, killedAt
}

// After a SIGKILL in the data phase, a superuser writes one row to the still frozen
// source (SET default_transaction_read_only = off in that session): --resume is refused
// with exit 2 and one line naming the database and the write, with how to start over,
// and changes nothing: the target's journal and the source's freeze stay as they were.
// A journal without the freeze's baseline is refused likewise.
func TestStreamKillWriteThenResumeRefused(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src := bigSource(t, srv)
	dst := testenv.NewDB(t, srv, false)
	unfreezeAtCleanup(t, srv, src)
	killInDataPhase(t, srv, src, dst)

	g := connect(t, srv.SuperURI(dst))
	journal := func() string {
		return scalar[string](t, g, `SELECT (SELECT row_to_json(r)::text FROM _tsmigrate.run r)
	|| (SELECT string_agg(id || ':' || state, ',' ORDER BY id) FROM _tsmigrate.units)
	|| coalesce((SELECT string_agg(name, ',' ORDER BY name) FROM _tsmigrate.steps), '')`)
	}
	freezeOf := func() freeze.State {
		st, err := freeze.Status(context.Background(), cfg(t, "source", srv.URI(src)))
		if err != nil {
			t.Fatal(err)
		}
		st.SessionsFromBefore = nil
		return *st
	}
	resume := func(want ...string) {
		t.Helper()
		code, out, errOut := runCLI(t, "migrate", "--resume", "--yes", "--pg-bin", srv.ClientBin(),
			"--source", srv.URI(src), "--target", srv.URI(dst))
		lines := strings.Split(strings.TrimSpace(errOut), "\n")
		last := lines[len(lines)-1]
		if code != exit.Usage || strings.Count(errOut, "tsmigrate:") != 1 || !strings.HasPrefix(last, "tsmigrate: cannot resume: ") {
			t.Fatalf("exit %d, want %d and one line\n%s\n%s", code, exit.Usage, out, errOut)
		}
		for _, w := range append(want, "to start over", "reset the target") {
			if !strings.Contains(last, w) {
				t.Errorf("the refusal does not say %q:\n%s", w, last)
			}
		}
		t.Logf("refused: %s", last)
	}

	baseline := scalar[string](t, g, "SELECT freeze_baseline::text FROM _tsmigrate.run")
	testenv.MustExec(t, srv, dst, "UPDATE _tsmigrate.run SET freeze_baseline = NULL")
	resume("the target's journal of " + src + " holds no baseline of the source's write counters")
	if _, err := g.Exec(context.Background(), "UPDATE _tsmigrate.run SET freeze_baseline = $1::jsonb", baseline); err != nil {
		t.Fatal(err)
	}

	testenv.MustExec(t, srv, src, "SET default_transaction_read_only = off", "INSERT INTO p (body) VALUES ('written after the kill')")
	journalBefore, freezeBefore := journal(), freezeOf()
	resume("source database "+src+" is not proven unchanged since the first run's freeze", "rows written moved from")
	if j := journal(); j != journalBefore {
		t.Errorf("the refused resume changed the journal:\nbefore %s\nafter  %s", journalBefore, j)
	}
	if st := freezeOf(); !reflect.DeepEqual(st, freezeBefore) || !st.Intact {
		t.Errorf("the refused resume changed the source's freeze:\nbefore %+v\nafter  %+v", freezeBefore, st)
	}
	if writable(t, srv, src) {
		t.Fatal("the source is writable after the refused resume")
	}
}
