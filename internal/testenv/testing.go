package testenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/scratch"
)

// Need starts a fresh server of kind k for one test and stops it when the test ends.
// A server that cannot be started skips the test, except under CI=true, where it fails.
func Need(t testing.TB, k Kind, opt Options) *Server {
	t.Helper()
	skipShort(t, k)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := Start(ctx, k, opt)
	if err != nil {
		unavailable(t, k, err)
	}
	t.Cleanup(s.Stop)
	return s
}

// skipShort skips the test under go test -short, before anything is started: the fast
// tier runs without servers, on a machine with no PostgreSQL (CI=true included).
func skipShort(t testing.TB, k Kind) {
	t.Helper()
	if testing.Short() {
		t.Skipf("needs a %s server: not under -short", k)
	}
}

func unavailable(t testing.TB, k Kind, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("cannot start %s server (CI=true makes this a failure): %v", k, err)
	}
	t.Skipf("cannot start %s server: %v", k, err)
}

var (
	sharedMu sync.Mutex
	shared   = map[Kind]*Server{}
	dbSeq    atomic.Int64
)

// Shared returns a server of kind k shared by the tests of the package; Main stops it.
// When ExternalEnv(k) names a server, it is that one (left running), and one that does
// not answer fails the test.
func Shared(t testing.TB, k Kind) *Server {
	t.Helper()
	skipShort(t, k)
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if s, ok := shared[k]; ok {
		return s
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := external(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	if s == nil {
		if s, err = Start(ctx, k, Options{}); err != nil {
			unavailable(t, k, err)
		}
	}
	shared[k] = s
	return s
}

// NewDB creates a fresh database on s for this test (TimescaleDB installed when withTS)
// and drops it when the test ends. It returns the database's name.
func NewDB(t testing.TB, s *Server, withTS bool) string {
	t.Helper()
	name := fmt.Sprintf("t%d_%d", os.Getpid(), dbSeq.Add(1))
	ctx := context.Background()
	if err := s.CreateDatabase(ctx, name, withTS); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		s.Exec(context.Background(), "postgres", "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	return name
}

// NewRole creates a role (NOLOGIN) on s for this test, named after prefix and this
// process, and drops it when the test ends (after the test's databases, which the
// cleanups made before it drop first). It returns the role's name.
func NewRole(t testing.TB, s *Server, prefix string) string {
	t.Helper()
	name := fmt.Sprintf("%s_%d_%d", prefix, os.Getpid(), dbSeq.Add(1))
	MustExec(t, s, "postgres", "CREATE ROLE "+name)
	t.Cleanup(func() { s.Exec(context.Background(), "postgres", "DROP ROLE IF EXISTS "+name) })
	return name
}

// MustExec runs SQL on database db as the superuser, failing the test on error.
func MustExec(t testing.TB, s *Server, db string, sql ...string) {
	t.Helper()
	if err := s.Exec(context.Background(), db, sql...); err != nil {
		t.Fatalf("exec on %s: %v", db, err)
	}
}

// Main runs the package's tests with a TMPDIR of their own, then stops the shared
// servers and removes that directory. The temporary directories of the tsmigrate runs
// of the package's tests, in this process and in the tsmigrate processes they start,
// are then theirs alone: a migrate here never removes, nor says it removed, what a run
// killed by another package's test (or by another test run on this machine) left
// behind, and what the runs it kills leave does not reach the machine's /tmp.
func Main(m *testing.M) {
	tmp, err := os.MkdirTemp("", "tsmigrate.test-")
	if err == nil {
		err = os.Setenv("TMPDIR", tmp)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testenv: a TMPDIR for the tests:", err)
		os.Exit(1)
	}
	code := m.Run()
	sharedMu.Lock()
	for _, s := range shared {
		s.Stop()
	}
	sharedMu.Unlock()
	os.RemoveAll(tmp)
	os.Exit(code)
}

// StaleScratch gives the test a TMPDIR of its own (for its tsmigrate runs, in this
// process and in those it starts) that holds the temporary directory of a tsmigrate run
// killed before, with its unlocked lock file: the next migrate that gets going removes
// it, and says so. It returns that directory's path. Not for parallel tests.
func StaleScratch(t *testing.T) string {
	t.Helper()
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	dir := filepath.Join(tmp, scratch.Prefix+"dump-killed")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, scratch.LockName), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// FilesHolding lists the files under dir whose content holds secret: tests that
// check that no password is left on disk.
func FilesHolding(dir, secret string) []string {
	var found []string
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, []byte(secret)) {
			found = append(found, path)
		}
		return nil
	})
	return found
}

// SchedulerWait is how long a test gives a TimescaleDB scheduler to show up after it
// was (re)started: it starts asynchronously, later under load.
const SchedulerWait = 30 * time.Second

// MustSchedulerRun fails the test unless database db of s has its TimescaleDB
// scheduler running (within SchedulerWait): what a migration or a pre-flight probe
// must never leave stopped.
func MustSchedulerRun(t testing.TB, s *Server, db string) {
	t.Helper()
	running, err := s.SchedulerRunning(context.Background(), db, SchedulerWait)
	if err != nil {
		t.Fatal(err)
	}
	if !running {
		t.Fatalf("the TimescaleDB scheduler of database %s is not running (none in pg_stat_activity after %s)", db, SchedulerWait)
	}
}
