package migrate_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/journal"
	"github.com/tsmigrate/tsmigrate/internal/live"
	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
	"github.com/tsmigrate/tsmigrate/internal/verify"
)

// liveSource: a hypertable with a key, a plain table with a TOASTed column, a table
// without a key (its UPDATE and DELETE need --replica-identity-full), a sequence the
// applications use. logical_decoding_work_mem is low, so that one transaction of the
// writer is larger than it.
var liveSource = []string{
	`CREATE TABLE m (ts timestamptz NOT NULL, dev int NOT NULL, v double precision, note text, PRIMARY KEY (ts, dev))`,
	`SELECT create_hypertable('m', 'ts', chunk_time_interval => interval '1 day')`,
	`INSERT INTO m SELECT '2024-01-01'::timestamptz + g * interval '1 minute', g % 4, g, 'n' || g FROM generate_series(1, 60000) g`,
	`CREATE TABLE docs (id int PRIMARY KEY, title text, body text)`,
	`INSERT INTO docs SELECT g, 't' || g, (SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 400) i) FROM generate_series(1, 50) g`,
	`CREATE TABLE nokey (a int, b text)`,
	`INSERT INTO nokey SELECT g, 'b' || g FROM generate_series(1, 100) g`,
	`CREATE SEQUENCE tickets`,
	// The applications' own publication reaches the target; the live run's does not.
	`CREATE PUBLICATION app_pub FOR TABLE docs`,
}

// liveSlotsAtCleanup drops what a live run left on the source database, so that it can
// be dropped.
func liveSlotsAtCleanup(t *testing.T, srv *testenv.Server, db string) {
	t.Cleanup(func() {
		srv.Exec(context.Background(), "postgres", fmt.Sprintf(
			`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '%s'`, db))
	})
}

// writer writes to the source while the migration runs, and records what the source
// acknowledged.
type writer struct {
	mu       sync.Mutex
	inserted []time.Time    // m rows (dev 99) acknowledged
	deleted  []time.Time    // m rows (dev 0) whose delete was acknowledged
	titles   map[int]string // docs: the last title acknowledged per id
	nokey    map[int]string // nokey: a -> b as acknowledged; "" deleted
	readOnly int            // writes refused as read-only (the freeze)
	other    []string       // other errors (sessions ended by the freeze)
	big      bool           // the big transaction was acknowledged
	seq      int64          // the last nextval acknowledged
	stop     chan struct{}
	done     chan struct{}
}

