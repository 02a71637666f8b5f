package migrate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/freeze"
	"github.com/tsmigrate/tsmigrate/internal/inventory"
	"github.com/tsmigrate/tsmigrate/internal/journal"
	"github.com/tsmigrate/tsmigrate/internal/live"
	"github.com/tsmigrate/tsmigrate/internal/schema"
	"github.com/tsmigrate/tsmigrate/internal/sqltext"
	"github.com/tsmigrate/tsmigrate/internal/verify"
)

// Live mode (Options.Live, stream engine): the applications keep writing to the source
// during the copy. Per database, before anything is copied, live.Start publishes every
// table and chunk, present and future, and creates a logical replication slot whose
// snapshot the schema dump and the copy read; a live.Receiver keeps the slot's changes
// in the target from then on (so that the slot does not hold back the source's WAL).
// Once the copy is done, verify compares it with the source as of that snapshot
// (before any change is applied), the snapshot is let go, and a live.Applier applies
// the kept changes through the hypertables, in commit order. When the lag is small
// (Options.Cutover), the cut-over: the source is frozen as an offline run freezes it
// (proven), an end marker is written into its WAL, the changes up to it are applied,
// the sequences are set, and verify compares again only what changes were applied to
// (live_touched) and the schema, so the downtime does not grow with the database. The
// slot and the publication are dropped and the replica identities set back; the
// source stays frozen, as after an offline run.
//
// A run that fails or is interrupted before its cut-over ends drops the slot and the
// publication and sets the identities back: nothing is left on the source. A killed
// run leaves them; its target's _tsmigrate.live row names them.

// Cut-over modes (Options.Cutover).
const (
	CutoverAuto   = "auto"
	CutoverPrompt = "prompt"
)

// The automatic cut-over starts when the changes left to apply (LiveProgress.left)
// have stayed under CutoverLagBytes for cutoverSamples samples in a row (about a
// second apart): what is still to apply once the source is frozen then takes about a
// second, whatever the database's size. The lag in seconds is not a condition: it compares the source's commit times with
// this machine's clock, which may be off by seconds, and the applier commits once a
// second, so it swings by a second under a steady writer (measured: a run on a loaded
// machine waited 49 s for 3 samples under both 1 MB and 1 s).
const (
	CutoverLagBytes = 1 << 20
	cutoverSamples  = 3
	liveEvery       = time.Second
)

// Phases of a live run.
const (
	PhaseLiveStart     = "live-start"
	PhaseVerifyCopy    = "verify-copy"
	PhaseCatchUp       = "catch-up"
	PhaseApplyEnd      = "apply-to-end"
	PhaseSequences     = "sequences"
	PhaseVerifyChanged = "verify-changed"
	PhaseLiveDrop      = "live-drop"
)

// EventLive is the progress of a live run, about once a second (Event.Live).
const EventLive EventType = "live"

// LiveProgress is where a live run stands (all its databases together).
type LiveProgress struct {
	// Stage: "copy", "catch-up" or "cut-over".
	Stage string `json:"stage"`
	// LagBytes: the source's WAL position minus the position applied to the target.
	LagBytes int64 `json:"lag_bytes"`
	// LagSeconds: how long ago the oldest change not applied yet was committed (0
	// when every change received is applied).
	LagSeconds      float64       `json:"lag_s"`
	ApplyRowsPerSec float64       `json:"apply_rows_per_s"`
	ETA             time.Duration `json:"eta_ns"`
	// RetainedBytes: the WAL the slots hold back on the source.
	RetainedBytes int64 `json:"retained_bytes"`
	RowsApplied   int64 `json:"rows_applied"`

	// left: the changes still to apply, in bytes: those kept and not applied (their
	// number times the average size received), and the source's WAL not received
	// yet. Unlike LagBytes it leaves out the WAL that others write on the source's
	// server between the changes (other databases; the target's own when it is the
	// same server): the automatic cut-over's measure.
	left int64
}

// LiveSummary is what a live run's changes did.
type LiveSummary struct {
	Slots             []string `json:"slots"`
	PeakRetainedBytes int64    `json:"peak_retained_bytes"`
	PeakLagBytes      int64    `json:"peak_lag_bytes"`
	PeakLagSeconds    float64  `json:"peak_lag_s"`
	RowsApplied       int64    `json:"rows_applied"`
	Transactions      int64    `json:"transactions"`
	// ApplyRowsPerSec is measured over the catch-up of the changes kept during the
	// copy (from the applier's start to the first sample, a second apart, that found
	// nothing waiting), else over the whole apply: what the applier does when behind,
	// not the writers' pace.
	ApplyRowsPerSec float64 `json:"apply_rows_per_s"`
	Reconnects      int     `json:"reconnects"`
	// TouchedUnits: the tables and chunks changes were applied to, compared again at
	// the cut-over.
	TouchedUnits int `json:"touched_units"`
}

// liveDB is a database's live migration in this process.
type liveDB struct {
	names    live.Names
	identity []live.IdentityChange
	stream   *live.Stream
	recv     *live.Receiver
	recvStop context.CancelFunc
	recvDone chan struct{}
	ap       *live.Applier
	apStop   context.CancelFunc
	apDone   chan error
	apStart  time.Time
	apEnd    time.Time
	// from: the position applied when this run began (the slot's consistent point, or
	// what a killed run applied), until the applier says more.
	from live.LSN
	// pendingSince: when changes were first seen waiting to be applied, since all were
	// last applied.
	pendingSince time.Time
	dropped      bool
	// last sample, for the rates
	lastAt      time.Time
	lastRows    int64
	lastApplied live.LSN
	// drained: the changes kept during the copy were all applied, drainRows rows in
	// drainSecs from the applier's start: the apply rate when it is behind, not the
	// writers' pace.
	drained   bool
	drainRows int64
	drainSecs float64
}

