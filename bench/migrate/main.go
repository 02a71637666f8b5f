// Command migrate compares ways of migrating the same database side by side, in one run,
// on two local PostgreSQL 17 + TimescaleDB servers: the documented procedure (pg_dump -Fc,
// pg_restore --jobs 1, ANALYZE), tsmigrate's dump engine, its stream engine, the stream
// engine restoring TimescaleDB's objects through its API (stream-api: --restore-path
// api, the path of a target user who may not write TimescaleDB's catalog), pgcopydb
// (when installed in the Debian 13 root: `scripts/setup-servers.sh --with-pgcopydb`), and
// tsmigrate verify. It prints wall times, ratios and tsmigrate's peak memory.
//
//	go run ./bench/migrate [-scale 1.0 | -chunks N [-rows R]] [-link RTT,MBIT] [-jobs 2] [-tsjobs auto]
//	    [-rounds 1] [-build apache|full] [-ways documented,dump,stream,stream-api,verify,pgcopydb]
//	    [-base BIN -ways ...,stream-base]
//
// The way stream-base runs the stream engine of another tsmigrate binary, -base (one
// built from main, say): a change's before and after side by side, under the same load.
//
// -build full runs both servers with TimescaleDB's full build (testenv.PG17TSL, where
// the API path makes each chunk by create_chunk) instead of the Apache build.
//
// -chunks N replaces the sample database with one of many small chunks: a hypertable
// of N hourly chunks of R rows each (-rows, default 200) and one index besides time's.
//
// -link RTT,MBIT puts a proxy between this machine (where every way's client runs) and
// the target server that shapes the link as one across a WAN: RTT/2 of delay each way
// and MBIT megabits per second each way (0: no bound); "0,0" counts without shaping.
// With a link, each way's bytes on the wire and round trips to the target are told (a
// round trip: an exchange the client waits for, read from the protocol), and for the
// stream engine the round trips per data unit of its copy phase.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/sampledata"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// defaultWays are the ways of a run without -live.
const defaultWays = "documented,dump,stream,verify,pgcopydb"

type result struct {
	way     string
	wall    time.Duration
	maxRSS  int64 // KiB, tsmigrate runs only
	note    string
	failed  bool
	correct bool
	wire    testenv.ProxyStats // to and from the target, with a link
	// perUnit: the stream engine's round trips to the target per data unit in its copy
	// phase (0: not measured).
	perUnit float64
	phases  string // tsmigrate's phases with their times
	// load: the machine's load averages (1 minute) as the way started and ended.
	load [2]string
	// summary: tsmigrate's --json summary; live: a -live way's figures.
	summary []byte
	live    *liveFigures
}

type bench struct {
	src, dst *testenv.Server
	bin      string
	base     string // -base: the binary of the way stream-base
	jobs     int
	tsJobs   string // tsmigrate's --jobs
	tmp      string
	want     map[string]int64
	tables   []string     // counted to check each way's data
	chunks   int          // of the many-chunks dataset (0: the sample database)
	kind     testenv.Kind // of both servers: PG17TS, or PG17TSL with -build full
	jsonOut  string       // -json
	proxy    *testenv.Proxy

	// -live (live.go, writer.go)
	live         bool
	scale        float64
	writerRate   int
	freezeGrace  time.Duration
	identityFull bool
	liveTimeout  time.Duration
	liveChunk    time.Duration
	cursors      *cursors
	onPhase      func(line string) // each "==> phase" line of a tsmigrate run
}

