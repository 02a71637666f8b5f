package cli

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/tsmigrate/tsmigrate/internal/copy"
	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/preflight"
	"github.com/tsmigrate/tsmigrate/internal/schema"
)

// restorePathHelp describes --restore-path, of migrate and preflight alike.
// rolesHelp and rolesUpdateHelp describe --roles and --roles-update, of migrate and
// preflight alike.
const (
	rolesHelp       = "carry the roles the databases use (owners, grantees, members of those, roles with settings in the database) to the target before the schema, with their memberships, own settings and password verifiers (when the source user may read them: a superuser, or a member of pg_read_all_data), leaving out the attributes the target user may not give (SUPERUSER, REPLICATION, BYPASSRLS on a managed service, each named); objects then keep their source owners"
	rolesUpdateHelp = "with --roles: give roles that exist on the target already the source's attributes and memberships (by default they are left as they are, and reported)"
)

// replicaIdentityFullHelp describes --replica-identity-full, of migrate and preflight
// alike.
const replicaIdentityFullHelp = "with --live: set REPLICA IDENTITY FULL, for the migration, on the tables and hypertables published without a primary key or replica identity (whose UPDATE and DELETE would otherwise fail on the source), and put back what was there at its end"

const restorePathHelp = `how TimescaleDB's objects reach the target: "catalog" (its catalog restored between timescaledb_pre_restore() and timescaledb_post_restore(): a superuser, or a role the service lets run them and write the catalog), "api" (no catalog row written: TimescaleDB's API as the hypertables' owner, stream engine), or "auto": catalog when the target user may, else api`

const preflightHelp = `Checks, without changing anything, that the source database can be migrated to the target:
both servers reachable, the same PostgreSQL major, the source's TimescaleDB version and edition
available on the target, an empty target database offering every extension the source uses,
the size to provision, the rights to read and freeze the source and to restore into the target
(target-restore-mode: which restore path --restore-path and --engine lead to, TimescaleDB's
catalog or its API, and why), the roles the source grants privileges to existing on the target,
both servers taking the client sessions a migration with --jobs opens,
and source activity worth knowing before a freeze (long and
prepared transactions, replication slots, jobs, unlogged tables, large objects).
With --live, also what migrate --live needs of the source: wal_level = logical, a free
replication slot and WAL sender, a user with REPLICATION that may publish TimescaleDB's
chunk schemas (a superuser), and a primary key or replica identity on every table and
hypertable published (or --replica-identity-full); trying the replication connection
opens and closes one.
Probes of the target's rights run in a transaction that is rolled back; trying the catalog
path calls timescaledb_pre_restore() and timescaledb_post_restore() in one statement, so
the target database's TimescaleDB scheduler is restarted, never left stopped.

Each check prints one finding: pass, warn or fail, what it saw, and what to do.
Exit 3 when any check fails, 0 otherwise; exit 2 when a connection string is malformed,
a server cannot be reached or logged into, or the target database is the source
database itself (with --json, a report whose one finding, connect, fails and says so).

--json prints one document:
  {"source": SIDE, "target": SIDE,
   "findings": [{"check", "status" (pass|warn|fail), "server" (source|target|both), "saw", "do"}],
   "summary": {"pass", "warn", "fail"}, "duration_ms"}
  SIDE = {"server" (user@host:port/db), "postgresql", "timescaledb", "timescaledb_license",
          "tls", "database_bytes"}`

