package copy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/journal"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// testRange splits the fixture's "big" table (about 10 MB) into several ranges.
const testRange = 2 << 20

func TestCopyEqual(t *testing.T) {
	p := newPair(t)
	var mu sync.Mutex
	tr := NewTracker()
	var events []Event
	res, err := Run(context.Background(), Options{Source: p.source(t), Target: p.target(t), Jobs: 4,
		FreezeID: "f1", RangeBytes: testRange, OnEvent: func(e Event) {
			mu.Lock()
			defer mu.Unlock()
			events = append(events, e)
			tr.Observe(e)
		}})
	if err != nil {
		t.Fatal(err)
	}
	p.finish(t)
	p.assertEqual(t)

	// orders (over freezeMinBytes, not split) was loaded with COPY FREEZE: its pages
	// are marked all-frozen as they fill (not every one: a page that one batch of rows
	// began and the next finished is not). A plain COPY leaves none frozen.
	var frozen, pages int
	testenv.MustExec(t, p.srv, p.dst, `CREATE EXTENSION pg_visibility`)
	conn := dbConn(t, p.srv, p.dst)
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE all_frozen), count(*) FROM pg_visibility_map('orders')`).Scan(&frozen, &pages); err != nil {
		t.Fatal(err)
	}
	if pages < 128 || frozen*2 < pages {
		t.Errorf("orders: %d of %d pages frozen", frozen, pages)
	}

	ranges, chunks := 0, 0
	for _, u := range res.Units {
		if strings.HasPrefix(u.ID, "range ") {
			ranges++
		}
		if strings.Contains(u.ID, "_timescaledb_internal") {
			chunks++
		}
	}
	if ranges < 2 || chunks < 60 {
		t.Errorf("copied %d ranges and %d chunks; want the big table split and every chunk a unit", ranges, chunks)
	}
	tot := tr.Totals(time.Now())
	if tot.Done != tot.Units || tot.Fraction != 1 || tot.Rows != res.Rows || res.Rows < 100000 {
		t.Errorf("tracker totals %+v, result rows %d", tot, res.Rows)
	}
	if events[0].Type != Planned || events[len(events)-1].Type != Finished {
		t.Errorf("events run from %s to %s", events[0].Type, events[len(events)-1].Type)
	}
	// A table is announced done once, after the last of its units (a hypertable: chunks).
	tableDone := map[string]int{}
	for i, e := range events {
		if e.Type == TableDone {
			tableDone[e.Relation]++
			continue
		}
		if e.Type == Done && strings.Contains(e.Unit.ID, "_timescaledb_internal._hyper_1_") && tableDone["public.metrics"] > 0 {
			t.Errorf("event %d: chunk %s done after its hypertable", i, e.Unit.ID)
		}
	}
	for _, tbl := range []string{"public.metrics", "public.counters", "public.big", "public.devices", "public.parted_1"} {
		if tableDone[tbl] != 1 {
			t.Errorf("table-done for %s sent %d times", tbl, tableDone[tbl])
		}
	}

	// A second run finds everything done and copies nothing.
	res, err = Run(context.Background(), Options{Source: p.source(t), Target: p.target(t), FreezeID: "f1"})
	if err != nil || len(res.Units) != 0 || res.Skipped == 0 {
		t.Fatalf("rerun copied %d units, skipped %d, err %v", len(res.Units), res.Skipped, err)
	}
	// Another freeze is refused.
	_, err = Run(context.Background(), Options{Source: p.source(t), Target: p.target(t), FreezeID: "f2"})
	var fm *FreezeMismatchError
	if !errors.As(err, &fm) || fm.Recorded != "f1" {
		t.Fatalf("run under another freeze: %v", err)
	}
}

func TestTargetRejectsRow(t *testing.T) {
	p := newPair(t)
	ctx := context.Background()
	if err := p.srv.Exec(ctx, p.dst, `ALTER TABLE orders ADD CONSTRAINT small_amount CHECK (amount < 100)`); err != nil {
		t.Fatal(err)
	}
	_, err := Run(ctx, Options{Source: p.source(t), Target: p.target(t), Jobs: 2, FreezeID: "f", RangeBytes: testRange})
	var ue *UnitError
	if !errors.As(err, &ue) {
		t.Fatalf("want a UnitError, got %v", err)
	}
	msg := err.Error()
	for _, want := range []string{"public.orders", "target", `violates check constraint "small_amount"`, "23514"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not name %q", msg, want)
		}
	}
	if transient(err) {
		t.Errorf("a rejected row counted as transient")
	}
}

// Small chunks go in batches (see copyBatch); a row that the target refuses in one
// fails the batch, whose units are then copied one at a time: the run stops on the
// chunk that holds the row, saying so as for a unit of its own, at its first attempt.
func TestBatchRowRefused(t *testing.T) {
	p := newPair(t)
	ctx := context.Background()
	var chunk string
	if err := dbConn(t, p.srv, p.dst).QueryRow(ctx, `SELECT inhrelid::regclass::text FROM pg_inherits
		WHERE inhparent = 'metrics'::regclass ORDER BY inhrelid OFFSET 3 LIMIT 1`).Scan(&chunk); err != nil {
		t.Fatal(err)
	}
	testenv.MustExec(t, p.srv, p.dst, `ALTER TABLE `+chunk+` ADD CONSTRAINT no_rows CHECK (v < 0)`)
	var failed []Event
	_, err := Run(ctx, Options{Source: p.source(t), Target: p.target(t), Jobs: 2, FreezeID: "f", RangeBytes: testRange,
		BatchUnits: 8, OnEvent: func(e Event) {
			if e.Type == Failed {
				failed = append(failed, e)
			}
		}})
	var ue *UnitError
	if !errors.As(err, &ue) {
		t.Fatalf("want a UnitError, got %v", err)
	}
	for _, want := range []string{"table " + chunk, "target", `violates check constraint "no_rows"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if len(failed) != 1 || failed[0].Unit.Relation != chunk || failed[0].Attempt != 1 {
		t.Errorf("failed events %+v, want one for %s at attempt 1", failed, chunk)
	}
	var done int
	if err := dbConn(t, p.srv, p.dst).QueryRow(ctx, `SELECT count(*) FROM _tsmigrate.units WHERE state = 'done' AND id = 'table ' || $1`, chunk).Scan(&done); err != nil || done != 0 {
		t.Errorf("the refused chunk is marked done (%d, %v)", done, err)
	}
}

