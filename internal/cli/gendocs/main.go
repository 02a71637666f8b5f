// Command gendocs writes docs/cli, tsmigrate's command line reference, from the
// commands' definitions: `make docs` (go run ./internal/cli/gendocs docs/cli).
package main

import (
	"fmt"
	"os"

	"github.com/tsmigrate/tsmigrate/internal/cli"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: gendocs DIR")
		os.Exit(2)
	}
	if err := cli.WriteDocs(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "gendocs:", err)
		os.Exit(1)
	}
}
