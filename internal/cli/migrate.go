package cli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tsmigrate/tsmigrate/internal/copy"
	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/preflight"
	"github.com/tsmigrate/tsmigrate/internal/schema"
	"github.com/tsmigrate/tsmigrate/internal/verify"
)

type migrateFlags struct {
	conn           connFlags
	engine         string
	restorePath    string
	databases      []string
	allDatabases   bool
	jobs           string
	dumpDir        string
	dumpFile       string
	keepDump       bool
	rehearsal      bool
	resetTarget    bool
	compressBefore bool
	compressOlder  time.Duration
	noVerify       bool
	freezeGrace    time.Duration
	yes            bool
	json           bool
	resume         bool
	worker         bool
	workerWait     time.Duration
	keepFrozen     bool
	progress       string
	roles          bool
	rolesUpdate    bool
	live           bool
	cutover        string
	identityFull   bool
}

func init() {
	register(func(a *app) *cobra.Command {
		var f migrateFlags
		c := &cobra.Command{
			Use:   "migrate --source URI --target URI [flags]",
			Short: "Migrate whole databases: pre-flight, freeze, copy, ANALYZE, verify",
			Long: `migrate moves whole databases from the source server to the target server:

  1. pre-flight checks (any failure stops the run before anything changes, exit 3);
  2. confirmation, then the write freeze of the source databases (not with --rehearsal):
     sessions from before are ended and the database's write counters recorded, and the
     copy starts at once; once the source has been read (the end of pg_dump, or of the
     stream engine's copy), the counters are checked unchanged and no transaction may hold
     a transaction id: any write since the freeze fails the run, as the copy may miss it
     (unlike tsmigrate freeze, whose proof waits for a quiet window first);
  3. the copy, by one of two engines:
     "stream" (the default): the schema without rows (pg_dump --section pre-data, restored
     with TimescaleDB at the source's version in restore mode), then the rows straight
     from server to server, --jobs units at a time (every chunk, table and range of a big
     table; binary COPY from one snapshot; progress on stderr, see --progress), then the
     indexes and constraints (post-data) with --jobs; every step and unit is journaled in
     the target (schema _tsmigrate, dropped at the end). --jobs auto (the default) copies
     as many units at once as the servers have cores when they are near, more when the
     round trips to them make each unit wait (a WAN), and says why in the summary; the
     other steps take as many jobs as this machine has cores (2 to 8);
     "dump": pg_dump --no-owner in parallel, then pg_restore in the order that keeps
     TimescaleDB's data: timescaledb_pre_restore(), the catalog alone, the rest with --jobs;
  With --roles, first the roles the databases use are created on the target (see
  --roles), and once each database is restored its objects are given their source
  owners (ALTER ... OWNER TO, as the target user: it is given SET ROLE on the roles it
  creates); what keeps another owner is named, with why.
  4. ANALYZE in parallel, timescaledb_post_restore(), the source database's own settings
     (ALTER DATABASE ... SET, its roles' settings in it), privileges (GRANT/REVOKE ... ON
     DATABASE) and comment given to the target database (pg_dump leaves them out; a
     refusal is a warning), row counts on both sides, verify;
  5. a summary: time per phase, rows per table and hypertable, the data units, rows, bytes
     and retries of the stream engine, the messages of pg_dump and pg_restore (known
     harmless ones counted, shown with --verbose; any other fails the run).

Live (--live, stream engine; docs/live.md): the applications keep writing during the
copy. A publication and a logical replication slot (tsmigrate_<id>) are made on the
source, whose snapshot the schema dump and the copy read; the changes made meanwhile
are kept in the target, verify compares the copy with the source as of that snapshot,
and the changes are applied through the hypertables. Once the changes left to apply stay
under 1 MB for 3 s (--cutover auto), or when you say so (--cutover prompt), the cut-over: the
source is frozen as above (proven), the last changes applied, the sequences set, the
schema and the tables and chunks that changed verified again, the slot and publication
dropped and the replica identities set back (--replica-identity-full sets FULL, for the
migration, on tables without a primary key or replica identity). The summary gives the
downtime (from the freeze to "point the applications at the target", "downtime_ms" and
"live" in --json). A failure or Ctrl-C before the cut-over is done drops the slot and
publication; a killed run leaves them, named in the target's _tsmigrate.live: once its
copy was done, the same command with --resume goes on applying from the target's state
and cuts over (the source stayed writable); before that, --resume is refused, naming the
slot to drop.

Rehearsal (--rehearsal, either engine): the cold run the documented procedure asks for,
while writes go on: nothing is frozen (the stream engine reads the schema and the rows in
one snapshot of the source), the target is left for inspection (or dropped at the end with
--reset-target, for target databases the rehearsal creates), and the summary gives the
projected downtime (how long a real run would keep the source frozen: the phases measured
here, plus an allowance for the freeze) and the rows the source's statistics counted as
inserted, updated and deleted meanwhile. As a freeze, it pauses the source's scheduled
TimescaleDB jobs while it reads (so that the target gets them unscheduled) and schedules
them again at its end; it records them on the source database (setting
tsmigrate.rehearsal_jobs), so that after a SIGKILL tsmigrate unfreeze schedules them
again and freeze-status names them.

On success the source stays frozen and the summary lists the cut-over steps. On failure or
Ctrl-C the source is unfrozen (writes resume: the migration did not happen), the target is
left for inspection and the summary says how to reset it; it says too when the source is
still frozen (unfreezing failed) or frozen by a freeze this run did not make, which it
leaves as it is. A run refused before it began (bad usage, a server that cannot be logged
into, a refused --resume, no confirmation) prints one line and exits 2; with --json, its
document too.

Resuming (stream engine): a run that was killed (SIGKILL, a crash, a lost machine) leaves
the source frozen and its journal in the target; the same command with --resume continues
it: finished data units are skipped, a half-finished unit is copied again from scratch;
killed while it restored the schema (pre-data), what it restored is dropped (by name,
extensions and the schemas holding them kept) and the schema restored again.
--resume is refused (exit 2, nothing changed) unless every source database is still frozen
by the very freeze the target's journal was written under, and its write counters are
still those of the freeze's baseline, which the journal keeps (no write, no server restart,
no statistics reset since): a source that may have changed since the first run can only be
started over (unfreeze, reset the target, migrate again). The journal records its format
and the tsmigrate version that wrote it: --resume and --worker refuse a journal of another
format (exit 2, nothing changed), saying which version wrote it. The freeze proof of a resumed run
covers both runs: from the first run's freeze to the end of the resumed copy. A run that fails or is interrupted (Ctrl-C, SIGTERM) unfreezes the source as
said above, so it cannot be resumed, unless --keep-frozen-on-failure is given: then, once the
data phase has started and if the freeze's proof holds at that point (else the source is
unfrozen: it changed), the source stays frozen and the journal kept, and the summary says
how to resume or give up (tsmigrate unfreeze, then reset the target). A run that stopped
while it restored the rest of post-data (foreign keys, partitioned tables' indexes,
triggers, ...) resumes by restoring only the entries whose objects are not on the target
yet (each entry is restored whole or not at all; comments and the like run again); it is
refused when an entry's kind cannot be told restored or not, or when another tsmigrate's
sessions stay busy on the target for 30 s.

Several processes, several machines (stream engine): while a migration copies its data,
tsmigrate migrate --worker with the same --source, --target and databases joins it: it
copies data units (each unit exactly once, whoever takes it) until none is left and ends;
the first process waits for units that workers hold, then does the rest. A worker started
before that migration reaches its data phase (while it runs pre-flight, freezes the
source or restores the schema) waits for it, saying so, up to --worker-wait; a worker
that cannot join exits 2 having changed nothing. Each process's summary counts the units
it copied, those other processes copied meanwhile, and those done before it started.

--json prints one document (also when the run fails):
  {"engine", "rehearsal", "outcome" (migrated|rehearsed|blocked|failed|interrupted), "error",
   "source", "target" (user@host:port/db), "pg_tools", "started", "duration_ns",
   "phases": [{"phase", "database", "duration_ns"}],
   "databases": [{"source", "target", "created_target", "timescaledb_version",
     "target_timescaledb_version" (the target's: the source's, or a newer one),
     "restore_path" (catalog|api: how TimescaleDB's objects reached the target), "paused_jobs",
     "dump_path" (with --keep-dump), "dump_bytes", "phases", "freeze_id",
     "freeze_proof": {"start", "end", "window_seconds", "samples", "restarts" (0),
       "rows_written", "xid_holders" (0), "prepared_transactions" (0), "commits_in_window",
       "server_wal_bytes_in_window", "counters_tracked", "tables_locked" (held against
       writes while the source was read), "lock_notes" [text] (writes the locks cancelled,
       a time they were not held)} (from the freeze to the end of the dump or copy; with
       --resume, from the first run's freeze),
     "data": {"units" (copied by this process), "by_others" (by other processes meanwhile),
       "skipped" (done before it started), "rows", "bytes", "retries", "snapshot_renewals",
       "jobs" (units at once), "jobs_why" (--jobs auto: the round trips, cores and units
       that chose it; or "given (N)")}
       (stream engine),
     "tables": [{"name", "kind" (table|partitioned table|hypertable), "source_rows",
       "target_rows", "source_chunks", "target_chunks"}],
     "messages": [MESSAGE], "verify" (verify's report of the database), "identical",
     "compression" (--compress-before): {"chunks", "hypertables", "bytes_before", "bytes_after",
       "skipped" (hypertables left alone, and why)},
     "compressed_chunks" (compressed on the source, checked compressed on the target),
     "compressed_units_verified" (--no-verify: units of compressed rows compared by checksum),
     "jobs": [{"job" (what it acts on), "id", "scheduled", "next_start" (none: as soon as the
       scheduler sees it), "timezone"}] (the target's TimescaleDB jobs, given the source's
       schedules once verified; none runs before),
     "owners" (--roles): {"set" (objects given their source owners), "not_set": [{"owner",
       "reason", "count", "objects" (the first few), "fix" (what a user allowed to can run)}]},
     "grants_left_out" (without --roles, or a role the target refused): [{"role" (missing on
       the target), "statements" (of the source's privileges that name it, not given),
       "shown" (the first few)}],
     "database_settings" (what the target database was given of the source database's
       own settings, its roles' settings in it, its privileges and its comment, which
       pg_dump leaves out; by name, e.g. "search_path", "work_mem of role app",
       "revoke of CONNECT from PUBLIC", "grant of CONNECT to app", "comment"),
     "source_frozen" (whether the source database is frozen as the run ends; absent when
       that could not be read), "frozen_by" ("this run", "the first run" that a --resume
       or --worker continues, or another freeze: "freeze ID (USER on HOST, since TIME)"),
     "unfrozen" (this run froze it and gave writes back when it failed),
     "live_slot" (--live: the replication slot and publication made on the source)}],
   "preflight" (pre-flight's report per database), "harmless_messages", "errors": [MESSAGE],
   "source_frozen" (true when any source database is frozen as the run ends, false when
   none is; absent when that is not known), "frozen_window_ns", "projected_downtime_ns" (rehearsal),
   "source_changes": {"inserted", "updated", "deleted"} (rehearsal), "compress_before",
   "cut_over", "reset_target", "target_reset" (--reset-target dropped the rehearsal's
   target databases), "resume", "resumed" (a --resume run), "warnings",
   "downtime_ns", "downtime_ms" (--live: from the cut-over's freeze until the applications
   may be pointed at the target), "live" (--live): {"slots", "peak_retained_bytes" (WAL the
     slot held back on the source), "peak_lag_bytes", "peak_lag_s", "rows_applied",
     "transactions", "apply_rows_per_s", "reconnects" (replication connections made
     again), "touched_units" (tables and chunks changes were applied to, verified again
     at the cut-over)},
   "roles" (--roles): {"created", "existing": [{"role", "differences"}] (left as they are),
     "updated" (--roles-update), "dropped_attributes": [{"role", "attributes"}] (left out:
     the target user may not give them), "passwords_carried" (roles given the source's
     password verifier), "without_password" (login roles whose password is to be set),
     "memberships", "settings", "act_as" (roles the target user was made a member of,
     with SET ROLE and their privileges, to give them their objects and read them), "refused": [{"what", "reason"}]}}
  "outcome" of a --worker run: copied.
  MESSAGE = {"program", "severity", "text", "lines", "object", "toc_id", "harmless",
   "rule", "reason" (why it is harmless), "hint" (what to do)}

` + connHelp + "\n\n" + exitCodesHelp,
			Example: `  export TSMIGRATE_SOURCE='postgres://postgres@db.internal:5432/app'
  export TSMIGRATE_TARGET='postgres://tsdbadmin@xyz.tsdb.cloud:34567/defaultdb?sslmode=require'

  # the cold run first: nothing frozen, the projected downtime measured
  tsmigrate migrate --rehearsal --reset-target --password-prompt

  # the migration: pre-flight, freeze, copy, ANALYZE, verify; asks to confirm
  tsmigrate migrate --password-prompt

  # every database of the server, each into the same name, 4 jobs, with the roles
  tsmigrate migrate --all-databases --jobs 4 --roles --yes

  # after a kill: continue where it stopped (the source still frozen)
  tsmigrate migrate --resume --yes`,
			Args: cobra.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error { return a.runMigrate(c, f) },
		}
		a.docOnFlagError(c, func(err error) { a.writeRefusedSummary(&f, err) })
		f.conn.addSource(c)
		f.conn.addTarget(c)
		fl := c.Flags()
		fl.StringVar(&f.engine, "engine", migrate.EngineDefault, `copy engine: "stream" (server to server, resumable) or "dump" (pg_dump and pg_restore)`)
		fl.StringVar(&f.restorePath, "restore-path", string(schema.PathAuto), restorePathHelp)
		fl.StringArrayVar(&f.databases, "database", nil, "database SRC, or SRC:DST to land in another name (repeatable; default: the source URI's database into the target URI's)")
		fl.BoolVar(&f.allDatabases, "all-databases", false, "every non-template source database with user objects, each into the same name")
		fl.StringVar(&f.jobs, "jobs", "auto", `parallel workers of the copy (data units at once, pg_dump, pg_restore), ANALYZE and verify: N, or "auto" (see above)`)
		fl.StringVar(&f.dumpDir, "dump-dir", "", "directory for the dumps (default: a temporary directory)")
		fl.StringVar(&f.dumpFile, "dump-file", "", "dump into this one custom-format file instead (one database; pg_dump runs single-threaded)")
		fl.BoolVar(&f.keepDump, "keep-dump", false, "keep the dumps after the run")
		fl.BoolVar(&f.rehearsal, "rehearsal", false, "cold run: no freeze, into an empty scratch target; reports the projected downtime and what changed on the source meanwhile")
		fl.BoolVar(&f.resetTarget, "reset-target", false, "with --rehearsal: drop the target databases at the end (they must not exist before: the rehearsal creates them)")
		fl.BoolVar(&f.compressBefore, "compress-before", false, "compress the chunks that may be compressed (compression enabled, older than the compression policy's compress_after) before the dump, so it moves less; on an Apache-only source it says so and does nothing")
		fl.DurationVar(&f.compressOlder, "compress-older-than", 0, "with --compress-before: compress chunks older than this (e.g. 168h) instead of the policy's compress_after")
		fl.BoolVar(&f.noVerify, "no-verify", false, "skip the verification of the data after the copy (row counts are still compared, the stream engine per data unit as it copies, the schema, and the rows of compressed chunks by checksum)")
		fl.DurationVar(&f.freezeGrace, "freeze-grace", 10*time.Second, "time sessions from before the freeze get to finish their transactions before they are ended")
		fl.BoolVarP(&f.yes, "yes", "y", false, "freeze and migrate without asking (needed without a terminal)")
		fl.BoolVar(&f.json, "json", false, "print the summary as one JSON document")
		fl.BoolVar(&f.resume, "resume", false, "stream engine: continue a migration that stopped, if the source is still frozen by its freeze (see above)")
		fl.BoolVar(&f.worker, "worker", false, "stream engine: join the data phase of a migration another tsmigrate process runs, copy units until none is left")
		fl.DurationVar(&f.workerWait, "worker-wait", 10*time.Minute, "with --worker: how long to wait for that migration to reach its data phase (it may be in pre-flight, freezing or restoring the schema)")
		fl.BoolVar(&f.keepFrozen, "keep-frozen-on-failure", false, "stream engine: on failure or Ctrl-C once the data phase started, keep the source frozen and the journal, for --resume")
		fl.StringVar(&f.progress, "progress", progressAuto, "stream engine's data phase: "+progressModes)
		fl.BoolVar(&f.roles, "roles", false, rolesHelp)
		fl.BoolVar(&f.rolesUpdate, "roles-update", false, rolesUpdateHelp)
		fl.BoolVar(&f.live, "live", false, "stream engine: the applications keep writing during the copy; their changes are streamed from a replication slot and applied, and writes stop only for the cut-over (see docs/live.md)")
		fl.StringVar(&f.cutover, "cutover", "", `with --live: when to cut over: "auto" (the default: once the changes left to apply stay under 1 MB for 3 s) or "prompt" (once the lag is small, ask on standard input, a terminal or a pipe, redrawing the lag meanwhile: y or yes cuts over; anything else, or the end of the input, aborts the live run, the source never frozen; --yes does not answer it)`)
		fl.BoolVar(&f.identityFull, "replica-identity-full", false, replicaIdentityFullHelp)
		return c
	})
}