// liveFail carries the first failure of a receiver or an applier.
type liveFail struct {
	db  string
	err error
}

// CheckLive refuses live options that do not go together, or with the rest (exit 2):
// Run checks them before it contacts a server, and so may a caller earlier.
func (opt Options) CheckLive() error {
	if !opt.Live {
		switch {
		case opt.Cutover != "":
			return exit.Usagef("add --live", "--cutover is for --live")
		case opt.ReplicaIdentityFull:
			return exit.Usagef("add --live", "--replica-identity-full is for --live")
		}
		return nil
	}
	switch {
	case opt.Engine != EngineStream:
		return exit.Usagef("use --engine stream", "--live is for the stream engine")
	case opt.Rehearsal:
		return exit.Usagef("leave one out", "--live and --rehearsal exclude each other: a live run freezes only for its cut-over")
	case opt.Worker:
		return exit.Usagef("leave one out", "--live and --worker exclude each other")
	case opt.KeepFrozenOnFailure:
		return exit.Usagef("leave one out", "--live and --keep-frozen-on-failure exclude each other: a live run freezes the source only at its cut-over")
	}
	switch opt.Cutover {
	case "", CutoverAuto:
	case CutoverPrompt:
		if opt.ConfirmCutover == nil {
			return exit.Usagef("give Options.ConfirmCutover", "--cutover prompt needs someone to ask")
		}
	default:
		return exit.Usagef(`use "auto" or "prompt"`, "unknown --cutover %q", opt.Cutover)
	}
	return nil
}

// startLive starts the live migration of every source database: publication, replica
// identities, slot and its snapshot, which the schema dump and the copy read.
func (r *run) startLive(ctx context.Context) error {
	for _, d := range r.sum.Databases {
		names := live.NewNames()
		s, err := live.Start(ctx, d.src, live.Options{Names: names, ReplicaIdentityFull: r.opt.ReplicaIdentityFull})
		var mi *live.MissingIdentityError
		if errors.As(err, &mi) {
			return exit.New(exit.Blocked, mi.Hint(), "%s: %s", d.Source, mi.Error())
		}
		if err != nil {
			return fmt.Errorf("%s: start the live migration on the source: %w", d.Source, err)
		}
		d.live = &liveDB{names: names, identity: s.Identity, stream: s, from: s.StartLSN}
		d.snap = s
		d.freezeID = liveID + names.Slot
		d.LiveSlot = names.Slot
		what := ""
		if len(s.Identity) > 0 {
			var ts []string
			for _, c := range s.Identity {
				ts = append(ts, c.Kind+" "+c.Table.String())
			}
			what = fmt.Sprintf("; replica identity set for the migration on %s", strings.Join(ts, ", "))
		}
		r.note(d.Source, fmt.Sprintf("live: publication and replication slot %s made on the source (the copy reads its snapshot, at %s)%s", names.Slot, s.StartLSN, what))
	}
	return nil
}

// liveID starts the id a live run's journal records instead of a freeze's.
const liveID = "live "

// initLive records each database's live migration in its target and starts receiving
// the changes.
func (r *run) initLive(ctx context.Context) error {
	for _, d := range r.sum.Databases {
		if err := live.Init(ctx, d.dst, d.live.stream); err != nil {
			return fmt.Errorf("%s: %w", d.Source, err)
		}
		r.startReceiver(ctx, d)
	}
	return nil
}

func (r *run) startReceiver(ctx context.Context, d *DatabaseRun) {
	l := d.live
	l.recv = &live.Receiver{Source: d.src, Target: d.dst, OnRetry: func(n int, err error) {
		r.note(d.Source, fmt.Sprintf("live: the replication connection was lost (%s): connecting again, attempt %d", dbconn.Reason(err), n))
	}}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	l.recvStop, l.recvDone = cancel, make(chan struct{})
	go func() {
		defer close(l.recvDone)
		if err := l.recv.Run(rctx); err != nil {
			r.liveFailed(d, err)
		}
	}()
}

// liveFailed records the first failure of a receiver or applier.
func (r *run) liveFailed(d *DatabaseRun, err error) {
	select {
	case r.liveErr <- liveFail{d.Source, err}:
	default:
	}
}

// liveError is the failure a receiver or applier reported, as the run's error.
func liveError(f liveFail) error {
	var se *live.StopError
	if errors.As(f.err, &se) {
		e := se.ExitError()
		e.Msg = f.db + ": " + e.Msg
		return e
	}
	return fmt.Errorf("%s: live: %w", f.db, f.err)
}

