package cli

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// docs/cli is what `make docs` writes from the commands as they are now: a change of a
// command's help, examples or flags without `make docs` fails here (and so in CI).
func TestDocsCurrent(t *testing.T) {
	want := t.TempDir()
	if err := WriteDocs(want); err != nil {
		t.Fatal(err)
	}
	const have = "../../docs/cli"
	list := func(dir string) []string {
		files, err := filepath.Glob(filepath.Join(dir, "*.md"))
		if err != nil {
			t.Fatal(err)
		}
		for i, f := range files {
			files[i] = filepath.Base(f)
		}
		return files
	}
	if w, h := list(want), list(have); !slices.Equal(w, h) {
		t.Fatalf("docs/cli holds %q, the commands make %q: run make docs", h, w)
	}
	for _, name := range list(want) {
		w, err := os.ReadFile(filepath.Join(want, name))
		if err != nil {
			t.Fatal(err)
		}
		h, err := os.ReadFile(filepath.Join(have, name))
		if err != nil {
			t.Fatal(err)
		}
		if string(w) != string(h) {
			t.Errorf("docs/cli/%s is not current: run make docs", name)
		}
	}
}
