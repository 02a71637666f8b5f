// Package migrate is the whole-database migration: pre-flight, confirmation, write
// freeze, the copy (engine "dump": pg_dump and pg_restore; engine "stream": the schema
// with pg_dump/pg_restore and the rows straight from server to server, see stream.go),
// ANALYZE, verification and a summary, for one database or several. It never prints:
// it emits Events and returns a Summary, and on failure or interruption before the end
// it unfreezes the source and says how to reset the target (the stream engine can keep
// the source frozen instead, for --resume: Options.KeepFrozenOnFailure).
package migrate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/copy"
	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/freeze"
	"github.com/tsmigrate/tsmigrate/internal/inventory"
	"github.com/tsmigrate/tsmigrate/internal/pgtools"
	"github.com/tsmigrate/tsmigrate/internal/preflight"
	"github.com/tsmigrate/tsmigrate/internal/roles"
	"github.com/tsmigrate/tsmigrate/internal/schema"
	"github.com/tsmigrate/tsmigrate/internal/scratch"
	"github.com/tsmigrate/tsmigrate/internal/verify"
)

// Mapping is one source database and the target database it lands in.
type Mapping struct {
	Source string `json:"source"`
	Target string `json:"target"`
}

// Engines.
const (
	EngineDump   = preflight.EngineDump
	EngineStream = preflight.EngineStream
	// EngineDefault is the engine of Options with none, and of tsmigrate migrate
	// without --engine.
	EngineDefault = preflight.EngineDefault
)

// Options say what to migrate and how.
type Options struct {
	// Engine is EngineDump or EngineStream (EngineDefault when empty).
	Engine string
	// RestorePath is how TimescaleDB's objects reach each target database: through its
	// catalog (schema.PathCatalog), through its API without writing the catalog
	// (schema.PathAPI), or (schema.PathAuto, also when empty) the catalog path when the
	// target user may take it, else the API path. Pre-flight says which and why.
	RestorePath schema.RestorePath
	// Source and Target reach the two servers; their databases are the pair migrated
	// unless Databases or AllDatabases say otherwise (the target's database is then
	// only where tsmigrate connects to create missing databases).
	Source, Target *dbconn.Config
	Databases      []Mapping
	AllDatabases   bool
	// Jobs is how many jobs run at once: units of the stream engine's copy, pg_dump's
	// and pg_restore's workers, ANALYZE and verify. 0 chooses: as many as this
	// machine's cores (copy.DefaultJobs) for all but the copy, which chooses for
	// itself from the link and the servers (copy.Options.Jobs 0).
	Jobs int
	// DumpDir holds the dumps (a temporary directory when empty); DumpFile makes one
	// custom-format file instead (one database only). Dumps are removed at the end
	// unless KeepDump.
	DumpDir, DumpFile string
	KeepDump          bool
	PgBin             string
	// Rehearsal runs everything but the freeze, into an empty scratch target, and
	// reports the downtime a real run would cause and what changed on the source
	// meanwhile. The stream engine reads the schema and the rows in one snapshot of the
	// source, which goes on changing.
	Rehearsal bool
	// ResetAfterRehearsal drops the target databases at the end of a rehearsal, however
	// it ends; they must not exist before (the rehearsal creates them). Without it the
	// target is left for inspection, and the summary says how to reset it.
	ResetAfterRehearsal bool
	// CompressBefore compresses the source's compressible chunks before the dump.
	CompressBefore bool
	// CompressOlderThan replaces the compression policy's compress_after (0: the policy).
	CompressOlderThan time.Duration
	NoVerify          bool
	// FreezeGrace is how long sessions connected before the freeze may finish.
	FreezeGrace time.Duration
	// Confirm is asked, after pre-flight and before anything stops writes, whether to go
	// on (nil: go on). An error stops the run with nothing changed.
	Confirm func(Plan) error
	// OnEvent hears about each step (nil: nobody listens). Calls are serialised.
	OnEvent func(Event)

	// Stream engine only.
	//
	// Resume continues a stream run that stopped, on the same target: allowed only when
	// each source database is still frozen by the freeze its target's journal was
	// written under and nothing moved since that freeze's baseline, which the journal
	// keeps (otherwise refused, exit 2, nothing changed). It skips pre-flight and the
	// freeze, and the steps and data units the journal records as done; the freeze
	// proof after its copy starts from the first run's baseline.
	Resume bool
	// Worker joins the data phase of a stream run that another process is running on
	// the same databases: it copies data units until none is left and ends; the other
	// process does everything else. Same conditions as Resume. A worker started before
	// that run reached its data phase (in pre-flight, freezing, restoring the schema)
	// waits for it, up to WorkerWait.
	Worker     bool
	WorkerWait time.Duration
	// KeepFrozenOnFailure leaves the sources frozen, and the journal in the target,
	// when a stream run fails or is interrupted once its data phase started, so that
	// Resume can continue; by default the sources are unfrozen as with the dump engine.
	// (A run that is killed, or whose machine fails, leaves them frozen anyway.)
	KeepFrozenOnFailure bool
	// Roles creates on the target, before the schema, the roles the source databases
	// use (package roles), and gives their objects the source's owners once restored.
	// Without it, the target user owns everything restored. RolesUpdate gives roles the
	// target has already the source's attributes and memberships (else they are left as
	// they are, and reported).
	Roles, RolesUpdate bool

	// Live (stream engine) copies while the applications keep writing to the source,
	// then applies their changes and cuts over with a short freeze (see livemode.go).
	// Cutover says when: CutoverAuto (the default) once the lag is small, or
	// CutoverPrompt: once the lag is small, ConfirmCutover is called (the library never
	// prompts), and cuts over when it returns nil; an error aborts the run (the slot and
	// publication are dropped, the replica identities set back).
	// ReplicaIdentityFull sets REPLICA IDENTITY FULL, for the migration, on the tables
	// and hypertables that have neither a primary key nor a replica identity.
	Live                bool
	Cutover             string
	ReplicaIdentityFull bool
	ConfirmCutover      func(ctx context.Context) error

	// DataProgress, when set, is called as a database's data phase starts; on gets the
	// copy events, done is called when the data phase ends.
	DataProgress func(database string) (on func(copy.Event), done func())
}

