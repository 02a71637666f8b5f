// Package pgtools finds the pg_dump and pg_restore that fit the source and target
// servers and runs them: connection settings without the password on the command line,
// cancellable with the context, stderr handed over line by line.
package pgtools

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/exit"
)

// Programs are the client programs tsmigrate runs; a directory must hold all of them.
var Programs = []string{"pg_dump", "pg_restore"}

// Version is a client program's version as `--version` prints it.
type Version struct {
	Major int
	Minor int
	Text  string // e.g. "17.12 (Debian 17.12-0+deb13u1)"
}

func (v Version) String() string { return v.Text }

var versionRE = regexp.MustCompile(`\(PostgreSQL\) ((\d+)(?:\.(\d+))?\S*.*)$`)

// ParseVersion reads the first line of `pg_dump --version`, e.g.
// "pg_dump (PostgreSQL) 17.12 (Debian 17.12-0+deb13u1)" or "pg_dump (PostgreSQL) 18beta1".
func ParseVersion(out string) (Version, error) {
	line := strings.TrimSpace(strings.SplitN(out, "\n", 2)[0])
	m := versionRE.FindStringSubmatch(line)
	if m == nil {
		return Version{}, fmt.Errorf("unrecognised version output %q", line)
	}
	major, err := strconv.Atoi(m[2])
	if err != nil {
		return Version{}, fmt.Errorf("unrecognised version output %q", line)
	}
	minor, _ := strconv.Atoi(m[3])
	return Version{Major: major, Minor: minor, Text: m[1]}, nil
}

// Tools is a directory whose pg_dump and pg_restore fit both servers.
type Tools struct {
	Dir     string
	Version Version
	// Warnings say what is not ideal about the choice (a newer major than the servers).
	Warnings []string
}

// Path is the full path of program (pg_dump, pg_restore) in the chosen directory.
func (t *Tools) Path(program string) string { return filepath.Join(t.Dir, program) }

// Options say where to look and which servers the tools must serve.
type Options struct {
	// PgBin, when set, is the only directory considered (--pg-bin).
	PgBin string
	// SourceMajor and TargetMajor are the servers' major versions (server_version_num / 10000).
	SourceMajor, TargetMajor int
	// SearchDirs replaces the default search (PATH, then /usr/lib/postgresql/*/bin); for tests.
	SearchDirs []string
}

// Candidate is one directory looked at, and what was found there.
type Candidate struct {
	Dir     string
	Version Version
	Problem string // why it does not fit, "" if it does
}

