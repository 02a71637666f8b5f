package testenv

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// BuildTsmigrate builds cmd/tsmigrate of the module the working directory is in into
// dir, for tests, the demo and the benchmarks that run the real binary.
func BuildTsmigrate(ctx context.Context, dir string) (string, error) {
	mod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(mod)) == "" {
		return "", fmt.Errorf("find the tsmigrate module (go env GOMOD): %v", err)
	}
	bin := filepath.Join(dir, "tsmigrate")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/tsmigrate")
	build.Dir = filepath.Dir(strings.TrimSpace(string(mod)))
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
}

// Binary builds tsmigrate into the test's temporary directory.
func Binary(t testing.TB) string {
	t.Helper()
	bin, err := BuildTsmigrate(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return bin
}
