package migrate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
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
		rep, err := preflight.Run(ctx, preflight.Options{Source: d.src, Target: d.dst,
			Engine: r.opt.Engine, RestorePath: r.opt.RestorePath, Roles: r.opt.Roles, RolesUpdate: r.opt.RolesUpdate, Jobs: r.opt.Jobs,
			Live: r.opt.Live, ReplicaIdentityFull: r.opt.ReplicaIdentityFull, Databases: len(r.sum.Databases)})
		if err != nil {
			return err
		}
		r.sum.Preflight = append(r.sum.Preflight, rep)
		for _, f := range rep.Findings {
			switch f.Status {
			case preflight.Fail:
				blocked = append(blocked, fmt.Sprintf("%s: %s: %s", d.Source, f.Check, f.Saw))
				r.emit(Event{Type: EventBlocking, Database: d.Source, Phase: PhasePreflight, Text: fmt.Sprintf("%s: %s (%s)", f.Check, f.Saw, f.Do)})
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
// the caller (undo). The freeze's proof is deferred: the dump or copy starts at once,
// and proveFrozen checks, once the source has been read, that it did not change since
// the freeze's baseline.
func (r *run) freezeAll(ctx context.Context) error {
	// A live run's cut-over waits for its proof: the shortest window that still sees
	// a busy writer (a backend flushes its counts at most once a second); an offline
	// run's copy outlasts the default window anyway.
	window := time.Duration(0)
	if r.opt.Live {
		window = freeze.MinProofWindow
	}
	for _, d := range r.sum.Databases {
		res, err := freeze.Freeze(ctx, d.src, freeze.Options{Grace: r.opt.FreezeGrace, DeferProof: true, PauseJobs: d.ts, KeepPIDs: d.keepPIDs, ProofWindow: window, OnEvent: func(e freeze.Event) {
			who := "from before the freeze"
			if e.Reason != "" {
				who = "that " + e.Reason
			}
			switch e.Type {
			case freeze.EventWaiting:
				r.note(d.Source, fmt.Sprintf("%d session(s) %s: ended at %s", len(e.Sessions), who, e.Deadline.Format(time.TimeOnly)))
			case freeze.EventEnded:
				r.note(d.Source, fmt.Sprintf("ended %d session(s) %s", len(e.Sessions), who))
			}
		}})
		if err != nil {
			return fmt.Errorf("freeze %s: %w", d.Source, err)
		}
		d.frozen = true
		d.freezeID = res.ID
		d.pending = res.Pending
		d.PausedJobs = res.PausedJobs
		r.note(d.Source, "frozen: no transaction id held; write counters recorded, to be proven unchanged when the source has been read")
		if len(res.PausedJobs) > 0 {
			r.note(d.Source, fmt.Sprintf("paused %d scheduled TimescaleDB jobs %v with the freeze: none runs on the target before it is verified, and unfreeze schedules them again on the source", len(res.PausedJobs), res.PausedJobs))
		}
		for _, s := range res.CannotStop {
			r.warn(d.Source + ": " + s)
		}
	}
	return nil
}

// proveFrozen finishes d's deferred freeze proof after its data was read (what names
// the reading: "dump", "copy"). A failure fails the run, which must not be resumed.
func (r *run) proveFrozen(ctx context.Context, d *DatabaseRun, what string) error {
	if d.pending == nil {
		return nil
	}
	return r.phase(d, PhaseProve, func() error {
		var p freeze.Proof
		err := dbconn.Retry(ctx, func() (err error) {
			p, err = d.pending.Finish(ctx)
			return err
		}, func(attempt int, err error) {
			r.note(d.Source, fmt.Sprintf("the freeze proof lost its connection to the source (%s): reading again, attempt %d of %d", dbconn.Reason(err), attempt, dbconn.ReadAttempts))
		})
		if err != nil {
			if errors.Is(err, freeze.ErrNotProven) {
				r.proofFailed = true
				d.pending = nil
			}
			return err
		}
		d.pending = nil
		d.FreezeProof = &p
		r.note(d.Source, fmt.Sprintf("proof: no write to the source from %s until the end of the %s (%.1f s; %d tables locked against writes meanwhile)", r.proofFrom(p), what, p.WindowSeconds, p.TablesLocked))
		for _, n := range p.LockNotes {
			r.warn(d.Source + ": " + n)
		}
		return nil
	})
}

// proofFrom names where a freeze proof starts: a resumed run's proof starts at the
// first run's baseline.
func (r *run) proofFrom(p freeze.Proof) string {
	if r.opt.Resume && !r.opt.Live { // a live run's freeze is its own cut-over's
		return fmt.Sprintf("the freeze (first run, %s)", p.Start.Format(time.TimeOnly))
	}
	return "the freeze"
}

// provePending finishes the pending freeze proofs of a stream run that failed and is
// to keep its sources frozen for --resume, so that a resume continues from a proven
// freeze. It says whether they all held.
func (r *run) provePending(ctx context.Context) bool {
	for _, d := range r.sum.Databases {
		if d.pending == nil {
			continue
		}
		p, err := d.pending.Finish(ctx)
		d.pending = nil
		if err != nil {
			r.warn(fmt.Sprintf("%s: %s; the sources are unfrozen instead of kept frozen for --resume", d.Source, err))
			return false
		}
		d.FreezeProof = &p
		r.note(d.Source, fmt.Sprintf("proof: no write to the source from %s until the run stopped (%.1f s)", r.proofFrom(p), p.WindowSeconds))
	}
	return true
}

// unfreeze gives writes back to the source database of d.
func (r *run) unfreeze(ctx context.Context, d *DatabaseRun) error {
	if _, err := freeze.Unfreeze(ctx, d.src); err != nil {
		return err
	}
	d.frozen = false
	d.Unfrozen = true
	return nil
}

// verify compares source and target of d.
func (r *run) verify(ctx context.Context, d *DatabaseRun) error {
	rep, err := verify.Run(ctx, verify.Options{Source: d.src, Target: d.dst, Jobs: r.opt.Jobs, ShowRows: 5, NotGiven: d.settingsRefused,
		ChunksDiffer: d.chunksDiffer(), OnEvent: r.verifyRetries(d)})
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	d.Verify = rep
	ok := rep.Identical
	d.Identical = &ok
	if !ok && r.opt.Rehearsal {
		r.note(d.Source, fmt.Sprintf("verify: %d unit(s) differ, as expected while the source keeps changing (no freeze in a rehearsal)", rep.UnitsDiffering))
		return nil
	}
	if !ok {
		return fmt.Errorf("verify found differences: %d unit(s) and %d schema difference(s) (listed in the summary)", rep.UnitsDiffering, len(rep.Schema))
	}
	r.note(d.Source, fmt.Sprintf("verified: %d units identical, %d rows", rep.UnitsChecked, rep.TargetRows))
	return nil
}

// verifyRetries tells of verify's new attempts after a lost connection.
func (r *run) verifyRetries(d *DatabaseRun) func(verify.Event) {
	return func(e verify.Event) {
		if e.Type == verify.EventRetry {
			r.note(d.Source, fmt.Sprintf("verify: a connection was lost (%s): comparing again, attempt %d of %d", e.Err, e.Attempt, dbconn.ReadAttempts))
		}
	}
}

// lightVerify is what --no-verify keeps of the verify, besides the row counts: the
// schema, and the rows of compressed chunks.
func (r *run) lightVerify(ctx context.Context, d *DatabaseRun) error {
	if err := r.verifySchema(ctx, d); err != nil {
		return err
	}
	return r.verifyCompressed(ctx, d)
}

// verifySchema compares the schema of both sides when the run's verify is skipped
// (--no-verify): row counts, the check that remains, do not see a constraint, index or
// foreign key lost on the way (issue 10, item 9: one to a hypertable that reached its
// root and not its chunks, say). It takes a second or so, without reading any rows.
func (r *run) verifySchema(ctx context.Context, d *DatabaseRun) error {
	return r.phase(d, PhaseVerifySchema, func() error {
		rep, err := verify.Run(ctx, verify.Options{Source: d.src, Target: d.dst, SchemaOnly: true, NotGiven: d.settingsRefused,
			ChunksDiffer: d.chunksDiffer(), OnEvent: r.verifyRetries(d)})
		if err != nil {
			return fmt.Errorf("verify the schema: %w", err)
		}
		if len(rep.Schema) == 0 {
			r.note(d.Source, "schema verified: identical")
			return nil
		}
		d.Verify = rep
		if r.opt.Rehearsal {
			r.note(d.Source, fmt.Sprintf("schema: %d difference(s), while the source keeps changing (no freeze in a rehearsal)", len(rep.Schema)))
			return nil
		}
		return fmt.Errorf("verify found %d schema difference(s) between source and target (listed in the summary)", len(rep.Schema))
	})
}

// verifyCompressed compares the rows read from compressed chunks on both sides when the
// run's verify is skipped (--no-verify): row counts, the check that remains, do not see
// a wrong value, and compressed rows are decoded with state that is not in them (a
// column's default kept in the chunk's catalog, see carryMissingValues), which no
// unit's COPY count vouches for.
func (r *run) verifyCompressed(ctx context.Context, d *DatabaseRun) error {
	if !d.ts || d.CompressedChunks == 0 {
		return nil
	}
	return r.phase(d, PhaseVerifyCompressed, func() error {
		rep, err := verify.Run(ctx, verify.Options{Source: d.src, Target: d.dst, Jobs: r.opt.Jobs, ShowRows: 5, CompressedOnly: true,
			OnEvent: r.verifyRetries(d)})
		if err != nil {
			return fmt.Errorf("verify the compressed chunks: %w", err)
		}
		d.CompressedVerified = rep.UnitsChecked
		if rep.Identical {
			r.note(d.Source, fmt.Sprintf("compressed chunks verified: %d units identical, %d rows", rep.UnitsChecked, rep.TargetRows))
			return nil
		}
		d.Verify = rep
		if r.opt.Rehearsal {
			r.note(d.Source, fmt.Sprintf("compressed chunks: %d unit(s) differ, as expected while the source keeps changing (no freeze in a rehearsal)", rep.UnitsDiffering))
			return nil
		}
		return fmt.Errorf("the rows of %d compressed unit(s) differ between source and target (see the summary's verify report)", rep.UnitsDiffering)
	})
}
