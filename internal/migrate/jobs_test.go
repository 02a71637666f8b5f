package migrate_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/freeze"
	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// jobsSource makes a source on the full build whose jobs write when they run (into
// job_log): A on a fixed schedule in a time zone, next tomorrow; B not on a fixed
// schedule, next in two days; C not scheduled; and a compression policy, next
// tomorrow. It returns the jobs' ids.
func jobsSource(t *testing.T, srv *testenv.Server, db string) []int {
	t.Helper()
	testenv.MustExec(t, srv, db,
		"CREATE TABLE job_log (job int, at timestamptz DEFAULT now())",
		`CREATE PROCEDURE log_run(job_id int, config jsonb) LANGUAGE plpgsql AS $$ BEGIN INSERT INTO public.job_log (job) VALUES (job_id); END $$`,
		"CREATE TABLE m (t timestamptz NOT NULL, v int)",
		"SELECT create_hypertable('m', by_range('t', interval '1 day'))",
		"INSERT INTO m SELECT '2025-01-01'::timestamptz + g * interval '1 hour', g FROM generate_series(0, 71) g",
		"ALTER TABLE m SET (timescaledb.compress)",
		"SELECT add_compression_policy('m', interval '7 days', initial_start => now() + interval '1 day')",
		"SELECT add_job('log_run', '1 hour', initial_start => now() + interval '1 day', timezone => 'Europe/Paris')",
		"SELECT add_job('log_run', '2 hours', initial_start => now() + interval '2 days', fixed_schedule => false)",
		"SELECT add_job('log_run', '3 hours', initial_start => now() + interval '3 hours', scheduled => false)")
	c := connect(t, srv.SuperURI(db))
	rows, err := c.Query(context.Background(), "SELECT job_id FROM timescaledb_information.jobs WHERE job_id >= 1000 ORDER BY 1")
	if err != nil {
		t.Fatal(err)
	}
	var ids []int
	for rows.Next() {
		var id int
		rows.Scan(&id)
		ids = append(ids, id)
	}
	if len(ids) != 4 {
		t.Fatalf("jobs %v", ids)
	}
	return ids
}

// jobsPair makes a jobsSource database and an empty target on the full build; it
// returns the source's jobs and their schedules.
func jobsPair(t *testing.T) (srv *testenv.Server, src, dst string, ids []int, schedules string) {
	srv = testenv.Shared(t, testenv.PG17TSL)
	src, dst = testenv.NewDB(t, srv, true), testenv.NewDB(t, srv, false)
	ids = jobsSource(t, srv, src)
	unfreezeAtCleanup(t, srv, src)
	return srv, src, dst, ids, jobSchedules(t, srv, src)
}

// jobSchedules reads each user job's id, scheduled, timezone and next start.
func jobSchedules(t *testing.T, srv *testenv.Server, db string) string {
	t.Helper()
	return scalar[string](t, connect(t, srv.SuperURI(db)), `SELECT string_agg(format('%s %s %s %s', j.job_id, j.scheduled, b.timezone, j.next_start), E'\n' ORDER BY j.job_id)
		FROM timescaledb_information.jobs j JOIN _timescaledb_config.bgw_job b ON b.id = j.job_id WHERE j.job_id >= 1000`)
}