// verifyCopy compares d's copy with the source as of the slot's snapshot, before any
// change is applied: the full verify of a live run (the cut-over compares again only
// what changed since).
func (r *run) verifyCopy(ctx context.Context, d *DatabaseRun) error {
	if r.opt.NoVerify {
		return nil
	}
	return r.phase(d, PhaseVerifyCopy, func() error {
		rep, err := verify.Run(ctx, verify.Options{Source: d.src, Target: d.dst, Jobs: r.opt.Jobs, ShowRows: 5, DataOnly: true,
			SourceSnapshot: d.snap.Snapshot(), ChunksDiffer: d.chunksDiffer(), OnEvent: r.verifyRetries(d)})
		if err != nil {
			return fmt.Errorf("verify the copy: %w", err)
		}
		if !rep.Identical {
			d.Verify = rep
			ok := false
			d.Identical = &ok
			return fmt.Errorf("verify found differences between the copy and the source as of the slot's snapshot: %d unit(s) (listed in the summary)", rep.UnitsDiffering)
		}
		d.copyVerified = rep
		r.note(d.Source, fmt.Sprintf("copy verified against the source as of the slot's snapshot: %d units identical, %d rows", rep.UnitsChecked, rep.TargetRows))
		return nil
	})
}

// startApplying records d's copy as done in its target and starts applying the
// changes kept meanwhile.
func (r *run) startApplying(ctx context.Context, d *DatabaseRun) error {
	if err := r.unpublishTarget(ctx, d); err != nil {
		return err
	}
	if err := onTarget(ctx, d, func(ctx context.Context, c *dbconn.Conn) error { return live.MarkCopied(ctx, c.Conn) }); err != nil {
		return fmt.Errorf("record the copy as done in the target: %w", err)
	}
	l := d.live
	ap := &live.Applier{Target: d.dst, End: r.liveEnd}
	actx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.liveMu.Lock()
	l.ap, l.apStop, l.apDone, l.apStart = ap, cancel, make(chan error, 1), time.Now()
	r.liveMu.Unlock()
	go func() {
		err := ap.Run(actx)
		if err != nil && actx.Err() == nil {
			r.liveFailed(d, err)
		}
		l.apEnd = time.Now()
		l.apDone <- err
	}()
	r.note(d.Source, "live: copy done; applying the changes made on the source since its snapshot")
	return nil
}

// sample reads where d's live migration stands.
func (l *liveDB) sample(now time.Time) (p LiveProgress, dt float64, rows int64, applied live.LSN) {
	rs := l.recv.Status()
	p.RetainedBytes = rs.Retained
	var as live.ApplyStatus
	if l.ap != nil {
		as = l.ap.Status()
	}
	as.AppliedLSN = max(as.AppliedLSN, l.from)
	pending := rs.ReceivedSeq > as.AppliedSeq
	if pending {
		if l.pendingSince.IsZero() {
			l.pendingSince = now
		}
		p.LagBytes = int64(rs.SourceLSN) - int64(as.AppliedLSN)
		since := l.pendingSince
		if as.CommitTime.After(since) {
			since = as.CommitTime
		}
		p.LagSeconds = now.Sub(since).Seconds()
	} else {
		l.pendingSince = time.Time{}
		p.LagBytes = int64(rs.SourceLSN) - int64(max(rs.ReceivedLSN, as.AppliedLSN))
	}
	p.LagBytes = max(p.LagBytes, 0)
	p.left = max(int64(rs.SourceLSN)-int64(rs.ReceivedLSN), 0)
	switch kept := rs.ReceivedSeq - as.AppliedSeq; {
	case kept <= 0:
	case rs.Messages > 0:
		p.left += kept * (rs.Bytes / rs.Messages)
	default: // kept by a run before this one: sizes unknown here
		p.left = p.LagBytes
	}
	p.RowsApplied = as.Rows
	if !l.lastAt.IsZero() {
		dt = now.Sub(l.lastAt).Seconds()
		rows = as.Rows - l.lastRows
		if as.AppliedLSN > l.lastApplied {
			applied = as.AppliedLSN - l.lastApplied
		}
	}
	if l.ap != nil && !l.drained && !pending {
		l.drained, l.drainRows, l.drainSecs = true, as.Rows, now.Sub(l.apStart).Seconds()
	}
	l.lastAt, l.lastRows, l.lastApplied = now, as.Rows, as.AppliedLSN
	return p, dt, rows, applied
}

// progress samples every database's live migration, emits it as an EventLive, keeps
// the peaks, and returns it.
func (r *run) progress(stage string) LiveProgress {
	r.liveMu.Lock()
	defer r.liveMu.Unlock()
	now := time.Now()
	p := LiveProgress{Stage: stage}
	var dt, rows, bytes float64
	for _, d := range r.sum.Databases {
		if d.live == nil || d.live.recv == nil {
			continue
		}
		s, sdt, srows, sbytes := d.live.sample(now)
		p.LagBytes += s.LagBytes
		p.left += s.left
		p.LagSeconds = max(p.LagSeconds, s.LagSeconds)
		p.RetainedBytes += s.RetainedBytes
		p.RowsApplied += s.RowsApplied
		dt = max(dt, sdt)
		rows += float64(srows)
		bytes += float64(sbytes)
	}
	if dt > 0 {
		p.ApplyRowsPerSec = rows / dt
		if rate := bytes / dt; rate > 0 && p.LagBytes > 0 {
			p.ETA = time.Duration(float64(p.LagBytes) / rate * float64(time.Second))
		}
	}
	ls := r.liveSummary()
	ls.PeakLagBytes = max(ls.PeakLagBytes, p.LagBytes)
	ls.PeakLagSeconds = max(ls.PeakLagSeconds, p.LagSeconds)
	r.emit(Event{Type: EventLive, Live: &p})
	return p
}