// ParseMapping reads --database SRC or SRC:DST.
func ParseMapping(s string) (Mapping, error) {
	src, dst, _ := strings.Cut(s, ":")
	if src == "" || strings.HasSuffix(s, ":") || strings.Contains(dst, ":") {
		return Mapping{}, exit.Usagef("write --database SRC or --database SRC:DST", "invalid --database %q", s)
	}
	if dst == "" {
		dst = src
	}
	return Mapping{Source: src, Target: dst}, nil
}

// Plan is what a run is about to do, for the confirmation.
type Plan struct {
	Source    string    `json:"source"`
	Target    string    `json:"target"`
	Databases []Mapping `json:"databases"`
	Rehearsal bool      `json:"rehearsal"`
	Resume    bool      `json:"resume"`
	Jobs      int       `json:"jobs"`
	// Live: a live run, which freezes the source only for its cut-over.
	Live bool `json:"live,omitempty"`
}

// EventType says what an Event is about.
type EventType string

const (
	EventPhase   EventType = "phase"   // a phase starts (Phase)
	EventDone    EventType = "done"    // a phase ended (Phase, Duration)
	EventMessage EventType = "message" // pg_dump/pg_restore said something (Message)
	EventNote    EventType = "note"    // something worth telling (Text)
	EventWarning EventType = "warning" // something not ideal (Text)
	// EventBlocking is a pre-flight finding that stops the run before anything changes
	// (Text: the check, what it saw, what to do).
	EventBlocking EventType = "blocking"
)

// Event is one step of a run.
type Event struct {
	Type     EventType       `json:"type"`
	Database string          `json:"database,omitempty"` // the source database, "" for the whole run
	Phase    string          `json:"phase,omitempty"`
	Text     string          `json:"text,omitempty"`
	Duration time.Duration   `json:"duration_ns,omitempty"`
	Message  *schema.Message `json:"message,omitempty"`
	// Live: where a live run stands (EventLive).
	Live *LiveProgress `json:"live,omitempty"`
}

// Outcomes of a run.
const (
	OutcomeMigrated    = "migrated"
	OutcomeRehearsed   = "rehearsed"
	OutcomeBlocked     = "blocked"
	OutcomeFailed      = "failed"
	OutcomeInterrupted = "interrupted"
	// OutcomeCopied: a worker (Options.Worker) copied data units until none was left.
	OutcomeCopied = "copied"
)

// Phases of a run, as events and the summary name them.
const (
	PhaseTools     = "tools"
	PhasePreflight = "preflight"
	PhasePauseJobs = "pause-jobs"
	PhaseFreeze    = "freeze"
	PhaseProve     = "prove-freeze"
	PhaseCompress  = "compress"
	PhaseDump      = "dump"
	PhaseRestore   = "restore"
	PhaseAnalyze   = "analyze"
	PhasePost      = "post-restore"
	// PhaseHypertableKeys adds the foreign keys that reference hypertables.
	PhaseHypertableKeys = "hypertable-keys"
	PhaseSettings       = "database-settings"
	PhaseCount          = "count-rows"
	PhaseVerify         = "verify"
	// PhaseVerifyCompressed compares the rows of compressed chunks when the run's verify
	// is skipped (see verifyCompressed).
	PhaseVerifyCompressed = "verify-compressed"
	// PhaseVerifySchema compares the schemas when the run's verify is skipped (see
	// verifySchema).
	PhaseVerifySchema = "verify-schema"
	PhaseUnfreeze     = "unfreeze"
)

// PhaseTime is how long a phase took.
type PhaseTime struct {
	Phase    string        `json:"phase"`
	Database string        `json:"database,omitempty"`
	Duration time.Duration `json:"duration_ns"`
}

