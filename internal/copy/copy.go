// Package copy is the data phase of the stream engine: it copies every row the
// source's pg_dump would dump straight into a target that already holds the
// pre-data schema (and, for TimescaleDB, is in restore mode), in parallel, from one
// snapshot, resumably (see package journal), retrying units on transient errors.
//
// Order of work: the extension configuration tables first, in one transaction and in
// foreign-key order, with their sequences; then every data unit (a chunk, a table,
// a ctid range of a big table, the sequences' values, the large objects) by Jobs
// workers, largest first. Each unit is claimed, copied and marked done in one target
// transaction, so it is copied exactly once however many processes share the run.
//
// The pipeline around it: pre-flight, freeze, pre-data restore and
// timescaledb_pre_restore() on the target; then Run (again with the same FreezeID to
// resume, or from a second process to share the work); post-data (per table on
// TableDone events, or after Run), timescaledb_post_restore(), ANALYZE; then
// journal.Drop. Until then the target holds schema _tsmigrate, which verification
// must ignore.
package copy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tsmigrate/tsmigrate/internal/clock"
	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/journal"
)

// Options of a run. Source, Target and FreezeID are required.
type Options struct {
	Source, Target *dbconn.Config
	// Jobs is the number of units copied at once; 0 chooses it (see chooseJobs): as
	// many as the servers' cores (2 to 8) when they are near, more when each unit
	// mostly waits for round trips across a WAN.
	Jobs int
	// FreezeID identifies the source's write freeze. The journal records it on the
	// first run; a run with another ID is refused with *FreezeMismatchError.
	FreezeID string
	// Snapshot gives the source snapshot; nil exports one for the run (ExportSnapshot).
	// A given source is not closed by Run.
	Snapshot SnapshotSource
	// RenewSnapshot lets Run export a new snapshot when the one it exported is gone
	// (the connection holding it was lost, so importing it fails), and go on: units
	// copied before read the old snapshot, later ones the new. The copy is still one
	// consistent state only if nothing was written to the source between the two
	// snapshots, which Run cannot tell. Set it only when a check that fails the
	// migration otherwise covers the whole run: a freeze made before Run whose
	// deferred proof (freeze.PendingProof.Finish), finished after Run, fails if any
	// write happened in between; every snapshot taken in that span sees the same
	// rows. Leave it off without such a check: no freeze, or a freeze whose proof is
	// another process's (a --worker's).
	// Run refuses it with a given Snapshot, which may be tied to what a new export is
	// not (a replication slot's changes start at its snapshot). Each renewal counts
	// as a retry; once MaxRetries renewals were made, a lost snapshot fails the run
	// as without it. Units in flight keep the snapshot they imported, or are retried.
	RenewSnapshot bool
	// RangeBytes is the smallest ctid range a big plain table is split into (default
	// 64 MiB; negative: never split). A table is split when it is bigger than both
	// RangeBytes and its share of the work (all tables' size / Jobs), since a range
	// cannot use COPY FREEZE and pays for that unless it shortens the longest unit.
	RangeBytes int64
	// BatchUnits bounds how many small tables or chunks are copied together in one
	// transaction and three exchanges (see copyBatch); default 64, 1 for one at a time.
	BatchUnits int
	// MaxRetries bounds the further attempts of a unit after transient errors (default 5).
	MaxRetries int
	// RetryBackoff is the first wait before a retry, doubled each time up to 30 s (default 1 s).
	RetryBackoff time.Duration
	// ProgressEvery is how often Progress events are sent for running units (default 500 ms).
	ProgressEvery time.Duration
	// StallAfter is how long no byte may move, while units copy rows, before a Stalled
	// event says so (default 30 s).
	StallAfter time.Duration
	// PostSQL, if set, gives the SQL to run in the transaction of a whole table's or
	// chunk's unit once its rows are in (its indexes and constraints; "" for nothing). It is asked when the units are planned and recorded with them, so
	// that a resumed run and every worker process run the same.
	PostSQL func(schema, table string) string
	// ChunkTargets, when not nil, says where each source chunk's rows go on a target
	// whose TimescaleDB objects were made through its API (package tsapi) rather than
	// restored from its catalog: chunks named otherwise, or routed through their
	// hypertable. TimescaleDB's configuration tables (its catalog) are then not
	// copied, nor the tables of compressed chunks: a compressed chunk is read
	// decompressed into its target chunk (PostSQL may compress it again). A chunk
	// without a target fails the plan.
	ChunkTargets map[TableName]ChunkTarget
	// OnEvent receives events, one at a time.
	OnEvent func(Event)
}

// TableName is a table by its raw schema and name.
type TableName struct{ Schema, Name string }

// ChunkTarget is where a source chunk's rows go.
type ChunkTarget struct {
	Table      TableName
	Hypertable TableName // the source chunk's
	// Routed: Table is the hypertable, which puts the rows into its chunks.
	Routed bool
	// Compressed: the source chunk is compressed: its rows are read decompressed.
	Compressed bool
}

