package live

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/copy"
	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/pgtools"
	"github.com/tsmigrate/tsmigrate/internal/schema"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
	"github.com/tsmigrate/tsmigrate/internal/verify"
)

// liveFixture: a hypertable with a key, one without (FULL), a plain table with a
// TOASTed column, a table without a key, a table that gets truncated.
var liveFixture = []string{
	`CREATE TABLE m (ts timestamptz NOT NULL, dev int NOT NULL, v double precision, note text, PRIMARY KEY (ts, dev))`,
	`SELECT create_hypertable('m', 'ts', chunk_time_interval => interval '1 day')`,
	`INSERT INTO m SELECT '2024-01-01'::timestamptz + g * interval '10 minutes', g % 5, g / 3.0, 'n' || g FROM generate_series(1, 2000) g`,
	`CREATE TABLE events (ts timestamptz NOT NULL, kind text, payload jsonb)`,
	`SELECT create_hypertable('events', 'ts', chunk_time_interval => interval '1 day')`,
	`INSERT INTO events SELECT '2024-01-01'::timestamptz + g * interval '1 hour', 'k' || (g % 3), jsonb_build_object('g', g) FROM generate_series(1, 100) g`,
	`CREATE TABLE docs (id int PRIMARY KEY, title text, body text)`,
	`INSERT INTO docs SELECT g, 't' || g, (SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 400) i) FROM generate_series(1, 50) g`,
	`CREATE TABLE nokey (a int, b text)`,
	`INSERT INTO nokey SELECT g % 10, 'b' || (g % 10) FROM generate_series(1, 40) g`,
	`CREATE TABLE scratchpad (id int PRIMARY KEY, t text)`,
	`INSERT INTO scratchpad SELECT g, 'x' FROM generate_series(1, 20) g`,
}

// liveWrites happen while the live migration runs: a new chunk, updates that leave a
// TOASTed column alone, deletes, equal rows in a table without key, a truncate, a
// transaction bigger than logical_decoding_work_mem (set low for the database).
func liveWrites(round int) []string {
	day := fmt.Sprintf("2024-02-%02d", 1+round)
	return []string{
		fmt.Sprintf(`INSERT INTO m SELECT '%s'::timestamptz + g * interval '1 minute', g %% 5, g, 'new' FROM generate_series(1, 300) g`, day),
		fmt.Sprintf(`UPDATE docs SET title = 'changed %d' WHERE id %% 7 = %d`, round, round),
		fmt.Sprintf(`DELETE FROM docs WHERE id = %d`, 40+round),
		fmt.Sprintf(`UPDATE m SET v = -1, note = 'upd' WHERE ts < '2024-01-02' AND dev = %d`, round%5),
		fmt.Sprintf(`DELETE FROM m WHERE ts >= '2024-01-05' AND ts < '2024-01-06' AND dev = %d`, round%5),
		`INSERT INTO nokey VALUES (100, 'dup'), (100, 'dup')`,
		`UPDATE nokey SET b = 'one of two' WHERE ctid = (SELECT ctid FROM nokey WHERE a = 100 AND b = 'dup' LIMIT 1)`,
		fmt.Sprintf(`DELETE FROM nokey WHERE a = %d`, round),
		fmt.Sprintf(`UPDATE events SET kind = 'seen' WHERE ts < '2024-01-01'::timestamptz + interval '%d hours'`, 10*(round+1)),
		fmt.Sprintf(`INSERT INTO events VALUES ('%s', 'late', '{"x": [1, 2]}')`, day),
		`TRUNCATE scratchpad`,
		fmt.Sprintf(`INSERT INTO scratchpad SELECT g, 'after truncate %d' FROM generate_series(1, 5) g`, round),
		// ~10 MB of changes in one transaction: more than the 64 kB of logical_decoding_work_mem.
		fmt.Sprintf(`INSERT INTO m SELECT '2024-03-01'::timestamptz + g * interval '1 second' + interval '%d days', 7, g, repeat('big', 20) FROM generate_series(1, 40000) g`, round),
	}
}

type livePair struct {
	srv            *testenv.Server
	src, dst       string
	source, target *dbconn.Config
}

func newLivePair(t *testing.T, srv *testenv.Server) livePair {
	t.Helper()
	p := livePair{srv: srv, src: testenv.NewDB(t, srv, true), dst: testenv.NewDB(t, srv, true)}
	testenv.MustExec(t, srv, p.src, liveFixture...)
	for _, db := range []string{p.src, p.dst} {
		testenv.MustExec(t, srv, "postgres", "ALTER DATABASE "+db+" SET logical_decoding_work_mem = '64kB'")
	}
	p.source, p.target = mustParse(t, "source", srv.SuperURI(p.src)), mustParse(t, "target", srv.SuperURI(p.dst))
	return p
}