// liveSummary is the summary's live part, made on first use.
func (r *run) liveSummary() *LiveSummary {
	if r.sum.Live == nil {
		r.sum.Live = &LiveSummary{}
	}
	return r.sum.Live
}

// reportLive emits progress about once a second until stop is closed: while copying.
func (r *run) reportLive(stop <-chan struct{}) {
	t := time.NewTicker(liveEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			r.progress("copy")
		}
	}
}

// catchUp waits until the lag is small enough for the cut-over (Options.Cutover), and
// in prompt mode for the user's word.
func (r *run) catchUp(ctx context.Context) error {
	t := time.NewTicker(liveEvery)
	defer t.Stop()
	good := 0
	var confirmed chan error
	for {
		p := r.progress("catch-up")
		if p.left < CutoverLagBytes {
			good++
		} else {
			good = 0
		}
		if good >= cutoverSamples {
			if r.opt.Cutover != CutoverPrompt {
				r.note("", fmt.Sprintf("live: %d bytes of changes left to apply (lag %d bytes of WAL, %.1f s) for %d samples in a row: cutting over", p.left, p.LagBytes, p.LagSeconds, good))
				return nil
			}
			if confirmed == nil {
				confirmed = make(chan error, 1)
				go func() { confirmed <- r.opt.ConfirmCutover(ctx) }()
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case f := <-r.liveErr:
			return liveError(f)
		case err := <-confirmed:
			if err != nil && ctx.Err() == nil && !errors.Is(err, context.Canceled) {
				// Not a bad usage: the run did change things, which undo takes back.
				return &exit.Error{Code: exit.Failed, Err: err, Msg: "the cut-over was not confirmed (" + dbconn.Reason(err) + ")",
					Hint: "the slot and the publication are dropped from the source; run tsmigrate migrate --live again when ready"}
			}
			return err
		case <-t.C:
		}
	}
}

// sqlOwnSessions: this process's other sessions in the source database (tsmigrate's
// application_name, see package dbconn), which the cut-over's freeze keeps: the
// receiver's. PostgreSQL 15, 17.
const sqlOwnSessions = `SELECT pid::bigint FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = 'tsmigrate' AND backend_type = 'client backend'`

// ownSessions lists the sessions of this run the freeze of d is not to end.
func ownSessions(ctx context.Context, d *DatabaseRun) ([]uint32, error) {
	conn, err := d.src.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, _ := conn.Query(ctx, sqlOwnSessions)
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("%s: list this run's sessions on the source: %w", d.Source, err)
	}
	var out []uint32
	for _, p := range pids {
		out = append(out, uint32(p))
	}
	return out, nil
}

// cutOver stops writes on the sources and applies the last changes (see the comment at
// the top). It returns when the targets are complete and verified, and the sources
// frozen; the downtime started at frozenAt.
func (r *run) cutOver(ctx context.Context) (frozenAt time.Time, err error) {
	if err := r.phase(nil, PhaseCatchUp, func() error { return r.catchUp(ctx) }); err != nil {
		return time.Time{}, err
	}
	for _, d := range r.sum.Databases {
		if d.keepPIDs, err = ownSessions(ctx, d); err != nil {
			return time.Time{}, err
		}
	}
	frozenAt = time.Now()
	if err := r.phase(nil, PhaseFreeze, func() error { return r.freezeAll(ctx) }); err != nil {
		return frozenAt, err
	}
	if err := r.phase(nil, PhaseApplyEnd, func() error { return r.applyToEnd(ctx) }); err != nil {
		return frozenAt, err
	}
	for _, d := range r.sum.Databases {
		d.live.recvStop()
		<-d.live.recvDone
		r.collectLive(d)
	}
	for _, d := range r.sum.Databases {
		if err := r.phase(d, PhaseSequences, func() error { return setSequences(ctx, d) }); err != nil {
			return frozenAt, err
		}
		// The slot is done with: the end marker is applied. Dropped before the verify,
		// which compares the source's replica identities, set back, with the target's.
		if err := r.phase(d, PhaseLiveDrop, func() error { return r.dropLive(ctx, d) }); err != nil {
			return frozenAt, err
		}
		if err := r.verifyChanged(ctx, d); err != nil {
			return frozenAt, err
		}
		if d.ts {
			if err := r.phase(d, PhaseRefreshAggregates, func() error { return r.refreshTouchedAggregates(ctx, d) }); err != nil {
				return frozenAt, err
			}
		}
		if err := r.markStep(ctx, d, stepComplete); err != nil {
			return frozenAt, err
		}
		r.scheduleTargetJobs(ctx, d)
	}
	return frozenAt, nil
}

// applyToEnd writes the end marker into each frozen source's WAL and waits until its
// applier applied every change before it. The freeze is proven meanwhile: from its
// baseline until after the end marker, nothing was written (a write before the marker
// is in the stream and applied; one after it would be lost, and the freeze, proven to
// hold by then, keeps it from happening).
func (r *run) applyToEnd(ctx context.Context) error {
	for _, d := range r.sum.Databases {
		if _, err := live.EmitEndMarker(ctx, d.src, r.liveEnd); err != nil {
			return fmt.Errorf("%s: %w", d.Source, err)
		}
	}
	proved := make(chan error, 1)
	go func() {
		for _, d := range r.sum.Databases {
			if err := r.proveFrozen(ctx, d, "stream (its end marker)"); err != nil {
				proved <- err
				return
			}
		}
		proved <- nil
	}()
	if err := r.waitApplied(ctx); err != nil {
		<-proved
		return err
	}
	return <-proved
}