// parseJobs reads --jobs: "auto" (0) or a number of 1 or more.
func parseJobs(s string) (int, error) {
	if s == "auto" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, exit.Usagef(`give 1 or more, or "auto"`, "--jobs %s", s)
	}
	return n, nil
}

// runMigrate runs a migration and prints its summary: with --json always one document
// (also for bad options or a connection string that cannot be used); otherwise the
// summary of a run that began (or that pre-flight blocked), and for one refused before
// that (bad usage, a refused --resume, a server that cannot be logged into, no consent)
// only the one line of the error.
func (a *app) runMigrate(c *cobra.Command, f migrateFlags) error {
	sum, err := a.migrate(c, f)
	switch {
	case f.json && sum == nil:
		a.writeRefusedSummary(&f, err)
	case f.json:
		if jerr := writeJSON(a.stdout, sum); jerr != nil && err == nil {
			err = jerr
		}
	case sum != nil && (sum.Began() || sum.Outcome == migrate.OutcomeBlocked):
		printSummary(a.stdout, sum, a.verbose)
	}
	return err
}

// writeRefusedSummary writes the --json document of a run refused before it began.
func (a *app) writeRefusedSummary(f *migrateFlags, err error) {
	sum := &migrate.Summary{Engine: f.engine, Rehearsal: f.rehearsal, Outcome: migrate.OutcomeFailed, Started: time.Now()}
	if exit.Code(err) == exit.Interrupted {
		sum.Outcome = migrate.OutcomeInterrupted
	}
	sum.Error = dbconn.Redact(err.Error())
	writeJSON(a.stdout, sum)
}