// No TimescaleDB job runs on the target before the run's own verify is done, with
// either engine (issue 10, item 10: the stream engine let the target's scheduler run
// every job right after timescaledb_post_restore()); then each job of the target is
// scheduled as on the source, to run next when it would have there, its timezone kept
// (item 11: next_start was lost with both engines), and the summary says when each
// runs. The source's jobs stay paused while it is frozen; unfreeze schedules them
// again as they were.
func TestJobSchedulesFullBuild(t *testing.T) {
	for _, engine := range []string{migrate.EngineStream, migrate.EngineDump} {
		t.Run(engine, func(t *testing.T) {
			srv, src, dst, ids, before := jobsPair(t)

			scheduledAtVerify := -1
			sum, err := migrate.Run(context.Background(), migrate.Options{
				Source: cfg(t, "source", srv.URI(src)), Target: cfg(t, "target", srv.URI(dst)),
				Engine: engine, Jobs: 2, PgBin: srv.ClientBin(), FreezeGrace: time.Second,
				OnEvent: func(e migrate.Event) {
					if e.Type == migrate.EventPhase && e.Phase == migrate.PhaseVerify {
						scheduledAtVerify = scalar[int](t, connect(t, srv.SuperURI(dst)),
							"SELECT count(*) FROM timescaledb_information.jobs WHERE job_id >= 1000 AND scheduled")
					}
				},
			})
			if err != nil {
				b, _ := json.MarshalIndent(sum, "", "  ")
				t.Fatalf("migrate: %v\n%s", err, b)
			}
			if scheduledAtVerify != 0 {
				t.Errorf("%d jobs were scheduled on the target while the run verified it", scheduledAtVerify)
			}
			if got := jobSchedules(t, srv, dst); got != before {
				t.Errorf("the target's jobs:\n%s\nthe source's before the run:\n%s", got, before)
			}
			g := connect(t, srv.SuperURI(dst))
			if n := scalar[int](t, g, "SELECT count(*) FROM public.job_log"); n != 0 {
				t.Errorf("jobs ran %d times on the target", n)
			}
			d := sum.Databases[0]
			if !slices.Equal(d.PausedJobs, []int{ids[0], ids[1], ids[2]}) {
				t.Errorf("paused jobs %v, want the three scheduled of %v", d.PausedJobs, ids)
			}
			var when []string
			for _, j := range d.Jobs {
				when = append(when, fmt.Sprintf("%d %s", j.ID, j.When()))
			}
			next := func(id int) string {
				return scalar[time.Time](t, g, "SELECT next_start FROM timescaledb_information.jobs WHERE job_id = $1", id).UTC().Format(time.RFC3339)
			}
			want := []string{
				fmt.Sprintf("%d next at %s", ids[0], next(ids[0])),
				fmt.Sprintf("%d next at %s", ids[1], next(ids[1])),
				fmt.Sprintf("%d next at %s", ids[2], next(ids[2])),
				fmt.Sprintf("%d not scheduled", ids[3]),
			}
			slices.Sort(when)
			if strings.Join(when, "\n") != strings.Join(want, "\n") {
				t.Errorf("the summary's jobs:\n%s\nwant:\n%s", strings.Join(when, "\n"), strings.Join(want, "\n"))
			}
			b, _ := json.Marshal(d)
			if !strings.Contains(string(b), `"jobs":[{"job":"job `) || !strings.Contains(string(b), `"next_start":"`) {
				t.Errorf("the JSON summary does not give the jobs' schedules: %s", b)
			}

			paused := jobSchedules(t, srv, src)
			if strings.Count(paused, " true ") != 0 {
				t.Errorf("the frozen source's jobs are scheduled:\n%s", paused)
			}
			code, out, errOut := runCLI(t, "unfreeze", "--source", srv.URI(src))
			if code != 0 || !strings.Contains(out, "the TimescaleDB jobs the freeze paused were scheduled again") {
				t.Fatalf("unfreeze: exit %d\n%s\n%s", code, out, errOut)
			}
			if got := jobSchedules(t, srv, src); got != before {
				t.Errorf("the source's jobs after unfreeze:\n%s\nbefore the run:\n%s", got, before)
			}
		})
	}
}

// A dump-engine run killed (SIGKILL) once the source's jobs are paused and the source
// frozen: tsmigrate unfreeze gives writes back and schedules the jobs again as they were,
// from the freeze record (issue 10, item 12: they stayed unscheduled for good).
func TestKilledRunUnfreezeSchedulesJobsFullBuild(t *testing.T) {
	srv, src, dst, ids, before := jobsPair(t)
	// A session from before the freeze keeps the freeze waiting (its grace) while
	// tsmigrate is killed.
	idle := connect(t, srv.SuperURI(src))
	scalar[int](t, idle, "SELECT 1")

	p := startTsmigrate(t, testenv.Binary(t), "migrate", "--engine", "dump", "--yes", "--freeze-grace", "60s", "--json",
		"--pg-bin", srv.ClientBin(), "--source", srv.URI(src), "--target", srv.URI(dst))
	probe := connect(t, srv.SuperURI("postgres"))
	testenv.Eventually(t, 60*time.Second, func() error {
		n := scalar[int](t, probe, fmt.Sprintf(`SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
			WHERE d.datname = '%s' AND array_to_string(s.setconfig, ',') LIKE '%%tsmigrate.freeze_record%%'`, src))
		if n == 0 {
			return errors.New("the run did not freeze the source")
		}
		return nil
	})
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.cmd.Wait()
	idle.Close(context.Background())
	s := connect(t, srv.SuperURI(src))
	if n := scalar[int](t, s, "SELECT count(*) FROM timescaledb_information.jobs WHERE job_id >= 1000 AND scheduled"); n != 0 {
		t.Fatalf("killed with %d of the source's jobs %v still scheduled: not after the pause", n, ids)
	}

	code, out, errOut := runCLI(t, "unfreeze", "--source", srv.URI(src), "--json")
	if code != 0 {
		t.Fatalf("unfreeze: exit %d\n%s\n%s", code, out, errOut)
	}
	if !writable(t, srv, src) {
		t.Fatal("the source is still frozen after unfreeze")
	}
	if got := jobSchedules(t, srv, src); got != before {
		t.Fatalf("the source's jobs after unfreeze:\n%s\nbefore the run:\n%s\nunfreeze said: %s", got, before, out)
	}
}

