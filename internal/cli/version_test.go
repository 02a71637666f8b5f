package cli

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// git runs git in dir and returns its output.
func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"}, args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// tsmigrate version names the build: the module version and the VCS revision the
// toolchain recorded, not a placeholder. The Go toolchain stamps a revision only in a
// repository whose .git is a directory (not in a linked worktree), so the module as it
// is here, uncommitted changes included, is committed to a repository of its own and
// built there with -buildvcs=true.
func TestVersionFromBuildInfo(t *testing.T) {
	root := filepath.Dir(strings.TrimSpace(goEnv(t, "GOMOD")))
	dir := t.TempDir()
	files := git(t, root, "ls-files", "--cached", "--others", "--exclude-standard")
	for _, f := range strings.Split(files, "\n") {
		b, err := os.ReadFile(filepath.Join(root, f))
		if os.IsNotExist(err) {
			continue // deleted in the work tree
		} else if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	git(t, dir, "init", "-q")
	git(t, dir, "add", "-A")
	git(t, dir, "commit", "-q", "-m", "the module as tested")
	rev := git(t, dir, "rev-parse", "HEAD")

	bin := filepath.Join(t.TempDir(), "tsmigrate")
	build := exec.Command("go", "build", "-buildvcs=true", "-trimpath", "-o", bin, "./cmd/tsmigrate")
	build.Dir = dir
	build.Env = append(os.Environ(), "GOFLAGS=-buildvcs=true")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	code, out := runBinary(t, bin, "version")
	// go build in a repository: a pseudo-version naming the revision
	want := "tsmigrate v0.0.0-"
	if code != 0 || !strings.HasPrefix(out, want) || !strings.HasSuffix(out, "-"+rev[:12]+"\n") {
		t.Errorf("exit %d, output %q: want one line %s<time>-%s", code, out, want, rev[:12])
	}
}

func goEnv(t *testing.T, name string) string {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command("go", "env", name)
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return out.String()
}
