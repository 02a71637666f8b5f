// Command migrate compares ways of migrating the same database side by side, in one run,
// on two local PostgreSQL 17 + TimescaleDB servers: the documented procedure (pg_dump -Fc,
// pg_restore --jobs 1, ANALYZE), tsmigrate's dump engine, its stream engine, pgcopydb
// (when installed in the Debian 13 root: `scripts/setup-servers.sh --with-pgcopydb`), and
// tsmigrate verify. It prints wall times, ratios and tsmigrate's peak memory.
//
//	go run ./bench/migrate [-scale 1.0] [-jobs 2] [-rounds 1] [-ways documented,dump,stream,verify,pgcopydb]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/sampledata"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

type result struct {
	way     string
	wall    time.Duration
	maxRSS  int64 // KiB, tsmigrate runs only
	note    string
	failed  bool
	correct bool
}

type bench struct {
	src, dst *testenv.Server
	bin      string
	jobs     int
	tmp      string
	want     map[string]int64
}

func main() {
	scale := flag.Float64("scale", 1.0, "database size (1.0 is about 825 MB)")
	jobs := flag.Int("jobs", 2, "parallel jobs for every way that has them")
	ways := flag.String("ways", "documented,dump,stream,verify,pgcopydb", "ways to run, in order")
	rounds := flag.Int("rounds", 1, "run the ways this many times, in turn, and compare their medians")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *scale, *jobs, max(1, *rounds), strings.Split(*ways, ",")); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, scale float64, jobs, rounds int, ways []string) error {
	b := &bench{jobs: jobs}
	// Every tool below gets the password from the environment, never from its argv.
	os.Setenv("PGPASSWORD", testenv.SuperPassword)
	var err error
	if b.tmp, err = os.MkdirTemp("", "tsmigrate-bench-"); err != nil {
		return err
	}
	defer os.RemoveAll(b.tmp)
	if b.bin, err = testenv.BuildTsmigrate(ctx, b.tmp); err != nil {
		return err
	}
	opts := testenv.Options{Settings: map[string]string{"max_wal_size": "8GB", "checkpoint_timeout": "30min"}}
	if b.src, err = testenv.Start(ctx, testenv.PG17TS, opts); err != nil {
		return err
	}
	defer b.src.Stop()
	if b.dst, err = testenv.Start(ctx, testenv.PG17TS, opts); err != nil {
		return err
	}
	defer b.dst.Stop()

	fmt.Printf("loading the sample database at scale %g ...\n", scale)
	t0 := time.Now()
	if err := b.src.CreateDatabase(ctx, "bench", true); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, b.src.SuperURI("bench"))
	if err != nil {
		return err
	}
	if _, err := sampledata.Create(ctx, conn, scale); err != nil {
		return err
	}
	var size string
	conn.QueryRow(ctx, "SELECT pg_size_pretty(pg_database_size(current_database()))").Scan(&size)
	if b.want, err = rowCounts(ctx, conn); err != nil {
		return err
	}
	conn.Close(ctx)
	fmt.Printf("source: %s, rows %v, loaded in %s\n", size, b.want, time.Since(t0).Round(time.Second))
	// A production source has been vacuumed: hint bits and visibility map set, so that
	// the first way to read it does not pay for that, and no autovacuum of the load
	// runs under a later way.
	if err := b.src.Exec(ctx, "bench", "VACUUM (ANALYZE)"); err != nil {
		return err
	}

	var results []result
	for round := 1; round <= rounds; round++ {
		for _, w := range ways {
			w = strings.TrimSpace(w)
			fmt.Printf("\n--- %s (round %d of %d)\n", w, round, rounds)
			b.quiesce(ctx)
			r := b.runWay(ctx, w)
			results = append(results, r)
			fmt.Printf("%s: %s %s\n", w, r.wall.Round(10*time.Millisecond), r.note)
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	report(results, size, rounds)
	return nil
}

func (b *bench) runWay(ctx context.Context, way string) result {
	r := result{way: way}
	target := "bench_" + way
	if way != "verify" {
		b.dst.Exec(ctx, "postgres", "DROP DATABASE IF EXISTS "+target+" WITH (FORCE)")
		if err := b.dst.CreateDatabase(ctx, target, false); err != nil {
			r.failed, r.note = true, err.Error()
			return r
		}
	}
	start := time.Now()
	var err error
	switch way {
	case "documented":
		err = b.documented(ctx, target)
	case "dump", "stream":
		args := []string{"migrate", "--engine", way, "--jobs", fmt.Sprint(b.jobs), "--yes", "--no-verify",
			"--pg-bin", testenv.ClientBin(testenv.PG17TS),
			"--source", b.uri(b.src, "bench"), "--target", b.uri(b.dst, target)}
		r.maxRSS, err = b.tsmigrate(ctx, args...)
	case "verify":
		r.maxRSS, err = b.tsmigrate(ctx, "verify", "--jobs", fmt.Sprint(b.jobs),
			"--source", b.uri(b.src, "bench"), "--target", b.uri(b.dst, "bench_stream"))
		target = "bench_stream"
	case "pgcopydb":
		err = b.pgcopydb(ctx, target)
	default:
		err = fmt.Errorf("unknown way %q", way)
	}
	r.wall = time.Since(start)
	// Whatever the way did, the source must be writable for the next one.
	if way == "dump" || way == "stream" {
		b.tsmigrate(ctx, "unfreeze", "--source", b.uri(b.src, "bench"))
	}
	if err != nil {
		r.failed, r.note = true, "FAILED: "+firstLine(err.Error())
	}
	got, cerr := b.targetCounts(ctx, target)
	// What a way left on the target would keep its autovacuum busy under the next
	// ways; only the stream engine's copy is kept, for verify.
	if way != "stream" {
		b.dst.Exec(ctx, "postgres", "DROP DATABASE IF EXISTS "+target+" WITH (FORCE)")
	}
	switch {
	case cerr != nil:
		r.note += " (counts: " + cerr.Error() + ")"
	case fmt.Sprint(got) == fmt.Sprint(b.want):
		r.correct = true
	default:
		r.note += fmt.Sprintf(" (WRONG DATA: target rows %v)", got)
	}
	if r.maxRSS > 0 {
		r.note += fmt.Sprintf(" peak RSS %d MB", r.maxRSS/1024)
	}
	return r
}

// sqlAutovacuumBusy counts the autovacuum workers at work on a server (PostgreSQL 17).
const sqlAutovacuumBusy = `SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'`

// quiesce waits (up to two minutes) until no autovacuum worker runs on either server,
// checkpoints both and flushes the page cache, so that each way starts on a quiet
// machine.
func (b *bench) quiesce(ctx context.Context) {
	deadline := time.Now().Add(2 * time.Minute)
	for _, s := range []*testenv.Server{b.src, b.dst} {
		conn, err := pgx.Connect(ctx, s.SuperURI("postgres"))
		if err != nil {
			continue
		}
		for still := 0; still < 3 && time.Now().Before(deadline); {
			var n int
			if conn.QueryRow(ctx, sqlAutovacuumBusy).Scan(&n) != nil {
				break
			}
			if n == 0 {
				still++
			} else {
				still = 0
			}
			time.Sleep(time.Second)
		}
		conn.Exec(ctx, "CHECKPOINT")
		conn.Close(ctx)
	}
	// And no write-back of the previous way's files competes with this one.
	syscall.Sync()
}

func (b *bench) documented(ctx context.Context, target string) error {
	file := filepath.Join(b.tmp, "dump.bak")
	bin := testenv.ClientBin(testenv.PG17TS)
	if err := runLogged(ctx, filepath.Join(bin, "pg_dump"), "--no-owner", "-Fc", "-f", file, "-d", b.uri(b.src, "bench")); err != nil {
		return err
	}
	defer os.Remove(file)
	if err := b.dst.Exec(ctx, target, "CREATE EXTENSION timescaledb", "SELECT timescaledb_pre_restore()"); err != nil {
		return err
	}
	// pg_restore exits 1 on the known harmless messages; the counts afterwards decide.
	runLogged(ctx, filepath.Join(bin, "pg_restore"), "--no-owner", "--jobs", "1", "-d", b.uri(b.dst, target), file)
	return b.dst.Exec(ctx, target, "SELECT timescaledb_post_restore()", "ANALYZE")
}

func (b *bench) pgcopydb(ctx context.Context, target string) error {
	root := testenv.Pg17Root()
	if _, err := os.Stat(filepath.Join(root, "usr/bin/pgcopydb")); err != nil {
		return fmt.Errorf("pgcopydb not installed: run scripts/setup-servers.sh --with-pgcopydb")
	}
	if err := b.dst.Exec(ctx, target, "CREATE EXTENSION timescaledb", "SELECT timescaledb_pre_restore()"); err != nil {
		return err
	}
	work := "/var/tmp/pgcopydb-bench"
	os.RemoveAll(filepath.Join(root, work))
	cmd := exec.CommandContext(ctx, "chroot", root, "/usr/bin/pgcopydb", "clone",
		"--table-jobs", fmt.Sprint(b.jobs), "--index-jobs", fmt.Sprint(b.jobs), "--dir", work,
		"--source", b.uri(b.src, "bench"), "--target", b.uri(b.dst, target))
	cmd.Env = []string{"PATH=/usr/lib/postgresql/17/bin:/usr/bin:/bin", "LANG=C.UTF-8", "PGPASSWORD=" + testenv.SuperPassword}
	out, err := cmd.CombinedOutput()
	os.WriteFile(filepath.Join(os.TempDir(), "pgcopydb-bench.log"), out, 0o644)
	b.dst.Exec(ctx, target, "SELECT timescaledb_post_restore()")
	if err != nil {
		// test-environment.md: 0.17 copies the data, then exits 12 on TRUNCATE ONLY of the
		// hypertable; the row counts afterwards say whether the data arrived.
		return fmt.Errorf("pgcopydb: %v (log in %s/pgcopydb-bench.log)", err, os.TempDir())
	}
	return nil
}

// uri is the superuser's URI for db on s, without the password (PGPASSWORD carries it).
func (b *bench) uri(s *testenv.Server, db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.Port, db)
}

