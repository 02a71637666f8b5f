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

// Tools are the pg_dump and pg_restore that fit both servers: both from one directory
// when the servers run one major; across majors (an upgrade on the way), pg_dump of
// the source's major and pg_restore of the target's (see Find).
type Tools struct {
	// Dir holds pg_restore, and pg_dump unless DumpDir is set; Version is theirs.
	Dir     string
	Version Version
	// DumpDir and DumpVersion are pg_dump's when it is taken from another directory.
	DumpDir     string
	DumpVersion Version
	// Warnings say what is not ideal about the choice (another major than the servers').
	Warnings []string
}

// Path is the full path of program (pg_dump, pg_restore) in the chosen directory.
func (t *Tools) Path(program string) string {
	if program == "pg_dump" && t.DumpDir != "" {
		return filepath.Join(t.DumpDir, program)
	}
	return filepath.Join(t.Dir, program)
}

// VersionOf is the version of program (pg_dump, pg_restore).
func (t *Tools) VersionOf(program string) Version {
	if program == "pg_dump" && t.DumpDir != "" {
		return t.DumpVersion
	}
	return t.Version
}

// String says which tools these are, for notes and summaries.
func (t *Tools) String() string {
	if t.DumpDir == "" {
		return fmt.Sprintf("pg_dump/pg_restore %s from %s", t.Version, t.Dir)
	}
	return fmt.Sprintf("pg_dump %s from %s, pg_restore %s from %s", t.DumpVersion, t.DumpDir, t.Version, t.Dir)
}

