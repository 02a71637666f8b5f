package freeze

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// RecordSetting is the custom setting that holds the freeze record on the frozen
// database itself (ALTER DATABASE ... SET, stored in pg_db_role_setting): readable by
// any role from any machine, not a user object, not dumped by pg_dump without --create,
// and durable across a crash of the server or of tsmigrate. ("tsmigrate.freeze" would
// not do: FREEZE is a keyword, so SHOW tsmigrate.freeze is a syntax error.)
//
// PostgreSQL lets only a superuser, or a role granted SET on the parameter (PostgreSQL
// 15+: GRANT SET ON PARAMETER tsmigrate.freeze_record TO role), store a custom setting
// at database level; the owner of the database alone gets "permission denied to set
// parameter" (checked on 15 and 17).
const RecordSetting = "tsmigrate.freeze_record"

// readOnlySetting is the setting the freeze turns on at database level.
const readOnlySetting = "default_transaction_read_only"

// Settings are the database settings a freeze turns on and off: a migration neither
// carries them to the target nor compares them.
var Settings = []string{readOnlySetting, RecordSetting, RehearsalJobsSetting}

// advisoryKey serialises tsmigrate's freezes and unfreezes of one database (advisory
// locks are scoped to the database the session is connected to).
const advisoryKey = 0x74736d_667265657a // "tsm" "freez"

// Database-level settings of the current database (setrole = 0), one row per
// name=value item. Checked on PostgreSQL 15 and 17: pg_db_role_setting is readable by
// every role.
const sqlDatabaseSettings = `
SELECT split_part(item, '=', 1), substr(item, strpos(item, '=') + 1)
FROM pg_db_role_setting s, unnest(s.setconfig) AS item
WHERE s.setrole = 0
  AND s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())`

// Our sessions must be able to write the catalog (ALTER DATABASE is refused in a
// read-only transaction) even when the database already defaults to read-only. A
// session-level SET outranks the database-level setting.
const sqlSessionSetup = `SET default_transaction_read_only = off`

// recordTx runs f in a transaction of conn (a session set up with sqlSessionSetup)
// that holds the lock serialising tsmigrate's changes to the database's records, with
// the database's settings as they are then.
func recordTx(ctx context.Context, conn *pgx.Conn, f func(tx pgx.Tx, set map[string]string) error) error {
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(advisoryKey)); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		set, err := settings(ctx, tx)
		if err != nil {
			return err
		}
		return f(tx, set)
	})
}

// record is what tsmigrate stores in RecordSetting, as JSON.
type record struct {
	ID    string    `json:"id"`
	Since time.Time `json:"since"`
	Host  string    `json:"host"`
	User  string    `json:"user"`
	// Previous is the database-level default_transaction_read_only before the freeze;
	// nil when it was not set.
	Previous *string `json:"previous_read_only"`
	// RestartScheduler: the freeze ends the database's TimescaleDB scheduler, which
	// nothing restarts until the server restarts; unfreeze starts it again.
	RestartScheduler bool `json:"restart_timescaledb_scheduler,omitempty"`
	// PausedJobs: the TimescaleDB jobs the freeze unscheduled; unfreeze schedules them
	// again (Options.PauseJobs).
	PausedJobs []int `json:"paused_timescaledb_jobs,omitempty"`
}

// State is what the source server says about a freeze of one database.
type State struct {
	Database string `json:"database"`
	// Frozen: a tsmigrate freeze record is present on the database.
	Frozen bool `json:"frozen"`
	// ID, Since, Host, User: from the record (empty when not frozen).
	ID    string    `json:"freeze_id,omitempty"`
	Since time.Time `json:"since,omitzero"`
	Host  string    `json:"host,omitempty"`
	User  string    `json:"user,omitempty"`
	// PreviousReadOnly is the database-level default_transaction_read_only that unfreeze
	// restores; nil when unfreeze resets it.
	PreviousReadOnly *string `json:"previous_read_only"`
	// ReadOnly is the database-level default_transaction_read_only now ("" when unset).
	ReadOnly string `json:"read_only"`
	// Intact: the record is readable and the database still defaults to read-only.
	// A later run checks Intact and ID to know that the freeze it made still holds.
	Intact bool `json:"intact"`
	// Problem says why a present record is not intact.
	Problem string `json:"problem,omitempty"`
	// PausedJobs are the TimescaleDB jobs the freeze unscheduled, which unfreeze
	// schedules again.
	PausedJobs []int `json:"paused_timescaledb_jobs,omitempty"`
	// RehearsalPausedJobs are the TimescaleDB jobs a rehearsal paused and did not get to
	// schedule again (RehearsalJobsSetting), frozen or not; unfreeze schedules them.
	RehearsalPausedJobs []int `json:"rehearsal_paused_timescaledb_jobs,omitempty"`
	// SessionsFromBefore are sessions connected now that started before Since: they
	// keep the defaults they had (freeze --no-terminate leaves them).
	SessionsFromBefore []Session `json:"sessions_from_before"`
}