// start starts a live migration of p (--replica-identity-full) and its state in the
// target; what it made on the source is dropped when the test ends.
func (p livePair) start(t *testing.T) *Stream {
	t.Helper()
	return startOn(t, p.source, p.target, Options{Names: NewNames(), ReplicaIdentityFull: true})
}

// startOn starts a live migration from source into target; what it made on the source
// is dropped when the test ends.
func startOn(t *testing.T, source, target *dbconn.Config, opt Options) *Stream {
	t.Helper()
	ctx := context.Background()
	s, err := Start(ctx, source, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(ctx); Drop(ctx, source, s.Names, s.Identity) })
	if err := Init(ctx, target, s); err != nil {
		t.Fatal(err)
	}
	return s
}

// copyAt copies the source into the target as the stream engine does, in snapshot s.
func (p livePair) copyAt(t *testing.T, s *Stream) {
	t.Helper()
	ctx := context.Background()
	tools, err := pgtools.Find(ctx, pgtools.Options{PgBin: p.srv.ClientBin(), SourceMajor: p.srv.Major, TargetMajor: p.srv.Major})
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), "schema.dump")
	if _, err := schema.DumpSchemaAt(ctx, tools, p.source, archive, s.Snapshot(), nil); err != nil {
		t.Fatal(err)
	}
	tc := dbConn(t, p.srv, p.dst)
	if err := schema.PreRestore(ctx, tc); err != nil {
		t.Fatal(err)
	}
	if _, err := schema.RestoreSection(ctx, tools, p.target, archive, schema.PreData, 1, nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := copy.Run(ctx, copy.Options{Source: p.source, Target: p.target, FreezeID: "live " + s.Slot, Snapshot: s, Jobs: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := schema.RestoreSection(ctx, tools, p.target, archive, schema.PostData, 2, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := schema.PostRestore(ctx, tc); err != nil {
		t.Fatal(err)
	}
}

func (p livePair) verifyIdentical(t *testing.T) {
	t.Helper()
	rep, err := verify.Run(context.Background(), verify.Options{Source: p.source, Target: p.target, ShowRows: 3})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Identical {
		for _, d := range rep.Schema {
			t.Errorf("schema: %s", d)
		}
		for _, u := range rep.Units {
			if !u.Identical {
				t.Errorf("%s: source %d rows, target %d: %s %+v", u.Name(), u.Source.Rows, u.Target.Rows, u.Problem, u.Rows)
			}
		}
		t.FailNow()
	}
}

func receive(t *testing.T, p livePair) *Receiver {
	t.Helper()
	r := &Receiver{Source: p.source, Target: p.target, OnRetry: func(n int, err error) { t.Logf("receiver retry %d: %v", n, err) }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("receiver: %v", err)
		}
	})
	return r
}

// applyToEnd writes the end marker and applies up to it.
func applyToEnd(t *testing.T, p livePair, s *Stream) *Applier {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := EmitEndMarker(ctx, p.source, s.Slot); err != nil {
		t.Fatal(err)
	}
	ap := &Applier{Target: p.target, End: s.Slot}
	if err := ap.Run(ctx); err != nil {
		t.Fatal(err)
	}
	return ap
}

// TestApplyLiveChanges: changes made before, during and after the copy reach the
// target through the hypertables, exactly once, and verify finds both sides identical.
func TestApplyLiveChanges(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	p := newLivePair(t, srv)
	ctx := context.Background()
	s := p.start(t)
	r := receive(t, p)
	testenv.MustExec(t, srv, p.src, liveWrites(0)...)
	p.copyAt(t, s)
	testenv.MustExec(t, srv, p.src, liveWrites(1)...)
	s.Close(ctx)
	ap := applyToEnd(t, p, s)
	st := ap.Status()
	if !st.ReachedEnd || st.Rows < 80000 {
		t.Fatalf("applier: %+v, want the end reached and over 80000 rows", st)
	}
	t.Logf("receiver %+v, applier %+v", r.Status(), st)
	p.verifyIdentical(t)
	tc := dbConn(t, srv, p.dst)
	if n := queryInt(t, tc, `SELECT count(*) FROM _tsmigrate.live_changes WHERE seq <= (SELECT applied_seq FROM _tsmigrate.live)`); n != 0 {
		t.Errorf("%d applied changes still kept", n)
	}
	var touched []string
	rows, _ := tc.Query(ctx, `SELECT kind || ' ' || table_name FROM _tsmigrate.live_touched ORDER BY 1`)
	touched, _ = pgx.CollectRows(rows, pgx.RowTo[string])
	t.Logf("touched: %v", touched)
}