func main() {
	scale := flag.Float64("scale", 1.0, "database size (1.0 is about 825 MB)")
	chunks := flag.Int("chunks", 0, "instead of the sample database: a hypertable of this many hourly chunks (see -rows)")
	rows := flag.Int("rows", 200, "with -chunks: rows per chunk")
	link := flag.String("link", "", `"RTT,MBIT": a shaped link between this machine and the target (e.g. "10ms,200"; "0,0" counts only)`)
	jobs := flag.Int("jobs", 2, "parallel jobs for every way that has them but tsmigrate's (pg_dump, pgcopydb)")
	tsJobs := flag.String("tsjobs", "auto", "tsmigrate's --jobs")
	ways := flag.String("ways", defaultWays, "ways to run, in order (with -live: live,pgcopydb)")
	rounds := flag.Int("rounds", 1, "run the ways this many times, in turn, and compare their medians")
	live := flag.Bool("live", false, "migrate while a writer writes (ways live and pgcopydb: tsmigrate migrate --live, pgcopydb clone --follow)")
	writerRate := flag.Int("writer-rate", 500, "with -live: rows the writer writes a second")
	grace := flag.Duration("freeze-grace", time.Second, "with -live: tsmigrate's --freeze-grace")
	identityFull := flag.Bool("replica-identity-full", true, "with -live: pass --replica-identity-full to tsmigrate (the sample hypertable has no key)")
	liveTimeout := flag.Duration("live-timeout", 15*time.Minute, "with -live: how long pgcopydb gets to catch up, then to reach its end position")
	liveChunk := flag.Duration("live-chunk", 5*time.Second, "with -live: the hypertable's chunk interval from the load on, so that the writer's rows (at the current time) make new chunks during every way; 0 keeps a chunk a day")
	tsBin := flag.String("tsmigrate", "", "a tsmigrate binary to run instead of building this checkout's")
	base := flag.String("base", "", "with the way stream-base: a tsmigrate binary (of main, say) whose stream engine to compare with this one's in the same run")
	jsonOut := flag.String("json", "", "with -live: also write the figures as JSON to this file (- for stdout)")
	build := flag.String("build", "apache", `TimescaleDB build of both servers: "apache" (the Debian package) or "full" (compression, create_chunk)`)
	flag.Parse()
	kind, err := buildKind(*build)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b := &bench{jobs: *jobs, tsJobs: *tsJobs, chunks: *chunks, live: *live, scale: *scale, writerRate: *writerRate,
		freezeGrace: *grace, identityFull: *identityFull, liveTimeout: *liveTimeout, liveChunk: *liveChunk, jsonOut: *jsonOut, bin: *tsBin, base: *base,
		kind: kind}
	wayList := strings.Split(*ways, ",")
	if *live {
		if err := checkLiveFlags(*chunks, *link, *rounds, *writerRate); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(2)
		}
		if *ways == defaultWays {
			wayList = []string{"live", "pgcopydb"}
		}
	}
	if err := b.run(ctx, *scale, *rows, *link, max(1, *rounds), wayList); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// buildKind reads -build: the servers' kind.
func buildKind(build string) (testenv.Kind, error) {
	switch build {
	case "apache":
		return testenv.PG17TS, nil
	case "full":
		if err := testenv.Available(testenv.PG17TSL); err != nil {
			return "", fmt.Errorf("-build full: %w", err)
		}
		return testenv.PG17TSL, nil
	}
	return "", fmt.Errorf(`-build %q: want "apache" or "full"`, build)
}

// parseLink reads -link: "RTT,MBIT".
func parseLink(s string) (testenv.Link, error) {
	rtt, mbit, ok := strings.Cut(s, ",")
	if !ok {
		return testenv.Link{}, fmt.Errorf("-link %q: want RTT,MBIT (e.g. 10ms,200)", s)
	}
	if rtt == "0" {
		rtt = "0s"
	}
	d, err := time.ParseDuration(rtt)
	if err != nil || d < 0 {
		return testenv.Link{}, fmt.Errorf("-link %q: round trip %q: want a duration (10ms)", s, rtt)
	}
	m, err := strconv.ParseFloat(mbit, 64)
	if err != nil || m < 0 {
		return testenv.Link{}, fmt.Errorf("-link %q: %q: want megabits per second", s, mbit)
	}
	return testenv.Link{Delay: d / 2, Rate: int64(m * 1e6 / 8)}, nil
}