// migrate checks the flags and runs the migration; the summary is nil when it did not
// get to run.
func (a *app) migrate(c *cobra.Command, f migrateFlags) (*migrate.Summary, error) {
	if f.engine != migrate.EngineDump && f.engine != migrate.EngineStream {
		return nil, exit.Usagef(`use "dump" or "stream"`, "unknown --engine %q", f.engine)
	}
	restorePath, err := schema.ParseRestorePath(f.restorePath)
	if err != nil {
		return nil, err
	}
	if _, _, err := newProgress(f.progress, io.Discard); err != nil {
		return nil, err
	}
	jobs, err := parseJobs(f.jobs)
	if err != nil {
		return nil, err
	}
	if jobs > 0 {
		a.sizeRuntime(jobs)
	} else {
		a.sizeRuntime(copy.DefaultJobs())
	}
	if f.compressOlder < 0 || (f.compressOlder > 0 && !f.compressBefore) {
		return nil, exit.Usagef("give a positive duration together with --compress-before", "--compress-older-than %s", f.compressOlder)
	}
	if f.freezeGrace < 0 {
		return nil, exit.Usagef("give 0 or more (0: end them at once)", "--freeze-grace %s", f.freezeGrace)
	}
	if f.rolesUpdate && !f.roles {
		return nil, exit.Usagef("add --roles", "--roles-update goes with --roles")
	}
	var maps []migrate.Mapping
	for _, s := range f.databases {
		m, err := migrate.ParseMapping(s)
		if err != nil {
			return nil, err
		}
		maps = append(maps, m)
	}
	src, err := a.config("source", f.conn.source)
	if err != nil {
		return nil, err
	}
	dst, err := a.config("target", f.conn.target)
	if err != nil {
		return nil, err
	}
	// live draws the live run's progress (nil without --live: the events are printed
	// as they come).
	var live *liveView
	if f.live {
		live = newLiveView(f.progress, a.stderr)
	}
	opt := migrate.Options{
		Engine: f.engine, RestorePath: restorePath, Resume: f.resume, Worker: f.worker, WorkerWait: f.workerWait, KeepFrozenOnFailure: f.keepFrozen,
		Source: src, Target: dst, Databases: maps, AllDatabases: f.allDatabases, Jobs: jobs,
		DumpDir: f.dumpDir, DumpFile: f.dumpFile, KeepDump: f.keepDump, PgBin: a.pgBin,
		Rehearsal: f.rehearsal, ResetAfterRehearsal: f.resetTarget, CompressBefore: f.compressBefore, CompressOlderThan: f.compressOlder, NoVerify: f.noVerify, FreezeGrace: f.freezeGrace,
		Roles: f.roles, RolesUpdate: f.rolesUpdate,
		Live: f.live, Cutover: f.cutover, ReplicaIdentityFull: f.identityFull,
		Confirm: func(p migrate.Plan) error {
			var names []string
			for _, m := range p.Databases {
				names = append(names, m.Source)
			}
			if p.Resume && p.Live {
				return a.confirm(f.yes, fmt.Sprintf("Resume the live migration of %s (database %s) to %s, then freeze writes on it for the cut-over?",
					p.Source, strings.Join(names, ", "), p.Target))
			}
			if p.Resume {
				return a.confirm(f.yes, fmt.Sprintf("Resume the migration of %s (database %s, still frozen) to %s?",
					p.Source, strings.Join(names, ", "), p.Target))
			}
			if p.Live {
				return a.confirm(f.yes, fmt.Sprintf("Migrate %s (database %s) to %s while it stays writable, then freeze writes on it for the cut-over?",
					p.Source, strings.Join(names, ", "), p.Target))
			}
			return a.confirm(f.yes, fmt.Sprintf("Freeze writes on %s (database %s) and migrate to %s?",
				p.Source, strings.Join(names, ", "), p.Target))
		},
		OnEvent: func(e migrate.Event) {
			if e.Type == migrate.EventLive {
				live.event(e)
				return
			}
			live.print(func() { a.printMigrateEvent(e) })
		},
		ConfirmCutover: func(ctx context.Context) error { return a.confirmCutover(ctx, live, src.String()) },
		DataProgress: func(string) (func(copy.Event), func()) {
			if f.live && progressMode(f.progress, a.stderr) == progressBars {
				// The live lines join the copy's bars while they run.
				b := newBarProgress(a.stderr)
				live.copyBars(b)
				return b.event, func() { live.copyBars(nil); b.done() }
			}
			on, done, _ := newProgress(f.progress, a.stderr)
			return on, done
		},
	}
	// Refused here, before anything is contacted: the library's own check.
	if err := opt.CheckLive(); err != nil {
		return nil, err
	}
	return a.lib.migrate(c.Context(), opt)
}

