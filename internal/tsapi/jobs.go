package tsapi

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// TimescaleDB's jobs (ids from 1000: policies and the user's add_job jobs), made again
// on the target through the API with the source's schedules and config, unscheduled:
// none may run before the migration has verified the target (the run schedules them
// as on the source afterwards). A policy is made by its add_*_policy function, which
// knows the target's hypertable (its config names hypertables by id, which differ
// between servers), then given the source's settings and config (its ids the
// target's) by alter_job. Jobs are told apart as verify names them: by procedure and
// what they act on.
//
// Checked on TimescaleDB 2.19.3, full build. bgw_job is in _timescaledb_config up to
// 2.24 (a view of _timescaledb_catalog.bgw_job from 2.25).
const (
	// sqlJobs lists the user jobs with what they act on: a hypertable, or a continuous
	// aggregate when that hypertable is its materialization hypertable.
	sqlJobs = `
SELECT j.id, j.proc_schema::text, j.proc_name::text, j.schedule_interval::text, j.max_runtime::text, j.max_retries,
	j.retry_period::text, j.scheduled, j.fixed_schedule, j.initial_start::text, j.timezone, coalesce(j.config::text, ''),
	CASE WHEN j.check_name IS NOT NULL THEN format('%I.%I', j.check_schema, j.check_name) ELSE '' END,
	coalesce(h.schema_name::text, ''), coalesce(h.table_name::text, ''),
	coalesce(ca.user_view_schema::text, ''), coalesce(ca.user_view_name::text, ''), j.owner::text
FROM _timescaledb_config.bgw_job j
LEFT JOIN _timescaledb_catalog.hypertable h ON h.id = j.hypertable_id
LEFT JOIN _timescaledb_catalog.continuous_agg ca ON ca.mat_hypertable_id = j.hypertable_id
WHERE j.id >= 1000
ORDER BY j.id`

	// sqlAlterJob gives target job $1 the source's settings and config $7 (NULL: none),
	// with the target's hypertable ids, unscheduled. %s: TimescaleDB's schema.
	sqlAlterJob = `SELECT job_id FROM %[1]s.alter_job($1, schedule_interval => $2::interval, max_runtime => $3::interval,
	max_retries => $4, retry_period => $5::interval, scheduled => false, fixed_schedule => $6,
	config => ($7::jsonb - 'hypertable_id' - 'mat_hypertable_id') || coalesce((SELECT jsonb_strip_nulls(jsonb_build_object(
		'hypertable_id', j.config->'hypertable_id', 'mat_hypertable_id', j.config->'mat_hypertable_id'))
		FROM timescaledb_information.jobs j WHERE j.job_id = $1), '{}'::jsonb))`
)

// Job is a TimescaleDB user job.
type Job struct {
	ID                                  int
	Proc                                Name
	ScheduleInterval, MaxRuntime, Retry string // intervals as the source prints them
	MaxRetries                          int
	Scheduled, FixedSchedule            bool
	InitialStart                        *string // timestamptz as the source prints it
	Timezone                            *string
	Config                              string // jsonb text, "" for none
	Check                               string // schema.name quoted, "" for none
	// Hypertable and Aggregate say what it acts on (zero: the database): a
	// hypertable, or a continuous aggregate (its materialization hypertable's).
	Hypertable, Aggregate Name
	// Owner is the role it runs as.
	Owner string
}

// key is the job as verify names it: its procedure and what it acts on.
func (j *Job) key() string {
	on := "the database"
	switch {
	case j.Aggregate.Name != "":
		on = "continuous aggregate " + j.Aggregate.String()
	case j.Hypertable.Name != "":
		on = j.Hypertable.String()
	}
	return j.Proc.String() + " on " + on
}