func (b *bench) run(ctx context.Context, scale float64, rows int, link string, rounds int, ways []string) error {
	var shape testenv.Link
	if link != "" {
		var err error
		if shape, err = parseLink(link); err != nil {
			return err
		}
	}
	// Every tool below gets the password from the environment, never from its argv.
	os.Setenv("PGPASSWORD", testenv.SuperPassword)
	var err error
	if b.tmp, err = os.MkdirTemp("", "tsmigrate-bench-"); err != nil {
		return err
	}
	defer os.RemoveAll(b.tmp)
	if b.bin == "" {
		if b.bin, err = testenv.BuildTsmigrate(ctx, b.tmp); err != nil {
			return err
		}
	}
	opts := testenv.Options{Settings: map[string]string{"max_wal_size": "8GB", "checkpoint_timeout": "30min"}}
	if b.chunks > 0 {
		// Room in the lock table for a transaction that touches every chunk (pg_dump
		// locks each table it dumps), as for a database of that many tables.
		opts.Settings["max_locks_per_transaction"] = strconv.Itoa(max(64, 2*b.chunks/100+64))
	}
	if b.src, err = testenv.Start(ctx, b.kind, opts); err != nil {
		return err
	}
	defer b.src.Stop()
	if b.dst, err = testenv.Start(ctx, b.kind, opts); err != nil {
		return err
	}
	defer b.dst.Stop()
	if link != "" {
		if b.proxy, err = testenv.NewProxy(b.dst, "127.0.0.1:0", shape); err != nil {
			return err
		}
		defer b.proxy.Close()
		fmt.Printf("target behind a proxy: %s each way, %s each way\n", shape.Delay, rate(shape.Rate))
	}

	t0 := time.Now()
	if err := b.src.CreateDatabase(ctx, "bench", true); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, b.src.SuperURI("bench"))
	if err != nil {
		return err
	}
	if b.chunks > 0 {
		fmt.Printf("loading %d hourly chunks of %d rows ...\n", b.chunks, rows)
		b.tables = []string{"metrics"}
		err = sampledata.CreateChunks(ctx, conn, b.chunks, rows)
	} else {
		fmt.Printf("loading the sample database at scale %g ...\n", scale)
		b.tables = []string{"devices", "events", "metrics"}
		_, err = sampledata.Create(ctx, conn, scale)
	}
	if err != nil {
		return err
	}
	var size string
	conn.QueryRow(ctx, "SELECT pg_size_pretty(pg_database_size(current_database()))").Scan(&size)
	if b.want, err = b.rowCounts(ctx, conn); err != nil {
		return err
	}
	conn.Close(ctx)
	fmt.Printf("source: %s, rows %v, loaded in %s\n", size, b.want, time.Since(t0).Round(time.Second))
	if b.live {
		b.cursors = &cursors{devices: b.want["devices"], events: b.want["events"]}
		if b.liveChunk > 0 {
			q := fmt.Sprintf("SELECT set_chunk_time_interval('metrics', interval '%d seconds')", int(b.liveChunk.Seconds()))
			if err := b.src.Exec(ctx, "bench", q); err != nil {
				return err
			}
		}
	}
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
			var r result
			if b.live {
				r = b.runLive(ctx, w)
			} else {
				r = b.runWay(ctx, w)
			}
			results = append(results, r)
			fmt.Printf("%s: %s %s\n", w, r.wall.Round(10*time.Millisecond), r.note)
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	what := size
	if b.chunks > 0 {
		what = fmt.Sprintf("%s, %d chunks of %d rows", size, b.chunks, rows)
	}
	if b.kind == testenv.PG17TSL {
		what += ", TimescaleDB's full build"
	}
	if link != "" {
		what += fmt.Sprintf(", target across a link of %s round trip and %s each way", 2*shape.Delay, rate(shape.Rate))
	}
	if b.live {
		return b.reportLive(results, what)
	}
	b.report(results, what, rounds)
	return nil
}

func rate(r int64) string {
	if r == 0 {
		return "no rate bound"
	}
	return fmt.Sprintf("%g Mbit/s", float64(r)*8/1e6)
}

