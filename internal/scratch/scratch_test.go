package scratch

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// When the environment says so, the test binary is a tsmigrate-like process: it makes
// a scratch directory, prints its path and waits to be killed.
func TestMain(m *testing.M) {
	if os.Getenv("SCRATCH_TEST_OWNER") == "1" {
		d, err := New("dump")
		if err != nil {
			os.Exit(3)
		}
		os.WriteFile(filepath.Join(d.Path, "data"), []byte("rows"), 0o600)
		os.Stdout.WriteString(d.Path + "\n")
		for { // not select{}: the runtime ends a process whose goroutines all block
			time.Sleep(time.Hour)
		}
	}
	os.Exit(m.Run())
}

// A process killed with SIGKILL leaves its scratch directory; RemoveStale removes it,
// and leaves alone the directory of a process that still runs, this process's own, and
// one without a lock file.
func TestRemoveStale(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	owner := func() (*exec.Cmd, string) {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "SCRATCH_TEST_OWNER=1")
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		return cmd, strings.TrimSpace(line)
	}
	killed, stale := owner()
	_, alive := owner()
	own, err := New("schema")
	if err != nil {
		t.Fatal(err)
	}
	defer own.Remove()
	byHand := filepath.Join(tmp, Prefix+"by-hand")
	if err := os.Mkdir(byHand, 0o700); err != nil {
		t.Fatal(err)
	}
	killed.Process.Kill()
	killed.Wait()

	removed := RemoveStale()
	if !slices.Equal(removed, []string{stale}) {
		t.Errorf("removed %q, want only the killed process's %s", removed, stale)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("%s is still there: %v", stale, err)
	}
	for _, dir := range []string{alive, own.Path, byHand} {
		if _, err := os.Stat(dir); err != nil {
			t.Errorf("%s was removed: %v", dir, err)
		}
	}
}