// Result of a run: what this process copied.
type Result struct {
	Units    []UnitResult
	Skipped  int // units done before this run started
	ByOthers int // units other processes copied while this run did
	Rows     int64
	Bytes    int64
	Retries  int // snapshot renewals included
	Duration time.Duration
	// Jobs is the number of units copied at once; JobsWhy says why (Options.Jobs 0), or
	// that it was given.
	Jobs    int
	JobsWhy string
	// SnapshotRenewals: new snapshots exported after the run's was lost (RenewSnapshot).
	SnapshotRenewals int
}

// UnitResult is one unit this process copied.
type UnitResult struct {
	ID       string
	Relation string
	Rows     int64
	Bytes    int64
	Attempts int
	Duration time.Duration
}

// FreezeMismatchError: the journal on the target was written under another source
// freeze, so the source may have changed between the runs and resuming is unsafe.
type FreezeMismatchError struct{ Recorded, Given string }

func (e *FreezeMismatchError) Error() string {
	return fmt.Sprintf("the target's journal was written under freeze %q, this run is under %q", e.Recorded, e.Given)
}

const (
	defaultRangeBytes = 64 << 20
	maxBackoff        = 30 * time.Second
	pollIdle          = 300 * time.Millisecond
)

type run struct {
	opts Options

	snapMu   sync.Mutex     // held while the snapshot is renewed
	snapshot string         // ID of the snapshot units import
	own      SnapshotSource // the snapshot Run exported; nil when given
	renewals int            // renewals tried

	evMu sync.Mutex

	mu        sync.Mutex
	remaining map[string]int // pending data units per tableKey
	batch     int            // small units claimed at once (batchSize)
	live      map[string]*live
	attempts  map[string]int
	res       Result
}

func (r *run) emit(e Event) {
	if r.opts.OnEvent == nil {
		return
	}
	e.Time = time.Now()
	r.evMu.Lock()
	defer r.evMu.Unlock()
	r.opts.OnEvent(e)
}

// Run copies the data. See the package comment.
func Run(ctx context.Context, opts Options) (*Result, error) {
	start := time.Now()
	if opts.Source == nil || opts.Target == nil {
		return nil, errors.New("copy: source and target are required")
	}
	if opts.RenewSnapshot && opts.Snapshot != nil {
		return nil, errors.New("copy: RenewSnapshot renews only a snapshot Run exports, not a given Snapshot")
	}
	auto := opts.Jobs <= 0
	if auto {
		// For the plan (how big tables are split); chosen again once it is known.
		opts.Jobs = DefaultJobs()
	}
	if opts.RangeBytes == 0 {
		opts.RangeBytes = defaultRangeBytes
	}
	if opts.BatchUnits == 0 {
		opts.BatchUnits = defaultBatchUnits
	}
	if opts.MaxRetries == 0 {
		opts.MaxRetries = 5
	}
	if opts.RetryBackoff <= 0 {
		opts.RetryBackoff = time.Second
	}
	if opts.ProgressEvery <= 0 {
		opts.ProgressEvery = 500 * time.Millisecond
	}
	if opts.StallAfter <= 0 {
		opts.StallAfter = 30 * time.Second
	}
	r := &run{opts: opts, live: map[string]*live{}, attempts: map[string]int{}, remaining: map[string]int{}}

	ctl, err := opts.Target.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer ctl.Close(context.Background())
	jr, err := journal.Open(ctx, ctl.Conn, opts.FreezeID)
	if err != nil {
		return nil, err
	}
	if jr.FreezeID != opts.FreezeID {
		return nil, &FreezeMismatchError{Recorded: jr.FreezeID, Given: opts.FreezeID}
	}

	snap := opts.Snapshot
	if snap == nil {
		if snap, err = ExportSnapshot(ctx, opts.Source); err != nil {
			return nil, err
		}
		r.own = snap
		defer r.closeSnapshot()
	}
	r.snapshot = snap.Snapshot()

	w0 := &worker{r: r}
	defer w0.close()
	if err := w0.ensureConns(ctx); err != nil {
		return nil, err
	}
	units, err := journal.Plan(ctx, ctl.Conn, func() ([]journal.Unit, error) { return w0.plan(ctx) })
	if err != nil {
		return nil, err
	}
	planned := Event{Type: Planned}
	for i := range units {
		u := &units[i]
		switch {
		case u.State == journal.Done:
			planned.Skipped++
		default:
			planned.Units = append(planned.Units, info(u))
			if u.Kind == journal.KindTable || u.Kind == journal.KindRange {
				r.remaining[tableKey(u)]++
			}
		}
	}
	r.res.Skipped = planned.Skipped
	r.emit(planned)

	if err := w0.configPhase(ctx); err != nil {
		return nil, err
	}
	r.res.Jobs, r.res.JobsWhy = opts.Jobs, fmt.Sprintf("given (%d)", opts.Jobs)
	if auto {
		if err := w0.ensureConns(ctx); err != nil {
			return nil, err
		}
		n, why, err := chooseJobs(ctx, opts, w0.src, ctl, units)
		if err != nil {
			return nil, err
		}
		opts.Jobs, r.opts.Jobs, r.res.Jobs, r.res.JobsWhy = n, n, n, why
		r.emit(Event{Type: JobsChosen, Jobs: n, Why: why})
	}

	r.batch = batchSize(opts.BatchUnits, opts.Jobs, units)

	g, gctx := errgroup.WithContext(ctx)
	stop := make(chan struct{})
	var tick sync.WaitGroup
	tick.Go(func() { r.ticker(gctx, stop) })
	for i := 0; i < opts.Jobs; i++ {
		w := w0
		if i > 0 {
			w = &worker{r: r}
		}
		g.Go(func() error {
			if w != w0 {
				defer w.close()
			}
			return w.dataPhase(gctx)
		})
	}
	err = g.Wait()
	close(stop)
	tick.Wait()
	r.res.Duration = time.Since(start)
	if err != nil {
		if ctx.Err() != nil {
			return &r.res, ctx.Err()
		}
		return &r.res, err
	}
	if jr, err := journal.Read(ctx, ctl.Conn); err == nil {
		r.res.ByOthers = jr.Done - r.res.Skipped - len(r.res.Units)
	}
	r.emit(Event{Type: Finished, Rows: r.res.Rows, Bytes: r.res.Bytes})
	return &r.res, nil
}