func (w *writer) run(t *testing.T, uri string) {
	defer close(w.done)
	ctx := context.Background()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(ctx)
		}
	}()
	base := time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC)
	for i := 1; ; i++ {
		select {
		case <-w.stop:
			return
		default:
		}
		if conn == nil || conn.IsClosed() {
			var err error
			if conn, err = pgx.Connect(ctx, uri); err != nil {
				w.fail(err)
				time.Sleep(100 * time.Millisecond)
				continue
			}
		}
		// Inserts: a new chunk every 24 of them.
		ts := base.Add(time.Duration(i) * time.Hour)
		if w.exec(conn, `INSERT INTO m VALUES ($1, 99, $2, 'writer')`, ts, i) {
			w.inserted = append(w.inserted, ts)
		}
		// Updates that leave the TOASTed body alone.
		id, title := 1+i%50, fmt.Sprintf("w%d", i)
		if w.exec(conn, `UPDATE docs SET title = $1 WHERE id = $2`, title, id) {
			w.titles[id] = title
		}
		// Deletes of copied rows.
		del := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(4*i) * time.Minute)
		if w.exec(conn, `DELETE FROM m WHERE ts = $1 AND dev = 0`, del) {
			w.deleted = append(w.deleted, del)
		}
		// The table without a key: insert, update, delete.
		if w.exec(conn, `INSERT INTO nokey VALUES ($1, 'new')`, 1000+i) {
			w.nokey[1000+i] = "new"
		}
		if w.exec(conn, `UPDATE nokey SET b = 'upd' WHERE a = $1`, 1+i%100) {
			if _, gone := w.nokey[1+i%100]; !gone || w.nokey[1+i%100] != "" {
				w.nokey[1+i%100] = "upd"
			}
		}
		if i%7 == 0 && i/7 <= 100 {
			if w.exec(conn, `DELETE FROM nokey WHERE a = $1`, i/7) {
				w.nokey[i/7] = ""
			}
		}
		var n int64
		if err := conn.QueryRow(ctx, `SELECT nextval('tickets')`).Scan(&n); err == nil {
			w.mu.Lock()
			w.seq = n
			w.mu.Unlock()
		}
		if i == 20 {
			// ~40 000 rows in one transaction: more than logical_decoding_work_mem.
			if w.exec(conn, `INSERT INTO m SELECT '2024-09-01'::timestamptz + g * interval '1 second', 7, g, repeat('big', 20) FROM generate_series(1, 40000) g`) {
				w.big = true
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// exec runs one write; it says whether the source acknowledged it.
func (w *writer) exec(conn *pgx.Conn, sql string, args ...any) bool {
	_, err := conn.Exec(context.Background(), sql, args...)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err == nil {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "25006" {
		w.readOnly++
		return false
	}
	w.other = append(w.other, err.Error())
	return false
}

func (w *writer) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.other = append(w.other, err.Error())
}

// liveWithWriter makes a source (liveSource, logical_decoding_work_mem 64kB) and an
// empty target on the shared server, and starts a writer on the source; stopWriter
// stops it (also when the test ends).
func liveWithWriter(t *testing.T) (srv *testenv.Server, src, dst string, w *writer, stopWriter func()) {
	srv = testenv.Shared(t, testenv.PG17TS)
	src = testenv.NewDB(t, srv, true)
	dst = testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, src, liveSource...)
	testenv.MustExec(t, srv, "postgres", "ALTER DATABASE "+src+" SET logical_decoding_work_mem = '64kB'")
	unfreezeAtCleanup(t, srv, src)
	liveSlotsAtCleanup(t, srv, src)
	w = &writer{titles: map[int]string{}, nokey: map[int]string{}, stop: make(chan struct{}), done: make(chan struct{})}
	go w.run(t, srv.SuperURI(src))
	stopWriter = sync.OnceFunc(func() { close(w.stop); <-w.done })
	t.Cleanup(stopWriter)
	return srv, src, dst, w, stopWriter
}

// assertLiveDone checks a live run's end: verify finds both sides identical, the
// source is frozen and holds no slot or publication.
func assertLiveDone(t *testing.T, srv *testenv.Server, src, dst string) {
	t.Helper()
	rep, err := verify.Run(context.Background(), verify.Options{Source: cfg(t, "source", srv.SuperURI(src)), Target: cfg(t, "target", srv.SuperURI(dst)), ShowRows: 3})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Identical {
		t.Errorf("verify: %d units differ, schema %v", rep.UnitsDiffering, rep.Schema)
	}
	sc := connect(t, srv.SuperURI(src))
	if n := scalar[int64](t, sc, `SELECT count(*) FROM pg_replication_slots WHERE database = current_database()`); n != 0 {
		t.Errorf("%d replication slots left on the source", n)
	}
	if n := scalar[int64](t, sc, `SELECT count(*) FROM pg_publication WHERE pubname <> 'app_pub'`); n != 0 {
		t.Errorf("%d publications left on the source", n)
	}
	if writable(t, srv, src) {
		t.Error("the source is writable after the cut-over")
	}
}

// TestLiveMigrateWithWriter: a writer inserts (creating chunks), updates (leaving a
// TOASTed column alone), deletes, writes to a table without a key, and commits one
// transaction larger than logical_decoding_work_mem while migrate --live --cutover auto
// runs. Every write the source acknowledged is on the target, none twice; verify finds
// both sides identical; the writes after the freeze fail as read-only; nothing of the
// live run is left on the source; the downtime is reported.
func TestLiveMigrateWithWriter(t *testing.T) {
	srv, src, dst, w, stopWriter := liveWithWriter(t)
	ctx := context.Background()

	var mu sync.Mutex
	var stages []string
	var sawApplied bool
	sum, err := migrate.Run(ctx, migrate.Options{Engine: migrate.EngineStream, Live: true, Cutover: migrate.CutoverAuto, ReplicaIdentityFull: true,
		Source: cfg(t, "source", srv.SuperURI(src)), Target: cfg(t, "target", srv.SuperURI(dst)),
		Jobs: 2, PgBin: srv.ClientBin(), FreezeGrace: time.Second,
		OnEvent: func(e migrate.Event) {
			mu.Lock()
			defer mu.Unlock()
			switch e.Type {
			case migrate.EventLive:
				if len(stages) == 0 || stages[len(stages)-1] != e.Live.Stage {
					stages = append(stages, e.Live.Stage)
				}
				sawApplied = sawApplied || e.Live.RowsApplied > 0
			case migrate.EventNote, migrate.EventWarning:
				t.Logf("%s: %s", e.Type, e.Text)
			case migrate.EventPhase:
				t.Logf("phase %s %s", e.Phase, e.Database)
			}
		},
	})
	// The writer goes on a little after the run: its writes fail, the source is frozen.
	time.Sleep(500 * time.Millisecond)
	stopWriter()
	if err != nil {
		t.Fatalf("migrate --live: %v\n%+v", err, sum)
	}
	t.Logf("stages %v; downtime %s; live %+v; writer: %d inserts, %d deletes, %d read-only refusals, other errors %d",
		stages, sum.Downtime, sum.Live, len(w.inserted), len(w.deleted), w.readOnly, len(w.other))
	for _, p := range sum.Phases {
		t.Logf("phase %-16s %s", p.Phase, p.Duration)
	}
	for _, w := range sum.Warnings {
		if strings.Contains(w, "were kept") { // the run's own replication session is no risk to tell of
			t.Errorf("warning about tsmigrate's own session: %s", w)
		}
	}
	if sum.Outcome != migrate.OutcomeMigrated || !sum.Frozen() || len(sum.CutOver) == 0 {
		t.Fatalf("summary %+v", sum)
	}
	if sum.Downtime <= 0 || sum.DowntimeMs != sum.Downtime.Milliseconds() || sum.Live == nil || sum.Live.RowsApplied == 0 || sum.Live.Transactions == 0 ||
		sum.Live.ApplyRowsPerSec <= 0 || sum.Live.PeakRetainedBytes <= 0 {
		t.Errorf("downtime %s (%d ms), live %+v", sum.Downtime, sum.DowntimeMs, sum.Live)
	}
	if !sawApplied || !strings.Contains(strings.Join(stages, " "), "catch-up") || stages[len(stages)-1] != "cut-over" {
		t.Errorf("live progress stages %v, rows applied seen %v", stages, sawApplied)
	}
	if !w.big || len(w.inserted) < 30 || w.readOnly == 0 {
		t.Fatalf("writer: big transaction %v, %d inserts, %d read-only refusals: the test did not write during the run as meant", w.big, len(w.inserted), w.readOnly)
	}

	// Every acknowledged write is on the target, once.
	tc := connect(t, srv.SuperURI(dst))
	w.check(t, tc)
	if n := scalar[int64](t, tc, `SELECT count(*) FROM m WHERE dev = 7`); n != 40000 {
		t.Errorf("the big transaction: %d rows on the target, want 40000", n)
	}
	if n := scalar[int64](t, tc, `SELECT count(*) FROM docs WHERE length(body) <> 12800`); n != 0 {
		t.Errorf("%d docs lost their TOASTed body", n)
	}
	if seq := scalar[int64](t, tc, `SELECT last_value FROM tickets`); seq < w.seq {
		t.Errorf("sequence tickets: %d on the target, the source handed out %d", seq, w.seq)
	}

	assertLiveDone(t, srv, src, dst)
	sc := connect(t, srv.SuperURI(src))
	if ri := scalar[string](t, sc, `SELECT relreplident::text FROM pg_class WHERE oid = 'nokey'::regclass`); ri != "d" {
		t.Errorf("nokey's replica identity is %q after the run, want d (default) as before", ri)
	}
	if scalar[bool](t, tc, "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = '_tsmigrate')") {
		t.Error("the journal and live state are left in the target")
	}
}

// Live options that do not go together are refused before any server is contacted
// (the addresses below answer nothing): exit 2, one line.
func TestLiveOptionsRefused(t *testing.T) {
	src := cfg(t, "source", "postgres://app@127.0.0.1:1/app")
	dst := cfg(t, "target", "postgres://app@127.0.0.1:1/app2")
	for _, c := range []struct {
		opt  migrate.Options
		want string
	}{
		{migrate.Options{Engine: migrate.EngineDump, Live: true}, "--live is for the stream engine"},
		{migrate.Options{Live: true, Rehearsal: true}, "--live and --rehearsal exclude each other"},
		{migrate.Options{Live: true, Worker: true}, "--live and --worker exclude each other"},
		{migrate.Options{Live: true, Cutover: "later"}, `unknown --cutover "later"`},
		{migrate.Options{Live: true, Cutover: migrate.CutoverPrompt}, "--cutover prompt needs someone to ask"},
		{migrate.Options{Cutover: migrate.CutoverAuto}, "--cutover is for --live"},
		{migrate.Options{ReplicaIdentityFull: true}, "--replica-identity-full is for --live"},
	} {
		c.opt.Source, c.opt.Target = src, dst
		sum, err := migrate.Run(context.Background(), c.opt)
		if exit.Code(err) != exit.Usage || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") || sum.Began() {
			t.Errorf("%+v: %v (exit %d), want exit 2 saying %q", c.opt, err, exit.Code(err), c.want)
		}
	}
}

