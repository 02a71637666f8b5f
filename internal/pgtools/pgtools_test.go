package pgtools

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestParseVersion(t *testing.T) {
	cases := []struct {
		in           string
		major, minor int
	}{
		{"pg_dump (PostgreSQL) 17.12 (Debian 17.12-0+deb13u1)\n", 17, 12},
		{"pg_restore (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)", 15, 18},
		{"pg_dump (PostgreSQL) 9.6.24", 9, 6},
		{"pg_dump (PostgreSQL) 18beta1", 18, 0},
		{"pg_dump (PostgreSQL) 17devel", 17, 0},
	}
	for _, c := range cases {
		v, err := ParseVersion(c.in)
		if err != nil || v.Major != c.major || v.Minor != c.minor {
			t.Errorf("ParseVersion(%q) = %+v, %v; want %d.%d", c.in, v, err, c.major, c.minor)
		}
	}
	for _, bad := range []string{"", "pg_dump 17", "(PostgreSQL) x"} {
		if _, err := ParseVersion(bad); err == nil {
			t.Errorf("ParseVersion(%q) accepted", bad)
		}
	}
}

func TestFit(t *testing.T) {
	cases := []struct {
		client, source, target int
		ok                     bool
		why                    string
	}{
		{17, 17, 17, true, "same major"},
		{15, 15, 15, true, "same major"},
		{16, 15, 15, true, "newer client, not known to break"},
		{15, 17, 17, false, "pg_dump refuses a newer server"},
		{17, 15, 15, false, "SET transaction_timeout on a 15 target"},
		{18, 16, 16, false, "SET transaction_timeout on a 16 target"},
		{18, 17, 18, true, "an upgrade: the target's major"},
		{17, 17, 18, false, "older than a newer target"},
		{16, 15, 17, false, "older than a newer target"},
	}
	for _, c := range cases {
		got := Fit(c.client, c.source, c.target)
		if (got == "") != c.ok {
			t.Errorf("Fit(%d, %d, %d) = %q; want ok=%v (%s)", c.client, c.source, c.target, got, c.ok, c.why)
		}
	}
}

// The rule behind Fit: pg_restore 17 into a PostgreSQL 15 server fails, pg_restore 15 works.
func TestPg17ClientsFailAgainstPg15(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG15)
	ctx := context.Background()
	src := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, src, "CREATE TABLE t (id serial PRIMARY KEY, x text)", "INSERT INTO t (x) VALUES ('a'), ('b')")
	run := func(bin string) []string {
		tools := &Tools{Dir: bin}
		dst := testenv.NewDB(t, srv, false)
		file := filepath.Join(t.TempDir(), "d.bak")
		var lines []string
		line := func(_ int, s string) { lines = append(lines, s) }
		if err := tools.Run(ctx, Cmd{Program: "pg_dump", Conn: mustParse(t, srv.URI(src)), Args: []string{"-Fc", "-f", file}, Line: line}); err != nil {
			t.Fatalf("pg_dump from %s: %v %q", bin, err, lines)
		}
		err := tools.Run(ctx, Cmd{Program: "pg_restore", Conn: mustParse(t, srv.URI(dst)), Args: []string{file}, Line: line})
		var ee *ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		return lines
	}
	if out := strings.Join(run(testenv.ClientBin(testenv.PG17TS)), "\n"); !strings.Contains(out, `unrecognized configuration parameter "transaction_timeout"`) {
		t.Fatalf("pg_restore 17 into PostgreSQL 15 printed %q; the transaction_timeout breakage is gone, revisit Fit", out)
	}
	if out := run(srv.ClientBin()); len(out) != 0 {
		t.Fatalf("pg_restore 15 into PostgreSQL 15 printed %q", out)
	}
}

