package cli

import (
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/freeze"
	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/preflight"
)

// jsonNames lists the JSON field names of t and of every struct it holds.
func jsonNames(t reflect.Type, seen map[reflect.Type]bool) []string {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || seen[t] || t.PkgPath() == "time" {
		return nil
	}
	seen[t] = true
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, name)
		out = append(out, jsonNames(f.Type, seen)...)
	}
	return out
}

// Every command's --help states its exit codes, and every field of its --json document
// is named there: renaming a field without documenting it fails here.
func TestHelpDocumentsExitCodesAndJSON(t *testing.T) {
	docs := map[string]any{
		"preflight":     preflight.Report{},
		"freeze":        freeze.Result{},
		"unfreeze":      freeze.UnfreezeResult{},
		"freeze-status": freeze.State{},
		"verify":        verifyJSON{},
		"migrate":       migrate.Summary{},
	}
	root := newRoot(&app{})
	for _, c := range root.Commands() {
		if c.Name() == "version" || c.Name() == "help" || c.Name() == "completion" {
			continue
		}
		t.Run(c.Name(), func(t *testing.T) {
			if !regexp.MustCompile(`Exit codes:[\s\S]*\b0\b[\s\S]*\b2\b[\s\S]*\b130\b`).MatchString(c.Long) {
				t.Errorf("--help does not list the exit codes:\n%s", c.Long)
			}
			if c.Flags().Lookup("json") == nil {
				return
			}
			doc, ok := docs[c.Name()]
			if !ok {
				t.Fatalf("%s has --json: add its document's type to this test", c.Name())
			}
			for _, name := range jsonNames(reflect.TypeOf(doc), map[reflect.Type]bool{}) {
				if !regexp.MustCompile(`(^|[^a-z_])` + name + `($|[^a-z_])`).MatchString(c.Long) {
					t.Errorf("JSON field %q is not in --help", name)
				}
			}
		})
	}
}

// tsmigrate's own Go code runs on one thread per two jobs, at least one, at most the
// machine's cores.
func TestProcsFor(t *testing.T) {
	for _, c := range []struct{ jobs, cpus, want int }{
		{1, 2, 1}, {2, 2, 1}, {3, 2, 2}, {4, 2, 2}, {8, 2, 2}, {8, 16, 4}, {16, 4, 4}, {2, 1, 1},
	} {
		if got := procsFor(c.jobs, c.cpus); got != c.want {
			t.Errorf("procsFor(%d jobs, %d cores) = %d, want %d", c.jobs, c.cpus, got, c.want)
		}
	}
}

// `tsmigrate help exit-codes` lists every exit code internal/exit declares, with its
// meaning, and is listed among the root's help topics.
func TestHelpExitCodes(t *testing.T) {
	code, stdout, stderr, _ := runFlags(t, "help", "exit-codes")
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	for _, m := range exit.Meanings {
		if !strings.Contains(stdout, fmt.Sprintf("\n  %-4d %s", m.Code, firstWords(m.Means))) {
			t.Errorf("exit code %d (%s) is not listed:\n%s", m.Code, m.Means, stdout)
		}
	}
	if _, help, _, _ := runFlags(t, "--help"); !regexp.MustCompile(`Additional help topics:\n\s+tsmigrate exit-codes`).MatchString(help) {
		t.Errorf("tsmigrate --help does not list the exit-codes topic:\n%s", help)
	}
}

// firstWords is the start of s that fits on the first line of the list.
func firstWords(s string) string {
	if len(s) > 40 {
		return s[:40]
	}
	return s
}

// Every command's help has examples, and their flags are the command's.
func TestHelpExamples(t *testing.T) {
	root := newRoot(&app{})
	for _, c := range root.Commands() {
		if !c.IsAvailableCommand() || c.Name() == "help" || c.Name() == "completion" {
			continue
		}
		t.Run(c.Name(), func(t *testing.T) {
			if c.Example == "" {
				t.Fatal("no Example: in its help")
			}
			ran := 0
			for _, line := range strings.Split(strings.ReplaceAll(c.Example, "\\\n", " "), "\n") {
				line, _, _ = strings.Cut(strings.TrimSpace(line), "|")
				if !strings.HasPrefix(line, "tsmigrate ") {
					continue
				}
				args := strings.Fields(strings.ReplaceAll(line, "'", ""))[1:]
				cmd, rest, err := newRoot(&app{}).Find(args)
				if err != nil || cmd.Name() != c.Name() {
					t.Errorf("%s: finds %v, %v", line, cmd.Name(), err)
					continue
				}
				if err := cmd.ParseFlags(rest); err != nil {
					t.Errorf("%s: %v", line, err)
				}
				ran++
			}
			if ran == 0 {
				t.Error("no example runs tsmigrate " + c.Name())
			}
		})
	}
}

// --jobs takes "auto" (the default: 0, the copy chooses) or a number of 1 or more;
// anything else is a usage error naming it.
func TestParseJobs(t *testing.T) {
	for in, want := range map[string]int{"auto": 0, "1": 1, "12": 12} {
		if got, err := parseJobs(in); err != nil || got != want {
			t.Errorf("--jobs %s: %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"0", "-2", "many", "", "Auto"} {
		if _, err := parseJobs(in); exit.Code(err) != exit.Usage || !strings.Contains(err.Error(), "--jobs "+in) {
			t.Errorf("--jobs %q: %v, want a usage error naming it", in, err)
		}
	}
}