func (b *bench) runWay(ctx context.Context, way string) result {
	r := result{way: way}
	target := "bench_" + strings.ReplaceAll(way, "-", "_")
	if way != "verify" {
		b.dst.Exec(ctx, "postgres", "DROP DATABASE IF EXISTS "+target+" WITH (FORCE)")
		if err := b.dst.CreateDatabase(ctx, target, false); err != nil {
			r.failed, r.note = true, err.Error()
			return r
		}
	}
	var before testenv.ProxyStats
	if b.proxy != nil {
		before = b.proxy.Stats()
	}
	r.load[0] = loadAverage()
	start := time.Now()
	var err error
	switch way {
	case "documented":
		err = b.documented(ctx, target)
	case "dump", "stream", "stream-api", "stream-base":
		engine, variant, _ := strings.Cut(way, "-")
		args := []string{"migrate", "--engine", engine, "--jobs", b.tsJobs, "--yes", "--no-verify", "--json", "--progress", "plain",
			"--pg-bin", testenv.ClientBin(b.kind),
			"--source", b.uri(b.src, "bench"), "--target", b.uri(b.dst, target)}
		if variant == "api" {
			args = append(args, "--restore-path", "api")
		}
		if variant != "base" {
			err = b.migrate(ctx, &r, args)
			break
		}
		if b.base == "" {
			err = errors.New("way stream-base: give the binary to compare with as -base")
			break
		}
		bin := b.bin
		b.bin = b.base
		err = b.migrate(ctx, &r, args)
		b.bin = bin
	case "verify":
		r.maxRSS, err = b.tsmigrate(ctx, nil, nil, "verify", "--jobs", b.tsJobs,
			"--source", b.uri(b.src, "bench"), "--target", b.uri(b.dst, "bench_stream"))
		target = "bench_stream"
	case "pgcopydb":
		err = b.pgcopydb(ctx, target)
	default:
		err = fmt.Errorf("unknown way %q", way)
	}
	r.wall = time.Since(start)
	r.load[1] = loadAverage()
	if b.proxy != nil {
		r.wire = b.proxy.Stats().Sub(before)
	}
	// Whatever the way did, the source must be writable for the next one.
	if way == "dump" || strings.HasPrefix(way, "stream") {
		b.tsmigrate(ctx, nil, nil, "unfreeze", "--source", b.uri(b.src, "bench"))
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
	r.note += fmt.Sprintf(" load %s to %s", r.load[0], r.load[1])
	if r.maxRSS > 0 {
		r.note += fmt.Sprintf(" peak RSS %d MB", r.maxRSS/1024)
	}
	if b.proxy != nil {
		r.note += fmt.Sprintf(" wire %s to the target, %s back, %d round trips", mb(r.wire.ToServer), mb(r.wire.ToClient), r.wire.RoundTrips)
		if b.chunks > 0 {
			r.note += fmt.Sprintf(" (%.1f per chunk)", float64(r.wire.RoundTrips)/float64(b.chunks))
		}
		if r.perUnit > 0 {
			r.note += fmt.Sprintf(", copy %.2f per unit", r.perUnit)
		}
	}
	if r.phases != "" {
		r.note += "; " + r.phases
	}
	return r
}

// loadAverage is the machine's load average over the last minute, as uptime gives it
// ("?" where /proc/loadavg cannot be read): on a shared machine, what a time means.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }

// migrate runs tsmigrate migrate (args, with --json and --progress plain): its peak
// memory, its phases, and for the stream engine with a link the round trips per data
// unit of its copy phase (from the proxy's count at the start and the end of that
// phase, which tsmigrate announces on stderr, and the units its summary counts).
func (b *bench) migrate(ctx context.Context, r *result, args []string) error {
	var out bytes.Buffer
	var mu sync.Mutex
	var atCopy, afterCopy testenv.ProxyStats
	inCopy := false
	onLine := func(line string) {
		fmt.Fprintln(os.Stderr, line)
		if b.onPhase != nil && strings.HasPrefix(line, "==> ") {
			b.onPhase(line)
		}
		if b.proxy == nil || !strings.HasPrefix(line, "==> ") {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		switch {
		case strings.HasPrefix(line, "==> "+migrate.PhaseCopy+" ") || line == "==> "+migrate.PhaseCopy:
			atCopy, inCopy = b.proxy.Stats(), true
		case inCopy:
			afterCopy, inCopy = b.proxy.Stats(), false
		}
	}
	var err error
	r.maxRSS, err = b.tsmigrate(ctx, &out, onLine, args...)
	r.summary = out.Bytes()
	var sum migrate.Summary
	if jerr := json.Unmarshal(out.Bytes(), &sum); jerr != nil {
		return errors.Join(err, fmt.Errorf("read the summary: %w", jerr))
	}
	var parts []string
	for _, p := range sum.Phases {
		if p.Duration >= 100*time.Millisecond {
			parts = append(parts, fmt.Sprintf("%s %.1fs", p.Phase, p.Duration.Seconds()))
		}
	}
	r.phases = strings.Join(parts, ", ")
	if len(sum.Databases) == 1 {
		if d := sum.Databases[0].Data; d != nil && d.Units > 0 {
			r.phases += fmt.Sprintf("; %d units, %d at once: %s", d.Units, d.Jobs, d.JobsWhy)
			if n := afterCopy.Sub(atCopy).RoundTrips; n > 0 {
				r.perUnit = float64(n) / float64(d.Units)
			}
		}
	}
	return err
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
	bin := testenv.ClientBin(b.kind)
	if err := runLogged(ctx, filepath.Join(bin, "pg_dump"), "--no-owner", "-Fc", "-f", file, "-d", b.uri(b.src, "bench")); err != nil {
		return err
	}
	defer os.Remove(file)
	if err := b.onTarget(ctx, target, "CREATE EXTENSION timescaledb", "SELECT timescaledb_pre_restore()"); err != nil {
		return err
	}
	// pg_restore exits 1 on the known harmless messages; the counts afterwards decide.
	runLogged(ctx, filepath.Join(bin, "pg_restore"), "--no-owner", "--jobs", "1", "-d", b.uri(b.dst, target), file)
	return b.onTarget(ctx, target, "SELECT timescaledb_post_restore()", "ANALYZE")
}

// onTarget runs statements on the target database db, across the link if there is one.
func (b *bench) onTarget(ctx context.Context, db string, sql ...string) error {
	conn, err := pgx.Connect(ctx, b.uri(b.dst, db))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	for _, q := range sql {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return nil
}

func (b *bench) pgcopydb(ctx context.Context, target string) error {
	root := testenv.Pg17Root()
	if _, err := os.Stat(filepath.Join(root, "usr/bin/pgcopydb")); err != nil {
		return fmt.Errorf("pgcopydb not installed: run scripts/setup-servers.sh --with-pgcopydb")
	}
	if err := b.onTarget(ctx, target, "CREATE EXTENSION timescaledb", "SELECT timescaledb_pre_restore()"); err != nil {
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
	b.onTarget(ctx, target, "SELECT timescaledb_post_restore()")
	if err != nil {
		// test-environment.md: 0.17 copies the data, then exits 12 on TRUNCATE ONLY of the
		// hypertable; the row counts afterwards say whether the data arrived.
		return fmt.Errorf("pgcopydb: %v (log in %s/pgcopydb-bench.log)", err, os.TempDir())
	}
	return nil
}

// uri is the superuser's URI for db on s, without the password (PGPASSWORD carries it);
// the target's across the link, if there is one.
func (b *bench) uri(s *testenv.Server, db string) string {
	port := s.Port
	if s == b.dst && b.proxy != nil {
		port = b.proxy.Port()
	}
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", port, db)
}

// tsmigrate runs tsmigrate with args: its stdout into out (nil: this one's), each line
// of its stderr to onLine (nil: this one's stderr). It returns tsmigrate's peak memory.
func (b *bench) tsmigrate(ctx context.Context, out io.Writer, onLine func(string), args ...string) (int64, error) {
	cmd := exec.CommandContext(ctx, b.bin, args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if out != nil {
		cmd.Stdout = out
	}
	var done chan struct{}
	if onLine != nil {
		pr, pw := io.Pipe()
		cmd.Stderr = pw
		done = make(chan struct{})
		go func() {
			defer close(done)
			sc := bufio.NewScanner(pr)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				onLine(sc.Text())
			}
			io.Copy(io.Discard, pr)
		}()
		defer func() { pw.Close(); <-done }()
	}
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
	return b.rowCounts(ctx, conn)
}

// rowCounts counts the dataset's tables' rows, and the chunks of a many-chunks one.
func (b *bench) rowCounts(ctx context.Context, conn *pgx.Conn) (map[string]int64, error) {
	m := map[string]int64{}
	if b.chunks > 0 {
		var n int64
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM show_chunks('metrics')").Scan(&n); err != nil {
			return nil, err
		}
		m["chunks"] = n
	}
	for _, t := range b.tables {
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
func (b *bench) report(rs []result, what string, rounds int) {
	fmt.Printf("\n=== results (database %s, %d round(s) of every way in turn, same machine) ===\n", what, rounds)
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
	ratio("stream-api", "documented")
	ratio("stream-api", "stream")
	ratio("stream-base", "documented")
	ratio("stream", "stream-base")
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