// ReadJobs reads the user jobs of the database q is connected to.
func ReadJobs(ctx context.Context, q Querier) ([]*Job, error) {
	rows, err := q.Query(ctx, sqlJobs)
	if err != nil {
		return nil, fmt.Errorf("read TimescaleDB's jobs: %w", err)
	}
	var jobs []*Job
	var j Job
	_, err = pgx.ForEachRow(rows, []any{&j.ID, &j.Proc.Schema, &j.Proc.Name, &j.ScheduleInterval, &j.MaxRuntime, &j.MaxRetries,
		&j.Retry, &j.Scheduled, &j.FixedSchedule, &j.InitialStart, &j.Timezone, &j.Config, &j.Check,
		&j.Hypertable.Schema, &j.Hypertable.Name, &j.Aggregate.Schema, &j.Aggregate.Name, &j.Owner}, func() error {
		job := j
		jobs = append(jobs, &job)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read TimescaleDB's jobs: %w", err)
	}
	return jobs, nil
}

// policy procedures TimescaleDB's add_*_policy functions make (in its functions'
// schema, _timescaledb_functions from 2.12).
const (
	procCompression = "policy_compression"
	procRetention   = "policy_retention"
	procReorder     = "policy_reorder"
	procRefresh     = "policy_refresh_continuous_aggregate"
)

// jobMaker makes jobs on the target.
type jobMaker struct {
	ext    string
	target *Layout
	names  func(Name) (Name, bool) // source hypertable to target
}

// timescaleProc says whether a job's procedure is one of TimescaleDB's own (a policy):
// in _timescaledb_functions from 2.12, _timescaledb_internal before.
func timescaleProc(p Name) bool {
	return p.Schema == "_timescaledb_functions" || p.Schema == "_timescaledb_internal"
}

// addSQL is the call that makes job j on the target, the target job's id as its
// result, with its arguments; "" for a job it cannot make.
func (m *jobMaker) addSQL(j *Job) (string, []any, error) {
	var config map[string]json.RawMessage
	if j.Config != "" {
		if err := json.Unmarshal([]byte(j.Config), &config); err != nil {
			return "", nil, fmt.Errorf("job %d: read its config: %w", j.ID, err)
		}
	}
	if !timescaleProc(j.Proc) {
		var check any
		if j.Check != "" {
			check = j.Check
		}
		var cfg any
		if j.Config != "" {
			cfg = j.Config
		}
		return fmt.Sprintf(`SELECT %s.add_job($1::regproc, $2::interval, config => $3::jsonb, initial_start => $4::timestamptz,
	scheduled => false, check_config => $5::regproc, fixed_schedule => $6, timezone => $7)`, m.ext),
			[]any{j.Proc.String(), j.ScheduleInterval, cfg, j.InitialStart, check, j.FixedSchedule, j.Timezone}, nil
	}
	on := j.Hypertable
	if j.Aggregate.Name != "" {
		on = j.Aggregate
	} else if t, ok := m.names(j.Hypertable); ok {
		on = t
	}
	timeType := "interval"
	if h := m.hypertableOf(j); h != nil && len(h.Dimensions) > 0 {
		switch t := h.Dimensions[0].Type; t {
		case "smallint", "integer", "bigint":
			timeType = t
		}
	}
	arg := func(key string) (string, error) { return anyArg(config[key], timeType) }
	args := []any{on.String(), j.ScheduleInterval, j.InitialStart, j.Timezone}
	switch j.Proc.Name {
	case procCompression, procRetention:
		fn, after, before := "add_compression_policy", "compress_after", "compress_created_before"
		if j.Proc.Name == procRetention {
			fn, after, before = "add_retention_policy", "drop_after", "drop_created_before"
		}
		q := fmt.Sprintf("SELECT %s.%s($1::regclass, schedule_interval => $2::interval, initial_start => $3::timestamptz, timezone => $4", m.ext, fn)
		if _, ok := config[before]; ok {
			v, err := anyArg(config[before], "interval")
			if err != nil {
				return "", nil, fmt.Errorf("job %d: %s: %w", j.ID, before, err)
			}
			return q + ", " + before + " => " + v + ")", args, nil
		}
		v, err := arg(after)
		if err != nil {
			return "", nil, fmt.Errorf("job %d: %s: %w", j.ID, after, err)
		}
		return q + ", " + after + " => " + v + ")", args, nil
	case procReorder:
		var index string
		if err := json.Unmarshal(config["index_name"], &index); err != nil {
			return "", nil, fmt.Errorf("job %d: index_name: %w", j.ID, err)
		}
		return fmt.Sprintf("SELECT %s.add_reorder_policy($1::regclass, $5::name, initial_start => $3::timestamptz, timezone => $4)", m.ext),
			append(args, index), nil
	case procRefresh:
		start, err := arg("start_offset")
		if err != nil {
			return "", nil, fmt.Errorf("job %d: start_offset: %w", j.ID, err)
		}
		end, err := arg("end_offset")
		if err != nil {
			return "", nil, fmt.Errorf("job %d: end_offset: %w", j.ID, err)
		}
		return fmt.Sprintf(`SELECT %s.add_continuous_aggregate_policy($1::regclass, start_offset => %s, end_offset => %s,
	schedule_interval => $2::interval, initial_start => $3::timestamptz, timezone => $4)`, m.ext, start, end), args, nil
	}
	return "", nil, nil
}

// hypertableOf is the target hypertable job j acts on (a continuous aggregate's
// materialization hypertable for one on a continuous aggregate).
func (m *jobMaker) hypertableOf(j *Job) *Hypertable {
	if j.Aggregate.Name != "" {
		if a := m.target.Aggregate(j.Aggregate); a != nil {
			return m.target.Hypertable(a.Materialization)
		}
		return nil
	}
	return m.target.Hypertable(j.Hypertable)
}

// anyArg is SQL for a policy's "any" argument from its config value raw: an interval
// for a JSON string, a number of the integer type typ, or NULL of that type.
func anyArg(raw json.RawMessage, typ string) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "NULL::" + typ, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return sqltext.Literal(s) + "::interval", nil
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return "", fmt.Errorf("neither a string nor a number: %s", raw)
	}
	if _, err := n.Int64(); err != nil {
		return "", fmt.Errorf("not an integer: %s", raw)
	}
	if typ == "interval" {
		typ = "bigint"
	}
	return n.String() + "::" + typ, nil
}

