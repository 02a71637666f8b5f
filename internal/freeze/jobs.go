package freeze

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
)

// TimescaleDB's user jobs (ids from 1000: policies and add_job jobs) are paused by a
// migration's freeze (Options.PauseJobs), in the freeze's own transaction, and recorded
// in the freeze record: the dump or copy then carries them unscheduled, so that none
// runs on the target before the migration has verified it (the migration then gives
// the target the source's schedules), and unfreeze schedules them again on the source
// from the record, whatever happened to the process that froze it (a SIGKILL after
// the pause left them unscheduled for good before).
//
// alter_job(id, scheduled => ...) clears the job's timezone unless it is given again,
// and a timezone given again moves the next start of a job on a fixed schedule
// (TimescaleDB 2.19.3, tsl/src/bgw_policy/job_api.c, job_alter): both are given back
// as they were. The job's timezone is only in bgw_job (_timescaledb_config.bgw_job, a
// view of _timescaledb_catalog.bgw_job from 2.25); its next start, through
// timescaledb_information.jobs (NULL when the scheduler never planned it, -infinity
// while it runs: neither can be given to alter_job, nor needs to be). Every role can
// read both. Checked on TimescaleDB 2.19.3, full build, PostgreSQL 17.
const (
	// sqlTimescaleDB is the schema of the database's TimescaleDB (no row without it).
	sqlTimescaleDB = `SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'timescaledb'`
	// sqlScheduledJobs lists the user jobs that are scheduled.
	sqlScheduledJobs = `SELECT job_id FROM timescaledb_information.jobs WHERE job_id >= 1000 AND scheduled ORDER BY 1`
	// sqlScheduleJob sets job $1's scheduled to $2, keeping its timezone and next start;
	// no row when the job does not exist (any more). %s is TimescaleDB's schema, quoted.
	sqlScheduleJob = `SELECT a.job_id FROM timescaledb_information.jobs j
JOIN _timescaledb_config.bgw_job b ON b.id = j.job_id
CROSS JOIN LATERAL %s.alter_job(j.job_id, scheduled => $2, timezone => b.timezone,
	next_start => CASE WHEN isfinite(j.next_start) THEN j.next_start END) a
WHERE j.job_id = $1`
	// sqlForceStatsFlush makes this session flush its statistics as soon as it is idle
	// (PostgreSQL 15+): the freeze's pause of jobs writes rows, whose counts must be in
	// before the proof's baseline, not flushed into its window (a failed proof).
	sqlForceStatsFlush = `SELECT pg_stat_force_next_flush() WHERE current_setting('server_version_num')::int >= 150000`
)

// JobsTx is a transaction, or a session, that can pause and schedule jobs.
type JobsTx interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// PauseJobs unschedules the scheduled user jobs of the database q is connected to and
// returns their ids (none without TimescaleDB). The session must be able to write.
func PauseJobs(ctx context.Context, q JobsTx) ([]int, error) {
	schema, err := timescaleSchema(ctx, q)
	if err != nil || schema == "" {
		return nil, err
	}
	rows, _ := q.Query(ctx, sqlScheduledJobs)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return nil, fmt.Errorf("list the scheduled TimescaleDB jobs: %w", err)
	}
	for _, id := range ids {
		if err := scheduleJob(ctx, q, schema, id, false); err != nil {
			return nil, fmt.Errorf("pause TimescaleDB job %d: %s (jobs are paused so that none runs on the target before the migration has verified it; run as a superuser or as the jobs' owner)", id, dbconn.Reason(err))
		}
	}
	return ids, nil
}

// ScheduleJobs schedules the jobs ids again in the database q is connected to, each
// in a savepoint when q is a transaction; a job that no longer exists is skipped. It
// returns the jobs scheduled, and why the others could not be.
func ScheduleJobs(ctx context.Context, q JobsTx, ids []int) (scheduled []int, failed []string, err error) {
	if len(ids) == 0 {
		return nil, nil, nil
	}
	schema, err := timescaleSchema(ctx, q)
	if err != nil {
		return nil, nil, err
	}
	if schema == "" {
		return nil, nil, errors.New("TimescaleDB is not installed in the database any more")
	}
	for _, id := range ids {
		err := scheduleJob(ctx, q, schema, id, true)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			failed = append(failed, fmt.Sprintf("job %d: %s", id, dbconn.Reason(err)))
		default:
			scheduled = append(scheduled, id)
		}
	}
	return scheduled, failed, nil
}

// scheduleJob sets one job's scheduled, in a savepoint when q is a transaction.
func scheduleJob(ctx context.Context, q JobsTx, schema string, id int, on bool) error {
	query := fmt.Sprintf(sqlScheduleJob, pgx.Identifier{schema}.Sanitize())
	tx, ok := q.(pgx.Tx)
	if !ok {
		return q.QueryRow(ctx, query, id, on).Scan(new(int))
	}
	return pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error { return sp.QueryRow(ctx, query, id, on).Scan(new(int)) })
}

// timescaleSchema is the schema of the database's TimescaleDB, "" without it.
func timescaleSchema(ctx context.Context, q JobsTx) (string, error) {
	var schema string
	err := q.QueryRow(ctx, sqlTimescaleDB).Scan(&schema)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("look for TimescaleDB: %w", err)
	}
	return schema, nil
}
