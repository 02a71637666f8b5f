package migrate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/tsmigrate/tsmigrate/internal/clock"
	"github.com/tsmigrate/tsmigrate/internal/copy"
	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/inventory"
	"github.com/tsmigrate/tsmigrate/internal/journal"
	"github.com/tsmigrate/tsmigrate/internal/pgtools"
	"github.com/tsmigrate/tsmigrate/internal/schema"
)

// The stream engine: no dump of the rows. Per database: the schema (pre-data and
// post-data, no rows) is dumped to a small file, the pre-data section restored into
// the target (TimescaleDB at the source's version, in restore mode), the rows copied
// straight from server to server by package copy under the source's freeze, then the
// post-data section, ANALYZE, timescaledb_post_restore(), row counts and verify.
//
// Every step is recorded in the target's journal (package journal), so that a run that
// was killed can be resumed (Options.Resume) as long as the source stayed frozen by the
// same freeze, and further processes can join the data phase (Options.Worker).
//
// TimescaleDB's scheduled jobs are paused by the freeze, as with the dump engine, and
// reach the target unscheduled; once verified, the target's get the source's schedules
// (see jobs.go).

// Journal steps of the stream engine, recorded in the target as each one ends.
const (
	stepPreData     = "pre-data"
	stepPostStarted = "post-data-started"
	stepPostData    = "post-data"
	stepPostRestore = "post-restore"
	stepComplete    = "complete"
)

// Phases of the stream engine (besides those shared with the dump engine).
const (
	PhaseJournal    = "journal"
	PhaseSchemaDump = "dump-schema"
	PhasePreData    = "pre-data"
	PhaseCopy       = "copy"
	PhasePostData   = "post-data"
)

// DataCopy is what the data phase of the stream engine did for one database, in this
// process.
type DataCopy struct {
	Units   int `json:"units"`   // copied by this process
	Skipped int `json:"skipped"` // done before this process started (by a killed run, or by other processes)
	// ByOthers: copied by other processes (--worker, or the run a worker joined) while
	// this one copied.
	ByOthers int   `json:"by_others"`
	Rows     int64 `json:"rows"`
	Bytes    int64 `json:"bytes"`
	Retries  int   `json:"retries"`
	// SnapshotRenewals: new source snapshots taken after one was lost (counted in Retries too).
	SnapshotRenewals int `json:"snapshot_renewals,omitempty"`
	// Jobs is how many units this process copied at once; JobsWhy why (--jobs auto:
	// the round trips, cores and units that made the choice), or that it was given.
	Jobs    int    `json:"jobs"`
	JobsWhy string `json:"jobs_why"`
}

// openJournals records each database's freeze, and its baseline, in its target's
// journal, right after the freeze: from then on a killed run can be resumed.
func (r *run) openJournals(ctx context.Context) error {
	for _, d := range r.sum.Databases {
		var baseline []byte
		if r.opt.Rehearsal { // no freeze: the journal only keeps the steps and units
			d.freezeID = rehearsalID + time.Now().UTC().Format(time.RFC3339Nano)
		} else if d.pending != nil { // a live run: no freeze yet
			var err error
			if baseline, err = d.pending.Encode(); err != nil {
				return fmt.Errorf("%s: %w", d.Source, err)
			}
		}
		conn, err := d.dst.Connect(ctx)
		if err != nil {
			return err
		}
		jr, err := journal.Open(ctx, conn.Conn, d.freezeID)
		if err == nil && jr.FreezeID == d.freezeID && baseline != nil {
			err = journal.RecordBaseline(ctx, conn.Conn, d.freezeID, baseline)
		}
		conn.Close(ctx)
		var format *journal.FormatError
		if errors.As(err, &format) {
			return exit.New(exit.Failed, "reset the target (drop and create the database) and migrate again",
				"%s: target database %s: %s", d.Source, d.Target, format)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", d.Source, err)
		}
		if jr.FreezeID != d.freezeID {
			return exit.New(exit.Failed, "reset the target (drop and create the database), or resume the earlier migration with --resume",
				"%s: target database %s holds the journal of another migration (freeze %s)", d.Source, d.Target, jr.FreezeID)
		}
		d.steps = map[string]bool{}
	}
	return nil
}