// A batch whose rows are more than it may hold in memory (estimates can be stale) is
// given up, and its units are copied one at a time, streamed: every unit once, at its
// first attempt of its own, and the data equal.
func TestBatchBeyondItsMemory(t *testing.T) {
	p := newPair(t)
	defer func(n int) { batchMaxBuffered = n }(batchMaxBuffered)
	batchMaxBuffered = 32 << 10 // less than any two of the fixture's metrics chunks
	var mu sync.Mutex
	started := map[string]int{}
	res, err := Run(context.Background(), Options{Source: p.source(t), Target: p.target(t), Jobs: 2, FreezeID: "f",
		RangeBytes: testRange, BatchUnits: 8, OnEvent: func(e Event) {
			if e.Type == Started {
				mu.Lock()
				started[e.Unit.ID]++
				mu.Unlock()
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	again := 0
	for _, u := range res.Units {
		if u.Attempts != 1 {
			t.Errorf("unit %s: %d attempts, want 1", u.ID, u.Attempts)
		}
		if started[u.ID] > 1 {
			again++
		}
	}
	if again == 0 {
		t.Error("no unit was started again alone after its batch was given up")
	}
	if units := journalUnits(t, p); len(units) != len(res.Units) {
		t.Errorf("%d units copied, %d done in the journal", len(res.Units), len(units))
	}
	p.finish(t)
	p.assertEqual(t)
}

func TestTwoRunsShareMigration(t *testing.T) {
	p := newPair(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	results := make([]*Result, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() {
			results[i], errs[i] = Run(ctx, Options{Source: p.source(t), Target: p.target(t), Jobs: 2,
				FreezeID: "f", RangeBytes: testRange})
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]int{}
	for _, r := range results {
		for _, u := range r.Units {
			seen[u.ID]++
		}
	}
	units := journalUnits(t, p)
	for _, id := range units {
		if seen[id] != 1 {
			t.Errorf("unit %s copied %d times", id, seen[id])
		}
	}
	if len(seen) != len(units) {
		t.Errorf("%d units copied, journal has %d", len(seen), len(units))
	}
	if len(results[0].Units) == 0 || len(results[1].Units) == 0 {
		t.Errorf("one run did all the work: %d and %d units", len(results[0].Units), len(results[1].Units))
	}
	p.finish(t)
	p.assertEqual(t)
}

func journalUnits(t *testing.T, p pair) []string {
	t.Helper()
	ctx := context.Background()
	rows, _ := dbConn(t, p.srv, p.dst).Query(ctx, `SELECT id FROM _tsmigrate.units WHERE state = 'done'`)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// childEnv makes the test binary a copying process (see childMain).
const childEnv = "TSMIGRATE_COPY_TEST_CHILD"

// childMain runs one copy from the source to the target named in childEnv.
func childMain() {
	src, dst, _ := strings.Cut(os.Getenv(childEnv), "\t")
	s, err := dbconn.Parse("source", src)
	if err == nil {
		var d *dbconn.Config
		if d, err = dbconn.Parse("target", dst); err == nil {
			_, err = Run(context.Background(), Options{Source: s, Target: d, Jobs: 2, FreezeID: "f", RangeBytes: testRange / 4})
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

func TestResumeAfterKill(t *testing.T) {
	p := newPair(t)
	ctx := context.Background()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+p.srv.SuperURI(p.src)+"\t"+p.srv.SuperURI(p.dst))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	conn := dbConn(t, p.srv, p.dst)
	// Kill it once a few data units (not just the configuration tables) are done.
	const countSQL = `SELECT count(*) FILTER (WHERE state = 'done' AND phase = 1), count(*) FILTER (WHERE state = 'done'), count(*) FROM _tsmigrate.units`
	deadline := time.Now().Add(60 * time.Second)
	var dataDone, done, total int
	for time.Now().Before(deadline) {
		err := conn.QueryRow(ctx, countSQL).Scan(&dataDone, &done, &total)
		if err == nil && dataDone >= 5 {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	err := cmd.Wait()
	// The child's sessions end when the server notices; a commit already sent may
	// still land until then.
	for n := 1; n > 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = 'tsmigrate'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
	}
	if err := conn.QueryRow(ctx, countSQL).Scan(&dataDone, &done, &total); err != nil {
		t.Fatal(err)
	}
	if dataDone < 5 || done >= total || err == nil {
		t.Fatalf("child killed with %d of %d units done (exit %v): %s", done, total, err, stderr.String())
	}
	t.Logf("killed with %d of %d units done", done, total)
	if run, err := journal.Read(ctx, conn); err != nil || run.Running != 0 || run.Done != done {
		t.Fatalf("journal after the kill: %+v %v (want nothing running, %d done)", run, err, done)
	}

	res, err := Run(ctx, Options{Source: p.source(t), Target: p.target(t), Jobs: 2, FreezeID: "f"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Skipped != done || len(res.Units)+res.Skipped != total {
		t.Errorf("resume skipped %d, copied %d; %d were done of %d", res.Skipped, len(res.Units), done, total)
	}
	p.finish(t)
	p.assertEqual(t)
}

func TestSnapshotGone(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	p := pair{srv: srv, src: testenv.NewDB(t, srv, true), dst: testenv.NewDB(t, srv, true)}
	ctx := context.Background()
	snap, err := ExportSnapshot(ctx, p.source(t))
	if err != nil {
		t.Fatal(err)
	}
	snap.Close(ctx) // the holding transaction ends: the snapshot can no longer be imported
	_, err = Run(ctx, Options{Source: p.source(t), Target: p.target(t), FreezeID: "f", Snapshot: snap})
	var xe *exit.Error
	if !errors.As(err, &xe) || !strings.Contains(err.Error(), "the source snapshot is gone") || !strings.Contains(err.Error(), "resume") {
		t.Fatalf("run with an ended snapshot: %v", err)
	}
}

func TestRangesRefuseRewrittenTable(t *testing.T) {
	p := newPair(t)
	ctx := context.Background()
	opts := Options{Source: p.source(t), Target: p.target(t), Jobs: 4, FreezeID: "f", RangeBytes: testRange}
	// The first run plans big in ranges and fails on them, leaving them pending.
	testenv.MustExec(t, p.srv, p.dst, `ALTER TABLE big ADD CONSTRAINT never CHECK (id < 0)`)
	if _, err := Run(ctx, opts); err == nil || !strings.Contains(err.Error(), "never") {
		t.Fatalf("first run: %v", err)
	}
	testenv.MustExec(t, p.srv, p.dst, `ALTER TABLE big DROP CONSTRAINT never`)
	testenv.MustExec(t, p.srv, p.src, `VACUUM FULL big`)
	retries := 0
	opts.OnEvent = func(e Event) {
		if e.Type == Retry {
			retries++
		}
	}
	_, err := Run(ctx, opts)
	if err == nil || !strings.Contains(err.Error(), "table public.big was rewritten on the source") || retries > 0 {
		t.Fatalf("resume after VACUUM FULL: %v (after %d retries)", err, retries)
	}
}

// A unit runs its table's PostSQL in the transaction that copies its rows: the index
// is there when the unit is done, and SQL that fails takes the unit's rows with it. A
// table copied in ranges runs it in a unit of its own once its ranges are done.
func TestUnitRunsPostSQLWithItsRows(t *testing.T) {
	p := newPair(t)
	ctx := context.Background()
	post := func(bad bool) func(schema, table string) string {
		return func(schema, table string) string {
			switch {
			case table == "devices" && bad:
				return `CREATE UNIQUE INDEX devices_one ON public.devices ((1))`
			case table == "devices":
				return `CREATE INDEX devices_name_early ON public.devices (name)`
			case table == "big":
				return `CREATE INDEX big_payload_early ON public.big (payload)`
			}
			return ""
		}
	}
	_, err := Run(ctx, Options{Source: p.source(t), Target: p.target(t), Jobs: 2, FreezeID: "f", RangeBytes: testRange, PostSQL: post(true)})
	var ue *UnitError
	if !errors.As(err, &ue) {
		t.Fatalf("want a UnitError, got %v", err)
	}
	for _, want := range []string{"public.devices", "indexes and constraints", `could not create unique index "devices_one"`, "23505"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	dst := dbConn(t, p.srv, p.dst)
	var rows, idx int
	if err := dst.QueryRow(ctx, `SELECT (SELECT count(*) FROM devices), (SELECT count(*) FROM pg_indexes WHERE indexname = 'devices_one')`).Scan(&rows, &idx); err != nil {
		t.Fatal(err)
	}
	if rows != 0 || idx != 0 {
		t.Fatalf("after the failed unit the target holds %d devices rows and %d of its index", rows, idx)
	}

	// A new migration on a fresh target: the index comes with the rows.
	p = newPair(t)
	if _, err := Run(ctx, Options{Source: p.source(t), Target: p.target(t), Jobs: 2, FreezeID: "f", RangeBytes: testRange, PostSQL: post(false)}); err != nil {
		t.Fatal(err)
	}
	dst = dbConn(t, p.srv, p.dst)
	var indexed bool
	if err := dst.QueryRow(ctx, `SELECT count(*), EXISTS (SELECT FROM pg_indexes WHERE indexname = 'devices_name_early') FROM devices`).Scan(&rows, &indexed); err != nil {
		t.Fatal(err)
	}
	if rows != 200 || !indexed {
		t.Fatalf("devices: %d rows, index built: %v; want 200 and true", rows, indexed)
	}
	// Table big, copied in ranges, gets its index from a unit of its own, done after
	// every range of it.
	var ranges int
	var after bool
	if err := dst.QueryRow(ctx, `
SELECT (SELECT count(*) FROM _tsmigrate.units WHERE kind = 'range' AND table_name = 'big'),
       (SELECT done_at FROM _tsmigrate.units WHERE kind = 'indexes' AND table_name = 'big')
         >= (SELECT max(done_at) FROM _tsmigrate.units WHERE kind = 'range' AND table_name = 'big'),
       EXISTS (SELECT FROM pg_indexes WHERE indexname = 'big_payload_early')`).Scan(&ranges, &after, &indexed); err != nil {
		t.Fatal(err)
	}
	if ranges < 2 || !after || !indexed {
		t.Fatalf("big: %d ranges, indexes unit done after them: %v, index built: %v", ranges, after, indexed)
	}
}
