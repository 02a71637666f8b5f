package cli

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra/doc"
	"github.com/spf13/pflag"
)

// docsDefault annotates a flag whose default depends on the machine with the words the
// reference gives instead of this machine's value.
const docsDefault = "tsmigrate_docs_default"

// WriteDocs writes the command line's reference into dir (docs/cli), one Markdown
// file per command, from the commands' own definitions (their help, examples and
// flags), so that it cannot drift from them; files of commands that are gone are
// removed. `make docs` runs it; TestDocsCurrent fails when docs/cli is not current.
func WriteDocs(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	old, err := filepath.Glob(filepath.Join(dir, "*.md"))
	if err != nil {
		return err
	}
	for _, f := range old {
		if err := os.Remove(f); err != nil {
			return err
		}
	}
	root := newRoot(&app{})
	root.DisableAutoGenTag = true // no date: the files change only when the commands do
	for _, c := range root.Commands() {
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if d, ok := f.Annotations[docsDefault]; ok {
				f.DefValue = d[0]
			}
		})
	}
	if err := doc.GenMarkdownTree(root, dir); err != nil {
		return fmt.Errorf("write the command line's reference into %s: %w", dir, err)
	}
	return nil
}