// markStep records a finished step in d's journal.
func (r *run) markStep(ctx context.Context, d *DatabaseRun, name string) error {
	conn, err := connectWriting(ctx, d.dst)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := journal.MarkStep(ctx, conn.Conn, name); err != nil {
		return err
	}
	d.steps[name] = true
	return nil
}

// onTarget runs f on a fresh connection to d's target (connectWriting).
func onTarget(ctx context.Context, d *DatabaseRun, f func(context.Context, *dbconn.Conn) error) error {
	conn, err := connectWriting(ctx, d.dst)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return f(ctx, conn)
}

// connectWriting connects to a target for statements that write (the journal's steps,
// extension and schema changes): such a session turns default_transaction_read_only
// off, which a role's setting in the database may turn on (the target has the
// source's by the end of the run).
func connectWriting(ctx context.Context, cfg *dbconn.Config) (*dbconn.Conn, error) {
	return cfg.ConnectSession(ctx, sqlWritable)
}

// schemaFile is where d's schema dump goes, in the run's temporary directory.
func (r *run) schemaFile(d *DatabaseRun) (string, error) {
	dir, err := r.tempDir("schema")
	if err != nil {
		return "", fmt.Errorf("make a directory for the schema dump: %w", err)
	}
	return filepath.Join(dir, unsafeName.ReplaceAllString(d.Source, "_")+".schema"), nil
}

// splitPostData finds the indexes and constraints in the schema dump file that each
// table's data unit builds right after its rows (see schema.SplitPostData).
func (r *run) splitPostData(ctx context.Context, d *DatabaseRun, file string) (*schema.PostDataPlan, error) {
	conn, err := d.src.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	post, err := schema.SplitPostData(ctx, r.tools, conn.Conn, file)
	if err != nil {
		return nil, err
	}
	if d.api() {
		if err := setApart(ctx, d, conn.Conn, post); err != nil {
			return nil, err
		}
	}
	if post.Fallback != "" {
		r.note(d.Source, "indexes and constraints are built after the copy, not with each table: "+post.Fallback)
	}
	return post, nil
}

// onMessage passes what pg_dump and pg_restore say about d on as events.
func (r *run) onMessage(d *DatabaseRun) func(schema.Message) {
	return func(m schema.Message) {
		msg := m
		r.emit(Event{Type: EventMessage, Database: d.Source, Message: &msg})
	}
}

// dumpSchema dumps d's schema (no rows) to file and splits its post-data section.
func (r *run) dumpSchema(ctx context.Context, d *DatabaseRun, file string) (*schema.PostDataPlan, error) {
	var post *schema.PostDataPlan
	err := r.phase(d, PhaseSchemaDump, func() error {
		os.Remove(file)
		snapshot := ""
		if d.snap != nil {
			snapshot = d.snap.Snapshot()
		}
		msgs, err := schema.DumpSchemaAt(ctx, r.tools, d.src, file, snapshot, r.onMessage(d))
		d.Messages = append(d.Messages, msgs...)
		if err := r.messagesErr(err); err != nil {
			return err
		}
		post, err = r.splitPostData(ctx, d, file)
		return err
	})
	return post, err
}

// rehearsalID starts the id a rehearsal's journal records instead of a freeze's: no
// freeze has it, so no --resume or --worker ever joins a rehearsal.
const rehearsalID = "rehearsal "

// closeSnapshot ends the snapshot of a stream rehearsal, if it holds one.
func (r *run) closeSnapshot(ctx context.Context, d *DatabaseRun) {
	if d.snap != nil {
		d.snap.Close(context.WithoutCancel(ctx))
		d.snap = nil
	}
}

// sqlBusySessions counts the other tsmigrate sessions (application_name, see package
// dbconn) running a statement in the current database. PostgreSQL 15, 17.
const sqlBusySessions = `
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = 'tsmigrate' AND state <> 'idle'`

// busyWait bounds how long a resume waits for a killed run's sessions to end.
const busyWait = 30 * time.Second