// The rule behind Find's pairs across majors: pg_dump 18 dumps the internal column
// option pg_attver of the PostgreSQL 17 test server, which PostgreSQL 18 refuses; pg_dump
// 17 leaves it out, and pg_restore 18 restores its archive into PostgreSQL 18.
func TestPg18DumpOfPg17FailsOnPg18(t *testing.T) {
	src, dst := testenv.Shared(t, testenv.PG17TS), testenv.Shared(t, testenv.PG18TS)
	ctx := context.Background()
	db := testenv.NewDB(t, src, false)
	testenv.MustExec(t, src, db, "CREATE TABLE t (id serial PRIMARY KEY, x text)", "INSERT INTO t (x) VALUES ('a'), ('b')")
	run := func(dump string) []string {
		tools := &Tools{Dir: dst.ClientBin(), DumpDir: dump}
		target := testenv.NewDB(t, dst, false)
		file := filepath.Join(t.TempDir(), "d.bak")
		var lines []string
		line := func(_ int, s string) { lines = append(lines, s) }
		if err := tools.Run(ctx, Cmd{Program: "pg_dump", Conn: mustParse(t, src.URI(db)), Args: []string{"-Fc", "-f", file}, Line: line}); err != nil {
			t.Fatalf("pg_dump from %s: %v %q", dump, err, lines)
		}
		err := tools.Run(ctx, Cmd{Program: "pg_restore", Conn: mustParse(t, dst.URI(target)), Args: []string{file}, Line: line})
		var ee *ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		return lines
	}
	if out := strings.Join(run(dst.ClientBin()), "\n"); !strings.Contains(out, `unrecognized parameter "pg_attver"`) {
		t.Fatalf("pg_dump 18 of PostgreSQL 17, restored into 18, printed %q; the pg_attver breakage is gone, revisit Find", out)
	}
	if out := run(src.ClientBin()); len(out) != 0 {
		t.Fatalf("pg_dump 17 of PostgreSQL 17, restored by pg_restore 18 into 18, printed %q", out)
	}
}

func TestFindPicksTheFittingDirectory(t *testing.T) {
	ctx := context.Background()
	bin17, bin15 := testenv.ClientBin(testenv.PG17TS), testenv.ClientBin(testenv.PG15)
	for _, d := range []string{bin17, bin15} {
		if _, err := os.Stat(filepath.Join(d, "pg_dump")); err != nil {
			t.Skipf("client tools not installed: %v", err)
		}
	}
	dirs := []string{bin17, bin15}
	got, err := Find(ctx, Options{SearchDirs: dirs, SourceMajor: 15, TargetMajor: 15})
	if err != nil || got.Dir != bin15 || got.Version.Major != 15 || len(got.Warnings) != 0 {
		t.Fatalf("servers 15: got %+v, %v; want %s", got, err, bin15)
	}
	got, err = Find(ctx, Options{SearchDirs: dirs, SourceMajor: 17, TargetMajor: 17})
	if err != nil || got.Dir != bin17 {
		t.Fatalf("servers 17: got %+v, %v; want %s", got, err, bin17)
	}
	// An upgrade on the way: the target's major, not the source's.
	if bin18 := testenv.ClientBin(testenv.PG18TS); testenv.Available(testenv.PG18TS) == nil {
		// pg_restore of the target's major, pg_dump of the source's.
		got, err = Find(ctx, Options{SearchDirs: []string{bin18, bin17, bin15}, SourceMajor: 17, TargetMajor: 18})
		if err != nil || got.Dir != bin18 || got.Path("pg_restore") != filepath.Join(bin18, "pg_restore") ||
			got.Path("pg_dump") != filepath.Join(bin17, "pg_dump") || got.VersionOf("pg_dump").Major != 17 || len(got.Warnings) != 0 {
			t.Fatalf("source 17, target 18: got %+v, %v; want pg_dump from %s, pg_restore from %s", got, err, bin17, bin18)
		}
		// Without pg_dump 17, pg_dump 18, with a warning.
		got, err = Find(ctx, Options{PgBin: bin18, SourceMajor: 17, TargetMajor: 18})
		if err != nil || got.Path("pg_dump") != filepath.Join(bin18, "pg_dump") || len(got.Warnings) != 1 || !strings.Contains(got.Warnings[0], "PostgreSQL 17 source") {
			t.Fatalf("--pg-bin with 18 tools for a 17 source: got %+v, %v; want pg_dump 18 and a warning", got, err)
		}
		_, err = Find(ctx, Options{PgBin: bin17, SourceMajor: 17, TargetMajor: 18})
		var xe *exit.Error
		if !errors.As(err, &xe) || xe.Code != exit.Blocked || !strings.Contains(xe.Msg, "older than the PostgreSQL 18 target") || !strings.Contains(xe.Hint, "PostgreSQL 17 and 18 client tools") {
			t.Fatalf("--pg-bin with 17 tools for an 18 target: %v; want exit 3 naming the versions to install", err)
		}
		// An older target (a downgrade) has no pg_restore that fits.
		_, err = Find(ctx, Options{SearchDirs: []string{bin18, bin17}, SourceMajor: 18, TargetMajor: 17})
		if !errors.As(err, &xe) || xe.Code != exit.Blocked {
			t.Fatalf("source 18, target 17: %v; want exit 3", err)
		}
	}
	_, err = Find(ctx, Options{PgBin: bin17, SourceMajor: 15, TargetMajor: 15})
	var xe *exit.Error
	if !errors.As(err, &xe) || xe.Code != exit.Blocked || !strings.Contains(xe.Msg, "transaction_timeout") || !strings.Contains(xe.Hint, "PostgreSQL 15 client tools") {
		t.Fatalf("--pg-bin with 17 tools for 15 servers: %v; want exit 3 naming transaction_timeout and the version to install", err)
	}
	_, err = Find(ctx, Options{PgBin: t.TempDir(), SourceMajor: 17, TargetMajor: 17})
	if !errors.As(err, &xe) || xe.Code != exit.Usage {
		t.Fatalf("--pg-bin without tools: %v; want exit 2", err)
	}
}

