package migrate_test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// A rehearsal with the stream engine, while a writer keeps inserting (new chunks
// among its rows): nothing is frozen and no write fails; the schema and the rows are
// read in one snapshot, so the chunks made meanwhile break nothing; verify runs; the
// summary gives the projected downtime and the rows the source changed meanwhile; the
// target is left for inspection, with the steps to reset it, or dropped with
// --reset-target, which wants a target database the rehearsal creates.
func TestStreamRehearsal(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src := testenv.NewDB(t, srv, true)
	dst := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, src, "CREATE TABLE m (t timestamptz NOT NULL, v int)",
		"SELECT create_hypertable('m', 't', chunk_time_interval => interval '1 day')",
		"INSERT INTO m SELECT '2025-01-01'::timestamptz + g * interval '10 minutes', g FROM generate_series(1, 20000) g",
		"CREATE TABLE p (id serial PRIMARY KEY, body text)", "INSERT INTO p (body) SELECT md5(g::text) FROM generate_series(1, 20000) g")

	ctx, stop := context.WithCancel(context.Background())
	var written, failed atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ctx.Err() == nil; i++ {
			// A row in a new day each time: a new chunk on the source.
			if err := srv.Exec(context.Background(), src, "INSERT INTO m VALUES ('2030-01-01'::timestamptz + interval '1 day' * "+strconv.Itoa(i)+", 1)",
				"INSERT INTO p (body) VALUES ('written during the rehearsal')"); err != nil {
				failed.Add(1)
				t.Logf("write: %v", err)
			} else {
				written.Add(1)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	rehearse := func(target string, extra ...string) (int, migrate.Summary, string) {
		args := append([]string{"migrate", "--rehearsal", "--jobs", "2", "--pg-bin", srv.ClientBin(), "--progress", "plain",
			"--source", srv.URI(src), "--target", srv.URI(target), "--json"}, extra...)
		code, out, errOut := runCLI(t, args...)
		var sum migrate.Summary
		if err := json.Unmarshal([]byte(out), &sum); err != nil {
			t.Fatalf("exit %d, %v\n%s\n%s", code, err, out, errOut)
		}
		return code, sum, errOut
	}
	code, sum, errOut := rehearse(dst)
	scratch := "t_stream_rehearsal_scratch"
	t.Cleanup(func() { srv.Exec(context.Background(), "postgres", "DROP DATABASE IF EXISTS "+scratch+" WITH (FORCE)") })
	code2, sum2, errOut2 := rehearse(scratch, "--reset-target", "--no-verify")
	codeRefused, _, errRefused := rehearse(dst, "--reset-target")
	stop()
	<-done
	if code != 0 || code2 != 0 {
		t.Fatalf("exit %d and %d (--reset-target)\n%s\n%s", code, code2, errOut, errOut2)
	}
	if failed.Load() > 0 || written.Load() == 0 {
		t.Fatalf("writer: %d written, %d failed; a rehearsal must not stop writes", written.Load(), failed.Load())
	}
	for _, s := range []migrate.Summary{sum, sum2} {
		if s.Engine != migrate.EngineStream || s.Outcome != migrate.OutcomeRehearsed || s.Frozen() || s.ProjectedDowntime <= migrate.FreezeAllowance ||
			s.SourceChanges == nil || s.SourceChanges.Inserted == 0 {
			t.Fatalf("summary %+v", s)
		}
		for _, p := range s.Phases {
			if p.Phase == migrate.PhaseFreeze || p.Phase == migrate.PhaseProve {
				t.Fatalf("a rehearsal ran phase %s", p.Phase)
			}
		}
	}
	if d := sum.Databases[0]; d.Verify == nil || d.Data == nil || d.Data.Units == 0 || d.FreezeID != "" || len(sum.ResetTarget) == 0 || sum.TargetReset {
		t.Fatalf("without --reset-target: verify %v, data %+v, freeze id %q, reset steps %q, reset %v", d.Verify != nil, d.Data, d.FreezeID, sum.ResetTarget, sum.TargetReset)
	}
	g := connect(t, srv.SuperURI(dst))
	if n := scalar[int64](t, g, "SELECT count(*) FROM p"); n < 20000 {
		t.Errorf("the target left for inspection holds %d rows of p", n)
	}
	// One snapshot: every chunk table on the target is one TimescaleDB's catalog knows
	// (a schema read after the rows would hold chunks made in between, unknown to it).
	tables := scalar[int64](t, g, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'm'::regclass")
	if chunks := scalar[int64](t, g, "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'm'"); tables != chunks || chunks < 100 {
		t.Errorf("the target holds %d chunk tables of m, and its TimescaleDB catalog %d chunks", tables, chunks)
	}
	if !sum2.TargetReset || len(sum2.ResetTarget) != 0 ||
		scalar[bool](t, g, "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", scratch) {
		t.Errorf("--reset-target: reset %v, steps %q; the target database must be gone", sum2.TargetReset, sum2.ResetTarget)
	}
	if !strings.Contains(errOut2, "dropped database "+scratch+" again on the target (the rehearsal's target, --reset-target)") {
		t.Errorf("--reset-target does not say it dropped %s:\n%s", scratch, errOut2)
	}
	if codeRefused != 2 || !strings.Contains(errRefused, "target database "+dst+" exists already") {
		t.Errorf("--reset-target into an existing database: exit %d\n%s", codeRefused, errRefused)
	}
	if !writable(t, srv, src) {
		t.Fatal("the source is not writable after the rehearsal")
	}
}