// Options say where to look and which servers the tools must serve.
type Options struct {
	// PgBin, when set, lists the only directories considered (--pg-bin DIR, or DIR:DIR
	// for the source's and the target's majors).
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

// Find picks pg_dump and pg_restore for the two servers. pg_restore: of the target's
// major, else the oldest newer one not known to break. pg_dump: of the source's major,
// else the oldest newer one no newer than that pg_restore (which cannot read the archive
// of a newer pg_dump). When the servers run one major, both come from one directory;
// across majors (an upgrade on the way) each side's own: pg_dump of the source's major
// reads everything its server has, where a newer one may not (pg_dump 18 dumps the
// internal column option pg_attver of the PostgreSQL 17.12 servers here, which
// PostgreSQL 18 refuses: "unrecognized parameter"), and what it writes loads into
// newer servers (PostgreSQL's documented promise); pg_restore of the target's major
// reads that archive. A directory known not to work is refused with the version to
// install instead (*exit.Error, code 3).
func Find(ctx context.Context, opt Options) (*Tools, error) {
	dirs := opt.SearchDirs
	if opt.PgBin != "" {
		dirs = filepath.SplitList(opt.PgBin)
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
		cands = append(cands, c)
	}
	installFor := func(major int) string {
		return fmt.Sprintf("install the PostgreSQL %d client tools (Debian/Ubuntu: postgresql-client-%d) and pass --pg-bin DIR if they are not on PATH", major, major)
	}
	install := installFor(max(opt.SourceMajor, opt.TargetMajor))
	if opt.SourceMajor < opt.TargetMajor {
		install = fmt.Sprintf("install the PostgreSQL %d and %d client tools (Debian/Ubuntu: postgresql-client-%d, postgresql-client-%d) and pass --pg-bin DIR:DIR if they are not on PATH",
			opt.SourceMajor, opt.TargetMajor, opt.SourceMajor, opt.TargetMajor)
	}
	// pick returns the candidate of major want, else the oldest newer one, among those
	// fit says nothing against.
	pick := func(want int, fit func(Candidate) string) *Candidate {
		var best *Candidate
		for i := range cands {
			c := &cands[i]
			if c.Problem != "" || fit(*c) != "" {
				continue
			}
			if c.Version.Major == want {
				return c
			}
			if c.Version.Major > want && (best == nil || c.Version.Major < best.Version.Major) {
				best = c
			}
		}
		return best
	}
	restore := pick(opt.TargetMajor, func(c Candidate) string { return FitRestore(c.Version.Major, opt.TargetMajor) })
	var dump *Candidate
	if restore != nil {
		dump = pick(opt.SourceMajor, func(c Candidate) string {
			if c.Version.Major > restore.Version.Major {
				return "newer than pg_restore"
			}
			return FitDump(c.Version.Major, opt.SourceMajor)
		})
	}
	if dump == nil {
		if opt.PgBin != "" && len(cands) == 0 {
			return nil, exit.Usagef("pass the directory that holds pg_dump and pg_restore", "--pg-bin %s: no pg_dump and pg_restore there", opt.PgBin)
		}
		if len(cands) == 0 {
			return nil, exit.New(exit.Blocked, install, "no pg_dump/pg_restore found (looked in %s)", strings.Join(dirs, ", "))
		}
		var seen []string
		for _, c := range cands {
			why := c.Problem
			if why == "" {
				why = Fit(c.Version.Major, opt.SourceMajor, opt.TargetMajor)
			}
			if why == "" {
				why = fmt.Sprintf("pg_dump/pg_restore %d fit, but no directory holds the other tools of the pair", c.Version.Major)
			}
			seen = append(seen, fmt.Sprintf("%s: %s", c.Dir, why))
		}
		return nil, exit.New(exit.Blocked, install, "no pg_dump/pg_restore fits the servers (source PostgreSQL %d, target %d): %s",
			opt.SourceMajor, opt.TargetMajor, strings.Join(seen, "; "))
	}
	t := &Tools{Dir: restore.Dir, Version: restore.Version}
	if dump.Dir != restore.Dir {
		t.DumpDir, t.DumpVersion = dump.Dir, dump.Version
	}
	if restore.Version.Major != opt.TargetMajor {
		t.Warnings = append(t.Warnings, fmt.Sprintf("using pg_restore %s from %s for a PostgreSQL %d target: that major's own is safer (%s)",
			restore.Version.Text, restore.Dir, opt.TargetMajor, installFor(opt.TargetMajor)))
	}
	if dump.Version.Major != opt.SourceMajor {
		t.Warnings = append(t.Warnings, fmt.Sprintf("using pg_dump %s from %s for a PostgreSQL %d source: that major's own is safer, as it reads everything that server has (%s)",
			dump.Version.Text, dump.Dir, opt.SourceMajor, installFor(opt.SourceMajor)))
	}
	return t, nil
}

// Fit says why pg_dump and pg_restore of major client, from one directory, do not
// work with a source of major source and a target of major target, or "" when they
// do (FitDump, then FitRestore).
func Fit(client, source, target int) string {
	if why := FitDump(client, source); why != "" {
		return why
	}
	return FitRestore(client, target)
}

// FitDump says why pg_dump of major client cannot dump a source of major source, or
// "" when it can. Checked here: pg_dump refuses a server newer than itself ("aborting
// because of server version mismatch").
func FitDump(client, source int) string {
	if client < source {
		return fmt.Sprintf("pg_dump %d cannot dump a PostgreSQL %d server; it needs pg_dump %d or newer", client, source, source)
	}
	return ""
}

// FitRestore says why pg_restore of major client does not work with a target of major
// target, or "" when it does. Checked here: pg_restore 17.12 writes `SET
// transaction_timeout = 0`, which a PostgreSQL 15 or 16 target rejects ("unrecognized
// configuration parameter"). pg_restore older than the target is refused too: what a
// restore must say to a newer server only that server's tools know. (pg_restore cannot
// read the archive of a newer pg_dump, "unsupported version (1.16) in file header":
// Find pairs them so.)
func FitRestore(client, target int) string {
	switch {
	case client < target:
		return fmt.Sprintf("pg_restore %d is older than the PostgreSQL %d target; a migration to a newer major restores with that major's pg_restore (%d)", client, target, target)
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