// killedRehearsal starts a stream rehearsal of a source with jobs (jobsPair) and
// SIGKILLs it once it has paused the source's jobs: its target's answer to the journal's
// creation, which comes after the pause, is held by a proxy.
func killedRehearsal(t *testing.T) (srv *testenv.Server, src string, ids []int, before string) {
	t.Helper()
	srv, src, dst, ids, before := jobsPair(t)
	proxy := testenv.StartProxy(t, srv)
	held := proxy.HoldAnswerTo("CREATE SCHEMA IF NOT EXISTS _tsmigrate", 5*time.Minute)
	p := startTsmigrate(t, testenv.Binary(t), "migrate", "--rehearsal", "--yes", "--json",
		"--pg-bin", srv.ClientBin(), "--source", srv.URI(src), "--target", proxy.URI(t, srv.URI(dst)))
	select {
	case <-held:
	case <-p.done:
		t.Fatalf("the rehearsal ended before it made its journal\n%s", p.stdout.String())
	case <-time.After(3 * time.Minute):
		t.Fatal("the rehearsal did not get to its journal")
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.cmd.Wait()
	if got := jobSchedules(t, srv, src); strings.Count(got, " true ") != 0 {
		t.Fatalf("killed with the source's jobs scheduled: not after the pause\n%s", got)
	}
	return srv, src, ids, before
}

// A rehearsal, which freezes nothing, pauses the source's jobs while it reads; killed
// (SIGKILL) then, it left them unscheduled for good and said so nowhere (the retention,
// compression and refresh policies of the production database stopped). It records
// them on the source now: freeze-status names them, unfreeze schedules them again as
// they were, and the freeze of a real migration takes them over (the target gets them
// scheduled, and its unfreeze schedules them on the source).
func TestKilledRehearsalJobsScheduledAgainFullBuild(t *testing.T) {
	t.Run("unfreeze", func(t *testing.T) {
		srv, src, ids, before := killedRehearsal(t)
		code, out, errOut := runCLI(t, "freeze-status", "--source", srv.URI(src), "--json")
		var st freeze.State
		if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil {
			t.Fatalf("freeze-status: exit %d, %v\n%s\n%s", code, err, out, errOut)
		}
		if st.Frozen || !slices.Equal(st.RehearsalPausedJobs, ids[:3]) {
			t.Fatalf("freeze-status: frozen %v, jobs a rehearsal paused %v; want not frozen and the three scheduled of %v", st.Frozen, st.RehearsalPausedJobs, ids)
		}
		code, out, errOut = runCLI(t, "unfreeze", "--source", srv.URI(src))
		if code != 0 || !strings.Contains(out, "which a tsmigrate rehearsal paused") {
			t.Fatalf("unfreeze: exit %d\n%s\n%s", code, out, errOut)
		}
		if got := jobSchedules(t, srv, src); got != before {
			t.Fatalf("the source's jobs after unfreeze:\n%s\nbefore the rehearsal:\n%s\nunfreeze said: %s", got, before, out)
		}
		if _, out, _ := runCLI(t, "freeze-status", "--source", srv.URI(src)); strings.Contains(out, "rehearsal") {
			t.Fatalf("freeze-status after unfreeze still names a rehearsal's jobs:\n%s", out)
		}
	})
	t.Run("migrate", func(t *testing.T) {
		srv, src, _, before := killedRehearsal(t)
		dst := testenv.NewDB(t, srv, false)
		code, out, errOut := runCLI(t, "migrate", "--yes", "--freeze-grace", "1s", "--pg-bin", srv.ClientBin(),
			"--source", srv.URI(src), "--target", srv.URI(dst))
		if code != 0 {
			t.Fatalf("migrate: exit %d\n%s\n%s", code, out, errOut)
		}
		if got := jobSchedules(t, srv, dst); got != before {
			t.Errorf("the target's jobs:\n%s\nthe source's before the rehearsal:\n%s", got, before)
		}
		if code, out, errOut := runCLI(t, "unfreeze", "--source", srv.URI(src)); code != 0 {
			t.Fatalf("unfreeze: exit %d\n%s\n%s", code, out, errOut)
		}
		if got := jobSchedules(t, srv, src); got != before {
			t.Errorf("the source's jobs after the migration's unfreeze:\n%s\nbefore the rehearsal:\n%s", got, before)
		}
	})
}
