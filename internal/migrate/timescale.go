package migrate

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/copy"
	"github.com/tsmigrate/tsmigrate/internal/schema"
	"github.com/tsmigrate/tsmigrate/internal/sqltext"
	"github.com/tsmigrate/tsmigrate/internal/tsapi"
)

// The restore without TimescaleDB's catalog (schema.PathAPI, package tsapi) is the
// second way of the stream engine's "TimescaleDB catalog" step: the pre-data section
// is restored without what TimescaleDB makes itself (chunks, internal hypertables,
// continuous aggregates' views), then the hypertables, continuous aggregates and
// chunks with the source's slices are made by API calls, the rows copied into those
// chunks, and post-data restored with the hypertables' statements apart (see
// schema.RestoreHypertables). The target is never in restoring mode.

// Journal steps of the API path.
const (
	// stepWayAPI records that the run restores through the API, so that a --resume
	// goes on the same way.
	stepWayAPI = "timescaledb-api"
	// stepTimescale: the hypertables, continuous aggregates and chunks are made.
	stepTimescale = "timescaledb-objects"
	// stepTimescaleFinish: the continuous aggregates' watermarks are set, the jobs made.
	stepTimescaleFinish = "timescaledb-jobs"
)

// Phases of the API path.
const (
	// PhaseTimescale makes the hypertables, continuous aggregates and chunks.
	PhaseTimescale = "timescaledb-api"
	// PhaseTimescaleJobs sets the continuous aggregates' watermarks and makes the jobs.
	PhaseTimescaleJobs = "timescaledb-jobs"
)

// api says whether d's TimescaleDB objects are made through the API.
func (d *DatabaseRun) api() bool { return d.RestorePath == schema.PathAPI }

// setApart reads from the source (src) which entries of its schema dump TimescaleDB
// makes itself on the target, and which hang on hypertables, for post's restore.
func setApart(ctx context.Context, d *DatabaseRun, src *pgx.Conn, post *schema.PostDataPlan) error {
	apart, err := readApart(ctx, src)
	if err != nil {
		return err
	}
	d.apart = apart
	post.SetApart(apart)
	return nil
}

func readApart(ctx context.Context, src *pgx.Conn) (schema.Apart, error) {
	objects, err := tsapi.ReadObjects(ctx, src)
	if err != nil {
		return nil, err
	}
	return func(e schema.TOCEntry) string { return objects.Role(e.CatalogTable, e.OID, e.Schema, e.Name) }, nil
}

// restoreAPIPreData restores d's pre-data section without what TimescaleDB makes itself,
// into a target whose TimescaleDB chooseRestorePath made sure of (never in restoring
// mode), and sorts post's entries likewise.
func (r *run) restoreAPIPreData(ctx context.Context, d *DatabaseRun, file string, post *schema.PostDataPlan) error {
	if err := r.markStep(ctx, d, stepWayAPI); err != nil {
		return err
	}
	src, err := d.src.Connect(ctx)
	if err != nil {
		return err
	}
	err = setApart(ctx, d, src.Conn, post)
	src.Close(context.WithoutCancel(ctx))
	if err != nil {
		return err
	}
	msgs, err := schema.RestoreSectionApart(ctx, r.tools, d.dst, file, schema.PreData, 1, d.lineBreakNames, d.apart, r.onMessage(d))
	d.Messages = append(d.Messages, msgs...)
	return r.messagesErr(err)
}

// placeChunks finds where each of d's source chunks went on the target, when a resumed
// run did not make them itself (the API path).
func (r *run) placeChunks(ctx context.Context, d *DatabaseRun) error {
	if !d.api() || d.chunkTargets != nil {
		return nil
	}
	res, err := tsapi.Restore(ctx, d.src, d.dst, false, false)
	if err != nil {
		return err
	}
	d.setChunkTargets(res.Placements)
	return nil
}