// makeJobs makes on the target the source's jobs it lacks (told apart by procedure and
// what they act on), unscheduled, with the source's settings and config. It returns
// how many it made and the jobs it could not (in words).
func makeJobs(ctx context.Context, d *pgx.Conn, ext string, source, target *Layout, srcJobs, dstJobs []*Job, asOwners bool) (int, []string, error) {
	have := map[string]int{}
	for _, j := range dstJobs {
		have[j.key()]++
	}
	m := &jobMaker{ext: ext, target: target, names: hypertableNames(source, target)}
	made := 0
	var diffs []string
	for _, j := range srcJobs {
		if have[j.key()] > 0 { // made by an earlier run
			have[j.key()]--
			continue
		}
		q, args, err := m.addSQL(j)
		if err != nil {
			return made, diffs, err
		}
		if q == "" {
			diffs = append(diffs, fmt.Sprintf("job %d (%s) is not made on the target: tsmigrate does not know how to make a job of %s", j.ID, j.key(), j.Proc.Display()))
			continue
		}
		err = pgx.BeginFunc(ctx, d, func(tx pgx.Tx) error {
			if asOwners {
				actAs(ctx, tx, j.Owner)
			}
			var id int
			if err := tx.QueryRow(ctx, q, args...).Scan(&id); err != nil {
				return fmt.Errorf("make job %d (%s): %s", j.ID, j.key(), dbconn.Reason(err))
			}
			var cfg any
			if j.Config != "" {
				cfg = j.Config
			}
			if err := tx.QueryRow(ctx, fmt.Sprintf(sqlAlterJob, ext), id, j.ScheduleInterval, j.MaxRuntime, j.MaxRetries, j.Retry,
				j.FixedSchedule, cfg).Scan(&id); err != nil {
				return fmt.Errorf("give job %d (%s) the source's settings: %s", j.ID, j.key(), dbconn.Reason(err))
			}
			return nil
		})
		if err != nil {
			return made, diffs, err
		}
		made++
	}
	return made, diffs, nil
}
