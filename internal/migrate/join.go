package migrate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tsmigrate/tsmigrate/internal/clock"
	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/freeze"
	"github.com/tsmigrate/tsmigrate/internal/journal"
	"github.com/tsmigrate/tsmigrate/internal/schema"
)

// startOver says how to start a stream migration over.
const startOver = "to start over: tsmigrate unfreeze the source if it is still frozen, reset the target (drop and create the database), and run tsmigrate migrate without --resume"

// refuseResume is a --resume that cannot go on: nothing was changed.
func refuseResume(format string, args ...any) error {
	return exit.New(exit.Usage, startOver, "cannot "+format, args...)
}

// workerHint is what a refused --worker is told: never to unfreeze the source or
// reset the target, which would break the run it came to join, healthy or not.
const workerHint = "a --worker only joins the data phase of a tsmigrate migrate that runs on the same source and target databases (or of its --resume), and it changed nothing: start it while that run copies its data"

// refuseJoin is a --resume or --worker (verb "resume" or "join") that cannot go on.
func (r *run) refuseJoin(format string, args ...any) error {
	if r.opt.Worker {
		return exit.New(exit.Usage, workerHint, "cannot join: "+format, args...)
	}
	return refuseResume("resume: "+format, args...)
}

// notYetError: a --worker came before the run it joins reached its data phase.
type notYetError struct{ why string }

func (e *notYetError) Error() string { return e.why }

// checkJoin makes sure that every database of a --resume or --worker run has a journal
// on its target written under the freeze that still holds on its source, and takes
// that freeze as the run's. For a worker, a migration that has not reached its data
// phase yet is a *notYetError.
func (r *run) checkJoin(ctx context.Context) error {
	for _, d := range r.sum.Databases {
		if d.steps != nil {
			continue // checked already (waitToJoin)
		}
		if err := r.checkJoinOne(ctx, d); err != nil {
			return err
		}
	}
	return nil
}

