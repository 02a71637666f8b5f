package migrate

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/freeze"
)

// undoTimeout bounds the clean-up after a failed or interrupted run.
const undoTimeout = time.Minute

// undo runs when a run fails or is interrupted before its end: the source's jobs are
// scheduled again and its databases unfrozen (writes resume: the migration did not
// happen), target databases made by the run and still empty are dropped, and a
// target that received anything is left for inspection with the steps to reset it.
// A stream run with Options.KeepFrozenOnFailure whose data phase started keeps its
// sources frozen instead, and says how to resume or give up.
// It uses a fresh context: the run's own may be cancelled.
func (r *run) undo(ctx context.Context, cause error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
	defer cancel()
	if err := r.resumeJobs(ctx); err != nil {
		r.warn(err.Error())
	}
	keep := r.keepFrozen() && r.provePending(ctx)
	if keep {
		r.sum.Resume = r.resumeSteps()
	}
	for _, d := range r.sum.Databases {
		if !d.frozen || keep {
			continue
		}
		if err := r.phase(d, PhaseUnfreeze, func() error { return r.unfreeze(ctx, d) }); err != nil {
			r.warn(fmt.Sprintf("%s is still frozen: unfreezing failed (%s); run: tsmigrate unfreeze --source %q",
				d.Source, dbconn.Reason(err), d.src.ConnString()))
			continue
		}
		r.note(d.Source, "unfrozen: writes on the source resume (the migration did not happen)")
	}
	touched := false
	for _, d := range r.sum.Databases {
		if len(d.Phases) > 0 {
			touched = true
		}
	}
	if !touched {
		r.dropCreatedTargets(ctx)
		return
	}
	r.sum.ResetTarget = r.resetSteps()
}

// What froze a source database, as DatabaseRun.FrozenBy says; another freeze is named
// by its id, user, host and time.
const (
	FrozenByThisRun  = "this run"
	FrozenByFirstRun = "the first run" // the run a --resume or --worker continues
)

// statusTimeout bounds reading a source's freeze as a run ends.
const statusTimeout = 10 * time.Second

// settleFrozen says, per source database and for the whole run, whether the source is
// frozen as the run ends and by what. A database this run froze and still holds, or
// unfroze again, is known; any other is read from the source: a run may stop at a
// freeze it did not make (an earlier run's, which a refused --resume leaves as it is),
// before any freeze, or after unfreezing failed. One that cannot be read stays
// unknown: saying "writable" or "frozen" then could be false.
func (r *run) settleFrozen(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), statusTimeout)
	defer cancel()
	known := len(r.sum.Databases) > 0
	frozen := false
	for _, d := range r.sum.Databases {
		holds := r.sum.Outcome == OutcomeMigrated || r.sum.Outcome == OutcomeCopied || len(r.sum.Resume) > 0
		switch {
		case d.Unfrozen && !d.frozen:
			d.SourceFrozen = new(false)
		case d.frozen && holds:
			d.SourceFrozen = new(true)
		default:
			st, err := freeze.Status(ctx, d.src)
			switch {
			case err == nil:
				d.SourceFrozen = new(st.Frozen)
				if st.Frozen && !d.frozen {
					d.FrozenBy = fmt.Sprintf("freeze %s (%s on %s, since %s)", st.ID, st.User, st.Host, st.Since.UTC().Format(time.RFC3339))
				}
			case d.frozen:
				d.SourceFrozen = new(true) // unfreezing failed: say so, rather than "writable"
			}
		}
		if d.SourceFrozen == nil {
			known = false
			continue
		}
		if !*d.SourceFrozen {
			continue
		}
		frozen = true
		switch {
		case d.FrozenBy != "":
		case r.opt.Resume || r.opt.Worker:
			d.FrozenBy = FrozenByFirstRun
		default:
			d.FrozenBy = FrozenByThisRun
		}
	}
	if frozen || known {
		r.sum.SourceFrozen = new(frozen)
	}
}

// resetSteps says how to bring the target back to empty, database by database.
func (r *run) resetSteps() []string {
	var steps []string
	for _, d := range r.sum.Databases {
		if len(d.Phases) == 0 && !d.CreatedTarget {
			continue
		}
		name := pgx.Identifier{d.Target}.Sanitize()
		server := r.opt.Target.WithDatabase("postgres").String()
		if d.CreatedTarget {
			steps = append(steps, fmt.Sprintf("on %s: DROP DATABASE %s WITH (FORCE);  (tsmigrate created it; the next run creates it again)", server, name))
			continue
		}
		steps = append(steps, fmt.Sprintf("on %s: DROP DATABASE %s WITH (FORCE); CREATE DATABASE %s;  (where the database cannot be dropped, as a managed service's %s: drop every schema restored into it, DROP EXTENSION timescaledb CASCADE, and recreate schema public)",
			server, name, name, d.Target))
	}
	return steps
}

// cutOverSteps say what to do after a successful run.
func (r *run) cutOverSteps() []string {
	steps := []string{}
	for _, d := range r.sum.Databases {
		steps = append(steps, fmt.Sprintf("point the applications of database %s at %s", d.Source, d.dst.String()))
	}
	frozen := "the source stays frozen (read-only) so that no write lands on the old server; leave it so"
	unfreeze := fmt.Sprintf("only if going back to the source: tsmigrate unfreeze --source %q gives writes back (per database)", r.sum.Databases[0].src.ConnString())
	for _, d := range r.sum.Databases {
		if len(d.PausedJobs) > 0 {
			frozen += "; its TimescaleDB jobs stay paused with it"
			unfreeze += ", and schedules the paused jobs again"
			break
		}
	}
	return append(steps, frozen, unfreeze)
}