// The writer's acknowledged writes are all on the target, once.
func (w *writer) check(t *testing.T, tc *pgx.Conn) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ts := range w.inserted {
		if n := scalar[int64](t, tc, `SELECT count(*) FROM m WHERE ts = $1 AND dev = 99`, ts); n != 1 {
			t.Errorf("insert of %s: %d rows on the target, want 1", ts, n)
		}
	}
	for _, ts := range w.deleted {
		if n := scalar[int64](t, tc, `SELECT count(*) FROM m WHERE ts = $1 AND dev = 0`, ts); n != 0 {
			t.Errorf("delete of %s: still on the target", ts)
		}
	}
	for id, title := range w.titles {
		if got := scalar[string](t, tc, `SELECT title FROM docs WHERE id = $1`, id); got != title {
			t.Errorf("docs %d: title %q on the target, want %q", id, got, title)
		}
	}
	for a, b := range w.nokey {
		n := scalar[int64](t, tc, `SELECT count(*) FROM nokey WHERE a = $1`, a)
		switch {
		case b == "" && n != 0:
			t.Errorf("nokey %d: deleted on the source, %d rows on the target", a, n)
		case b != "" && n != 1:
			t.Errorf("nokey %d: %d rows on the target, want 1", a, n)
		}
	}
}