// prepareRestResume readies the resume of a database whose first run stopped while it
// restored the rest of post-data (after the copy): it dumps the schema again (the
// source is frozen: the same schema), waits for the killed run's sessions on the
// target to end (its pg_restore finishes the entry it runs before it notices), and
// checks that every entry of the rest can be told restored or not; else the resume
// is refused, having changed nothing. The post-data phase then restores the entries
// that are not on the target (see schema.PostDataPlan.FindOnTarget).
func (r *run) prepareRestResume(ctx context.Context, d *DatabaseRun) error {
	file, err := r.schemaFile(d)
	if err != nil {
		return err
	}
	post, err := r.dumpSchema(ctx, d, file)
	if err != nil {
		return fmt.Errorf("%s: %w", d.Source, err)
	}
	built, err := r.builtWithRows(ctx, d, post)
	if err != nil {
		return err
	}
	if err := r.waitForFirstRun(ctx, d); err != nil {
		return err
	}
	var nr *schema.NotResumableError
	if _, err := r.restOnTarget(ctx, d, post, built); errors.As(err, &nr) {
		return refuseResume("resume: the first run stopped while it restored the indexes and constraints (post-data) of %s, and %s", d.Source, nr)
	} else if err != nil {
		return fmt.Errorf("%s: %w", d.Source, err)
	}
	d.post = post
	return nil
}

// waitForFirstRun waits, up to busyWait, until no session of another tsmigrate run is
// busy in d's target: a killed run's pg_restore finishes the statement it runs before
// it notices (it ends at its next line on stderr, which nobody reads any more).
func (r *run) waitForFirstRun(ctx context.Context, d *DatabaseRun) error {
	return onTarget(ctx, d, func(ctx context.Context, c *dbconn.Conn) error {
		deadline, noted := time.Now().Add(busyWait), false
		for {
			var n int
			if err := c.QueryRow(ctx, sqlBusySessions).Scan(&n); err != nil {
				return fmt.Errorf("%s: look for sessions of the first run on the target: %w", d.Source, err)
			}
			if n == 0 {
				return nil
			}
			if time.Now().After(deadline) {
				return refuseResume("resume: %d sessions of another tsmigrate run are still busy in target database %s (the first run's pg_restore finishing an index, say): wait until they end (pg_stat_activity, application_name tsmigrate), then resume", n, d.Target)
			}
			if !noted {
				r.note(d.Source, fmt.Sprintf("waiting for %d sessions of the first run to end on the target", n))
				noted = true
			}
			if err := clock.Sleep(ctx, 500*time.Millisecond); err != nil {
				return err
			}
		}
	})
}

// restOnTarget finds which entries of the rest of d's post-data the target holds.
func (r *run) restOnTarget(ctx context.Context, d *DatabaseRun, post *schema.PostDataPlan, built map[schema.TableName]bool) (*schema.RestOnTarget, error) {
	src, err := d.src.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer src.Close(context.WithoutCancel(ctx))
	var on *schema.RestOnTarget
	err = onTarget(ctx, d, func(ctx context.Context, c *dbconn.Conn) error {
		var err error
		on, err = post.FindOnTarget(ctx, src.Conn, c.Conn, func(t schema.TableName) bool { return built[t] })
		return err
	})
	return on, err
}

// unitPostSQL is what a whole table's or chunk's unit runs once its rows are in: the
// table's early indexes and constraints ("" for none).
func unitPostSQL(post *schema.PostDataPlan, schemaName, table string) string {
	return post.SQL(schema.TableName{Schema: schemaName, Name: table})
}

// builtWithRows reads from d's journal which tables had their indexes and constraints
// built by their data unit (or, copied in ranges, by their indexes unit). A unit planned by another process without them
// (a --worker that planned first) leaves its table to the post-data phase; one whose
// recorded SQL differs from what the schema dump gives now stops the run, since the
// post-data phase would then build too much or too little (post is nil once post-data
// is restored: nothing to compare with).
func (r *run) builtWithRows(ctx context.Context, d *DatabaseRun, post *schema.PostDataPlan) (map[schema.TableName]bool, error) {
	built := map[schema.TableName]bool{}
	err := onTarget(ctx, d, func(ctx context.Context, c *dbconn.Conn) error {
		units, err := journal.Units(ctx, c.Conn)
		for _, u := range units {
			if u.Kind != journal.KindTable && u.Kind != journal.KindIndexes || u.Phase != journal.PhaseData || u.PostSQL == "" {
				continue
			}
			if d.api() && u.Parent != "" {
				continue // a chunk's unit on the API path only compresses it (compressSQL)
			}
			if post != nil && u.PostSQL != unitPostSQL(post, u.Schema, u.Table) {
				return exit.New(exit.Failed, "start over: reset the target (drop and create the database) and run tsmigrate migrate without --resume",
					"%s: the indexes and constraints the journal recorded for table %s are not those of the source's schema now",
					d.Source, inventory.DisplayName(u.Schema, u.Table))
			}
			built[schema.TableName{Schema: u.Schema, Name: u.Table}] = true
		}
		return err
	})
	return built, err
}