// Summary is the result of a run, also when it failed.
type Summary struct {
	Engine    string           `json:"engine"`
	Rehearsal bool             `json:"rehearsal"`
	Outcome   string           `json:"outcome"`
	Error     string           `json:"error,omitempty"`
	Source    string           `json:"source"`
	Target    string           `json:"target"`
	Tools     string           `json:"pg_tools,omitempty"`
	Started   time.Time        `json:"started"`
	Duration  time.Duration    `json:"duration_ns"`
	Phases    []PhaseTime      `json:"phases"`
	Databases []*DatabaseRun   `json:"databases"`
	Preflight []any            `json:"preflight,omitempty"`
	Harmless  int              `json:"harmless_messages"`
	Errors    []schema.Message `json:"errors,omitempty"`
	// SourceFrozen says whether the source databases are frozen as the run ends (by
	// this run or another: see each database's FrozenBy); nil when that is not known
	// (the run did not get to reading them, or could not read them).
	// FrozenWindow is how long a migrated source has been frozen so far.
	SourceFrozen *bool         `json:"source_frozen,omitempty"`
	FrozenWindow time.Duration `json:"frozen_window_ns,omitempty"`
	// ProjectedDowntime (rehearsal) is how long a real run would keep the source frozen.
	ProjectedDowntime time.Duration `json:"projected_downtime_ns,omitempty"`
	SourceChanges     *Changes      `json:"source_changes,omitempty"`
	CompressBefore    string        `json:"compress_before,omitempty"`
	CutOver           []string      `json:"cut_over,omitempty"`
	ResetTarget       []string      `json:"reset_target,omitempty"`
	// TargetReset: the rehearsal's target databases were dropped (ResetAfterRehearsal).
	TargetReset bool `json:"target_reset,omitempty"`
	// Resume says how to continue a stream run that failed with its sources kept frozen.
	Resume []string `json:"resume,omitempty"`
	// Resumed: this run continued an earlier one (Options.Resume).
	Resumed  bool     `json:"resumed,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
	// Roles is what Options.Roles did with the roles.
	Roles *roles.Report `json:"roles,omitempty"`
	// Downtime (live runs): from the start of the cut-over's freeze until the
	// applications may be pointed at the target; DowntimeMs the same in milliseconds.
	Downtime   time.Duration `json:"downtime_ns,omitempty"`
	DowntimeMs int64         `json:"downtime_ms,omitempty"`
	// Live is what a live run's changes did.
	Live *LiveSummary `json:"live,omitempty"`

	// began: the run got past its checks and confirmation (see Began).
	began bool
}

// Frozen says whether the source databases are known to be frozen as the run ends.
func (s *Summary) Frozen() bool { return s.SourceFrozen != nil && *s.SourceFrozen }

// Began says whether the run got past its checks of the options, pre-flight and the
// confirmation, to where it may change the servers (compress, freeze, copy). A run
// that did not changed nothing that it did not undo (a target database it created
// for pre-flight is dropped again).
func (s *Summary) Began() bool { return s.began }

// DatabaseRun is what happened to one database pair.
type DatabaseRun struct {
	Source        string `json:"source"`
	Target        string `json:"target"`
	CreatedTarget bool   `json:"created_target"`
	TimescaleDB   string `json:"timescaledb_version,omitempty"`
	// TargetTimescaleDB is the target database's TimescaleDB version, when the restore
	// starts: the source's, or a newer one (an upgrade on the way, through the API path).
	TargetTimescaleDB string `json:"target_timescaledb_version,omitempty"`
	// PausedJobs are the source's scheduled TimescaleDB jobs that the run paused: in
	// the freeze (they stay paused while the source is frozen; unfreeze schedules them
	// again), or for a rehearsal's dump (scheduled again at its end).
	PausedJobs []int `json:"paused_jobs,omitempty"`
	// Jobs are the target's TimescaleDB jobs once given the source's schedules, after
	// verify: whether each is scheduled and when it runs next.
	Jobs      []JobSchedule    `json:"jobs,omitempty"`
	DumpPath  string           `json:"dump_path,omitempty"`
	DumpBytes int64            `json:"dump_bytes"`
	Phases    []PhaseTime      `json:"phases"`
	Tables    []TableRows      `json:"tables"`
	Messages  []schema.Message `json:"messages"`
	Verify    any              `json:"verify,omitempty"`
	Identical *bool            `json:"identical,omitempty"`
	// RestorePath is how its TimescaleDB objects reached the target (schema.PathCatalog
	// or schema.PathAPI), chosen as the restore starts.
	RestorePath schema.RestorePath `json:"restore_path,omitempty"`
	// Data is the stream engine's data phase in this process.
	Data     *DataCopy `json:"data,omitempty"`
	FreezeID string    `json:"freeze_id,omitempty"`
	// Compression is what --compress-before did; CompressedChunks how many chunks are
	// compressed on the source (after the restore the target is checked to hold them
	// compressed too: a warning names any that are not).
	Compression      *Compression `json:"compression,omitempty"`
	CompressedChunks int          `json:"compressed_chunks,omitempty"`
	// CompressedVerified is how many units of compressed rows were compared when the
	// run's verify was skipped (see verifyCompressed).
	CompressedVerified int `json:"compressed_units_verified,omitempty"`
	// DatabaseSettings names the source database's own settings, those of roles in it,
	// and its comment, that the target database was given (pg_dump leaves them out);
	// the target's refusals are warnings.
	DatabaseSettings []string `json:"database_settings,omitempty"`
	// Owners is what giving the objects their source owners did (Options.Roles).
	Owners *roles.OwnersReport `json:"owners,omitempty"`
	// GrantsLeftOut are the statements of the source's privileges that name roles the
	// target lacks (a run without Options.Roles), by role: each role is warned about.
	GrantsLeftOut []schema.RoleGrants `json:"grants_left_out,omitempty"`
	// FreezeProof is the proof that the source did not change from the freeze's
	// baseline until its data was read (dump: the end of pg_dump; stream: the end of
	// the copy). A resumed run's starts at the first run's baseline (none when the first
	// run proved it already); a worker has none.
	FreezeProof *freeze.Proof `json:"freeze_proof,omitempty"`
	// SourceFrozen says whether this source database is frozen as the run ends, and
	// FrozenBy by what: FrozenByThisRun, FrozenByFirstRun (the run a --resume or
	// --worker continues) or another freeze, named with its id, user, host and time;
	// nil when it could not be read. Unfrozen: this run froze it, and gave writes back
	// when it failed.
	SourceFrozen *bool  `json:"source_frozen,omitempty"`
	FrozenBy     string `json:"frozen_by,omitempty"`
	Unfrozen     bool   `json:"unfrozen,omitempty"`
	// LiveSlot names the replication slot and publication of a live run on the source.
	LiveSlot string `json:"live_slot,omitempty"`

	src, dst    *dbconn.Config
	pausedByRun bool // PausedJobs were paused by the run itself (a rehearsal), not its freeze
	frozen      bool // frozen by this run, or by the run it resumes or joins
	freezeID    string
	pending     *freeze.PendingProof // the freeze's baseline until proveFrozen
	steps       map[string]bool      // the stream engine's journal steps done
	dataStarted bool
	ts          bool
	tsSchema    string // the schema the source's TimescaleDB is installed in
	// lineBreakNames are the source's names that hold a line break, which pg_restore
	// prints raw (schema.LineBreakNames).
	lineBreakNames []string
	// encoding (its number), collate and ctype are the source database's.
	encoding       int32
	collate, ctype string
	identity       inventory.Identity // the source server's and database's
	sizeBytes      int64
	statsStart     *Changes
	// settingsRefused names the database settings the target refused (warned about),
	// which verify then leaves out.
	settingsRefused []string
	// restoring: this run put the target database in restoring mode
	// (timescaledb_pre_restore()) and has not ended it yet; a failed run ends it.
	restoring bool
	// post is the plan of post-data, made before a --resume of a run that stopped in
	// its post-data phase (prepareRestResume); nil otherwise.
	post *schema.PostDataPlan
	// chunkTargets say where each source chunk's rows go, when TimescaleDB's objects are
	// made through its API; apart sorts its schema dump's entries for that path.
	chunkTargets map[copy.TableName]copy.ChunkTarget
	apart        schema.Apart
	// snap is the snapshot of the source a stream rehearsal reads the schema and the
	// rows in; nil otherwise.
	snap copy.SnapshotSource
	// live is the live migration of a live run; keepPIDs the run's own sessions on the
	// source that its cut-over's freeze keeps; copyVerified the verify of its copy.
	live         *liveDB
	keepPIDs     []uint32
	copyVerified *verify.Report
}

// run is the state of one Run.
type run struct {
	opt   Options
	sum   *Summary
	tools *pgtools.Tools
	mu    sync.Mutex
	dumps []string // dump paths to remove at the end
	base  string   // temporary directory made by the run (tempDir), "" if none
	// scratch is base unless it is kept (--keep-dump): removed at the end.
	scratch *scratch.Dir
	// proofFailed: a source changed under the freeze; the run must not be resumed.
	proofFailed bool
	// copyJobs is the stream engine's units at once (0: the copy chooses).
	copyJobs int
	// Live runs: the first failure of a receiver or applier, the end marker's content,
	// and what guards the live figures.
	liveErr chan liveFail
	liveEnd string
	liveMu  sync.Mutex
}

func (r *run) emit(e Event) {
	if r.opt.OnEvent == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.opt.OnEvent(e)
}

// phase times f as phase of database db ("" for the run) and records it.
func (r *run) phase(db *DatabaseRun, name string, f func() error) error {
	dbName := ""
	if db != nil {
		dbName = db.Source
	}
	r.emit(Event{Type: EventPhase, Database: dbName, Phase: name})
	t0 := time.Now()
	err := f()
	pt := PhaseTime{Phase: name, Database: dbName, Duration: time.Since(t0)}
	r.sum.Phases = append(r.sum.Phases, pt)
	if db != nil {
		db.Phases = append(db.Phases, pt)
	}
	if err == nil {
		r.emit(Event{Type: EventDone, Database: dbName, Phase: name, Duration: pt.Duration})
	}
	return err
}

// Run migrates. It returns the summary in every case, with an error when the run did
// not succeed: an *exit.Error (3 when pre-flight blocked, 2 for bad options), an error
// wrapping context.Canceled when interrupted, or another error (exit 1).
func Run(ctx context.Context, opt Options) (*Summary, error) {
	copyJobs := max(opt.Jobs, 0)
	if opt.Jobs < 1 {
		opt.Jobs = copy.DefaultJobs()
	}
	if opt.Engine == "" {
		opt.Engine = EngineDefault
	}
	if opt.RestorePath == "" {
		opt.RestorePath = schema.PathAuto
	}
	r := &run{opt: opt, copyJobs: copyJobs, liveErr: make(chan liveFail, 1), liveEnd: newLiveEnd(), sum: &Summary{Engine: opt.Engine, Rehearsal: opt.Rehearsal, Resumed: opt.Resume, Started: time.Now(),
		Source: opt.Source.String(), Target: opt.Target.String()}}
	err := r.run(ctx)
	for _, d := range r.sum.Databases {
		d.pending.Release() // the locks of a proof the run did not finish
	}
	r.sum.Duration = time.Since(r.sum.Started)
	r.cleanDumps()
	for _, d := range r.sum.Databases {
		if !opt.Rehearsal { // a stream rehearsal's id names its journal, not a freeze
			d.FreezeID = d.freezeID
		}
	}
	switch {
	case err == nil && opt.Worker:
		r.sum.Outcome = OutcomeCopied
	case err == nil && opt.Rehearsal:
		r.sum.Outcome = OutcomeRehearsed
	case err == nil:
		r.sum.Outcome = OutcomeMigrated
	case ctx.Err() != nil || errors.Is(err, context.Canceled):
		r.sum.Outcome = OutcomeInterrupted
		if !errors.Is(err, context.Canceled) {
			err = fmt.Errorf("%w: %w", context.Canceled, err)
		}
	case exit.Code(err) == exit.Blocked:
		r.sum.Outcome = OutcomeBlocked
	default:
		r.sum.Outcome = OutcomeFailed
	}
	if err != nil {
		r.sum.Error = dbconn.Redact(err.Error())
	}
	r.settleFrozen(ctx)
	for _, d := range r.sum.Databases {
		for _, m := range d.Messages {
			if m.Harmless {
				r.sum.Harmless++
			}
		}
	}
	return r.sum, err
}

func (r *run) run(ctx context.Context) (err error) {
	opt := r.opt
	if err := checkEngineOptions(opt); err != nil {
		return err
	}
	if err := opt.CheckLive(); err != nil {
		return err
	}
	if opt.Live && opt.Cutover == "" {
		r.opt.Cutover = CutoverAuto
		opt = r.opt
	}
	if opt.DumpFile != "" && opt.DumpDir != "" {
		return exit.Usagef("pick one", "--dump-dir and --dump-file exclude each other")
	}
	if opt.DumpFile != "" {
		if _, err := os.Stat(opt.DumpFile); err == nil {
			return exit.Usagef("remove it or name another file", "--dump-file %s exists", opt.DumpFile)
		}
	}
	dbs, err := r.resolve(ctx)
	if err != nil {
		return err
	}
	if opt.DumpFile != "" && len(dbs) > 1 {
		return exit.Usagef("use --dump-dir for several databases", "--dump-file holds one database, and %d are to be migrated", len(dbs))
	}
	r.sum.Databases = dbs
	if err := r.refuseSame(ctx); err != nil {
		return err
	}
	if err := r.phase(nil, PhaseTools, func() error { return r.findTools(ctx) }); err != nil {
		return err
	}
	if opt.Resume {
		// Refused here, nothing is undone: the run changed nothing.
		if err := r.checkJoin(ctx); err != nil {
			return err
		}
		opt = r.opt // a live run's journal makes the resume live
	}
	// Once the arguments are checked, both servers reached and a --resume accepted: a
	// run refused before is one line and changes nothing.
	if stale := scratch.RemoveStale(); len(stale) > 0 {
		r.note("", fmt.Sprintf("removed %d temporary directories that killed tsmigrate runs left behind: %s", len(stale), strings.Join(stale, ", ")))
	}
	if opt.Worker {
		return r.work(ctx)
	}

	// From here on, what was changed is undone when the run does not finish.
	defer func() {
		if err != nil {
			r.undo(ctx, err)
		}
	}()
	if !opt.Resume {
		if err := r.createTargets(ctx); err != nil {
			return err
		}
		if err := r.phase(nil, PhasePreflight, func() error { return r.preflight(ctx) }); err != nil {
			return err
		}
	}
	if r.tools == nil {
		return exit.New(exit.Blocked, "use a target running the source's PostgreSQL major or a newer one", "no pg_dump/pg_restore was picked: the target runs an older PostgreSQL major than the source")
	}
	if opt.Confirm != nil && !opt.Rehearsal {
		plan := Plan{Source: opt.Source.String(), Target: opt.Target.String(), Rehearsal: opt.Rehearsal, Resume: opt.Resume, Jobs: opt.Jobs, Live: opt.Live}
		for _, d := range dbs {
			plan.Databases = append(plan.Databases, Mapping{Source: d.Source, Target: d.Target})
		}
		if err := opt.Confirm(plan); err != nil {
			return err
		}
	}
	r.sum.began = true
	if opt.CompressBefore {
		if err := r.phase(nil, PhaseCompress, func() error { return r.compressBefore(ctx) }); err != nil {
			return err
		}
	}
	if opt.Roles && !opt.Resume {
		if err := r.phase(nil, PhaseRoles, func() error { return r.carryRoles(ctx) }); err != nil {
			return err
		}
	}
	for _, d := range dbs {
		// A real run's freeze pauses the jobs (freezeAll); a rehearsal does not freeze.
		if d.ts && opt.Rehearsal {
			if err := r.phase(nil, PhasePauseJobs, func() error { return r.pauseJobs(ctx) }); err != nil {
				return err
			}
			break
		}
	}
	var frozenAt time.Time
	if opt.Rehearsal {
		for _, d := range dbs {
			if d.statsStart, err = sourceActivity(ctx, d.src); err != nil {
				return err
			}
		}
	} else if opt.Live && !opt.Resume {
		if err := r.phase(nil, PhaseLiveStart, func() error { return r.startLive(ctx) }); err != nil {
			return err
		}
	} else if !opt.Resume {
		if err := r.phase(nil, PhaseFreeze, func() error { return r.freezeAll(ctx) }); err != nil {
			return err
		}
		frozenAt = time.Now()
	}
	if opt.Engine == EngineStream && !opt.Resume {
		if err := r.phase(nil, PhaseJournal, func() error { return r.openJournals(ctx) }); err != nil {
			return err
		}
	}
	if opt.Live && !opt.Resume {
		if err := r.initLive(ctx); err != nil {
			return err
		}
	} else if opt.Live {
		r.startResumedReceivers(ctx)
	}
	stopReport := make(chan struct{})
	if opt.Live {
		go r.reportLive(stopReport)
	}
	windowStart := time.Now()
	for _, d := range dbs {
		one := r.dumpOne
		if opt.Engine == EngineStream {
			one = r.streamOne
		}
		if err := one(ctx, d); err != nil {
			close(stopReport)
			return fmt.Errorf("%s: %w", d.Source, err)
		}
	}
	close(stopReport)
	if opt.Live {
		if frozenAt, err = r.cutOver(ctx); err != nil {
			return err
		}
	}
	if opt.Engine == EngineStream {
		if err := r.dropJournals(ctx); err != nil {
			return err
		}
	}
	if opt.Live {
		r.sum.Downtime = time.Since(frozenAt)
		r.sum.DowntimeMs = r.sum.Downtime.Milliseconds()
	}
	window := time.Since(windowStart)
	if err := r.resumeJobs(context.WithoutCancel(ctx)); err != nil {
		r.warn(err.Error())
	}
	if opt.Rehearsal {
		r.sum.ProjectedDowntime = window + FreezeAllowance
		ch := &Changes{}
		for _, d := range dbs {
			end, err := sourceActivity(ctx, d.src)
			if err != nil {
				return err
			}
			ch.add(end.minus(d.statsStart))
		}
		r.sum.SourceChanges = ch
		if !r.resetAfterRehearsal(ctx) {
			r.sum.ResetTarget = r.resetSteps(ctx)
		}
		return nil
	}
	if !frozenAt.IsZero() {
		r.sum.FrozenWindow = time.Since(frozenAt)
	}
	r.sum.CutOver = r.cutOverSteps()
	return nil
}

// checkEngineOptions refuses options that do not go with the engine, or each other.
func checkEngineOptions(opt Options) error {
	if opt.ResetAfterRehearsal && !opt.Rehearsal {
		return exit.Usagef("add --rehearsal, or leave --reset-target out", "--reset-target is for --rehearsal")
	}
	for _, o := range []struct {
		set  bool
		name string
	}{{opt.Resume, "--resume"}, {opt.Worker, "--worker"}, {opt.KeepFrozenOnFailure, "--keep-frozen-on-failure"}} {
		if o.set && opt.Rehearsal {
			return exit.Usagef("leave one out", "--rehearsal and %s exclude each other: a rehearsal freezes nothing and is not resumed", o.name)
		}
	}
	switch opt.Engine {
	case EngineDump:
		for _, o := range []struct {
			set  bool
			name string
		}{{opt.Resume, "--resume"}, {opt.Worker, "--worker"}, {opt.KeepFrozenOnFailure, "--keep-frozen-on-failure"}} {
			if o.set {
				return exit.Usagef("use --engine stream", "%s is for the stream engine", o.name)
			}
		}
	case EngineStream:
		for _, o := range []struct {
			set  bool
			name string
		}{{opt.DumpDir != "", "--dump-dir"}, {opt.DumpFile != "", "--dump-file"}, {opt.KeepDump, "--keep-dump"}} {
			if o.set {
				return exit.Usagef("use --engine dump", "%s is for the dump engine", o.name)
			}
		}
		if opt.Resume && opt.Worker {
			return exit.Usagef("pick one", "--resume and --worker exclude each other")
		}
	default:
		return exit.Usagef(`use "dump" or "stream"`, "unknown --engine %q", opt.Engine)
	}
	return nil
}

// FreezeAllowance is added to a rehearsal's measured window for the freeze itself
// (ending sessions; the proof runs during the copy and adds nothing unless the copy
// is shorter than the proof window).
const FreezeAllowance = 5 * time.Second

func (r *run) warn(s string) {
	r.sum.Warnings = append(r.sum.Warnings, s)
	r.emit(Event{Type: EventWarning, Text: s})
}

func (r *run) note(db, s string) { r.emit(Event{Type: EventNote, Database: db, Text: s}) }

// dumpOne migrates one database pair with the dump engine: dumps, restores, analyzes,
// counts and verifies it.
func (r *run) dumpOne(ctx context.Context, d *DatabaseRun) error {
	path, err := r.dumpPath(d)
	if err != nil {
		return err
	}
	onMessage := func(m schema.Message) {
		msg := m
		r.emit(Event{Type: EventMessage, Database: d.Source, Message: &msg})
	}
	if err := r.phase(d, PhaseDump, func() error {
		opts := schema.DumpOptions{Tools: r.tools, Source: d.src, Jobs: r.opt.Jobs, OnMessage: onMessage}
		if r.opt.DumpFile != "" {
			opts.File = path
		} else {
			opts.Dir = path
		}
		msgs, err := schema.Dump(ctx, opts)
		d.Messages = append(d.Messages, msgs...)
		d.DumpBytes = pathSize(path)
		return r.messagesErr(err)
	}); err != nil {
		return err
	}
	if err := r.proveFrozen(ctx, d, "dump"); err != nil {
		return err
	}
	var keys *schema.HypertableKeys
	if err := r.phase(d, PhaseRestore, func() error {
		if d.ts {
			if err := r.chooseRestorePath(ctx, d); err != nil {
				return err
			}
			if keys, err = r.findHypertableKeys(ctx, d, path); err != nil {
				return err
			}
			// schema.Restore runs timescaledb_pre_restore() first.
			d.restoring = d.RestorePath == schema.PathCatalog
		}
		res, err := schema.Restore(ctx, schema.RestoreOptions{Tools: r.tools, Target: d.dst, Archive: path, Jobs: r.opt.Jobs,
			TimescaleDB: d.TimescaleDB, TimescaleDBSchema: d.tsSchema, KeepRestoring: true, HypertableKeys: keys, OnMessage: onMessage, Names: d.lineBreakNames,
			OnStep: func(s string) { r.note(d.Source, s) }})
		d.Messages = append(d.Messages, res.Messages...)
		return r.messagesErr(err)
	}); err != nil {
		return err
	}
	if err := r.setOwners(ctx, d); err != nil {
		return err
	}
	if err := r.carryMissingValues(ctx, d); err != nil {
		return err
	}
	// ANALYZE before timescaledb_post_restore(): while the target is in restoring mode,
	// a hypertable is analyzed without all its chunks again (see schema.Analyze).
	if err := r.phase(d, PhaseAnalyze, func() error { return schema.Analyze(ctx, d.dst, r.opt.Jobs, nil) }); err != nil {
		return err
	}
	if d.ts {
		if err := r.phase(d, PhasePost, func() error { return r.leaveRestoring(ctx, d) }); err != nil {
			return err
		}
		if err := r.restoreHypertableKeys(ctx, d, keys, onMessage); err != nil {
			return err
		}
	}
	if err := r.restoreGrants(ctx, d, path, nil); err != nil {
		return err
	}
	r.checkTargetCompressed(ctx, d)
	if err := r.carrySettings(ctx, d); err != nil {
		return err
	}
	if err := r.countAndVerify(ctx, d); err != nil {
		return err
	}
	r.scheduleTargetJobs(ctx, d)
	return nil
}

// findHypertableKeys finds the foreign keys to hypertables in d's dump at path.
func (r *run) findHypertableKeys(ctx context.Context, d *DatabaseRun, path string) (*schema.HypertableKeys, error) {
	toc, err := schema.ReadTOC(ctx, r.tools, path)
	if err != nil {
		return nil, err
	}
	src, err := d.src.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer src.Close(context.WithoutCancel(ctx))
	return schema.FindHypertableKeys(ctx, src.Conn, toc, path)
}

// restoreHypertableKeys adds the foreign keys that reference hypertables to d's
// target, after timescaledb_post_restore() (see schema.HypertableKeys). Both engines.
func (r *run) restoreHypertableKeys(ctx context.Context, d *DatabaseRun, keys *schema.HypertableKeys, onMessage func(schema.Message)) error {
	if !keys.Any() {
		return nil
	}
	return r.phase(d, PhaseHypertableKeys, func() error {
		src, err := d.src.Connect(ctx)
		if err != nil {
			return err
		}
		defer src.Close(context.WithoutCancel(ctx))
		msgs, err := keys.Restore(ctx, r.tools, d.dst, src.Conn, r.opt.Jobs, onMessage)
		d.Messages = append(d.Messages, msgs...)
		return r.messagesErr(err)
	})
}

// carrySettings gives the target database the source database's own settings, those
// of roles in it, and its comment: pg_dump leaves them out without --create, and an
// application may rely on them (a search_path above all). After the restore, so that
// no setting changes how the schema and the data arrive. A statement the target
// refuses (a role it lacks, a setting reserved to superusers) is a warning that names
// it: the data is all there.
func (r *run) carrySettings(ctx context.Context, d *DatabaseRun) error {
	return r.phase(d, PhaseSettings, func() error {
		src, err := d.src.Connect(ctx)
		if err != nil {
			return err
		}
		set, err := schema.ReadDatabaseSettings(ctx, src.Conn, freeze.Settings...)
		src.Close(context.WithoutCancel(ctx))
		if err != nil || set.Empty() {
			return err
		}
		dst, err := d.dst.Connect(ctx)
		if err != nil {
			return err
		}
		defer dst.Close(context.WithoutCancel(ctx))
		var db string // as the server names it (a pooler may call it otherwise)
		if err := dst.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
			return fmt.Errorf("target: %w", err)
		}
		var accepted []schema.Statement
		for _, st := range set.Statements(db) {
			if _, err := dst.Exec(ctx, st.SQL); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				r.warn(fmt.Sprintf("%s: the target refused the source database's %s: %s; give it with %s as a role allowed to",
					d.Source, st.What, dbconn.Reason(err), st.How))
				d.settingsRefused = append(d.settingsRefused, st.What)
				continue
			}
			accepted = append(accepted, st)
		}
		// A statement can succeed and change nothing (a REVOKE by a user without the
		// grant option only warns): read back what the target holds.
		on, err := schema.ReadDatabaseSettings(ctx, dst.Conn, freeze.Settings...)
		if err != nil {
			return fmt.Errorf("target: %w", err)
		}
		held := on.Held(db)
		for _, st := range accepted {
			if held(st) {
				d.DatabaseSettings = append(d.DatabaseSettings, st.What)
				continue
			}
			r.warn(fmt.Sprintf("%s: the target accepted the source database's %s but does not hold it afterwards (a GRANT or REVOKE by a role without the grant option only warns); give it with %s as a role allowed to",
				d.Source, st.What, st.How))
			d.settingsRefused = append(d.settingsRefused, st.What)
		}
		if len(d.DatabaseSettings) > 0 {
			r.note(d.Source, "the target database was given the source database's "+strings.Join(d.DatabaseSettings, ", "))
		}
		return nil
	})
}

// checkTargetCompressed warns when chunks compressed on the source are not compressed
// on the target. Both engines run it after the copy.
func (r *run) checkTargetCompressed(ctx context.Context, d *DatabaseRun) {
	if !d.ts {
		return
	}
	n, err := checkCompressed(ctx, d.src, d.dst, d.chunkTargets)
	d.CompressedChunks = n
	if err != nil {
		r.warn(d.Source + ": " + err.Error())
	}
}

// countAndVerify compares the row counts of every table on both sides, then verifies
// (unless NoVerify).
func (r *run) countAndVerify(ctx context.Context, d *DatabaseRun) error {
	if err := r.phase(d, PhaseCount, func() error {
		rows, err := countRows(ctx, d.src, d.dst, r.opt.Jobs)
		d.Tables = rows
		if err != nil {
			return err
		}
		for _, t := range rows {
			if t.Source == t.Target {
				continue
			}
			diff := fmt.Sprintf("%s %s has %d rows on the source and %d on the target", t.Kind, t.Name, t.Source, t.Target)
			if !r.opt.Rehearsal {
				return errors.New(diff)
			}
			// Without a freeze the source moves on: that is what the rehearsal measures.
			r.note(d.Source, diff+" (the source kept changing: no freeze in a rehearsal)")
		}
		return nil
	}); err != nil {
		return err
	}
	if !r.opt.NoVerify {
		if err := r.phase(d, PhaseVerify, func() error { return r.verify(ctx, d) }); err != nil {
			return err
		}
	} else if err := r.lightVerify(ctx, d); err != nil {
		return err
	}
	return nil
}

// messagesErr keeps the messages that fail a run in the summary.
func (r *run) messagesErr(err error) error {
	var me *schema.MessageError
	if errors.As(err, &me) {
		r.sum.Errors = append(r.sum.Errors, me.Messages...)
	}
	return err
}