func (b *bench) tsmigrate(ctx context.Context, args ...string) (int64, error) {
	cmd := exec.CommandContext(ctx, b.bin, args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	err := cmd.Run()
	var rss int64
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			rss = ru.Maxrss
		}
	}
	return rss, err
}

func (b *bench) targetCounts(ctx context.Context, db string) (map[string]int64, error) {
	conn, err := pgx.Connect(ctx, b.dst.SuperURI(db))
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	return rowCounts(ctx, conn)
}

func rowCounts(ctx context.Context, conn *pgx.Conn) (map[string]int64, error) {
	m := map[string]int64{}
	for _, t := range []string{"devices", "events", "metrics"} {
		var n int64
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+t).Scan(&n); err != nil {
			return nil, err
		}
		m[t] = n
	}
	return m, nil
}

// report prints each way's wall time (with several rounds: the median, and every
// round's), whether every round moved the data equal, and the ratios of the medians.
func report(rs []result, size string, rounds int) {
	fmt.Printf("\n=== results (database %s, %d round(s) of every way in turn, same machine) ===\n", size, rounds)
	fmt.Printf("%-12s %10s  %s\n", "way", "wall", "notes")
	var order []string
	byWay := map[string][]result{}
	for _, r := range rs {
		if byWay[r.way] == nil {
			order = append(order, r.way)
		}
		byWay[r.way] = append(byWay[r.way], r)
	}
	median := map[string]float64{}
	for _, w := range order {
		var walls []float64
		ok, failed, notes := "data equal", false, ""
		for _, r := range byWay[w] {
			walls = append(walls, r.wall.Seconds())
			if !r.correct {
				ok = "data NOT equal"
			}
			failed = failed || r.failed
			notes = strings.TrimSpace(r.note)
		}
		sorted := slices.Clone(walls)
		slices.Sort(sorted)
		m := sorted[len(sorted)/2]
		if len(sorted)%2 == 0 {
			m = (sorted[len(sorted)/2-1] + sorted[len(sorted)/2]) / 2
		}
		if !failed {
			median[w] = m
		}
		each := ""
		if len(walls) > 1 {
			parts := make([]string, len(walls))
			for i, x := range walls {
				parts[i] = fmt.Sprintf("%.2f", x)
			}
			each = " rounds " + strings.Join(parts, ", ") + " s;"
		}
		fmt.Printf("%-12s %9.2fs  %s;%s %s\n", w, m, ok, each, notes)
	}
	ratio := func(a, b string) {
		if ma, mb := median[a], median[b]; ma > 0 && mb > 0 {
			fmt.Printf("%s / %s = %.2fx\n", a, b, ma/mb)
		}
	}
	fmt.Println()
	ratio("dump", "documented")
	ratio("stream", "documented")
	ratio("stream", "pgcopydb")
	ratio("verify", "stream")
	if d, s := median["documented"], median["dump"]; d > 0 && s > 0 {
		fmt.Printf("dump engine speed-up over the documented procedure: %.2fx\n", d/s)
	}
}

func runLogged(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", filepath.Base(name), err, firstLine(strings.TrimSpace(string(out))))
	}
	return nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
