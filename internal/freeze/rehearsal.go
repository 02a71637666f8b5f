package freeze

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// RehearsalJobsSetting holds, on the source database itself (a custom database-level
// setting, as RecordSetting), the TimescaleDB jobs a rehearsal paused. A rehearsal does
// not freeze, but pauses the scheduled jobs as a freeze does, so that the target gets
// them unscheduled (none runs there before it is verified). When the rehearsal ends,
// however it ends but SIGKILL or a lost machine, it schedules them again and removes
// the setting; after those, the setting is what tells: unfreeze schedules them again,
// freeze-status shows them, and the next rehearsal's or freeze's pause takes them over
// (a freeze into its own record, for its unfreeze). Before it, a killed rehearsal left
// the source's jobs (retention, compression, refreshes) unscheduled for good, said
// nowhere.
const RehearsalJobsSetting = "tsmigrate.rehearsal_jobs"

// rehearsalRecord is what RehearsalJobsSetting holds, as JSON.
type rehearsalRecord struct {
	Jobs  []int     `json:"paused_timescaledb_jobs"`
	Since time.Time `json:"since"`
	Host  string    `json:"host"`
}

// rehearsalJobs reads the jobs RehearsalJobsSetting names (none without it, or when it
// cannot be read: then unknown says what it holds).
func rehearsalJobs(set map[string]string) (ids []int, unknown string) {
	raw, ok := set[RehearsalJobsSetting]
	if !ok {
		return nil, ""
	}
	var r rehearsalRecord
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		return nil, raw
	}
	return r.Jobs, ""
}

// sqlSetRehearsalJobs stores the record; sqlResetRehearsalJobs removes it.
func sqlSetRehearsalJobs(db string, r rehearsalRecord) (string, error) {
	js, err := json.Marshal(r)
	if err != nil {
		return "", err
	}
	return sqlAlterDatabase(db, "SET "+pgx.Identifier{RehearsalJobsSetting}.Sanitize()+" = "+sqltext.Literal(string(js))), nil
}

func sqlResetRehearsalJobs(db string) string {
	return sqlAlterDatabase(db, "RESET "+pgx.Identifier{RehearsalJobsSetting}.Sanitize())
}

// PauseJobsForRehearsal pauses the scheduled user jobs of conn's database, db, for a
// rehearsal, and records them in RehearsalJobsSetting in the same transaction, with
// those an earlier rehearsal killed left paused: it returns them all, to be given to
// ScheduleRehearsalJobs at the end. recorded is false when the user may not store the
// setting (as for a freeze: a superuser, or GRANT SET ON PARAMETER): the jobs are
// paused then without a record, and the caller must say how to schedule them again.
func PauseJobsForRehearsal(ctx context.Context, conn *pgx.Conn, db string) (ids []int, recorded bool, err error) {
	if _, err := conn.Exec(ctx, sqlSessionSetup); err != nil {
		return nil, false, err
	}
	err = recordTx(ctx, conn, func(tx pgx.Tx, set map[string]string) error {
		earlier, _ := rehearsalJobs(set)
		paused, err := PauseJobs(ctx, tx)
		if err != nil {
			return err
		}
		ids = union(earlier, paused)
		if len(ids) == 0 {
			return nil
		}
		host, _ := os.Hostname()
		stmt, err := sqlSetRehearsalJobs(db, rehearsalRecord{Jobs: ids, Since: time.Now().UTC(), Host: host})
		if err != nil {
			return err
		}
		err = pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error {
			_, err := sp.Exec(ctx, stmt)
			return err
		})
		var pgErr *pgconn.PgError
		switch {
		case err == nil:
			recorded = true
		case errors.As(err, &pgErr) && pgErr.Code == "42501":
		default:
			return err
		}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return ids, recorded, nil
}

// ScheduleRehearsalJobs schedules the jobs ids (PauseJobsForRehearsal's), and any the
// record names, again in conn's database, db, and removes the record, in one
// transaction. It returns the jobs scheduled and why the others could not be.
func ScheduleRehearsalJobs(ctx context.Context, conn *pgx.Conn, db string, ids []int) (scheduled []int, failed []string, err error) {
	if _, err := conn.Exec(ctx, sqlSessionSetup); err != nil {
		return nil, nil, err
	}
	err = recordTx(ctx, conn, func(tx pgx.Tx, set map[string]string) error {
		recorded, _ := rehearsalJobs(set)
		if scheduled, failed, err = ScheduleJobs(ctx, tx, union(ids, recorded)); err != nil {
			return err
		}
		if _, ok := set[RehearsalJobsSetting]; ok {
			_, err = tx.Exec(ctx, sqlResetRehearsalJobs(db))
		}
		return err
	})
	return scheduled, failed, err
}

// union is a and b's ids, each once, in order.
func union(a, b []int) []int {
	out := slices.Concat(a, b)
	slices.Sort(out)
	return slices.Compact(out)
}

// rehearsalNote says what unfreeze did with the jobs a killed rehearsal left paused.
func rehearsalNote(ids []int, unknown string) string {
	if unknown != "" {
		return fmt.Sprintf("the record of the jobs a rehearsal paused (%s) is unreadable: %q; removed: schedule them again with SELECT alter_job(id, scheduled => true)", RehearsalJobsSetting, unknown)
	}
	return fmt.Sprintf("scheduled again TimescaleDB jobs %v, which a tsmigrate rehearsal paused and did not get to schedule again (it was killed)", ids)
}