// TestLiveKillWhileApplyingThenResume: tsmigrate migrate --live is killed (SIGKILL)
// while it applies the writer's changes; the source stays writable, its slot keeps
// the changes since. --resume goes on from the target's state and cuts over: every
// acknowledged write on the target once, verify identical, nothing left on the source.
func TestLiveKillWhileApplyingThenResume(t *testing.T) {
	srv, src, dst, w, stopWriter := liveWithWriter(t)
	ctx := context.Background()

	bin := testenv.Binary(t)
	args := []string{"migrate", "--live", "--replica-identity-full", "--yes", "--jobs", "2", "--freeze-grace", "1s", "--json",
		"--pg-bin", srv.ClientBin(), "--source", srv.SuperURI(src), "--target", srv.SuperURI(dst)}
	p := startTsmigrate(t, bin, args...)
	tc := connect(t, srv.SuperURI(dst))
	// Killed once the applier committed changes and more wait to be applied.
	testenv.Eventually(t, 3*time.Minute, func() error {
		var applied, received int64
		err := tc.QueryRow(ctx, `SELECT applied_seq, received_seq FROM _tsmigrate.live WHERE copied`).Scan(&applied, &received)
		if err != nil {
			return err
		}
		if applied == 0 || received <= applied {
			return fmt.Errorf("applied %d of %d kept changes", applied, received)
		}
		return nil
	})
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.cmd.Wait()
	var slot string
	var applied, received int64
	if err := tc.QueryRow(ctx, `SELECT slot, applied_seq, received_seq FROM _tsmigrate.live`).Scan(&slot, &applied, &received); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed with %d of %d kept changes applied", applied, received)
	if !writable(t, srv, src) {
		t.Fatal("the source is frozen after a live run was killed before its cut-over")
	}
	sc := connect(t, srv.SuperURI(src))
	if n := scalar[int64](t, sc, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, slot); n != 1 {
		t.Fatalf("the slot %s is not on the source after the kill", slot)
	}

	// The same command with --resume, while the writer goes on.
	code, out, errOut := runCLI(t, append(args, "--resume")...)
	stopWriter()
	if code != 0 {
		t.Fatalf("--resume: exit %d\n%s\n%s", code, errOut, out)
	}
	var sum migrate.Summary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	t.Logf("resumed: downtime %d ms, live %+v; writer: %d inserts, %d read-only refusals", sum.DowntimeMs, sum.Live, len(w.inserted), w.readOnly)
	if sum.Outcome != migrate.OutcomeMigrated || !sum.Resumed || sum.DowntimeMs <= 0 || sum.Live == nil || sum.Live.RowsApplied == 0 {
		t.Fatalf("summary: %s", out)
	}
	if w.readOnly == 0 {
		t.Error("no write of the writer was refused: it did not write through the cut-over")
	}
	w.check(t, tc)
	assertLiveDone(t, srv, src, dst)
}

