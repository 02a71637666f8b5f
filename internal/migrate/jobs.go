package migrate

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
)

// SQL for TimescaleDB's scheduled jobs (2.x; alter_job since 2.0). A parallel pg_dump can
// deadlock against policy jobs that take ACCESS EXCLUSIVE locks, so user jobs (id >= 1000)
// are unscheduled during the dump and scheduled again afterwards, on both sides: the
// dump carries them unscheduled. The Apache build has no user jobs: the tests of this
// path need the full build (TestCompressBeforeFullBuild, TSMIGRATE_PG17_TSL_ROOT).
const (
	sqlScheduledJobs = `SELECT job_id FROM timescaledb_information.jobs WHERE job_id >= 1000 AND scheduled ORDER BY job_id`
	sqlPauseJob      = `SELECT alter_job($1, scheduled => false)`
	sqlResumeJob     = `SELECT alter_job($1, scheduled => true)`
	// sqlWritable lets tsmigrate's own session write on a frozen source (the freeze is
	// the database's default_transaction_read_only).
	sqlWritable = `SET default_transaction_read_only = off`
	// sqlTimescalePath finds TimescaleDB's functions (alter_job, show_chunks, ...) in its
	// schema whatever search_path the database gives, such as one without public (the
	// target has the source database's after the copy). PostgreSQL 15, 17.
	sqlTimescalePath = `SELECT set_config('search_path', format('%I, pg_catalog', n.nspname), false)
	FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'timescaledb'`
)

// connectTS connects to a database that uses TimescaleDB, for SQL that calls its
// functions by name (sqlTimescalePath).
func connectTS(ctx context.Context, cfg *dbconn.Config) (*dbconn.Conn, error) {
	return cfg.ConnectSession(ctx, sqlTimescalePath)
}

// pauseJobs unschedules the scheduled user jobs of every TimescaleDB source database.
func (r *run) pauseJobs(ctx context.Context) error {
	for _, d := range r.sum.Databases {
		if !d.ts {
			continue
		}
		conn, err := connectTS(ctx, d.src)
		if err != nil {
			return err
		}
		rows, _ := conn.Query(ctx, sqlScheduledJobs)
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int])
		if err != nil {
			conn.Close(ctx)
			return fmt.Errorf("list scheduled jobs of %s: %w", d.Source, err)
		}
		for _, id := range ids {
			if _, err := conn.Exec(ctx, sqlPauseJob, id); err != nil {
				conn.Close(ctx)
				return fmt.Errorf("pause job %d of %s: %s", id, d.Source, dbconn.Reason(err))
			}
			d.PausedJobs = append(d.PausedJobs, id)
		}
		conn.Close(ctx)
		if len(ids) > 0 {
			r.note(d.Source, fmt.Sprintf("paused %d scheduled TimescaleDB jobs %v until the dump is done", len(ids), ids))
		}
	}
	return nil
}

// resumeJobs schedules the paused jobs again on every source database.
func (r *run) resumeJobs(ctx context.Context) error {
	for _, d := range r.sum.Databases {
		if len(d.PausedJobs) == 0 {
			continue
		}
		if err := resumeJobs(ctx, d.src, d.PausedJobs); err != nil {
			return fmt.Errorf("schedule jobs %v of source database %s again: %w (run SELECT alter_job(id, scheduled => true) for each)", d.PausedJobs, d.Source, err)
		}
		r.note(d.Source, fmt.Sprintf("scheduled jobs %v again on the source", d.PausedJobs))
		d.PausedJobs = nil
	}
	return nil
}

func resumeJobs(ctx context.Context, cfg *dbconn.Config, ids []int) error {
	conn, err := connectTS(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sqlWritable); err != nil {
		return err
	}
	for _, id := range ids {
		if _, err := conn.Exec(ctx, sqlResumeJob, id); err != nil {
			return fmt.Errorf("job %d: %s", id, dbconn.Reason(err))
		}
	}
	return nil
}
