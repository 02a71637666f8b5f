package migrate

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/freeze"
	"github.com/tsmigrate/tsmigrate/internal/preflight"
	"github.com/tsmigrate/tsmigrate/internal/verify"
)

// The phases other packages do: one call site each.

// preflight runs the pre-flight checks of every database pair, then the disk-space
// check of the dumps. Any failed check blocks the run (exit 3) before anything changes.
func (r *run) preflight(ctx context.Context) error {
	var blocked []string
	for _, d := range r.sum.Databases {
		rep, err := preflight.Run(ctx, preflight.Options{Source: d.src, Target: d.dst})
		if err != nil {
			return err
		}
		r.sum.Preflight = append(r.sum.Preflight, rep)
		for _, f := range rep.Findings {
			switch f.Status {
			case preflight.Fail:
				blocked = append(blocked, fmt.Sprintf("%s: %s: %s", d.Source, f.Check, f.Saw))
				r.emit(Event{Kind: EventWarning, Database: d.Source, Phase: PhasePreflight, Text: fmt.Sprintf("FAIL %s: %s (%s)", f.Check, f.Saw, f.Do)})
			case preflight.Warn:
				r.warn(fmt.Sprintf("%s: %s: %s", d.Source, f.Check, f.Saw))
			}
		}
	}
	if len(blocked) > 0 {
		return exit.New(exit.Blocked, "run tsmigrate preflight for every finding and what to do",
			"pre-flight found %d blocking problem(s): %s", len(blocked), strings.Join(blocked, "; "))
	}
	return r.checkSpace()
}

// freezeAll freezes every source database; on a failure the ones frozen are undone by
// the caller (undo).
func (r *run) freezeAll(ctx context.Context) error {
	for _, d := range r.sum.Databases {
		res, err := freeze.Freeze(ctx, d.src, freeze.Options{Grace: r.opt.FreezeGrace, OnEvent: func(e freeze.Event) {
			switch e.Kind {
			case freeze.EventWaiting:
				r.note(d.Source, fmt.Sprintf("%d session(s) from before the freeze: ended at %s", len(e.Sessions), e.Deadline.Format(time.TimeOnly)))
			case freeze.EventEnded:
				r.note(d.Source, fmt.Sprintf("ended %d session(s) from before the freeze", len(e.Sessions)))
			case freeze.EventProving:
				r.note(d.Source, "proving that writes stopped")
			}
		}})
		if err != nil {
			return fmt.Errorf("freeze %s: %w", d.Source, err)
		}
		d.frozen = true
		d.freezeID = res.ID
		r.note(d.Source, fmt.Sprintf("frozen: no write for %.1f s, no transaction id held", res.Proof.WindowSeconds))
		for _, s := range res.CannotStop {
			r.warn(d.Source + ": " + s)
		}
	}
	return nil
}

// unfreeze gives writes back to the source database of d.
func (r *run) unfreeze(ctx context.Context, d *DatabaseRun) error {
	if _, err := freeze.Unfreeze(ctx, d.src); err != nil {
		return err
	}
	d.frozen = false
	return nil
}

// verify compares source and target of d.
func (r *run) verify(ctx context.Context, d *DatabaseRun) error {
	rep, err := verify.Run(ctx, verify.Options{Source: d.src, Target: d.dst, Jobs: r.opt.Jobs, ShowRows: 5})
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	d.Verify = rep
	ok := rep.Identical()
	d.Identical = &ok
	if !ok && r.opt.Rehearsal {
		r.note(d.Source, fmt.Sprintf("verify: %d unit(s) differ, as expected while the source keeps changing (no freeze in a rehearsal)", rep.UnitsDiffering))
		return nil
	}
	if !ok {
		return fmt.Errorf("verify found differences: %d unit(s) and %d schema difference(s) (see the summary's verify report)", rep.UnitsDiffering, len(rep.Schema))
	}
	r.note(d.Source, fmt.Sprintf("verified: %d units identical, %d rows", rep.UnitsChecked, rep.TargetRows))
	return nil
}