func (a *app) printMigrateEvent(e migrate.Event) {
	w := a.stderr
	db := ""
	if e.Database != "" {
		db = " [" + e.Database + "]"
	}
	switch e.Type {
	case migrate.EventPhase:
		fmt.Fprintf(w, "==> %s%s\n", e.Phase, db)
	case migrate.EventDone:
		if a.verbose {
			fmt.Fprintf(w, "    %s done in %s\n", e.Phase, roundDuration(e.Duration))
		}
	case migrate.EventNote:
		fmt.Fprintf(w, "    %s\n", e.Text)
	case migrate.EventWarning:
		fmt.Fprintf(w, "warning:%s %s\n", db, e.Text)
	case migrate.EventBlocking:
		fmt.Fprintf(w, "FAIL%s %s\n", db, e.Text)
	case migrate.EventMessage:
		m := e.Message
		if m.Harmless {
			if a.verbose {
				fmt.Fprintf(w, "    known harmless: %s (%s)\n", m.Summary(), m.Reason)
			}
			return
		}
		fmt.Fprintf(w, "    ERROR %s\n", m.Summary())
	}
}

func roundDuration(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(10 * time.Millisecond)
}

// jobsShown is how many TimescaleDB jobs the text summary lists per database.
const jobsShown = 10

func printSummary(w io.Writer, s *migrate.Summary, verbose bool) {
	if s == nil {
		return
	}
	title := map[string]string{
		migrate.OutcomeMigrated: "MIGRATED", migrate.OutcomeRehearsed: "REHEARSED (nothing was frozen)",
		migrate.OutcomeBlocked: "BLOCKED by pre-flight (nothing changed)", migrate.OutcomeFailed: "FAILED",
		migrate.OutcomeInterrupted: "INTERRUPTED", migrate.OutcomeCopied: "DATA UNITS COPIED (worker)",
	}[s.Outcome]
	fmt.Fprintf(w, "\nmigration %s -> %s: %s in %s (engine %s)\n", s.Source, s.Target, title, roundDuration(s.Duration), s.Engine)
	if len(s.Phases) > 0 {
		fmt.Fprintln(w, "\ntime per phase:")
		phaseW, dbW := 12, 16 // columns as wide as their longest entry
		for _, p := range s.Phases {
			phaseW, dbW = max(phaseW, len(p.Phase)), max(dbW, len(p.Database))
		}
		for _, p := range s.Phases {
			fmt.Fprintf(w, "  %-*s %-*s %10s\n", phaseW, p.Phase, dbW, p.Database, roundDuration(p.Duration))
		}
	}
	printRoles(w, s)
	for _, d := range s.Databases {
		if len(d.Tables) == 0 {
			continue
		}
		fmt.Fprintf(w, "\nrows in %s -> %s (source / target):\n", d.Source, d.Target)
		for _, t := range d.Tables {
			mark := ""
			if t.Source != t.Target {
				mark = "  DIFFERENT"
			}
			chunks := ""
			if t.Kind == "hypertable" {
				chunks = fmt.Sprintf("  chunks %d / %d", t.SourceChunks, t.TargetChunks)
			}
			fmt.Fprintf(w, "  %-17s %-40s %12d / %-12d%s%s\n", t.Kind, t.Name, t.Source, t.Target, chunks, mark)
		}
	}
	for _, d := range s.Databases {
		if c := d.Data; c != nil {
			renewals := ""
			if c.SnapshotRenewals > 0 {
				renewals = fmt.Sprintf(" (%d of them new source snapshots after one was lost)", c.SnapshotRenewals)
			}
			fmt.Fprintf(w, "\ndata of %s: %d units copied by this process, %d by other processes meanwhile, %d done before it started; %s rows, %s, %d retries%s\n",
				d.Source, c.Units, c.ByOthers, c.Skipped, humanCount(c.Rows), preflight.HumanBytes(c.Bytes), c.Retries, renewals)
			if c.Jobs > 0 {
				fmt.Fprintf(w, "  %d units at once: %s\n", c.Jobs, c.JobsWhy)
			}
		}
		if p := d.FreezeProof; p != nil {
			from := "the freeze"
			if s.Resumed {
				from = "the first run's freeze"
			}
			fmt.Fprintf(w, "  freeze proof of %s: no write from %s until its data was read (%.1f s, %s to %s)\n",
				d.Source, from, p.WindowSeconds, p.Start.Format(time.TimeOnly), p.End.Format(time.TimeOnly))
		}
		if len(d.DatabaseSettings) > 0 {
			fmt.Fprintf(w, "  database settings of %s given to the target: %s\n", d.Source, strings.Join(d.DatabaseSettings, ", "))
		}
		if o := d.Owners; o != nil {
			fmt.Fprintf(w, "  owners: %d objects of %s given their source owners\n", o.Set, d.Target)
			for _, n := range o.NotSet {
				fmt.Fprintf(w, "    %s\n", n)
			}
		}
		if d.Identical != nil {
			fmt.Fprintf(w, "  verify: %s\n", map[bool]string{true: "identical", false: "DIFFERENT"}[*d.Identical])
			if rep, ok := d.Verify.(*verify.Report); ok && !*d.Identical {
				if more := writeDifferences(w, rep, "    ", summaryDifferences); more > 0 {
					fmt.Fprintf(w, "    and %d more (tsmigrate verify --database %s:%s lists them all)\n", more, d.Source, d.Target)
				}
			}
		}
		if len(d.Jobs) > 0 {
			fmt.Fprintf(w, "  TimescaleDB jobs of %s, given the source's schedules once verified:\n", d.Target)
			for i, j := range d.Jobs {
				if i == jobsShown {
					fmt.Fprintf(w, "    and %d more (see --json)\n", len(d.Jobs)-jobsShown)
					break
				}
				fmt.Fprintf(w, "    %s: %s\n", j.Job, j.When())
			}
		}
	}
	ran := false
	for _, d := range s.Databases {
		ran = ran || len(d.Phases) > 0
	}
	if ran {
		printMessages(w, s, verbose)
	}
	if s.CompressBefore != "" {
		fmt.Fprintf(w, "\n--compress-before: %s\n", s.CompressBefore)
	}
	if s.Rehearsal && s.Outcome == migrate.OutcomeRehearsed {
		fmt.Fprintf(w, "\nprojected downtime of a real run: about %s (the phases from the copy to verify measured here, plus %s for the freeze)\n",
			roundDuration(s.ProjectedDowntime), roundDuration(migrate.FreezeAllowance))
		if c := s.SourceChanges; c != nil {
			fmt.Fprintf(w, "the source changed during the run: %d rows inserted, %d updated, %d deleted", c.Inserted, c.Updated, c.Deleted)
			if c.Total() > 0 {
				fmt.Fprint(w, " (a run without a freeze would have lost them)")
			}
			fmt.Fprintln(w)
		}
	}
	if s.TargetReset {
		fmt.Fprintln(w, "the rehearsal's target databases were dropped (--reset-target)")
	}
	printLive(w, s)
	if len(s.CutOver) > 0 {
		fmt.Fprintln(w, "\ncut-over:")
		for i, st := range s.CutOver {
			fmt.Fprintf(w, "  %d. %s\n", i+1, st)
		}
	}
	switch s.Outcome {
	case migrate.OutcomeFailed, migrate.OutcomeInterrupted, migrate.OutcomeBlocked:
		printSourceState(w, s)
	}
	if len(s.Resume) > 0 {
		fmt.Fprintln(w, "\nthe source stays frozen (--keep-frozen-on-failure) and the target keeps the journal:")
		for _, st := range s.Resume {
			fmt.Fprintf(w, "  %s\n", st)
		}
	}
	if len(s.ResetTarget) > 0 {
		fmt.Fprintln(w, "\nto reset the target before another run:")
		for _, st := range s.ResetTarget {
			fmt.Fprintf(w, "  %s\n", st)
		}
	}
}