// ticker sends Progress events for running units until stop, and Stalled events when
// no byte moved for StallAfter (and each multiple of it) while units copied rows.
func (r *run) ticker(ctx context.Context, stop <-chan struct{}) {
	t := time.NewTicker(r.opts.ProgressEvery)
	defer t.Stop()
	var moved int64
	lastMove, notices := time.Now(), 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-stop:
			return
		case now := <-t.C:
			r.mu.Lock()
			evs := make([]Event, 0, len(r.live))
			total := r.res.Bytes
			var copying []UnitInfo
			for _, l := range r.live {
				i := l.info
				b := l.bytes.Load()
				evs = append(evs, Event{Type: Progress, Unit: &i, Rows: l.rows.Load(), Bytes: b})
				total += b
				if !l.building.Load() {
					copying = append(copying, i)
				}
			}
			r.mu.Unlock()
			for _, e := range evs {
				r.emit(e)
			}
			switch quiet := now.Sub(lastMove); {
			case total != moved || len(copying) == 0:
				moved, lastMove, notices = total, now, 0
			case quiet >= time.Duration(notices+1)*r.opts.StallAfter:
				notices++
				r.emit(Event{Type: Stalled, Units: copying, Quiet: quiet})
			}
		}
	}
}

func (r *run) begin(u *journal.Unit) *live {
	l := &live{info: info(u), table: tableKey(u), kind: u.Kind}
	r.mu.Lock()
	r.live[u.ID] = l
	r.attempts[u.ID]++
	l.attempt = r.attempts[u.ID]
	r.mu.Unlock()
	r.emit(Event{Type: Started, Unit: &l.info, Attempt: l.attempt})
	return l
}

func (r *run) end(l *live, rows, bytes int64, started time.Time) {
	r.mu.Lock()
	delete(r.live, l.info.ID)
	r.res.Units = append(r.res.Units, UnitResult{ID: l.info.ID, Relation: l.info.Relation, Rows: rows, Bytes: bytes,
		Attempts: r.attempts[l.info.ID], Duration: time.Since(started)})
	r.res.Rows += rows
	r.res.Bytes += bytes
	tableDone := false
	if l.kind == journal.KindTable || l.kind == journal.KindRange {
		r.remaining[l.table]--
		tableDone = r.remaining[l.table] == 0
	}
	r.mu.Unlock()
	r.emit(Event{Type: Done, Unit: &l.info, Rows: rows, Bytes: bytes})
	if tableDone {
		r.emit(Event{Type: TableDone, Relation: l.table})
	}
}

// drop forgets a running unit that is handed back without an end of its own (a
// failed batch's, copied again alone): the batch's try is not counted as its own.
func (r *run) drop(l *live) {
	r.mu.Lock()
	if r.live[l.info.ID] == l { // not another worker's, which claimed it since
		delete(r.live, l.info.ID)
	}
	r.attempts[l.info.ID]--
	r.mu.Unlock()
}

// failed decides what follows a unit's failure: nil to try again (after the backoff),
// or the error that stops the run.
//
// The unit was handed back (rolled back) before: another worker may have claimed it
// since, whose entry among the running units stays, and whose try is not this one's.
func (r *run) failed(ctx context.Context, l *live, err error) error {
	r.mu.Lock()
	if r.live[l.info.ID] == l {
		delete(r.live, l.info.ID)
	}
	n := l.attempt
	retry := transient(err) && ctx.Err() == nil && n <= r.opts.MaxRetries
	if retry {
		r.res.Retries++
	}
	r.mu.Unlock()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if !retry {
		r.emit(Event{Type: Failed, Unit: &l.info, Attempt: n, Err: dbconn.Redact(err.Error())})
		return err
	}
	r.emit(Event{Type: Retry, Unit: &l.info, Attempt: n, Err: dbconn.Redact(err.Error())})
	return clock.Sleep(ctx, backoff(r.opts.RetryBackoff, maxBackoff, n))
}