func init() {
	register(func(a *app) *cobra.Command {
		var f connFlags
		var asJSON bool
		var jobsFlag string
		var engine, restorePath string
		var withRoles, rolesUpdate bool
		var liveMode, identityFull bool
		c := &cobra.Command{
			Use:   "preflight",
			Short: "Check that a migration from --source to --target can work",
			Long:  preflightHelp + "\n\n" + connHelp + "\n\n" + exitCodesHelp,
			Example: `  tsmigrate preflight --source postgres://postgres@db.internal/app \
    --target 'postgres://tsdbadmin@xyz.tsdb.cloud:34567/defaultdb?sslmode=require' --password-prompt

  # what migrate --roles would do, as JSON
  tsmigrate preflight --roles --json

  # whether migrate --live can run, keeping the applications writing during the copy
  tsmigrate preflight --live --replica-identity-full`,
			Args: cobra.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error {
				// With --json, a connection string that cannot be used or a server that
				// cannot be logged into is a report too: one failed connect finding.
				notConnected := func(r *preflight.Report, err error) error {
					if asJSON && r != nil && exit.Code(err) == exit.Usage {
						writeJSON(a.stdout, r)
					}
					return err
				}
				src, err := a.config("source", f.source)
				if err != nil {
					return notConnected(preflight.NotConnected("source", nil, nil, err), err)
				}
				tgt, err := a.config("target", f.target)
				if err != nil {
					return notConnected(preflight.NotConnected("target", src, nil, err), err)
				}
				if engine != preflight.EngineStream && engine != preflight.EngineDump {
					return exit.Usagef(`use "dump" or "stream"`, "unknown --engine %q", engine)
				}
				path, err := schema.ParseRestorePath(restorePath)
				if err != nil {
					return err
				}
				if rolesUpdate && !withRoles {
					return exit.Usagef("add --roles", "--roles-update goes with --roles")
				}
				if identityFull && !liveMode {
					return exit.Usagef("add --live", "--replica-identity-full goes with --live")
				}
				if liveMode && engine == preflight.EngineDump {
					return exit.Usagef("leave out --engine dump", "--live needs the stream engine")
				}
				jobs, err := parseJobs(jobsFlag)
				if err != nil {
					return err
				}
				if jobs == 0 {
					// As migrate: with --jobs auto every step but the copy takes the
					// machine's cores, and the copy chooses within the sessions free.
					jobs = copy.DefaultJobs()
				}
				r, err := a.lib.preflight(c.Context(), preflight.Options{Source: src, Target: tgt, Engine: engine, RestorePath: path,
					Roles: withRoles, RolesUpdate: rolesUpdate, Jobs: jobs, Live: liveMode, ReplicaIdentityFull: identityFull})
				if err != nil {
					return notConnected(r, err)
				}
				if asJSON {
					if err := writeJSON(a.stdout, r); err != nil {
						return err
					}
				} else {
					renderReport(a.stdout, r, isTerminal(a.stdout))
				}
				if r.Failed() {
					return &exit.Error{Code: exit.Blocked,
						Msg:  fmt.Sprintf("preflight: %d of %d checks failed", r.Summary.Fail, len(r.Findings)),
						Hint: "do what the failed checks say, then run preflight again"}
				}
				return nil
			},
		}
		f.addSource(c)
		f.addTarget(c)
		c.Flags().BoolVar(&asJSON, "json", false, "print the report as one JSON document")
		c.Flags().StringVar(&jobsFlag, "jobs", "auto", `the --jobs the migration will use, N or "auto": connections checks that both servers take the sessions it opens`)
		c.Flags().StringVar(&engine, "engine", preflight.EngineDefault, `the engine the migration will use: "stream" or "dump" (only the stream engine can restore without TimescaleDB's catalog)`)
		c.Flags().StringVar(&restorePath, "restore-path", string(schema.PathAuto), restorePathHelp)
		c.Flags().BoolVar(&withRoles, "roles", false, "check what migrate --roles would do: "+rolesHelp)
		c.Flags().BoolVar(&rolesUpdate, "roles-update", false, rolesUpdateHelp)
		c.Flags().BoolVar(&liveMode, "live", false, "check what migrate --live needs of the source (stream engine only): logical decoding, a replication slot and WAL sender, the rights to replicate and publish, replica identities")
		c.Flags().BoolVar(&identityFull, "replica-identity-full", false, replicaIdentityFullHelp)
		return c
	})
}

// renderReport prints the findings: an aligned, coloured, wrapped table on a terminal,
// plain lines otherwise.
func renderReport(w io.Writer, r *preflight.Report, tty bool) {
	checkWidth := 0
	for _, f := range r.Findings {
		checkWidth = max(checkWidth, len(f.Check))
	}
	width := 0
	if tty {
		width = 100
		if file, ok := w.(*os.File); ok {
			if cols, _, err := term.GetSize(int(file.Fd())); err == nil && cols > 40 {
				width = cols
			}
		}
	}
	fmt.Fprintf(w, "source  %s  PostgreSQL %s%s\n", r.Source.Server, r.Source.PostgreSQL, tsSuffix(r.Source))
	fmt.Fprintf(w, "target  %s  PostgreSQL %s%s\n\n", r.Target.Server, r.Target.PostgreSQL, tsSuffix(r.Target))
	// status(4) + 2 + check + 2 + server(6) + 2
	indent := 4 + 2 + checkWidth + 2 + 6 + 2
	for _, f := range r.Findings {
		status := strings.ToUpper(string(f.Status))
		if tty {
			status = colour(f.Status, status)
		}
		prefix := fmt.Sprintf("%s  %-*s  %-6s  ", status, checkWidth, f.Check, f.Server)
		fmt.Fprint(w, prefix)
		writeWrapped(w, f.Saw, indent, width)
		if f.Do != "" {
			fmt.Fprint(w, strings.Repeat(" ", indent))
			writeWrapped(w, "do: "+f.Do, indent, width)
		}
	}
	s := r.Summary
	fmt.Fprintf(w, "\n%d passed, %d warnings, %d failed (%.1fs)\n", s.Pass, s.Warn, s.Fail, float64(r.DurationMS)/1000)
}

func tsSuffix(s preflight.Side) string {
	if s.TimescaleDB == "" {
		return ""
	}
	if s.License != "" {
		return fmt.Sprintf(", TimescaleDB %s (%s)", s.TimescaleDB, s.License)
	}
	return ", TimescaleDB " + s.TimescaleDB
}

func colour(st preflight.Status, s string) string {
	code := map[preflight.Status]string{preflight.Pass: "32", preflight.Warn: "33", preflight.Fail: "1;31"}[st]
	return "\x1b[" + code + "m" + s + "\x1b[0m"
}

// writeWrapped writes text and a newline; with width > 0 it wraps at word boundaries,
// continuing lines at indent.
func writeWrapped(w io.Writer, text string, indent, width int) {
	room := width - indent
	if width == 0 || room < 20 || len(text) <= room {
		fmt.Fprintln(w, text)
		return
	}
	line := 0
	for i, word := range strings.Fields(text) {
		if i > 0 && line+1+len(word) > room {
			fmt.Fprint(w, "\n"+strings.Repeat(" ", indent))
			line = 0
		} else if i > 0 {
			fmt.Fprint(w, " ")
			line++
		}
		fmt.Fprint(w, word)
		line += len(word)
	}
	fmt.Fprintln(w)
}