// printRoles says what --roles did with the roles, and what is left to do.
func printRoles(w io.Writer, s *migrate.Summary) {
	r := s.Roles
	if r == nil {
		return
	}
	fmt.Fprintln(w, "\nroles (--roles):")
	line := func(what string, names []string) {
		if len(names) > 0 {
			fmt.Fprintf(w, "  %s: %s\n", what, strings.Join(names, ", "))
		}
	}
	line("created", r.Created)
	line("password verifiers carried", r.PasswordsCarried)
	line("memberships given", r.Memberships)
	line("settings given", r.Settings)
	line("updated (--roles-update)", r.Updated)
	for _, d := range r.DroppedAttributes {
		fmt.Fprintf(w, "  %s created without %s (the target user may not give it)\n", d.Role, strings.Join(d.Attributes, ", "))
	}
	for _, e := range r.Existing {
		switch {
		case slices.Contains(r.Updated, e.Role):
		case len(e.Differences) == 0:
			fmt.Fprintf(w, "  %s exists on the target already, as on the source: left as it is\n", e.Role)
		default:
			fmt.Fprintf(w, "  %s exists on the target already, left as it is; it differs: %s\n", e.Role, strings.Join(e.Differences, "; "))
		}
	}
	for _, x := range r.Refused {
		fmt.Fprintf(w, "  refused by the target: %s\n", x)
	}
	if len(r.WithoutPassword) > 0 {
		fmt.Fprintf(w, "  created WITHOUT a password (the source user may not read the verifiers): %s\n", strings.Join(r.WithoutPassword, ", "))
		fmt.Fprintf(w, "    set each before the applications log in: connected with psql to %s, \\password ROLE (psql sends a verifier, never the password)\n", s.Target)
	}
}