func (r *run) checkJoinOne(ctx context.Context, d *DatabaseRun) error {
	st, err := freeze.Status(ctx, d.src)
	if err != nil {
		return fmt.Errorf("%s: read the source's freeze: %w", d.Source, err)
	}
	conn, err := d.dst.Connect(ctx)
	var pgErr *pgconn.PgError
	if r.opt.Worker && errors.As(err, &pgErr) && pgErr.Code == "3D000" { // invalid_catalog_name
		return &notYetError{fmt.Sprintf("target database %s does not exist yet", d.Target)}
	}
	if err != nil {
		return err
	}
	jr, jerr := journal.Read(ctx, conn.Conn)
	steps := map[string]bool{}
	if jerr == nil {
		for _, s := range []string{stepPreData, stepPostStarted, stepPostData, stepPostRestore, stepComplete, stepWayAPI, stepTimescale, stepTimescaleFinish} {
			if steps[s], jerr = journal.StepDone(ctx, conn.Conn, s); jerr != nil {
				break
			}
		}
	}
	if jerr == nil && strings.HasPrefix(jr.FreezeID, liveID) {
		defer conn.Close(ctx)
		if r.opt.Worker {
			return r.refuseJoin("target database %s holds the journal of a live migration (--live), which a --worker does not join", d.Target)
		}
		return r.checkLiveResume(ctx, d, conn, jr, st, steps)
	}
	conn.Close(ctx)
	var format *journal.FormatError
	switch {
	case errors.As(jerr, &format) && !r.opt.Worker:
		return exit.New(exit.Usage, "finish it with the tsmigrate that wrote it, or "+startOver,
			"cannot resume: target database %s: %s", d.Target, format)
	case errors.As(jerr, &format):
		return r.refuseJoin("target database %s: %s", d.Target, format)
	case errors.Is(jerr, journal.ErrNoJournal) && r.opt.Worker:
		return &notYetError{fmt.Sprintf("target database %s holds no migration journal yet (the migration is in pre-flight or freezing its source, or is over)", d.Target)}
	case errors.Is(jerr, journal.ErrNoJournal):
		return r.refuseJoin("target database %s holds no migration journal (none was started there, or it finished and its journal was dropped)", d.Target)
	case jerr != nil:
		return jerr
	case !st.Frozen:
		return r.refuseJoin("source database %s is not frozen any more, so it may have changed since the first run (its journal was written under freeze %s)", d.Source, jr.FreezeID)
	case !st.Intact:
		return r.refuseJoin("the freeze of source database %s is not intact (%s), so it may have changed since the first run", d.Source, st.Problem)
	case st.ID != jr.FreezeID:
		return r.refuseJoin("source database %s is frozen by freeze %s, but the target's journal was written under freeze %s, so the source may have changed in between", d.Source, st.ID, jr.FreezeID)
	case !steps[stepPreData] && r.opt.Worker:
		return &notYetError{fmt.Sprintf("the schema of %s is being restored into the target (pre-data)", d.Source)}
	case r.opt.Worker && steps[stepPostStarted]:
		return r.refuseJoin("the data of %s is copied already", d.Source)
	case r.opt.Worker && steps[stepWayAPI] && !steps[stepTimescale]:
		return &notYetError{fmt.Sprintf("the hypertables and chunks of %s are being made on the target", d.Source)}
	}
	if d.ts {
		// The first run chose its restore path as its pre-data step began.
		d.RestorePath = schema.PathCatalog
		if steps[stepWayAPI] {
			d.RestorePath = schema.PathAPI
		}
	}
	unchanged := ""
	if !r.opt.Worker {
		p, err := resumeBaseline(ctx, d, jr.Baseline)
		if err != nil {
			return err
		}
		if !steps[stepPostStarted] {
			// Writes wait again from here, as under the first run.
			if err := p.Hold(ctx); err != nil {
				return fmt.Errorf("%s: lock the source's tables against writes: %w", d.Source, err)
			}
			d.pending = p
		}
		unchanged = fmt.Sprintf(", unchanged since the first run's baseline (%s)", p.Baseline().Format(time.TimeOnly))
	}
	d.frozen = true
	d.freezeID = st.ID
	d.PausedJobs = st.PausedJobs
	d.steps = steps
	// Past the copy, a run that fails again may keep the source frozen for
	// another --resume, as one in its data phase does.
	d.dataStarted = !r.opt.Worker && steps[stepPostStarted]
	r.note(d.Source, fmt.Sprintf("the source is still frozen by freeze %s, the one the target's journal was written under%s: %d of %d data units done", st.ID, unchanged, jr.Done, jr.Units))
	if !r.opt.Worker && steps[stepPostStarted] && !steps[stepPostData] {
		if err := r.prepareRestResume(ctx, d); err != nil {
			return err
		}
	}
	return nil
}

// joinPoll is how often a waiting worker looks again: often enough to join a copy
// that small units in batches (copy) make short.
const joinPoll = 250 * time.Millisecond

// waitToJoin is checkJoin for a --worker, which may be started before the migration
// it joins reaches its data phase (while it runs pre-flight, freezes the source or
// restores the schema): it waits, saying why, up to Options.WorkerWait in all.
func (r *run) waitToJoin(ctx context.Context) error {
	deadline := time.Now().Add(r.opt.WorkerWait)
	for _, d := range r.sum.Databases {
		said := ""
		for {
			err := r.checkJoinOne(ctx, d)
			var ny *notYetError
			if !errors.As(err, &ny) {
				if err == nil && said != "" {
					r.note(d.Source, "the migration reached its data phase: joining it")
				}
				if err != nil {
					return err
				}
				break
			}
			if time.Now().After(deadline) {
				return exit.New(exit.Usage, workerHint+"; if that run was killed, continue it with --resume first",
					"cannot join: %s, still after waiting %s (--worker-wait)", ny.why, r.opt.WorkerWait)
			}
			if ny.why != said {
				r.note(d.Source, fmt.Sprintf("waiting for the migration to reach its data phase (up to %s in all, --worker-wait): %s", r.opt.WorkerWait, ny.why))
				said = ny.why
			}
			if err := clock.Sleep(ctx, joinPoll); err != nil {
				return err
			}
		}
	}
	return nil
}