// A live run killed before its copy was done cannot be resumed (the snapshot its copy
// read is gone): --resume is refused in one line naming the slot to drop, exit 2, and
// changes nothing.
func TestLiveResumeBeforeCopyDoneRefused(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	ctx := context.Background()
	src := testenv.NewDB(t, srv, true)
	dst := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, src, liveSource[:4]...)
	liveSlotsAtCleanup(t, srv, src)
	// What a run killed in its copy leaves: slot and publication, the journal and the
	// live state in the target, the copy not marked done.
	source, target := cfg(t, "source", srv.SuperURI(src)), cfg(t, "target", srv.SuperURI(dst))
	s, err := live.Start(ctx, source, live.Options{Names: live.NewNames()})
	if err != nil {
		t.Fatal(err)
	}
	tc := connect(t, srv.SuperURI(dst))
	if _, err := journal.Open(ctx, tc, "live "+s.Slot); err != nil {
		t.Fatal(err)
	}
	if err := live.Init(ctx, target, s); err != nil {
		t.Fatal(err)
	}
	s.Close(ctx)

	code, out, errOut := runCLI(t, "migrate", "--live", "--resume", "--yes", "--pg-bin", srv.ClientBin(),
		"--source", srv.SuperURI(src), "--target", srv.SuperURI(dst))
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	last := lines[len(lines)-1]
	if code != 2 || !strings.HasPrefix(last, "tsmigrate: cannot resume") || !strings.Contains(last, "before its copy was done") ||
		!strings.Contains(last, "pg_drop_replication_slot('"+s.Slot+"')") {
		t.Fatalf("exit %d, stderr %q, stdout %q; want exit 2, one line naming slot %s and how to drop it", code, errOut, out, s.Slot)
	}
	sc := connect(t, srv.SuperURI(src))
	if n := scalar[int64](t, sc, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, s.Slot); n != 1 {
		t.Error("the refused --resume dropped the slot")
	}
	if !writable(t, srv, src) {
		t.Error("the refused --resume froze the source")
	}
}

