package migrate

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/freeze"
	"github.com/tsmigrate/tsmigrate/internal/schema"
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
	r.undoLive(ctx)
	keep := r.keepFrozen() && r.provePending(ctx)
	for _, d := range r.sum.Databases {
		// The freeze's locks would keep the jobs' own catalog from being written.
		d.pending.Release()
	}
	if err := r.resumeJobs(ctx); err != nil {
		r.warn(err.Error())
	}
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
	for _, d := range r.sum.Databases {
		if !d.restoring {
			continue
		}
		if err := r.leaveRestoring(ctx, d); err != nil {
			r.warn(fmt.Sprintf("target database %s is still in TimescaleDB's restoring mode, its scheduler stopped: %s; run SELECT timescaledb_post_restore() in it", d.Target, dbconn.Reason(err)))
			continue
		}
		r.note(d.Source, fmt.Sprintf("target database %s: restoring mode ended, its TimescaleDB scheduler started again (timescaledb_post_restore())", d.Target))
	}
	touched := false
	for _, d := range r.sum.Databases {
		if len(d.Phases) > 0 {
			touched = true
		}
	}
	if !touched {
		r.dropCreatedTargets(ctx, "nothing was restored into it")
		r.sum.ResetTarget = r.resetRoles()
		return
	}
	if !r.resetAfterRehearsal(ctx) {
		r.sum.ResetTarget = r.resetSteps(ctx)
	}
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

// sqlSuperuser says whether the session's user is a superuser.
const sqlSuperuser = `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`

// resetSteps says how to bring the target back to empty, database by database: one
// that the run created is dropped; in another, the statements that drop what the run
// restored, as the target user (schema.ResetStatements), who may be no superuser and
// may not own the database nor its extensions (a managed service's admin role); a
// superuser may also drop and create the database.
func (r *run) resetSteps(ctx context.Context) []string {
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
		user := d.dst.User()
		var stmts []string
		var super bool
		err := onTarget(ctx, d, func(ctx context.Context, c *dbconn.Conn) (err error) {
			if err := c.QueryRow(ctx, sqlSuperuser).Scan(&super); err != nil {
				return err
			}
			stmts, err = schema.ResetStatements(ctx, c.Conn)
			return err
		})
		if super {
			steps = append(steps, fmt.Sprintf("on %s: DROP DATABASE %s WITH (FORCE); CREATE DATABASE %s;  (or, keeping the database:)", server, name, name))
		}
		switch {
		case err != nil:
			steps = append(steps, fmt.Sprintf("in %s as %s: drop every schema, table, view, function and type the run restored (not the extensions %s does not own); reading the target to list them failed: %s",
				d.dst.String(), user, user, dbconn.Reason(err)))
		case len(stmts) == 0:
			steps = append(steps, fmt.Sprintf("in %s: nothing to drop", d.dst.String()))
		default:
			steps = append(steps, fmt.Sprintf("in %s as %s, drop what the run restored: %s;", d.dst.String(), user, strings.Join(stmts, "; ")))
		}
	}
	return append(steps, r.resetRoles()...)
}

// resetRoles says what to do with the roles the run created (Options.Roles): they stay
// (a next run leaves them as they are); dropping them takes their privileges in each
// target database the run kept (DROP OWNED, once what they own there is dropped), then
// DROP ROLE.
func (r *run) resetRoles() []string {
	if r.sum.Roles == nil || len(r.sum.Roles.Created) == 0 {
		return nil
	}
	var names []string
	for _, n := range r.sum.Roles.Created {
		names = append(names, pgx.Identifier{n}.Sanitize())
	}
	list := strings.Join(names, ", ")
	var in []string
	for _, d := range r.sum.Databases {
		if !d.CreatedTarget {
			in = append(in, d.dst.String())
		}
	}
	drop := fmt.Sprintf("DROP ROLE %s;", list)
	if len(in) > 0 {
		// Their privileges there (a database's CONNECT, say) would stop DROP ROLE; the
		// target user drops them as a member of the roles (it holds them WITH ADMIN).
		drop = fmt.Sprintf("in %s, after the steps above: GRANT %s TO %s; DROP OWNED BY %s; %s", strings.Join(in, " and "),
			list, pgx.Identifier{r.opt.Target.User()}.Sanitize(), list, drop)
	}
	return []string{fmt.Sprintf("the roles the run created stay on the target, with their passwords (the next run leaves them as they are); to drop them too, as %s, %s",
		r.opt.Target.User(), drop)}
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