// summaryDifferences is how many differences of a database the summary of a migrate
// whose verify failed lists.
const summaryDifferences = 5

// printSourceState says what a run that did not migrate leaves the source as: writable
// again (this run unfroze it), never frozen, or frozen, and by what.
func printSourceState(w io.Writer, s *migrate.Summary) {
	if len(s.Resume) > 0 || len(s.Databases) == 0 {
		return // the resume steps say it stays frozen; or nothing was even looked at
	}
	var unfrozen, never, lines []string
	for _, d := range s.Databases {
		switch {
		case d.SourceFrozen == nil:
			lines = append(lines, fmt.Sprintf("whether source database %s is frozen could not be read: tsmigrate freeze-status tells", d.Source))
		case !*d.SourceFrozen && d.Unfrozen:
			unfrozen = append(unfrozen, d.Source)
		case !*d.SourceFrozen:
			never = append(never, d.Source)
		case d.FrozenBy == migrate.FrozenByThisRun:
			lines = append(lines, fmt.Sprintf("source database %s is still frozen (freeze %s): unfreezing failed (see the warning above); tsmigrate unfreeze gives writes back", d.Source, d.FreezeID))
		case d.FrozenBy == migrate.FrozenByFirstRun:
			lines = append(lines, fmt.Sprintf("source database %s stays frozen by freeze %s, of the migration this run continued", d.Source, d.FreezeID))
		default:
			lines = append(lines, fmt.Sprintf("source database %s is frozen by %s, not by this run: it stays so (tsmigrate unfreeze gives writes back)", d.Source, d.FrozenBy))
		}
	}
	n := len(s.Databases)
	switch {
	case len(unfrozen) == n:
		lines = []string{"the source is writable again (unfrozen): the migration did not happen"}
	case len(never) == n && s.Outcome == migrate.OutcomeBlocked:
		return // "nothing changed" says it
	case len(never) == n:
		lines = []string{"nothing was frozen: the source stayed writable (the migration did not happen)"}
	default:
		if len(unfrozen) > 0 {
			lines = append(lines, fmt.Sprintf("source database %s: writable again (unfrozen)", strings.Join(unfrozen, ", ")))
		}
		if len(never) > 0 {
			lines = append(lines, fmt.Sprintf("source database %s: not frozen", strings.Join(never, ", ")))
		}
	}
	fmt.Fprintln(w)
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
}