// waitApplied waits until every applier applied its changes up to the end marker.
func (r *run) waitApplied(ctx context.Context) error {
	t := time.NewTicker(liveEvery)
	defer t.Stop()
	for _, d := range r.sum.Databases {
		for done := false; !done; {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case f := <-r.liveErr:
				return liveError(f)
			case err := <-d.live.apDone:
				if err != nil {
					return liveError(liveFail{d.Source, err})
				}
				done = true
			case <-t.C:
				r.progress("cut-over")
			}
		}
	}
	r.progress("cut-over")
	return nil
}

// collectLive adds d's receiver's and applier's figures to the summary.
func (r *run) collectLive(d *DatabaseRun) {
	r.liveMu.Lock()
	defer r.liveMu.Unlock()
	ls := r.liveSummary()
	rs := d.live.recv.Status()
	as := d.live.ap.Status()
	ls.Slots = append(ls.Slots, d.live.names.Slot)
	ls.PeakRetainedBytes = max(ls.PeakRetainedBytes, rs.PeakRetained)
	ls.RowsApplied += as.Rows
	ls.Transactions += as.Transactions
	ls.Reconnects += rs.Reconnects
	switch l := d.live; {
	case l.drainRows > 0 && l.drainSecs > 0:
		ls.ApplyRowsPerSec += float64(l.drainRows) / l.drainSecs
	case l.apEnd.After(l.apStart):
		ls.ApplyRowsPerSec += float64(as.Rows) / l.apEnd.Sub(l.apStart).Seconds()
	}
}

// Sequences, read on the frozen source and set on the target: the copy set them as
// they were then, and the applications used them since. PostgreSQL 15, 17.
var (
	sqlUserSequences = `SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'S' AND ` + sqltext.DataSchema("n.nspname") + ` AND NOT ` + sqltext.ExtensionMember(sqltext.Catalog("pg_class"), "c.oid") + ` ORDER BY 1`
	sqlSetval = `SELECT pg_catalog.setval($1::regclass, $2, $3)`
)

// setSequences gives d's target sequences the source's values.
func setSequences(ctx context.Context, d *DatabaseRun) error {
	src, err := d.src.Connect(ctx)
	if err != nil {
		return err
	}
	defer src.Close(context.WithoutCancel(ctx))
	rows, _ := src.Query(ctx, sqlUserSequences)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("list the source's sequences: %w", err)
	}
	if len(names) == 0 {
		return nil
	}
	// One query: each sequence's last_value and is_called, in the order of names.
	var q []string
	for _, n := range names {
		q = append(q, "SELECT last_value, is_called FROM "+n)
	}
	rows, _ = src.Query(ctx, "("+strings.Join(q, ")\nUNION ALL (")+")")
	var last []int64
	var called []bool
	var l int64
	var c bool
	if _, err := pgx.ForEachRow(rows, []any{&l, &c}, func() error {
		last, called = append(last, l), append(called, c)
		return nil
	}); err != nil {
		return fmt.Errorf("read the source's sequences: %w", err)
	}
	if len(last) != len(names) {
		return fmt.Errorf("read the source's sequences: %d values for %d sequences", len(last), len(names))
	}
	return onTarget(ctx, d, func(ctx context.Context, c *dbconn.Conn) error {
		b := &pgx.Batch{}
		for i, n := range names {
			b.Queue(sqlSetval, n, last[i], called[i])
		}
		if err := c.SendBatch(ctx, b).Close(); err != nil {
			return fmt.Errorf("set the target's sequences: %w", err)
		}
		return nil
	})
}

// sqlTouched: what changes were applied to, by source name; a chunk with its
// hypertable, as the slot's snapshot and the stream named them.
const sqlTouched = `SELECT t.kind, t.schema_name, t.table_name, coalesce(h.schema_name, ''), coalesce(h.table_name, ''), t.key_columns
FROM _tsmigrate.live_touched t
LEFT JOIN _tsmigrate.live_chunks c ON t.kind = 'chunk' AND c.schema_name = t.schema_name AND c.table_name = t.table_name
LEFT JOIN _tsmigrate.live_hypertables h ON h.id = c.hypertable_id`

// sqlTouchedKeys: the keys of the rows changes were applied to, of the tables
// compared by them.
const sqlTouchedKeys = `SELECT k.schema_name, k.table_name, k.key
FROM _tsmigrate.live_touched_keys k JOIN _tsmigrate.live_touched t ON t.kind = 'table'
	AND t.schema_name = k.schema_name AND t.table_name = k.table_name AND t.key_columns IS NOT NULL`