// fakeTools writes pg_dump and pg_restore scripts that record their argv and passfile,
// print script's lines to stderr, and then run body.
func fakeTools(t *testing.T, body string) (dir, record string) {
	dir = t.TempDir()
	record = filepath.Join(dir, "record")
	for _, p := range Programs {
		script := `#!/bin/sh
if [ "$1" = "--version" ]; then echo "` + p + ` (PostgreSQL) 17.12"; exit 0; fi
printf '%s\n' "$@" > ` + record + `.argv
cat "$PGPASSFILE" > ` + record + `.passfile
echo "$PGPASSFILE" > ` + record + `.passfile-path
` + body + "\n"
		if err := os.WriteFile(filepath.Join(dir, p), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir, record
}

func mustParse(t *testing.T, uri string) *dbconn.Config {
	t.Helper()
	c, err := dbconn.Parse("source", uri)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRunKeepsThePasswordOutOfArgvAndStreamsLines(t *testing.T) {
	const pw = "Very-Secret-pw-91"
	dir, record := fakeTools(t, `echo "pg_dump: warning: one" >&2; printf 'pg_dump: detail: two\nno newline' >&2; exit 3`)
	tools := &Tools{Dir: dir}
	var lines []string
	err := tools.Run(context.Background(), Cmd{
		Program: "pg_dump",
		Conn:    mustParse(t, "postgres://alice:"+pw+"@127.0.0.1:5999/app?sslmode=disable"),
		Args:    []string{"-Fd", "-f", "/nowhere"},
		Line:    func(_ int, s string) { lines = append(lines, s) },
	})
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != 3 {
		t.Fatalf("err = %v, want exit status 3", err)
	}
	argv, _ := os.ReadFile(record + ".argv")
	if strings.Contains(string(argv), pw) || !strings.Contains(string(argv), "--dbname=") || !strings.Contains(string(argv), "user='alice'") {
		t.Fatalf("argv %q: want --dbname with the user and without the password", argv)
	}
	pass, _ := os.ReadFile(record + ".passfile")
	if !strings.Contains(string(pass), pw) {
		t.Fatalf("passfile %q does not hold the password", pass)
	}
	// No file on disk: a descriptor of the child's own (see TestPassfileInMemory).
	if path, _ := os.ReadFile(record + ".passfile-path"); strings.TrimSpace(string(path)) != "/proc/self/fd/3" {
		t.Fatalf("PGPASSFILE=%s, want the child's descriptor /proc/self/fd/3", path)
	}
	want := []string{"pg_dump: warning: one", "pg_dump: detail: two", "no newline"}
	if strings.Join(lines, "|") != strings.Join(want, "|") {
		t.Fatalf("lines %q, want %q", lines, want)
	}
}

func TestRunStopsTheProcessGroupOnCancel(t *testing.T) {
	dir, _ := fakeTools(t, `sleep 60 & echo $! > "$0.child"; echo started >&2; wait`)
	tools := &Tools{Dir: dir}
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- tools.Run(ctx, Cmd{Program: "pg_restore", Line: func(_ int, s string) {
			if s == "started" {
				close(started)
			}
		}})
	}()
	<-started
	t0 := time.Now()
	cancel()
	err := <-done
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if d := time.Since(t0); d > 3*time.Second {
		t.Fatalf("took %v to stop", d)
	}
	b, err := os.ReadFile(filepath.Join(dir, "pg_restore.child"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	testenv.Eventually(t, 10*time.Second, func() error { // the signal reaches it in its own time
		if err := syscall.Kill(pid, 0); err == nil {
			if st, _ := os.ReadFile("/proc/" + strings.TrimSpace(string(b)) + "/stat"); !strings.Contains(string(st), ") Z ") {
				return fmt.Errorf("worker %d of the cancelled program still runs", pid)
			}
		}
		return nil
	})
}

// The password of a connection reaches pg_dump and pg_restore, and their parallel
// workers, through a passfile in memory (PGPASSFILE=/proc/self/fd/3): a dump with
// -j 2 and a restore with -j 4 log in with nothing else to find the password in
// (PGPASSWORD empty, PGPASSFILE pointing nowhere); and no file of the temporary
// directory holds the password meanwhile.
func TestPassfileInMemory(t *testing.T) {
	t.Setenv("PGPASSWORD", "")
	t.Setenv("PGPASSFILE", "/nonexistent")
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	srv := testenv.Shared(t, testenv.PG17TS)
	ctx := context.Background()
	src := testenv.NewDB(t, srv, false)
	dst := testenv.NewDB(t, srv, false)
	var tables []string
	for i := range 8 {
		tables = append(tables, fmt.Sprintf("CREATE TABLE t%d AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g", i),
			fmt.Sprintf("ALTER TABLE t%d ADD PRIMARY KEY (id)", i))
	}
	testenv.MustExec(t, srv, src, tables...)
	tools := &Tools{Dir: srv.ClientBin()}
	dir := filepath.Join(t.TempDir(), "dump")
	var lines []string
	line := func(_ int, s string) { lines = append(lines, s) }
	if err := tools.Run(ctx, Cmd{Program: "pg_dump", Conn: mustParse(t, srv.URI(src)), Args: []string{"-Fd", "-j", "2", "-f", dir}, Line: line}); err != nil {
		t.Fatalf("pg_dump -j 2: %v %q", err, lines)
	}
	var sawChild atomic.Bool
	stop := make(chan struct{})
	watched := make(chan []string)
	go func() { // while pg_restore runs: every file of TMPDIR
		var found []string
		for {
			select {
			case <-stop:
				slices.Sort(found)
				watched <- slices.Compact(found)
				return
			case <-time.After(5 * time.Millisecond):
			}
			procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
			for _, p := range procs {
				if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), "pg_restore") && strings.Contains(string(b), "--dbname") {
					sawChild.Store(true)
				}
			}
			found = append(found, testenv.FilesHolding(tmp, testenv.SuperPassword)...)
		}
	}()
	err := tools.Run(ctx, Cmd{Program: "pg_restore", Conn: mustParse(t, srv.URI(dst)), Args: []string{"-j", "4", dir}, Line: line})
	close(stop)
	if found := <-watched; len(found) > 0 {
		t.Errorf("files in TMPDIR held the password during the restore: %q", found)
	}
	if err != nil {
		t.Fatalf("pg_restore -j 4: %v %q", err, lines)
	}
	if !sawChild.Load() {
		t.Error("pg_restore was never seen running")
	}
	conn, err := pgx.Connect(ctx, srv.SuperURI(dst))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT (SELECT count(*) FROM t0) + (SELECT count(*) FROM t7)").Scan(&n); err != nil || n != 40000 {
		t.Fatalf("restored rows: %d, %v; want 40000", n, err)
	}
}

// pg_dump and pg_restore get only what they need of tsmigrate's environment: not
// TSMIGRATE_SOURCE/TSMIGRATE_TARGET (URIs with passwords), not PGPASSWORD, not
// anything else; whether they connect (the password then in their passfile), or not
// (pg_restore -l, --version). PG* connection defaults and the locale pass, but for the
// messages: English, which tsmigrate reads (LC_ALL becomes LANG).
func TestChildEnvironment(t *testing.T) {
	const srcPw, dstPw, envPw, other = "src-Secret-31", "dst-Secret-47", "env-Secret-59", "Unrelated-Secret-71"
	t.Setenv("TSMIGRATE_SOURCE", "postgres://u:"+srcPw+"@127.0.0.1:5999/a")
	t.Setenv("TSMIGRATE_TARGET", "postgres://u:"+dstPw+"@127.0.0.1:5998/b")
	t.Setenv("PGPASSWORD", envPw)
	t.Setenv("AWS_SECRET_ACCESS_KEY", other)
	t.Setenv("PGSSLMODE", "disable")
	t.Setenv("LC_MESSAGES", "fr_FR.UTF-8")
	t.Setenv("LC_ALL", "de_DE.UTF-8")
	t.Setenv("LANGUAGE", "de")
	dir := t.TempDir()
	record := filepath.Join(dir, "env")
	for _, p := range Programs {
		script := "#!/bin/sh\nenv >> " + record + "\necho --- >> " + record + "\n" +
			`if [ "$1" = "--version" ]; then echo "` + p + ` (PostgreSQL) 17.12"; fi` + "\n"
		if err := os.WriteFile(filepath.Join(dir, p), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	tools, err := Find(ctx, Options{PgBin: dir, SourceMajor: 17, TargetMajor: 17})
	if err != nil {
		t.Fatal(err)
	}
	if err := tools.Run(ctx, Cmd{Program: "pg_dump", Conn: mustParse(t, os.Getenv("TSMIGRATE_SOURCE"))}); err != nil {
		t.Fatal(err)
	}
	if err := tools.Run(ctx, Cmd{Program: "pg_restore", Args: []string{"-l", "x"}}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	runs := strings.Split(strings.TrimSuffix(string(b), "---\n"), "---\n")
	if len(runs) != 4 { // pg_dump and pg_restore --version, pg_dump, pg_restore -l
		t.Fatalf("%d runs recorded, want 4:\n%s", len(runs), b)
	}
	for i, env := range runs {
		for _, secret := range []string{srcPw, dstPw, envPw, other, "TSMIGRATE_", "PGPASSWORD", "LC_ALL=", "LANGUAGE=", "LC_MESSAGES=fr"} {
			if strings.Contains(env, secret) {
				t.Errorf("run %d: the environment holds %q:\n%s", i, secret, env)
			}
		}
		for _, want := range []string{"PGSSLMODE=disable", "LC_MESSAGES=C", "LANG=de_DE.UTF-8"} {
			if !strings.Contains(env, want) {
				t.Errorf("run %d: the environment lacks %s:\n%s", i, want, env)
			}
		}
	}
	if !strings.Contains(runs[2], "PGPASSFILE=/proc/self/fd/3") {
		t.Errorf("pg_dump got no passfile:\n%s", runs[2])
	}
}

// pg_dump -j and pg_restore -j workers share the program's stderr and write each
// message in several write() calls: each process's lines still reach Line whole, in
// its order, with its own process id. Here the two processes alternate write by write,
// in an order fifos enforce, the leader's line cut by a name with a line break.
func TestRunReadsEachProcessesLines(t *testing.T) {
	dir := t.TempDir()
	script := `#!/bin/sh
f=$(mktemp -d); trap 'rm -r "$f"' EXIT; mkfifo "$f/a" "$f/b"
echo $$ > "$0.leader"
( sh -c 'echo $PPID' > "$0.worker"
  printf 'pg_dump:' >&2; echo > "$f/a"; read x < "$f/b"
  printf ' ' >&2; echo > "$f/a"; read x < "$f/b"
  printf 'error: ' >&2; echo > "$f/a"; read x < "$f/b"
  printf 'could not execute query: ERROR:  x\nCommand was: SELECT 1;\n' >&2; echo > "$f/a"; read x < "$f/b"
  printf 'no newline' >&2 ) &
read x < "$f/a"; printf 'pg_dump:' >&2; echo > "$f/b"
read x < "$f/a"; printf ' ' >&2; echo > "$f/b"
read x < "$f/a"; printf 'finished item 4312 TABLE DATA new\nline\n' >&2; echo > "$f/b"
read x < "$f/a"; printf 'pg_dump: dumping contents of table "public.t"\n' >&2; echo > "$f/b"
wait
`
	if err := os.WriteFile(filepath.Join(dir, "pg_dump"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	tools := &Tools{Dir: dir}
	byPID := map[int][]string{}
	var mu sync.Mutex
	if err := tools.Run(context.Background(), Cmd{Program: "pg_dump", Line: func(pid int, s string) {
		mu.Lock()
		defer mu.Unlock()
		byPID[pid] = append(byPID[pid], s)
	}}); err != nil {
		t.Fatal(err)
	}
	pid := func(name string) int {
		b, err := os.ReadFile(filepath.Join(dir, "pg_dump."+name))
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return n
	}
	want := map[int][]string{
		pid("leader"): {"pg_dump: finished item 4312 TABLE DATA new", "line", `pg_dump: dumping contents of table "public.t"`},
		pid("worker"): {"pg_dump: error: could not execute query: ERROR:  x", "Command was: SELECT 1;", "no newline"},
	}
	if !maps.EqualFunc(byPID, want, slices.Equal) {
		t.Fatalf("lines by process %v; want %v", byPID, want)
	}
}
