package migrate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/freeze"
	"github.com/tsmigrate/tsmigrate/internal/verify"
)

// TimescaleDB's scheduled jobs (user jobs: ids from 1000, policies and add_job jobs).
//
// No job may run on the target before the run has verified it (a refresh policy, a
// user job that writes, would change what verify certifies), and every job must then
// run when it would have on the source. So:
//   - the freeze pauses the source's scheduled jobs in its own transaction and records
//     them (freeze.Options.PauseJobs): the dump or copy carries them unscheduled, the
//     target's scheduler, started by timescaledb_post_restore(), runs none of them, and
//     verify compares both sides paused; unfreeze schedules them again on the source,
//     from the freeze record, even after a SIGKILL. A rehearsal, which does not freeze,
//     pauses them itself for the dump (a parallel pg_dump can deadlock against policies
//     holding ACCESS EXCLUSIVE locks) and schedules them again at its end;
//   - once verified, the target's jobs get the source's schedules (scheduleTargetJobs):
//     scheduled as the source had them before the pause, and the source's next start
//     (bgw_job_stat is never dumped: without it a job runs the moment the scheduler sees
//     it) and timezone (alter_job clears it unless given again).
//
// Jobs are paired by what they act on (verify.UserJobs names them), not by id: the
// same on both sides when TimescaleDB's catalog is restored, not otherwise.
const (
	// sqlJobSchedules is each user job's name, id, whether it is scheduled, its next
	// start (NULL when the scheduler never planned it, or -infinity while it runs) and
	// its timezone (only in bgw_job: _timescaledb_config.bgw_job, a view from 2.25).
	// TimescaleDB 2.19.3, full build.
	sqlJobSchedules = `SELECT j.job_name, j.job_id, j.scheduled, CASE WHEN isfinite(j.next_start) THEN j.next_start END, b.timezone
FROM ` + verify.UserJobs + ` AS j JOIN _timescaledb_config.bgw_job b ON b.id = j.job_id
ORDER BY 1`
	// sqlSetSchedule gives job $1 its schedule: scheduled $2, next start $3 (NULL leaves
	// it unplanned), timezone $4. alter_job is found by sqlTimescalePath.
	sqlSetSchedule = `SELECT job_id FROM alter_job($1, scheduled => $2, next_start => $3, timezone => $4)`
	// sqlWritable lets tsmigrate's own session write on a frozen source (the freeze is
	// the database's default_transaction_read_only).
	sqlWritable = `SET default_transaction_read_only = off`
	// sqlTimescalePath finds TimescaleDB's functions (alter_job, show_chunks, ...) in its
	// schema whatever search_path the database gives, such as one without public (the
	// target has the source database's after the copy). PostgreSQL 15, 17.
	sqlTimescalePath = `SELECT set_config('search_path', format('%I, pg_catalog', n.nspname), false)
	FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'timescaledb'`
)

// JobSchedule is when a TimescaleDB job runs: as read from the source, and as given
// to the target.
type JobSchedule struct {
	// Job names the job by what it acts on ("job _timescaledb_functions.policy_compression
	// on public.m", "job public.tick on the database").
	Job string `json:"job"`
	// ID is the job's id (on the target, in a summary).
	ID        int  `json:"id"`
	Scheduled bool `json:"scheduled"`
	// NextStart is when the scheduler starts it next; nil when the source's scheduler
	// had not planned it yet: the target's runs it as soon as it sees it, as the
	// source's would have.
	NextStart *time.Time `json:"next_start,omitempty"`
	Timezone  *string    `json:"timezone,omitempty"`
}

// When says when the job runs next, in words.
func (j JobSchedule) When() string {
	switch {
	case !j.Scheduled:
		return "not scheduled"
	case j.NextStart == nil:
		return "as soon as the target's scheduler sees it (never planned on the source)"
	}
	return "next at " + j.NextStart.UTC().Format(time.RFC3339)
}

// connectTS connects to a database that uses TimescaleDB, for SQL that calls its
// functions by name (sqlTimescalePath).
func connectTS(ctx context.Context, cfg *dbconn.Config) (*dbconn.Conn, error) {
	return cfg.ConnectSession(ctx, sqlTimescalePath)
}

// ReadJobSchedules reads the user jobs' schedules of the database conn is connected
// to. paused are jobs paused for the migration (the freeze's, or a rehearsal's): they
// read as scheduled, as they were before.
func ReadJobSchedules(ctx context.Context, conn *pgx.Conn, paused []int) ([]JobSchedule, error) {
	rows, _ := conn.Query(ctx, sqlJobSchedules)
	jobs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (JobSchedule, error) {
		var j JobSchedule
		err := row.Scan(&j.Job, &j.ID, &j.Scheduled, &j.NextStart, &j.Timezone)
		j.Scheduled = j.Scheduled || slices.Contains(paused, j.ID)
		return j, err
	})
	if err != nil {
		return nil, fmt.Errorf("read the TimescaleDB jobs' schedules: %w", err)
	}
	return jobs, nil
}