// touchedUnits reads what d's changes were applied to: a filter of verify's units,
// and the rows of plain tables to compare by their keys (the applier recorded them).
func touchedUnits(ctx context.Context, d *DatabaseRun) (func(u *verify.Unit) bool, map[string]*verify.Keys, int, error) {
	tables, chunks, hypertables := map[string]bool{}, map[string]bool{}, map[string]bool{}
	keys := map[string]*verify.Keys{}
	n := 0
	err := onTarget(ctx, d, func(ctx context.Context, c *dbconn.Conn) error {
		rows, _ := c.Query(ctx, sqlTouched)
		var kind, s, t, hs, ht string
		var cols []string
		_, err := pgx.ForEachRow(rows, []any{&kind, &s, &t, &hs, &ht, &cols}, func() error {
			n++
			name := inventory.DisplayName(s, t)
			if kind == "chunk" {
				chunks[name] = true
				if ht != "" {
					hypertables[inventory.DisplayName(hs, ht)] = true
				}
				return nil
			}
			tables[name] = true
			if cols != nil {
				keys[name] = &verify.Keys{Columns: cols}
			}
			return nil
		})
		if err != nil || len(keys) == 0 {
			return err
		}
		rows, _ = c.Query(ctx, sqlTouchedKeys)
		var key []string
		_, err = pgx.ForEachRow(rows, []any{&s, &t, &key}, func() error {
			if k := keys[inventory.DisplayName(s, t)]; k != nil {
				k.Values = append(k.Values, key)
			}
			return nil
		})
		return err
	})
	if err != nil {
		return nil, nil, 0, fmt.Errorf("read what the changes were applied to: %w", err)
	}
	return func(u *verify.Unit) bool {
		switch u.Kind {
		case "chunk":
			return chunks[u.Chunk]
		case "range":
			// Chunks that do not pair: every range of a hypertable changed (and of
			// any continuous aggregate, named by its view).
			return u.Aggregate || hypertables[u.Table]
		}
		return tables[u.Table]
	}, keys, n, nil
}

// verifyChanged compares, on the frozen source, the schema and the tables and chunks
// that changes were applied to since the copy was verified (the schema alone with
// --no-verify).
func (r *run) verifyChanged(ctx context.Context, d *DatabaseRun) error {
	if r.opt.NoVerify {
		return r.verifySchema(ctx, d)
	}
	only, keys, n, err := touchedUnits(ctx, d)
	if err != nil {
		return err
	}
	r.liveMu.Lock()
	r.liveSummary().TouchedUnits += n
	r.liveMu.Unlock()
	return r.phase(d, PhaseVerifyChanged, func() error {
		rep, err := verify.Run(ctx, verify.Options{Source: d.src, Target: d.dst, Jobs: r.opt.Jobs, ShowRows: 5, NotGiven: d.settingsRefused,
			ChunksDiffer: d.chunksDiffer(), OnEvent: r.verifyRetries(d), Only: only, Keys: keys})
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		d.Verify = rep
		ok := rep.Identical
		d.Identical = &ok
		if !ok {
			return fmt.Errorf("verify found differences: %d unit(s) and %d schema difference(s) (listed in the summary)", rep.UnitsDiffering, len(rep.Schema))
		}
		copied := "by the run that copied them"
		if d.copyVerified != nil {
			copied = fmt.Sprintf("all %d of them", d.copyVerified.UnitsChecked)
		}
		r.note(d.Source, fmt.Sprintf("verified: the schema, and the %d units changes were applied to, identical (the units were verified after the copy: %s)", rep.UnitsChecked, copied))
		return nil
	})
}

// dropLive removes d's slot and publication from the source and sets the replica
// identities back.
func (r *run) dropLive(ctx context.Context, d *DatabaseRun) error {
	if d.live == nil || d.live.dropped {
		return nil
	}
	if err := live.Drop(ctx, d.src, d.live.names, d.live.identity); err != nil {
		return err
	}
	d.live.dropped = true
	r.note(d.Source, fmt.Sprintf("live: replication slot and publication %s dropped from the source, replica identities set back", d.live.names.Slot))
	return nil
}

// identityReset sets a table's replica identity back to what it was before live.Start.
func identityReset(c live.IdentityChange) string {
	what := map[string]string{"d": "DEFAULT", "n": "NOTHING", "f": "FULL"}[c.Was]
	if c.Was == "i" {
		what = "USING INDEX " + pgx.Identifier{c.WasIndex}.Sanitize()
	}
	return "ALTER TABLE " + pgx.Identifier{c.Table.Schema, c.Table.Name}.Sanitize() + " REPLICA IDENTITY " + what
}

// unpublishTarget undoes on d's target what the schema dump, taken in the slot's
// snapshot, carried of the live run: its publication, and the replica identities it
// set on the user's tables (TimescaleDB's own tables are not dumped).
func (r *run) unpublishTarget(ctx context.Context, d *DatabaseRun) error {
	return onTarget(ctx, d, func(ctx context.Context, c *dbconn.Conn) error {
		if _, err := c.Exec(ctx, "DROP PUBLICATION IF EXISTS "+pgx.Identifier{d.live.names.Publication}.Sanitize()); err != nil {
			return fmt.Errorf("drop the live run's publication from the target: %w", err)
		}
		for _, ch := range d.live.identity {
			if ch.Kind == "timescaledb" {
				continue
			}
			if _, err := c.Exec(ctx, identityReset(ch)); err != nil && !isUndefinedTable(err) {
				return fmt.Errorf("set back the replica identity of %s on the target: %w", ch.Table, err)
			}
		}
		return nil
	})
}

// stopLive stops d's receiver and applier, and lets its snapshot go.
func (r *run) stopLive(ctx context.Context, d *DatabaseRun) {
	l := d.live
	if l == nil {
		return
	}
	if l.apStop != nil {
		l.apStop()
	}
	if l.recvStop != nil {
		l.recvStop()
		<-l.recvDone
	}
	r.closeSnapshot(ctx, d)
}