// copyData runs the data phase of d (package copy) with this run's freeze. post, when
// not nil, gives each table's indexes and constraints to build with its rows.
func (r *run) copyData(ctx context.Context, d *DatabaseRun, post *schema.PostDataPlan) error {
	opts := copy.Options{Source: d.src, Target: d.dst, Jobs: r.copyJobs, FreezeID: d.freezeID, Snapshot: d.snap,
		// A lost snapshot may be renewed only under a freeze whose deferred proof
		// (proveFrozen, after the copy) fails the run if anything was written between
		// the freeze and the end of the copy: this run's own, or on --resume the first
		// run's, restored from the journal. A --worker run has no proof pending (the
		// planning process proves): no renewal.
		RenewSnapshot: d.pending != nil}
	if post != nil {
		opts.PostSQL = func(schemaName, table string) string { return unitPostSQL(post, schemaName, table) }
	}
	if d.api() {
		opts.ChunkTargets = d.chunkTargets
		opts.PostSQL = func(schemaName, table string) string {
			if t, ok := d.chunkTargets[copy.TableName{Schema: schemaName, Name: table}]; ok {
				return compressSQL(d, t)
			}
			if post == nil {
				return ""
			}
			return unitPostSQL(post, schemaName, table)
		}
	}
	if r.opt.DataProgress != nil {
		on, done := r.opt.DataProgress(d.Source)
		defer done()
		opts.OnEvent = on
	}
	d.dataStarted = true
	res, err := copy.Run(ctx, opts)
	if res != nil {
		d.Data = &DataCopy{Units: len(res.Units), Skipped: res.Skipped, ByOthers: res.ByOthers, Rows: res.Rows, Bytes: res.Bytes, Retries: res.Retries,
			SnapshotRenewals: res.SnapshotRenewals, Jobs: res.Jobs, JobsWhy: res.JobsWhy}
	}
	if err != nil {
		return fmt.Errorf("copy data: %w", err)
	}
	return nil
}