// ApplyJobSchedules gives the jobs of the database conn is connected to (a session
// that finds alter_job and may write) the schedules jobs, pairing them by name, and
// returns the database's jobs as they are then. The error names each job of jobs that
// the database lacks, that alter_job refused (a job owned by another role, for a user
// who is not a superuser), or that does not read back as given; the others are given
// their schedules all the same.
func ApplyJobSchedules(ctx context.Context, conn *pgx.Conn, jobs []JobSchedule) ([]JobSchedule, error) {
	have, err := ReadJobSchedules(ctx, conn, nil)
	if err != nil {
		return nil, err
	}
	ids := map[string]int{}
	for _, j := range have {
		ids[j.Job] = j.ID
	}
	var errs []error
	failed := map[string]bool{}
	for _, j := range jobs {
		id, ok := ids[j.Job]
		if !ok {
			errs, failed[j.Job] = append(errs, fmt.Errorf("%s is not there", j.Job)), true
			continue
		}
		if err := conn.QueryRow(ctx, sqlSetSchedule, id, j.Scheduled, j.NextStart, j.Timezone).Scan(&id); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			errs, failed[j.Job] = append(errs, fmt.Errorf("%s (id %d): %s", j.Job, id, dbconn.Reason(err))), true
		}
	}
	now, err := ReadJobSchedules(ctx, conn, nil)
	if err != nil {
		return nil, err
	}
	byName := map[string]JobSchedule{}
	for _, j := range now {
		byName[j.Job] = j
	}
	for _, j := range jobs {
		got := byName[j.Job]
		if !failed[j.Job] && (got.Scheduled != j.Scheduled || !sameStart(got.NextStart, j.NextStart) || !sameZone(got.Timezone, j.Timezone)) {
			errs = append(errs, fmt.Errorf("%s reads %s after alter_job, but %s on the source", j.Job, got.When(), j.When()))
		}
	}
	return now, errors.Join(errs...)
}

func sameStart(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

func sameZone(a, b *string) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// scheduleTargetJobs gives d's target the schedules of the source's jobs, once the
// run has verified the target (see above). The summary says when each will run. A job
// that cannot be given its schedule is a warning, not a failure: the data is in and
// verified, and the job stays paused until the user schedules it.
func (r *run) scheduleTargetJobs(ctx context.Context, d *DatabaseRun) {
	if !d.ts {
		return
	}
	if err := r.applySourceSchedules(ctx, d); err != nil {
		r.warn(fmt.Sprintf("%s: the target's TimescaleDB jobs did not all get the source's schedules (they were paused for the run, and stay as the summary lists them): %s; give each its schedule with SELECT alter_job(id, scheduled => true, next_start => ...) as the job's owner",
			d.Source, err))
	}
	if len(d.Jobs) == 0 {
		return
	}
	var when []string
	for _, j := range d.Jobs {
		when = append(when, j.Job+": "+j.When())
	}
	r.note(d.Source, "TimescaleDB jobs on the target: "+strings.Join(when, "; "))
}

func (r *run) applySourceSchedules(ctx context.Context, d *DatabaseRun) error {
	src, err := d.src.Connect(ctx)
	if err != nil {
		return err
	}
	jobs, err := ReadJobSchedules(ctx, src.Conn, d.PausedJobs)
	src.Close(context.WithoutCancel(ctx))
	if err != nil || len(jobs) == 0 {
		return err
	}
	dst, err := d.dst.ConnectSession(ctx, sqlTimescalePath+"; "+sqlWritable)
	if err != nil {
		return err
	}
	defer dst.Close(context.WithoutCancel(ctx))
	d.Jobs, err = ApplyJobSchedules(ctx, dst.Conn, jobs)
	return err
}

// pauseJobs unschedules the scheduled user jobs of every TimescaleDB source database of
// a rehearsal (a real run's freeze pauses them).
func (r *run) pauseJobs(ctx context.Context) error {
	for _, d := range r.sum.Databases {
		if !d.ts {
			continue
		}
		conn, err := d.src.Connect(ctx)
		if err != nil {
			return err
		}
		ids, recorded, err := freeze.PauseJobsForRehearsal(ctx, conn.Conn, d.src.Database())
		conn.Close(context.WithoutCancel(ctx))
		d.PausedJobs, d.pausedByRun = ids, len(ids) > 0
		if err != nil {
			return fmt.Errorf("%s: %w", d.Source, err)
		}
		if len(ids) > 0 {
			r.note(d.Source, fmt.Sprintf("paused %d scheduled TimescaleDB jobs %v until the dump is done", len(ids), ids))
		}
		if len(ids) > 0 && !recorded {
			r.warn(fmt.Sprintf("%s: the user may not record the jobs it paused on the source (setting %s: a superuser, or GRANT SET ON PARAMETER): if this rehearsal is killed, schedule jobs %v again with SELECT alter_job(id, scheduled => true)",
				d.Source, freeze.RehearsalJobsSetting, ids))
		}
	}
	return nil
}

// resumeJobs schedules the jobs a rehearsal paused again on every source database.
func (r *run) resumeJobs(ctx context.Context) error {
	var errs []error
	for _, d := range r.sum.Databases {
		if !d.pausedByRun {
			continue
		}
		conn, err := d.src.ConnectSession(ctx, sqlWritable)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		done, failed, err := freeze.ScheduleRehearsalJobs(ctx, conn.Conn, d.src.Database(), d.PausedJobs)
		conn.Close(context.WithoutCancel(ctx))
		if err == nil && len(failed) > 0 {
			err = errors.New(strings.Join(failed, "; "))
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("schedule jobs %v of source database %s again: %w (run SELECT alter_job(id, scheduled => true) for each)", d.PausedJobs, d.Source, err))
			continue
		}
		r.note(d.Source, fmt.Sprintf("scheduled jobs %v again on the source", done))
		d.pausedByRun = false
	}
	return errors.Join(errs...)
}