// --cutover prompt: the library asks ConfirmCutover once the target caught up. A no
// aborts the run: the slot and the publication are dropped, the replica identities
// set back, the source left writable. A yes cuts over.
func TestLiveCutoverPrompt(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	ctx := context.Background()
	src := testenv.NewDB(t, srv, true)
	testenv.MustExec(t, srv, src, liveSource...)
	unfreezeAtCleanup(t, srv, src)
	liveSlotsAtCleanup(t, srv, src)
	run := func(dst string, answer error) (*migrate.Summary, int, error) {
		asked := 0
		sum, err := migrate.Run(ctx, migrate.Options{Engine: migrate.EngineStream, Live: true, Cutover: migrate.CutoverPrompt, ReplicaIdentityFull: true,
			Source: cfg(t, "source", srv.SuperURI(src)), Target: cfg(t, "target", srv.SuperURI(dst)), Jobs: 2, PgBin: srv.ClientBin(), FreezeGrace: time.Second,
			ConfirmCutover: func(context.Context) error { asked++; return answer }})
		return sum, asked, err
	}

	sum, asked, err := run(testenv.NewDB(t, srv, false), errors.New("no"))
	if err == nil || exit.Code(err) != exit.Failed || asked != 1 || sum.Outcome != migrate.OutcomeFailed || sum.Frozen() {
		t.Fatalf("declined: %v (exit %d), asked %d times, summary %+v", err, exit.Code(err), asked, sum)
	}
	sc := connect(t, srv.SuperURI(src))
	if n := scalar[int64](t, sc, `SELECT count(*) FROM pg_replication_slots WHERE database = current_database()`); n != 0 {
		t.Errorf("declined: %d replication slots left on the source", n)
	}
	if n := scalar[int64](t, sc, `SELECT count(*) FROM pg_publication WHERE pubname <> 'app_pub'`); n != 0 {
		t.Errorf("declined: %d publications left on the source", n)
	}
	if ri := scalar[string](t, sc, `SELECT relreplident::text FROM pg_class WHERE oid = 'nokey'::regclass`); ri != "d" {
		t.Errorf("declined: nokey's replica identity is %q, want d as before", ri)
	}
	if !writable(t, srv, src) {
		t.Fatal("declined: the source is frozen")
	}

	dst := testenv.NewDB(t, srv, false)
	sum, asked, err = run(dst, nil)
	if err != nil || asked != 1 || sum.Outcome != migrate.OutcomeMigrated || sum.DowntimeMs <= 0 {
		t.Fatalf("confirmed: %v, asked %d times, summary %+v", err, asked, sum)
	}
	assertLiveDone(t, srv, src, dst)
}