// streamOne migrates one database pair with the stream engine, skipping the steps its
// journal records as done.
func (r *run) streamOne(ctx context.Context, d *DatabaseRun) error {
	if d.steps[stepComplete] {
		r.note(d.Source, "migrated by the first run already")
		// The first run may have stopped before its jobs got their schedules.
		r.scheduleTargetJobs(ctx, d)
		return nil
	}
	onMessage := r.onMessage(d)
	file, err := r.schemaFile(d)
	if err != nil {
		return err
	}
	if r.opt.Rehearsal {
		// No freeze holds the source still: the schema and the rows are read in one
		// snapshot, held from before the schema dump to the end of the copy.
		snap, err := copy.ExportSnapshot(ctx, d.src)
		if err != nil {
			return err
		}
		d.snap = snap
		defer r.closeSnapshot(ctx, d)
	}
	// d.post is set when the first run stopped in the post-data phase (prepareRestResume).
	restResume := d.post != nil
	post := d.post
	if !d.steps[stepPostRestore] && post == nil {
		if post, err = r.dumpSchema(ctx, d, file); err != nil {
			return err
		}
	}
	if !d.steps[stepPreData] {
		if err := r.phase(d, PhasePreData, func() error {
			// A --resume here follows a run killed before its pre-data was done: wait for
			// its pg_restore, then drop what it restored and restore the section again.
			again := r.opt.Resume
			if again {
				if err := r.waitForFirstRun(ctx, d); err != nil {
					return err
				}
			}
			if d.ts {
				if err := r.chooseRestorePath(ctx, d); err != nil {
					return err
				}
			}
			if d.api() {
				if err := r.restoreAPIPreData(ctx, d, file, post); err != nil {
					return err
				}
				// Owners before TimescaleDB makes the chunks, which it gives their
				// hypertable's owner; the target user may not give them one later (it
				// may not create in TimescaleDB's schemas).
				if err := r.setOwners(ctx, d); err != nil {
					return err
				}
				return r.markStep(ctx, d, stepPreData)
			}
			if d.ts {
				if err := r.enterRestoring(ctx, d); err != nil {
					return err
				}
			}
			restore := func() ([]schema.Message, error) {
				return schema.RestoreSection(ctx, r.tools, d.dst, file, schema.PreData, 1, d.lineBreakNames, onMessage)
			}
			if again {
				r.note(d.Source, "pre-data: the first run was killed before its schema restore was done: dropping what it restored, then restoring the schema again")
				restore = func() ([]schema.Message, error) {
					return schema.RestorePreDataAgain(ctx, r.tools, d.dst, file, d.lineBreakNames, onMessage)
				}
			}
			msgs, err := restore()
			d.Messages = append(d.Messages, msgs...)
			if err := r.messagesErr(err); err != nil {
				return err
			}
			return r.markStep(ctx, d, stepPreData)
		}); err != nil {
			return err
		}
	} else if d.ts && !d.steps[stepPostRestore] {
		// A resume: the first run's failure ended restoring mode (undo), which the rest
		// of the copy and post-data need again.
		if err := r.chooseRestorePath(ctx, d); err != nil {
			return err
		}
		if err := r.enterRestoring(ctx, d); err != nil {
			return err
		}
	}
	if !d.steps[stepPostStarted] {
		if d.api() {
			if err := r.makeTimescaleObjects(ctx, d, file); err != nil {
				return err
			}
		}
		if err := r.phase(d, PhaseCopy, func() error { return r.copyData(ctx, d, post) }); err != nil {
			return err
		}
		if d.live != nil {
			if err := r.verifyCopy(ctx, d); err != nil {
				return err
			}
		}
		r.closeSnapshot(ctx, d) // a live source's vacuum waits for it
		if err := r.proveFrozen(ctx, d, "copy"); err != nil {
			return err
		}
		if err := r.markStep(ctx, d, stepPostStarted); err != nil {
			return err
		}
	}
	// Tables whose units built their own indexes and constraints: all their indexes
	// exist once the copy is done, so they are analyzed while the rest of post-data
	// is restored (foreign keys being validated, say); the other tables after it,
	// since ANALYZE also gathers the statistics of expression indexes (so too a
	// table with an index left for after all rows, see schema.PostDataPlan.IndexesLater).
	var built map[schema.TableName]bool
	if !d.steps[stepPostRestore] {
		var err error
		if built, err = r.builtWithRows(ctx, d, post); err != nil {
			return err
		}
	}
	if !d.steps[stepPostData] {
		if err := r.phase(d, PhasePostData, func() error {
			var on *schema.RestOnTarget
			if restResume {
				var err error
				if on, err = r.restOnTarget(ctx, d, post, built); err != nil {
					return err
				}
				r.note(d.Source, fmt.Sprintf("post-data: %d of the %d entries left after the copy are on the target already (restored by an earlier run), %d run again (comments, ...), %d to restore",
					len(on.Present), on.Entries, on.Again, on.Entries-len(on.Present)-on.Again))
			}
			if err := post.RestoreHypertables(ctx, r.tools, d.dst, 1, r.opt.Jobs, on); err != nil {
				return err
			}
			var g errgroup.Group
			g.Go(func() error {
				msgs, err := post.RestoreRest(ctx, r.tools, d.dst, r.opt.Jobs, func(t schema.TableName) bool { return built[t] }, on, onMessage)
				r.mu.Lock()
				defer r.mu.Unlock()
				d.Messages = append(d.Messages, msgs...)
				return r.messagesErr(err)
			})
			g.Go(func() error {
				return schema.Analyze(ctx, d.dst, r.opt.Jobs, func(t schema.TableName) bool { return built[t] && !post.IndexesLater(t) })
			})
			if err := g.Wait(); err != nil {
				return err
			}
			if err := post.RestoreHypertables(ctx, r.tools, d.dst, 2, r.opt.Jobs, on); err != nil {
				return err
			}
			return r.markStep(ctx, d, stepPostData)
		}); err != nil {
			return err
		}
	}
	if d.api() && !d.steps[stepTimescaleFinish] {
		if err := r.finishTimescale(ctx, d); err != nil {
			return err
		}
	}
	if !d.steps[stepPostRestore] {
		// The schema dump's contents, for restoreGrants below, read while the target
		// analyzes: pg_restore -l takes 50 to 100 ms at 5 000 chunks, on a core the
		// analyze leaves idle.
		contents := readContents(ctx, r.tools, file)
		defer contents.wait()
		if err := r.setOwners(ctx, d); err != nil {
			return err
		}
		if err := r.carryMissingValues(ctx, d); err != nil {
			return err
		}
		// ANALYZE before timescaledb_post_restore(), as the dump engine does (see schema.Analyze).
		if err := r.phase(d, PhaseAnalyze, func() error {
			return schema.Analyze(ctx, d.dst, r.opt.Jobs, func(t schema.TableName) bool { return !built[t] || post.IndexesLater(t) })
		}); err != nil {
			return err
		}
		if d.ts && !d.api() {
			if err := r.phase(d, PhasePost, func() error { return r.leaveRestoring(ctx, d) }); err != nil {
				return err
			}
		}
		if d.ts {
			if err := r.restoreHypertableKeys(ctx, d, post.Keys, onMessage); err != nil {
				return err
			}
		}
		// Before the step is recorded: a resume after it has no schema dump. Should
		// the contents not have been read, restoreGrants reads them, and says why not.
		toc, _ := contents.wait()
		if err := r.restoreGrants(ctx, d, file, toc); err != nil {
			return err
		}
		if err := r.markStep(ctx, d, stepPostRestore); err != nil {
			return err
		}
	}
	if err := r.placeChunks(ctx, d); err != nil {
		return err
	}
	r.checkTargetCompressed(ctx, d)
	if err := r.carrySettings(ctx, d); err != nil {
		return err
	}
	if d.live != nil {
		// Verified at the snapshot already; the changes, then the cut-over (cutOver).
		return r.startApplying(ctx, d)
	}
	if r.opt.NoVerify {
		if err := r.phase(d, PhaseCount, func() error { return r.journalRows(ctx, d) }); err != nil {
			return err
		}
		if err := r.lightVerify(ctx, d); err != nil {
			return err
		}
	} else if err := r.countAndVerify(ctx, d); err != nil {
		return err
	}
	// Verified: the jobs may run. Not before the step is recorded, or a resume would
	// verify again a target whose jobs run.
	if err := r.markStep(ctx, d, stepComplete); err != nil {
		return err
	}
	r.scheduleTargetJobs(ctx, d)
	return nil
}