func printMessages(w io.Writer, s *migrate.Summary, verbose bool) {
	harmless := s.Harmless
	fmt.Fprintf(w, "\nmessages of pg_dump/pg_restore: %d known harmless", harmless)
	if !verbose && harmless > 0 {
		fmt.Fprint(w, " (shown with --verbose)")
	}
	fmt.Fprintf(w, ", %d error(s)\n", len(s.Errors))
	if verbose {
		for _, d := range s.Databases {
			for _, m := range d.Messages {
				if m.Harmless {
					fmt.Fprintf(w, "  harmless: %s\n    why: %s\n", m.Summary(), m.Reason)
				}
			}
		}
	}
	for _, m := range s.Errors {
		fmt.Fprintf(w, "  ERROR %s\n", m.Summary())
		for _, l := range m.Lines {
			if strings.TrimSpace(l) != "" {
				fmt.Fprintf(w, "      | %s\n", l)
			}
		}
		fmt.Fprintf(w, "    what to do: %s\n", m.Hint)
	}
}

// printLive gives a live run's downtime and what its changes did.
func printLive(w io.Writer, s *migrate.Summary) {
	l := s.Live
	if l == nil {
		return
	}
	fmt.Fprintln(w, "\nlive (--live):")
	if s.Downtime > 0 {
		fmt.Fprintf(w, "  downtime: %s (from the cut-over's freeze until the applications may be pointed at the target)\n", roundDuration(s.Downtime))
	}
	fmt.Fprintf(w, "  changes applied: %s rows in %s transactions, %.0f rows/s; peak lag %s and %.1f s\n",
		humanCount(l.RowsApplied), humanCount(l.Transactions), l.ApplyRowsPerSec, preflight.HumanBytes(l.PeakLagBytes), l.PeakLagSeconds)
	fmt.Fprintf(w, "  peak WAL the slot held back on the source: %s; replication connections made again: %d\n",
		preflight.HumanBytes(l.PeakRetainedBytes), l.Reconnects)
}
