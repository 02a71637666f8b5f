package migrate_test

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/exit"
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
	var left int
	for range 50 {
		left = scalar[int](t, c, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'tsmigrate'", src)
		if left == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if left != 0 {
		t.Fatalf("%d tsmigrate sessions (pg_dump) still on the source", left)
	}
	if _, err := os.Stat(filepath.Join(dumps, src+".dump")); !os.IsNotExist(err) {
		t.Errorf("the partial dump is left behind: %v", err)
	}
}