// Two databases in one live run: a slot each, the changes of both applied, one
// cut-over freezing both; the writer's on the first all there, a change to the second
// made during the run too.
func TestLiveTwoDatabases(t *testing.T) {
	srv, app, appDst, w, stopWriter := liveWithWriter(t)
	extra := testenv.NewDB(t, srv, false)
	extraDst := "t_live_extra_target"
	t.Cleanup(func() {
		srv.Exec(context.Background(), "postgres", "DROP DATABASE IF EXISTS "+extraDst+" WITH (FORCE)")
	})
	testenv.MustExec(t, srv, extra, "CREATE TABLE notes (id serial PRIMARY KEY, body text)", "INSERT INTO notes (body) SELECT 'n' || g FROM generate_series(1, 30) g")
	unfreezeAtCleanup(t, srv, extra)
	liveSlotsAtCleanup(t, srv, extra)
	var once sync.Once
	sum, err := migrate.Run(context.Background(), migrate.Options{Engine: migrate.EngineStream, Live: true, ReplicaIdentityFull: true,
		Source: cfg(t, "source", srv.SuperURI("postgres")), Target: cfg(t, "target", srv.SuperURI("postgres")),
		Databases: []migrate.Mapping{{Source: app, Target: appDst}, {Source: extra, Target: extraDst}},
		Jobs:      2, PgBin: srv.ClientBin(), FreezeGrace: time.Second,
		OnEvent: func(e migrate.Event) {
			if e.Type == migrate.EventLive && e.Live.Stage == "catch-up" {
				once.Do(func() {
					testenv.MustExec(t, srv, extra, "UPDATE notes SET body = 'during' WHERE id = 7", "INSERT INTO notes (body) VALUES ('new')")
				})
			}
		}})
	stopWriter()
	if err != nil {
		t.Fatalf("migrate --live of two databases: %v\n%+v", err, sum)
	}
	if sum.Live == nil || len(sum.Live.Slots) != 2 || sum.DowntimeMs <= 0 || len(sum.Databases) != 2 || sum.Databases[0].LiveSlot == sum.Databases[1].LiveSlot {
		t.Fatalf("summary %+v, live %+v", sum, sum.Live)
	}
	w.check(t, connect(t, srv.SuperURI(appDst)))
	ec := connect(t, srv.SuperURI(extraDst))
	if body := scalar[string](t, ec, "SELECT body FROM notes WHERE id = 7"); body != "during" {
		t.Errorf("notes 7 on the target: %q, want the update made during the run", body)
	}
	if n := scalar[int64](t, ec, "SELECT count(*) FROM notes"); n != 31 {
		t.Errorf("notes on the target: %d rows, want 31", n)
	}
	assertLiveDone(t, srv, app, appDst)
	assertLiveDone(t, srv, extra, extraDst)
}

// Pre-flight checks what --live needs before anything changes: on a source without
// logical decoding, and with a table that has no key (no --replica-identity-full), the
// run is blocked (exit 3) naming both, and the source holds no publication or slot.
func TestLivePreflightBlocks(t *testing.T) {
	srv := testenv.Need(t, testenv.PG17TS, testenv.Options{Settings: map[string]string{"wal_level": "replica"}})
	src, dst := testenv.NewDB(t, srv, true), testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, src, `CREATE TABLE nokey (a int)`)
	sum, err := migrate.Run(context.Background(), migrate.Options{Engine: migrate.EngineStream, Live: true,
		Source: cfg(t, "source", srv.SuperURI(src)), Target: cfg(t, "target", srv.SuperURI(dst)), PgBin: srv.ClientBin()})
	if exit.Code(err) != exit.Blocked || sum == nil || sum.Outcome != migrate.OutcomeBlocked {
		t.Fatalf("migrate --live on a source with wal_level = replica: %v (exit %d), %+v", err, exit.Code(err), sum)
	}
	for _, w := range []string{"live-wal-level: wal_level = replica", "live-replica-identity: of the 1 table and 0 hypertables published, 1 has neither a primary key nor a replica identity: table public.nokey"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%q does not say %q", err, w)
		}
	}
	sc := connect(t, srv.SuperURI(src))
	if n := scalar[int64](t, sc, `SELECT (SELECT count(*) FROM pg_publication) + (SELECT count(*) FROM pg_replication_slots)`); n != 0 {
		t.Errorf("%d publications and slots on the source", n)
	}
}