// tocAhead is an archive's contents (schema.ReadTOC) read in the background.
type tocAhead struct {
	done chan struct{}
	toc  *schema.TOC
	err  error
}

// readContents starts reading archive's contents.
func readContents(ctx context.Context, tools *pgtools.Tools, archive string) *tocAhead {
	c := &tocAhead{done: make(chan struct{})}
	go func() {
		defer close(c.done)
		c.toc, c.err = schema.ReadTOC(ctx, tools, archive)
	}()
	return c
}

// wait returns the contents once read.
func (c *tocAhead) wait() (*schema.TOC, error) {
	<-c.done
	return c.toc, c.err
}

// sqlCompressedHypertables lists hypertables with compression enabled (TimescaleDB 2.x):
// their rows live in internal tables the journal counts apart.
const sqlCompressedHypertables = `
SELECT hypertable_schema, hypertable_name FROM timescaledb_information.hypertables WHERE compression_enabled`

// journalRows fills d.Tables from the journal instead of counting every table on both
// sides again (--no-verify): each data unit's rows were checked equal on both sides
// when it was copied (the source's COPY TO and the target's COPY FROM counts), so their
// sums per table and hypertable are the rows on both sides. Tables the sums cannot tell
// (partitioned tables, whose rows are in their partitions; hypertables with compression;
// tables without units) are counted on both sides.
func (r *run) journalRows(ctx context.Context, d *DatabaseRun) error {
	// The lists of tables of both sides and the journal's units are read at the same
	// time: each is a query of tens of milliseconds at many chunks.
	var side [2]sideTables
	compressed := map[string]bool{}
	sums := map[string]int64{} // plain tables by "schema.table", hypertables by display name
	has := map[string]bool{}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) {
		side, err = listBothSides(gctx, d.src, d.dst, func(ctx context.Context, i int, conn *pgx.Conn) error {
			if i != 0 || !d.ts {
				return nil
			}
			rows, err := conn.Query(ctx, sqlCompressedHypertables)
			if err != nil {
				return err
			}
			var s, n string
			_, err = pgx.ForEachRow(rows, []any{&s, &n}, func() error { compressed[s+"."+n] = true; return nil })
			return err
		})
		return err
	})
	g.Go(func() error {
		return onTarget(gctx, d, func(ctx context.Context, c *dbconn.Conn) error {
			units, err := journal.Units(ctx, c.Conn)
			for _, u := range units {
				key := u.Schema + "." + u.Table
				if u.Parent != "" {
					key = "hypertable " + u.Parent
				}
				sums[key] += u.Rows
				has[key] = true
			}
			return err
		})
	})
	if err := g.Wait(); err != nil {
		return err
	}
	var recount []table
	for _, t := range side[0].tables {
		key, name := t.ident[0]+"."+t.ident[1], inventory.DisplayName(t.ident[0], t.ident[1])
		jkey := key
		if t.kind == "hypertable" {
			jkey = "hypertable " + name
		}
		if t.kind == "partitioned table" || compressed[key] || !has[jkey] {
			recount = append(recount, t)
			continue
		}
		d.Tables = append(d.Tables, TableRows{Name: name, Kind: t.kind, Source: sums[jkey], Target: sums[jkey],
			SourceChunks: side[0].chunks[key], TargetChunks: side[1].chunks[key]})
	}
	rows, err := countTables(ctx, d.src, d.dst, r.opt.Jobs, recount, side[0].chunks, side[1].chunks)
	d.Tables = append(d.Tables, rows...)
	if err != nil {
		return err
	}
	sort.SliceStable(d.Tables, func(i, j int) bool { return d.Tables[i].Source > d.Tables[j].Source })
	differ := map[string]bool{}
	for _, h := range d.chunksDiffer() {
		differ[inventory.DisplayName(h[0], h[1])] = true
	}
	for _, t := range d.Tables {
		if t.Source != t.Target || t.SourceChunks != t.TargetChunks && !differ[t.Name] {
			diff := fmt.Sprintf("%s %s has %d rows in %d chunks on the source and %d in %d on the target", t.Kind, t.Name, t.Source, t.SourceChunks, t.Target, t.TargetChunks)
			if !r.opt.Rehearsal {
				return errors.New(diff)
			}
			r.note(d.Source, diff+" (the source kept changing: no freeze in a rehearsal)")
		}
	}
	return nil
}