// setChunkTargets keeps where each source chunk's rows go.
func (d *DatabaseRun) setChunkTargets(ps []tsapi.Placement) {
	d.chunkTargets = map[copy.TableName]copy.ChunkTarget{}
	for _, p := range ps {
		d.chunkTargets[copy.TableName{Schema: p.Source.Schema, Name: p.Source.Name}] = copy.ChunkTarget{
			Table:      copy.TableName{Schema: p.Target.Schema, Name: p.Target.Name},
			Hypertable: copy.TableName{Schema: p.Hypertable.Schema, Name: p.Hypertable.Name},
			Routed:     p.Routed, Compressed: p.Compressed}
	}
}

// chunksDiffer names the hypertables (schema, name) some of whose chunks the target
// does not have with the source's slices (said as the chunks were made): verify leaves
// out the difference of their numbers of chunks.
func (d *DatabaseRun) chunksDiffer() [][2]string {
	seen := map[copy.TableName]bool{}
	var out [][2]string
	for _, t := range d.chunkTargets {
		if t.Routed && !seen[t.Hypertable] {
			seen[t.Hypertable] = true
			out = append(out, [2]string{t.Hypertable.Schema, t.Hypertable.Name})
		}
	}
	return out
}

// makeTimescaleObjects makes d's hypertables, continuous aggregates (with the comments
// and privileges of their views, from the schema dump file) and chunks on the target
// (once: a resumed run, or a worker, only pairs the chunks made before) and keeps
// where each source chunk's rows go.
func (r *run) makeTimescaleObjects(ctx context.Context, d *DatabaseRun, file string) error {
	return r.phase(d, PhaseTimescale, func() error {
		res, err := tsapi.Restore(ctx, d.src, d.dst, !d.steps[stepTimescale], r.opt.Roles)
		if err != nil {
			return err
		}
		d.setChunkTargets(res.Placements)
		for _, diff := range res.Differences {
			r.warn(d.Source + ": " + diff)
		}
		if res.Hypertables+res.Aggregates+res.Chunks > 0 {
			r.note(d.Source, fmt.Sprintf("made %d hypertables, %d continuous aggregates and %d chunks through TimescaleDB's API",
				res.Hypertables, res.Aggregates, res.Chunks))
		}
		if d.steps[stepTimescale] || r.opt.Worker {
			return nil
		}
		msgs, err := schema.RestoreAggregateEntries(ctx, r.tools, d.dst, file, d.lineBreakNames, d.apart, r.onMessage(d))
		d.Messages = append(d.Messages, msgs...)
		if err := r.messagesErr(err); err != nil {
			return err
		}
		return r.markStep(ctx, d, stepTimescale)
	})
}

// compressSQL compresses target chunk t once its rows are in, when its source chunk is
// compressed ("" otherwise, and for rows routed through their hypertable).
func compressSQL(d *DatabaseRun, t copy.ChunkTarget) string {
	if !t.Compressed || t.Routed {
		return ""
	}
	return fmt.Sprintf("SELECT %s.compress_chunk(%s::regclass)", pgx.Identifier{d.tsSchema}.Sanitize(),
		sqltext.Literal(pgx.Identifier{t.Table.Schema, t.Table.Name}.Sanitize()))
}

// finishTimescale, once d's rows and indexes are in, makes its continuous aggregates'
// own indexes, sets their watermarks and makes its jobs, unscheduled until the run has
// verified the target.
func (r *run) finishTimescale(ctx context.Context, d *DatabaseRun) error {
	return r.phase(d, PhaseTimescaleJobs, func() error {
		res, err := tsapi.Finish(ctx, d.src, d.dst, r.opt.Roles)
		if err != nil {
			return err
		}
		for _, diff := range res.Differences {
			r.warn(d.Source + ": " + diff)
		}
		if res.Jobs+res.Watermarks+res.Indexes > 0 {
			r.note(d.Source, fmt.Sprintf("made %d jobs (unscheduled until verified) and %d indexes of continuous aggregates, and set the watermarks of %d continuous aggregates through TimescaleDB's API",
				res.Jobs, res.Indexes, res.Watermarks))
		}
		return r.markStep(ctx, d, stepTimescaleFinish)
	})
}