// undoLive, for a run that failed or was interrupted: what live mode made on the
// sources is dropped, and the identities set back.
func (r *run) undoLive(ctx context.Context) {
	for _, d := range r.sum.Databases {
		if d.live == nil {
			continue
		}
		r.stopLive(ctx, d)
		if err := r.dropLive(ctx, d); err != nil {
			r.warn(fmt.Sprintf("%s: %s; on the source run: SELECT pg_drop_replication_slot(%s); DROP PUBLICATION IF EXISTS %s",
				d.Source, dbconn.Reason(err), sqltext.Literal(d.live.names.Slot), d.live.names.Publication))
		}
	}
}

// newLiveEnd is the content of this run's end marker: an applier stops at its own only.
func newLiveEnd() string {
	var b [8]byte
	rand.Read(b[:])
	return "run " + hex.EncodeToString(b[:])
}

// isUndefinedTable: 42P01, a table dropped meanwhile.
func isUndefinedTable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42P01"
}

// sqlSlotConfirmed: on the source, the position up to which the slot was told the
// changes are kept. PostgreSQL 15, 17.
const sqlSlotConfirmed = `SELECT coalesce(confirmed_flush_lsn::text, '') FROM pg_replication_slots
WHERE slot_name = $1 AND database = current_database() AND slot_type = 'logical'`

// dropSlotHint says how to give up a live run whose slot stays on the source.
func dropSlotHint(names live.Names) string {
	return fmt.Sprintf("on the source run SELECT pg_drop_replication_slot(%s); DROP PUBLICATION IF EXISTS %s; (and set back the replica identities --replica-identity-full set), then reset the target (drop and create the database) and migrate again",
		sqltext.Literal(names.Slot), names.Publication)
}

// checkLiveResume accepts a --resume of a live run (its journal's id is liveID and the
// slot's name) whose copy was done: the source is not frozen (its changes since are
// in the slot), the target holds the live state with the copy marked done, and the
// slot is still on the source, confirmed no further than the target received. The
// receiver and the applier then go on from the target's state, and the run cuts over.
func (r *run) checkLiveResume(ctx context.Context, d *DatabaseRun, conn *dbconn.Conn, jr *journal.Run, fs *freeze.State, steps map[string]bool) error {
	st, err := live.ReadState(ctx, conn.Conn)
	if errors.Is(err, live.ErrNoState) {
		return refuseResume("resume: target database %s holds the journal of a live migration (%s) but not its state", d.Target, strings.TrimPrefix(jr.FreezeID, liveID))
	}
	if err != nil {
		return err
	}
	if !st.Copied {
		return exit.New(exit.Usage, dropSlotHint(st.Names),
			"cannot resume: the live migration of %s was stopped before its copy was done, and the snapshot the copy read is gone with it", d.Source)
	}
	if fs.Frozen {
		return refuseResume("resume: source database %s is frozen (freeze %s): the live run was stopped in its cut-over; give writes back with tsmigrate unfreeze, then resume (the changes since are in replication slot %s)",
			d.Source, fs.ID, st.Slot)
	}
	src, err := d.src.Connect(ctx)
	if err != nil {
		return err
	}
	defer src.Close(context.WithoutCancel(ctx))
	var confirmed string
	err = src.QueryRow(ctx, sqlSlotConfirmed, st.Slot).Scan(&confirmed)
	if errors.Is(err, pgx.ErrNoRows) {
		return exit.New(exit.Usage, "reset the target (drop and create the database) and migrate again",
			"cannot resume: replication slot %s of the live migration of %s is not on the source any more, so the changes since the copy are lost", st.Slot, d.Source)
	}
	if err != nil {
		return fmt.Errorf("%s: read replication slot %s: %w", d.Source, st.Slot, err)
	}
	if c, err := pglogrepl.ParseLSN(confirmed); err != nil || c > st.ReceivedLSN {
		return exit.New(exit.Usage, dropSlotHint(st.Names),
			"cannot resume: replication slot %s on the source was confirmed up to %s, past what target database %s holds (%s): changes may be missing", st.Slot, confirmed, d.Target, st.ReceivedLSN)
	}
	if d.ts {
		d.RestorePath = schema.PathCatalog
		if steps[stepWayAPI] {
			d.RestorePath = schema.PathAPI
		}
	}
	d.live = &liveDB{names: st.Names, identity: st.Identity, from: st.AppliedLSN}
	d.freezeID, d.LiveSlot, d.steps = jr.FreezeID, st.Slot, steps
	r.opt.Live = true
	if r.opt.Cutover == "" {
		r.opt.Cutover = CutoverAuto
	}
	r.note(d.Source, fmt.Sprintf("resuming the live migration: its copy is done, replication slot %s holds the changes since (received up to %s, applied up to %s)", st.Slot, st.ReceivedLSN, st.AppliedLSN))
	return nil
}

// startResumedReceivers starts receiving again for the databases of a resumed live run.
func (r *run) startResumedReceivers(ctx context.Context) {
	for _, d := range r.sum.Databases {
		if d.live != nil && d.live.recv == nil {
			r.startReceiver(ctx, d)
		}
	}
}