// Find picks the directory whose pg_dump and pg_restore fit both servers: those of the
// servers' major, or of the target's when it is newer (an upgrade on the way: a newer
// pg_dump reads an older server, and writes what the newer one restores); else the
// oldest newer major not known to break. A client known not to work is refused with the
// version to install instead (*exit.Error, code 3).
func Find(ctx context.Context, opt Options) (*Tools, error) {
	dirs := opt.SearchDirs
	if opt.PgBin != "" {
		dirs = []string{opt.PgBin}
	} else if dirs == nil {
		dirs = defaultDirs()
	}
	var cands []Candidate
	for _, d := range dirs {
		c, ok := probe(ctx, d)
		if !ok {
			continue
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		c.Problem = Fit(c.Version.Major, opt.SourceMajor, opt.TargetMajor)
		cands = append(cands, c)
	}
	want := max(opt.SourceMajor, opt.TargetMajor)
	install := fmt.Sprintf("install the PostgreSQL %d client tools (Debian/Ubuntu: postgresql-client-%d) and pass --pg-bin DIR if they are not on PATH", want, want)
	var best *Candidate
	for i := range cands {
		c := &cands[i]
		if c.Problem != "" {
			continue
		}
		if c.Version.Major == want {
			best = c
			break
		}
		if best == nil || c.Version.Major < best.Version.Major {
			best = c
		}
	}
	if best == nil {
		if opt.PgBin != "" && len(cands) == 0 {
			return nil, exit.Usagef("pass the directory that holds pg_dump and pg_restore", "--pg-bin %s: no pg_dump and pg_restore there", opt.PgBin)
		}
		if len(cands) == 0 {
			return nil, exit.New(exit.Blocked, install, "no pg_dump/pg_restore found (looked in %s)", strings.Join(dirs, ", "))
		}
		var seen []string
		for _, c := range cands {
			seen = append(seen, fmt.Sprintf("%s: %s", c.Dir, c.Problem))
		}
		return nil, exit.New(exit.Blocked, install, "no pg_dump/pg_restore fits the servers (source PostgreSQL %d, target %d): %s",
			opt.SourceMajor, opt.TargetMajor, strings.Join(seen, "; "))
	}
	t := &Tools{Dir: best.Dir, Version: best.Version}
	if best.Version.Major != want {
		t.Warnings = append(t.Warnings, fmt.Sprintf("using pg_dump/pg_restore %s from %s for a PostgreSQL %d target: that major's own are safer (%s)",
			best.Version.Text, best.Dir, want, install))
	}
	return t, nil
}

// Fit says why client tools of major client do not work with a source of major source
// and a target of major target, or "" when they do.
//
// Checked here: pg_dump refuses a server newer than itself ("aborting because of server
// version mismatch"); pg_restore cannot read an archive of a newer pg_dump ("unsupported
// version (1.16) in file header"); pg_dump/pg_restore 17.12 write `SET transaction_timeout = 0`,
// which a PostgreSQL 15 or 16 target rejects ("unrecognized configuration parameter").
// Tools older than a newer target are refused too: what a dump must say for a newer
// server (its new defaults, names and syntax) only that server's pg_dump knows, which is
// why PostgreSQL's upgrade procedure dumps with the newer version's pg_dump.
func Fit(client, source, target int) string {
	switch {
	case client < source:
		return fmt.Sprintf("pg_dump %d cannot dump a PostgreSQL %d server; it needs pg_dump %d or newer", client, source, source)
	case client < target:
		return fmt.Sprintf("pg_dump/pg_restore %d are older than the PostgreSQL %d target; a migration to a newer major uses that major's pg_dump/pg_restore (%d)", client, target, target)
	case client >= 17 && target < 17:
		return fmt.Sprintf("pg_restore %d fails against a PostgreSQL %d target on `SET transaction_timeout`; use pg_dump/pg_restore %d", client, target, target)
	}
	return ""
}

// probe reads the version of pg_dump in dir and checks that every program is there.
func probe(ctx context.Context, dir string) (Candidate, bool) {
	for _, p := range Programs {
		path := filepath.Join(dir, p)
		st, err := os.Stat(path)
		if err != nil || st.IsDir() || st.Mode()&0o111 == 0 || isPgWrapper(path) {
			return Candidate{}, false
		}
	}
	var v Version
	for _, p := range Programs {
		cmd := exec.CommandContext(ctx, filepath.Join(dir, p), "--version")
		cmd.Env = dbconn.ChildEnv()
		out, err := cmd.Output()
		if err != nil {
			return Candidate{}, false
		}
		pv, err := ParseVersion(string(out))
		if err != nil {
			return Candidate{}, false
		}
		if p != Programs[0] && pv.Major != v.Major {
			return Candidate{Dir: dir, Version: v, Problem: fmt.Sprintf("%s is %s but %s is %s", Programs[0], v.Text, p, pv.Text)}, true
		}
		v = pv
	}
	return Candidate{Dir: dir, Version: v}, true
}

// isPgWrapper says whether path is Debian's pg_wrapper, which picks a version per
// cluster or connection at run time: its --version need not be what a later run uses.
// The real programs under /usr/lib/postgresql/*/bin are searched instead.
func isPgWrapper(path string) bool {
	real, err := filepath.EvalSymlinks(path)
	return err == nil && filepath.Base(real) == "pg_wrapper"
}

func defaultDirs() []string {
	var dirs []string
	seen := map[string]bool{}
	add := func(d string) {
		if d == "" {
			d = "."
		}
		if abs, err := filepath.Abs(d); err == nil {
			d = abs
		}
		if !seen[d] {
			seen[d] = true
			dirs = append(dirs, d)
		}
	}
	for _, d := range filepath.SplitList(os.Getenv("PATH")) {
		add(d)
	}
	lib, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(lib, func(i, j int) bool { return libMajor(lib[i]) > libMajor(lib[j]) })
	for _, d := range lib {
		add(d)
	}
	return dirs
}

func libMajor(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

// ServerMajor is the major version of the server conn is connected to.
func ServerMajor(ctx context.Context, conn *pgx.Conn) (int, error) {
	var num int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&num); err != nil {
		return 0, fmt.Errorf("read server version: %w", err)
	}
	return num / 10000, nil
}
