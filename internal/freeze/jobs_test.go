package freeze_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/tsmigrate/tsmigrate/internal/freeze"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// jobStates reads every user job's schedule: scheduled, timezone and next start.
func jobStates(t *testing.T, f *fixture) map[int]string {
	t.Helper()
	rows, err := f.session(t).Query(context.Background(), `SELECT j.job_id, format('%s %s %s', j.scheduled, b.timezone, j.next_start)
		FROM timescaledb_information.jobs j JOIN _timescaledb_config.bgw_job b ON b.id = j.job_id WHERE j.job_id >= 1000`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[int]string{}
	for rows.Next() {
		var id int
		var s string
		if err := rows.Scan(&id, &s); err != nil {
			t.Fatal(err)
		}
		out[id] = s
	}
	return out
}

// Needs TimescaleDB's full build (user jobs). A freeze with PauseJobs unschedules the
// scheduled user jobs in its own transaction and records them; each keeps its timezone
// and next start (alter_job alone would clear the one and move the other); an
// unscheduled job stays as it is; the deferred proof holds (the pause's own writes
// are counted before the baseline). Unfreeze schedules them again, from the record,
// as they were.
func TestFreezePausesJobsFullBuild(t *testing.T) {
	f := newFixture(t, testenv.PG17TSL, true)
	ctx := context.Background()
	testenv.MustExec(t, f.srv, f.db,
		`CREATE PROCEDURE tick(job_id int, config jsonb) LANGUAGE plpgsql AS $$ BEGIN END $$`,
		`SELECT add_job('tick', '1 hour', initial_start => now() + interval '1 day', timezone => 'Europe/Paris')`,
		`SELECT add_job('tick', '2 hours', initial_start => now() + interval '2 days', fixed_schedule => false)`,
		`SELECT add_job('tick', '3 hours', initial_start => now() + interval '3 days', scheduled => false)`)
	before := jobStates(t, f)
	var ids []int
	for id := range before {
		ids = append(ids, id)
	}
	slices.Sort(ids)

	res, err := freeze.Freeze(ctx, f.src, freeze.Options{PauseJobs: true, DeferProof: true, ProofWindow: freeze.MinProofWindow})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.PausedJobs, ids[:2]) {
		t.Fatalf("paused %v, want %v", res.PausedJobs, ids[:2])
	}
	if st, err := freeze.Status(ctx, f.src); err != nil || !slices.Equal(st.PausedJobs, ids[:2]) {
		t.Fatalf("status: %+v, %v", st, err)
	}
	paused := jobStates(t, f)
	for i, id := range ids {
		want := before[id]
		if i < 2 {
			want = "f" + want[1:] // t -> f
		}
		if paused[id] != want {
			t.Errorf("job %d while frozen: %s, want %s", id, paused[id], want)
		}
	}
	if _, err := res.Pending.Finish(ctx); err != nil {
		t.Fatalf("the proof after pausing jobs: %v", err)
	}

	u, err := freeze.Unfreeze(ctx, f.src)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(u.JobsScheduled, ids[:2]) || len(u.Notes) != 0 {
		t.Fatalf("unfreeze scheduled %v, notes %v", u.JobsScheduled, u.Notes)
	}
	if after := jobStates(t, f); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("jobs after unfreeze:\n%v\nbefore the freeze:\n%v", after, before)
	}
}