// Continuous aggregates over what changed. The changes a live run applies do not reach
// the target's continuous aggregates: the applier's session keeps TimescaleDB's
// invalidation trigger from firing (replica role, or triggers disabled per
// transaction), and the source's invalidation logs, which hold the buckets its writers
// changed since their last refresh, are not in the stream. Measured on 2.19.3 (full
// build): after a live run, refresh_continuous_aggregate(cagg, NULL, NULL) on both
// sides left on the target the six buckets a writer changed during the run with their
// old values, while the source's refresh recomputed them. So at the cut-over, once the
// changes are applied and verified (verify compares the materialized rows, which the
// source's own refresh has not recomputed either), each continuous aggregate over a
// hypertable that changes were applied to is refreshed with force over the range of the
// chunks changed: bounded by them, not by the database.
//
// sqlWindows, on the source (frozen), in a transaction whose TimeZone is UTC
// (sqlWindowsUTC, so that a bound printed as timestamptz reads back as the chunk's bound in a
// timestamp or date column's type): per hypertable, the time range of the chunks named
// ($1 schemas, $2 names), as SQL literals of its time column's type (format %L, so the
// server quotes them). TimescaleDB 2.19, 2.31.
const (
	sqlWindowsUTC = `SET LOCAL TimeZone = 'UTC'`
	sqlWindows    = `SELECT c.hypertable_schema, c.hypertable_name,
	CASE WHEN min(c.range_start_integer) IS NOT NULL
		THEN format('%s::%s', min(c.range_start_integer), d.column_type)
		ELSE format('%L::%s', min(c.range_start), d.column_type) END,
	CASE WHEN max(c.range_end_integer) IS NOT NULL
		THEN format('%s::%s', max(c.range_end_integer), d.column_type)
		ELSE format('%L::%s', max(c.range_end), d.column_type) END
FROM timescaledb_information.chunks c
JOIN timescaledb_information.dimensions d ON d.hypertable_schema = c.hypertable_schema
	AND d.hypertable_name = c.hypertable_name AND d.dimension_number = 1
JOIN unnest($1::text[], $2::text[]) AS t(s, n) ON t.s = c.chunk_schema AND t.n = c.chunk_name
GROUP BY c.hypertable_schema, c.hypertable_name, d.column_type`
	// sqlAggregatesOver, on the target: the continuous aggregates over a hypertable.
	sqlAggregatesOver = `SELECT format('%I.%I', view_schema, view_name) FROM timescaledb_information.continuous_aggregates
WHERE hypertable_schema = $1 AND hypertable_name = $2 ORDER BY 1`
	sqlTouchedChunks = `SELECT schema_name, table_name FROM _tsmigrate.live_touched WHERE kind = 'chunk'`
)

// PhaseRefreshAggregates refreshes the continuous aggregates over what changed.
const PhaseRefreshAggregates = "refresh-aggregates"

// refreshTouchedAggregates refreshes, on d's target, the continuous aggregates over
// the chunks changes were applied to (see the comment above sqlWindows), and says which.
func (r *run) refreshTouchedAggregates(ctx context.Context, d *DatabaseRun) error {
	var schemas, names []string
	if err := onTarget(ctx, d, func(ctx context.Context, c *dbconn.Conn) error {
		rows, _ := c.Query(ctx, sqlTouchedChunks)
		var s, n string
		_, err := pgx.ForEachRow(rows, []any{&s, &n}, func() error {
			schemas, names = append(schemas, s), append(names, n)
			return nil
		})
		return err
	}); err != nil {
		return fmt.Errorf("read the chunks changes were applied to: %w", err)
	}
	if len(names) == 0 {
		return nil
	}
	type window struct{ schema, table, start, end string }
	var windows []window
	src, err := d.src.Connect(ctx)
	if err != nil {
		return err
	}
	defer src.Close(context.WithoutCancel(ctx))
	err = pgx.BeginFunc(ctx, src, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, sqlWindowsUTC); err != nil {
			return err
		}
		rows, _ := tx.Query(ctx, sqlWindows, schemas, names)
		var w window
		_, err := pgx.ForEachRow(rows, []any{&w.schema, &w.table, &w.start, &w.end}, func() error {
			windows = append(windows, w)
			return nil
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("read the source's ranges of the chunks changed: %w", err)
	}
	return onTarget(ctx, d, func(ctx context.Context, c *dbconn.Conn) error {
		var refreshed []string
		for _, w := range windows {
			rows, _ := c.Query(ctx, sqlAggregatesOver, w.schema, w.table)
			aggs, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return fmt.Errorf("list the continuous aggregates over %s: %w", inventory.DisplayName(w.schema, w.table), err)
			}
			for _, a := range aggs {
				// CALL takes no parameters for its "any" window; the bounds are literals
				// the source's server quoted (sqlWindows), the name one quoted here.
				call := fmt.Sprintf("CALL refresh_continuous_aggregate(%s, %s, %s, force => true)", sqltext.Literal(a), w.start, w.end)
				if _, err := c.Exec(ctx, call); err != nil {
					return fmt.Errorf("refresh continuous aggregate %s from %s to %s: %w", a, w.start, w.end, err)
				}
				refreshed = append(refreshed, fmt.Sprintf("%s (%s to %s)", a, w.start, w.end))
			}
		}
		if len(refreshed) > 0 {
			r.note(d.Source, "refreshed the continuous aggregates over the chunks changes were applied to, which the changes did not invalidate on the target: "+strings.Join(refreshed, ", "))
		}
		return nil
	})
}