// dropJournals removes the journals once every database of the run is migrated.
func (r *run) dropJournals(ctx context.Context) error {
	for _, d := range r.sum.Databases {
		if err := onTarget(ctx, d, func(ctx context.Context, c *dbconn.Conn) error { return journal.Drop(ctx, c.Conn) }); err != nil {
			return fmt.Errorf("%s: %w", d.Source, err)
		}
	}
	return nil
}

// work is a --worker run: it copies data units of migrations another process planned
// until none is left, and leaves everything else to that process.
func (r *run) work(ctx context.Context) error {
	if err := r.waitToJoin(ctx); err != nil {
		return err
	}
	r.sum.began = true
	for _, d := range r.sum.Databases {
		if d.api() {
			if err := r.makeTimescaleObjects(ctx, d, ""); err != nil {
				return fmt.Errorf("%s: %w", d.Source, err)
			}
		}
		if err := r.phase(d, PhaseCopy, func() error { return r.copyData(ctx, d, nil) }); err != nil {
			return fmt.Errorf("%s: %w", d.Source, err)
		}
	}
	return nil
}

// keepFrozen says whether a failed stream run leaves its sources frozen for --resume:
// only when asked to (Options.KeepFrozenOnFailure), once a data phase has started
// (before it, starting over costs little), and unless a freeze proof failed (the
// source changed: what was copied may be stale).
func (r *run) keepFrozen() bool {
	if r.opt.Engine != EngineStream || !r.opt.KeepFrozenOnFailure || r.proofFailed || r.opt.Live {
		return false
	}
	for _, d := range r.sum.Databases {
		if d.dataStarted {
			return true
		}
	}
	return false
}

// resumeSteps say how to continue a stream run that failed with its sources kept frozen.
func (r *run) resumeSteps() []string {
	var names []string
	for _, d := range r.sum.Databases {
		names = append(names, d.Source)
	}
	return []string{
		"to continue where it stopped: run the same tsmigrate migrate command again with --resume (finished data units are skipped)",
		fmt.Sprintf("or, to give up: tsmigrate unfreeze --source %q (per database: %s), then reset the target as below",
			r.sum.Databases[0].src.ConnString(), strings.Join(names, ", ")),
	}
}