// settings reads the database-level settings of the current database.
func settings(ctx context.Context, q querier) (map[string]string, error) {
	rows, err := q.Query(ctx, sqlDatabaseSettings)
	if err != nil {
		return nil, fmt.Errorf("read database settings: %w", err)
	}
	m := map[string]string{}
	var name, value string
	_, err = pgx.ForEachRow(rows, []any{&name, &value}, func() error {
		m[name] = value
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read database settings: %w", err)
	}
	return m, nil
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// stateFrom reads the freeze state out of the database-level settings.
func stateFrom(db string, set map[string]string) (*State, *record) {
	st := &State{Database: db, ReadOnly: set[readOnlySetting]}
	st.RehearsalPausedJobs, _ = rehearsalJobs(set)
	raw, ok := set[RecordSetting]
	if !ok {
		return st, nil
	}
	st.Frozen = true
	var rec record
	if err := json.Unmarshal([]byte(raw), &rec); err != nil || rec.ID == "" {
		st.Problem = fmt.Sprintf("the freeze record %s is unreadable: %q", RecordSetting, raw)
		return st, nil
	}
	st.ID, st.Since, st.Host, st.User, st.PreviousReadOnly = rec.ID, rec.Since, rec.Host, rec.User, rec.Previous
	st.PausedJobs = rec.PausedJobs
	if on, _ := parseBool(st.ReadOnly); !on {
		st.Problem = fmt.Sprintf("the database's default_transaction_read_only is %q, no longer on: someone changed it after the freeze", st.ReadOnly)
		return st, &rec
	}
	st.Intact = true
	return st, &rec
}

// parseBool reads a boolean setting as PostgreSQL does (on/off, true/false, yes/no, 1/0
// and unique prefixes); ok is false for anything else.
func parseBool(s string) (value, ok bool) {
	s = strings.ToLower(strings.TrimSpace(s))
	switch {
	case s == "":
		return false, false
	case s == "1" || s == "on":
		return true, true
	case s == "0" || (len(s) >= 2 && strings.HasPrefix("off", s)):
		return false, true
	case strings.HasPrefix("true", s) || strings.HasPrefix("yes", s):
		return true, true
	case strings.HasPrefix("false", s) || strings.HasPrefix("no", s):
		return false, true
	}
	return false, false
}

// Status reads whether src's database is frozen by tsmigrate, from the server itself.
func Status(ctx context.Context, src *dbconn.Config) (*State, error) {
	conn, err := src.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	set, err := settings(ctx, conn)
	if err != nil {
		return nil, err
	}
	st, _ := stateFrom(src.Database(), set)
	if st.Frozen && !st.Since.IsZero() {
		st.SessionsFromBefore, err = sessionsBefore(ctx, conn, st.Since, nil)
		if err != nil {
			return nil, err
		}
	}
	return st, nil
}

// UnfreezeResult says what Unfreeze did.
type UnfreezeResult struct {
	Database string `json:"database"`
	// WasFrozen: a tsmigrate freeze was found and undone. False means nothing to undo.
	WasFrozen bool      `json:"was_frozen"`
	ID        string    `json:"freeze_id,omitempty"`
	Since     time.Time `json:"since,omitzero"`
	// ReadOnly is the database-level default_transaction_read_only now: the value from
	// before the freeze, or "" when it was not set (RESET).
	ReadOnly string `json:"read_only"`
	// SchedulerRestarted: the TimescaleDB scheduler that the freeze ended was started.
	SchedulerRestarted bool `json:"timescaledb_scheduler_restarted"`
	// JobsScheduled are the TimescaleDB jobs the freeze paused, and those a killed
	// rehearsal left paused (RehearsalJobsSetting), scheduled again.
	JobsScheduled []int `json:"timescaledb_jobs_scheduled,omitempty"`
	// Notes are things the user should know (e.g. a read-only default not set by
	// tsmigrate, left in place; a scheduler that could not be started).
	Notes []string `json:"notes"`
}

// Unfreeze undoes the tsmigrate freeze of src's database, from any machine, whatever
// happened to the process that froze it: it restores the database-level
// default_transaction_read_only from before the freeze (or resets it) and removes the
// record, in one transaction. It is idempotent: with nothing to undo it returns a
// result with WasFrozen false.
//
// Callers that undo a freeze because a run is aborting must pass a fresh context (for
// example context.WithTimeout(context.Background(), 30*time.Second)), not the
// cancelled context of the aborted run.
func Unfreeze(ctx context.Context, src *dbconn.Config) (*UnfreezeResult, error) {
	conn, err := src.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return unfreeze(ctx, conn.Conn, src.Database(), "")
}

// SQL of the undo: the record's previous value comes back, or the setting is reset.
func sqlAlterDatabase(db, tail string) string {
	return "ALTER DATABASE " + pgx.Identifier{db}.Sanitize() + " " + tail
}

// Starts the TimescaleDB scheduler of the current database if it is not running
// (TimescaleDB 2.19.3; superuser only on builds without the managed services' grants).
const sqlStartScheduler = `SELECT _timescaledb_functions.start_background_workers()`

const sqlHasTimescale = `SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')`

// unfreeze undoes the freeze on conn's database. With onlyID set it undoes only the
// freeze of that ID (a failed Freeze undoing its own work).
func unfreeze(ctx context.Context, conn *pgx.Conn, db, onlyID string) (*UnfreezeResult, error) {
	if _, err := conn.Exec(ctx, sqlSessionSetup); err != nil {
		return nil, fmt.Errorf("unfreeze %s: set up session: %w", db, err)
	}
	res := &UnfreezeResult{Database: db, Notes: []string{}}
	var rec *record
	err := recordTx(ctx, conn, func(tx pgx.Tx, set map[string]string) error {
		var st *State
		st, rec = stateFrom(db, set)
		res.ReadOnly = st.ReadOnly
		if err := scheduleAfterRehearsal(ctx, tx, db, set, res); err != nil {
			return err
		}
		if !st.Frozen {
			if on, _ := parseBool(st.ReadOnly); on {
				res.Notes = append(res.Notes, fmt.Sprintf("database %q has default_transaction_read_only = %s at database level, but not from tsmigrate: left as is", db, st.ReadOnly))
			}
			return nil
		}
		if onlyID != "" && (rec == nil || rec.ID != onlyID) {
			return fmt.Errorf("the freeze record is no longer freeze %s: left as is", onlyID)
		}
		stmts := []string{sqlAlterDatabase(db, "RESET "+readOnlySetting)}
		res.ReadOnly = ""
		if rec == nil {
			res.Notes = append(res.Notes, st.Problem+"; default_transaction_read_only reset")
		} else {
			res.ID, res.Since = rec.ID, rec.Since
			if rec.Previous != nil {
				stmts[0] = sqlAlterDatabase(db, "SET "+readOnlySetting+" = "+sqltext.Literal(*rec.Previous))
				res.ReadOnly = *rec.Previous
			}
		}
		if rec != nil && len(rec.PausedJobs) > 0 {
			// In the transaction that removes the record: a job is scheduled again, or
			// the record stays for another unfreeze. One that cannot be is named.
			scheduled, failed, err := ScheduleJobs(ctx, tx, rec.PausedJobs)
			if err != nil {
				return fmt.Errorf("schedule the TimescaleDB jobs the freeze paused (%v): %w", rec.PausedJobs, err)
			}
			res.JobsScheduled = append(res.JobsScheduled, scheduled...)
			for _, f := range failed {
				res.Notes = append(res.Notes, "could not schedule TimescaleDB "+f+" again, which the freeze paused: run SELECT alter_job(id, scheduled => true) as its owner")
			}
		}
		stmts = append(stmts, sqlAlterDatabase(db, "RESET "+pgx.Identifier{RecordSetting}.Sanitize()))
		for _, s := range stmts {
			if _, err := tx.Exec(ctx, s); err != nil {
				return err
			}
		}
		res.WasFrozen = true
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("unfreeze %s: %w", db, err)
	}
	if rec != nil && rec.RestartScheduler {
		res.SchedulerRestarted, res.Notes = restartScheduler(ctx, conn, res.Notes)
	}
	return res, nil
}

// scheduleAfterRehearsal schedules again the jobs a killed rehearsal left paused, if the
// database's settings set name any, and removes their record, in unfreeze's transaction.
func scheduleAfterRehearsal(ctx context.Context, tx pgx.Tx, db string, set map[string]string, res *UnfreezeResult) error {
	if _, ok := set[RehearsalJobsSetting]; !ok {
		return nil
	}
	ids, unknown := rehearsalJobs(set)
	scheduled, failed, err := ScheduleJobs(ctx, tx, ids)
	if err != nil {
		return fmt.Errorf("schedule the TimescaleDB jobs a rehearsal paused (%v): %w", ids, err)
	}
	res.JobsScheduled = append(res.JobsScheduled, scheduled...)
	res.Notes = append(res.Notes, rehearsalNote(scheduled, unknown))
	for _, f := range failed {
		res.Notes = append(res.Notes, "could not schedule TimescaleDB "+f+" again, which a rehearsal paused: run SELECT alter_job(id, scheduled => true) as its owner")
	}
	_, err = tx.Exec(ctx, sqlResetRehearsalJobs(db))
	return err
}

func restartScheduler(ctx context.Context, conn *pgx.Conn, notes []string) (bool, []string) {
	const restart = "; a superuser can run SELECT _timescaledb_functions.start_background_workers() in the database, or restart the server"
	var has bool
	if err := conn.QueryRow(ctx, sqlHasTimescale).Scan(&has); err != nil {
		return false, append(notes, "could not tell whether the database uses TimescaleDB, whose scheduler the freeze ended: "+dbconn.Reason(err)+restart)
	}
	if !has {
		return false, notes
	}
	var started bool
	if err := conn.QueryRow(ctx, sqlStartScheduler).Scan(&started); err != nil {
		return false, append(notes, "could not start the TimescaleDB scheduler that the freeze ended: "+dbconn.Reason(err)+restart)
	}
	return started, notes
}
