package cli

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/freeze"
)

const freezeLong = `Stop writes to the source database before a dump, and prove that they stopped.

freeze:
  1. makes new transactions in the database read-only
     (ALTER DATABASE ... SET default_transaction_read_only = on) and records the freeze
     on the database itself (setting ` + freeze.RecordSetting + `), in one transaction;
  2. deals with the sessions connected before the freeze, listing who (pid, user,
     application, client, state, transaction start): by default it gives their open
     transactions --freeze-grace to finish, then ends every one of them (they would
     keep read-write defaults); with --no-terminate it waits instead, up to
     --wait-timeout, until none is in a transaction, and leaves them connected;
     on timeout it fails naming who still holds what, and undoes the freeze;
  3. proves the freeze: over --proof-window no backend of the database holds a
     transaction id, there is no prepared transaction, and the database's row-change
     counters (pg_stat_database) stay still; it prints what it measured.
  If any step fails, or it is interrupted, the freeze is undone.

It cannot stop a superuser or any session from running
SET default_transaction_read_only = off; other databases of the server keep running;
sessions waited for with --no-terminate keep their read-write defaults. It says so.

It asks for confirmation on a terminal; without one it refuses unless --yes is given.
Freezing a database already frozen by tsmigrate fails and changes nothing.
Undo with 'tsmigrate unfreeze', from any machine, even after tsmigrate was killed.
See whether a database is frozen with 'tsmigrate freeze-status'.

The source role must own the database and be a superuser, or have been granted
SET ON PARAMETER ` + freeze.RecordSetting + ` (PostgreSQL 15+); ending sessions needs a
superuser or pg_signal_backend.

--json prints one document: database, freeze_id, since, host, previous_read_only,
sessions [{pid, user, application, client, backend_type, state, backend_start,
xact_start, xid, locks, outcome: ended|left|waited}], proof {start, end,
window_seconds, samples, restarts, rows_written, xid_holders, prepared_transactions,
commits_in_window, server_wal_bytes_in_window, counters_tracked, tables_locked,
lock_notes [text] (the last two: a migration's deferred proof only)}, cannot_stop [text],
paused_timescaledb_jobs [id] (a migration's freeze pauses the TimescaleDB jobs; this
command's does not).

Exit codes: 0 frozen and proven; 1 failed (already frozen, no permission, sessions
still in transactions after --wait-timeout, writes did not stop; the freeze is undone);
2 bad usage, no confirmation, or the server cannot be reached; 130 interrupted (undone).`

func init() {
	register(newFreezeCmd)
	register(newUnfreezeCmd)
	register(newFreezeStatusCmd)
}

func newFreezeCmd(a *app) *cobra.Command {
	var (
		conn    connFlags
		yes     bool
		asJSON  bool
		opt     freeze.Options
		timeout time.Duration
	)
	c := &cobra.Command{
		Use:   "freeze --source URI [--yes] [--freeze-grace DUR] [--no-terminate] [--wait-timeout DUR] [--json]",
		Short: "Stop writes to the source database, and prove it",
		Long:  freezeLong,
		Example: `  # freeze the source's database, asking first; undo with tsmigrate unfreeze
  tsmigrate freeze --source postgres://postgres@db.internal/app

  # in a script: no question, wait for open transactions instead of ending sessions
  tsmigrate freeze --yes --no-terminate --wait-timeout 5m --json --source "$SRC"`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if opt.Grace < 0 {
				return exit.Usagef("give 0 or more (0: end them at once)", "--freeze-grace %s", opt.Grace)
			}
			src, err := a.config("source", conn.source)
			if err != nil {
				return err
			}
			then := fmt.Sprintf("sessions connected now are ended after %s", opt.Grace)
			if opt.NoTerminate {
				then = fmt.Sprintf("their open transactions are waited for (up to %s)", timeout)
			}
			q := fmt.Sprintf("Freeze database %q on %s? New transactions there become read-only, and %s", src.Database(), src, then)
			if err := a.confirm(yes, q+"?"); err != nil {
				return err
			}
			opt.WaitTimeout = timeout
			opt.OnEvent = func(e freeze.Event) { printFreezeEvent(a.stderr, src.Database(), opt.NoTerminate, e) }
			res, err := a.lib.freeze(c.Context(), src, opt)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.stdout, res)
			}
			printFreezeResult(a.stdout, src.String(), res)
			return nil
		},
	}
	conn.addSource(c)
	f := c.Flags()
	f.BoolVarP(&yes, "yes", "y", false, "freeze without asking (needed without a terminal)")
	f.DurationVar(&opt.Grace, "freeze-grace", 10*time.Second, "time sessions from before the freeze get to finish their transactions before they are ended")
	f.BoolVar(&opt.NoTerminate, "no-terminate", false, "wait for sessions' transactions instead of ending the sessions")
	f.DurationVar(&timeout, "wait-timeout", freeze.DefaultWaitTimeout, "with --no-terminate: how long to wait before giving up (and undoing the freeze)")
	f.DurationVar(&opt.ProofWindow, "proof-window", freeze.DefaultProofWindow, fmt.Sprintf("how long the database must stay still for the proof (at least %s)", freeze.MinProofWindow))
	f.BoolVar(&asJSON, "json", false, "print the result as one JSON document")
	return c
}

func printFreezeEvent(w io.Writer, db string, noTerminate bool, e freeze.Event) {
	switch e.Type {
	case freeze.EventFrozen:
		fmt.Fprintf(w, "database %q is read-only for new transactions (freeze %s)\n", db, e.ID)
	case freeze.EventWaiting:
		if noTerminate {
			fmt.Fprintf(w, "waiting until %s for %d session(s) from before the freeze to end their transactions:\n",
				e.Deadline.Format("15:04:05"), len(e.Sessions))
		} else {
			fmt.Fprintf(w, "%d session(s) connected before the freeze; ending them at %s, sooner once none is in a transaction:\n",
				len(e.Sessions), e.Deadline.Format("15:04:05"))
		}
		for _, s := range e.Sessions {
			fmt.Fprintf(w, "  %s", s)
			if s.InTransaction() {
				fmt.Fprintf(w, ", holding %s", s.Holds())
			}
			fmt.Fprintln(w)
		}
	case freeze.EventEnded:
		fmt.Fprintf(w, "ended %d session(s)\n", len(e.Sessions))
	case freeze.EventProving:
		if e.Reason != "" {
			fmt.Fprintf(w, "proof: starting the window again: %s\n", e.Reason)
		} else {
			fmt.Fprintf(w, "proof: watching database %q until %s\n", db, e.Deadline.Format("15:04:05"))
		}
	case freeze.EventUndone:
		fmt.Fprintf(w, "freeze %s undone\n", e.ID)
	}
}

func printFreezeResult(w io.Writer, where string, r *freeze.Result) {
	fmt.Fprintf(w, "frozen: database %q (%s) is read-only for new transactions\n", r.Database, where)
	fmt.Fprintf(w, "  freeze id: %s\n  since:     %s\n", r.ID, r.Since.UTC().Format(time.RFC3339))
	if r.PreviousReadOnly != nil {
		fmt.Fprintf(w, "  before:    default_transaction_read_only = %s at database level (unfreeze restores it)\n", *r.PreviousReadOnly)
	}
	fmt.Fprintln(w, "sessions connected before the freeze:")
	if len(r.Sessions) == 0 {
		fmt.Fprintln(w, "  none")
	}
	for _, s := range r.Sessions {
		fmt.Fprintf(w, "  %-6s %s", s.Outcome, s)
		if s.XID != "" {
			fmt.Fprintf(w, " (had written: transaction id %s)", s.XID)
		}
		fmt.Fprintln(w)
	}
	p := r.Proof
	fmt.Fprintf(w, "proof, over %.1fs (%d samples, %d restarts), %s to %s:\n", p.WindowSeconds, p.Samples, p.Restarts,
		p.Start.UTC().Format("15:04:05.000"), p.End.UTC().Format("15:04:05.000"))
	fmt.Fprintf(w, "  no backend of %q holds a transaction id; %d prepared transactions\n", r.Database, p.PreparedTransactions)
	if p.CountersTracked {
		fmt.Fprintf(w, "  rows written in %q: %d at start and at end (pg_stat_database tuple counters, ANALYZE's pg_statistic left out)\n",
			r.Database, p.RowsWritten)
	} else {
		fmt.Fprintln(w, "  track_counts is off on the server: row counters prove nothing here, only transaction ids were checked")
	}
	fmt.Fprintf(w, "  for information: %d commits in the window (read-only ones, the proof's own included); %d bytes of WAL server-wide (all databases)\n",
		p.Commits, p.ServerWALBytes)
	fmt.Fprintln(w, "what the freeze cannot stop:")
	for _, s := range r.CannotStop {
		fmt.Fprintf(w, "  - %s\n", s)
	}
	fmt.Fprintln(w, "undo with: tsmigrate unfreeze, with the same --source")
}

func newUnfreezeCmd(a *app) *cobra.Command {
	var (
		conn   connFlags
		asJSON bool
	)
	c := &cobra.Command{
		Use:   "unfreeze --source URI [--json]",
		Short: "Undo tsmigrate freeze: give writes back to the source database",
		Long: `Undo a tsmigrate freeze of the source database, from any machine, even after the
process that froze it was killed: it restores the database-level
default_transaction_read_only from before the freeze (or resets it), removes the freeze
record, restarts the TimescaleDB scheduler if the freeze ended it, and schedules again
the TimescaleDB jobs a migration's freeze paused (as recorded in the freeze), and
those a rehearsal (migrate --rehearsal) paused and did not get to schedule again
because it was killed (as it recorded them, frozen or not).
With nothing to undo it says "not frozen" and exits 0. A read-only default that
tsmigrate did not set is left alone.

--json prints one document: database, was_frozen, freeze_id, since, read_only,
timescaledb_scheduler_restarted, timescaledb_jobs_scheduled [id], notes [text].

Exit codes: 0 unfrozen or nothing to undo; 1 failed; 2 bad usage or the server cannot
be reached; 130 interrupted.`,
		Example: `  # give writes back, from any machine, even after the freezing process was killed
  tsmigrate unfreeze --source postgres://postgres@db.internal/app`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			src, err := a.config("source", conn.source)
			if err != nil {
				return err
			}
			res, err := a.lib.unfreeze(c.Context(), src)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.stdout, res)
			}
			if res.WasFrozen {
				now := "reset (it was not set before the freeze)"
				if res.ReadOnly != "" {
					now = "back to " + res.ReadOnly + " as before the freeze"
				}
				fmt.Fprintf(a.stdout, "unfrozen: database %q: freeze %s (since %s) undone; default_transaction_read_only %s\n",
					res.Database, res.ID, res.Since.UTC().Format(time.RFC3339), now)
				if res.SchedulerRestarted {
					fmt.Fprintln(a.stdout, "  the TimescaleDB scheduler of the database was started again")
				}
				if len(res.JobsScheduled) > 0 {
					fmt.Fprintf(a.stdout, "  the TimescaleDB jobs the freeze paused were scheduled again: %v\n", res.JobsScheduled)
				}
			} else if len(res.JobsScheduled) > 0 { // a killed rehearsal's (see the note)
				fmt.Fprintf(a.stdout, "not frozen: database %q has no tsmigrate freeze\n", res.Database)
			} else {
				fmt.Fprintf(a.stdout, "not frozen: database %q has no tsmigrate freeze; nothing to undo\n", res.Database)
			}
			for _, n := range res.Notes {
				fmt.Fprintf(a.stdout, "  note: %s\n", n)
			}
			return nil
		},
	}
	conn.addSource(c)
	c.Flags().BoolVar(&asJSON, "json", false, "print the result as one JSON document")
	return c
}

func newFreezeStatusCmd(a *app) *cobra.Command {
	var (
		conn   connFlags
		asJSON bool
	)
	c := &cobra.Command{
		Use:   "freeze-status --source URI [--json]",
		Short: "Say whether the source database is frozen by tsmigrate",
		Long: `Say whether the source database is frozen by tsmigrate, read from the server itself:
since when, by which freeze id, from which host and role, whether the freeze is intact
(record readable and the database still defaults to read-only), and the sessions from
before the freeze that are still connected. It changes nothing.

--json prints one document: database, frozen, freeze_id, since, host, user,
previous_read_only, read_only, intact, problem, paused_timescaledb_jobs [id] (the
TimescaleDB jobs a migration's freeze paused), rehearsal_paused_timescaledb_jobs [id]
(those a killed rehearsal left paused, frozen or not), sessions_from_before [{pid, user,
application, client, backend_type, state, backend_start, xact_start, xid, locks}] (as
in freeze --json, without outcome).

Exit codes: 0 the state was read (frozen or not); 1 any other failure; 2 bad usage or
the server cannot be reached; 130 interrupted.`,
		Example: `  tsmigrate freeze-status --source postgres://postgres@db.internal/app
  tsmigrate freeze-status --json --source "$SRC" | jq .intact`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			src, err := a.config("source", conn.source)
			if err != nil {
				return err
			}
			st, err := a.lib.freezeStatus(c.Context(), src)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(a.stdout, st)
			}
			printState(a.stdout, st)
			return nil
		},
	}
	conn.addSource(c)
	c.Flags().BoolVar(&asJSON, "json", false, "print the state as one JSON document")
	return c
}

func printState(w io.Writer, st *freeze.State) {
	printFreeze(w, st)
	if len(st.RehearsalPausedJobs) > 0 {
		fmt.Fprintf(w, "  note: TimescaleDB jobs %v were paused by a tsmigrate rehearsal that did not end; tsmigrate unfreeze schedules them again\n", st.RehearsalPausedJobs)
	}
}

func printFreeze(w io.Writer, st *freeze.State) {
	switch {
	case !st.Frozen:
		fmt.Fprintf(w, "not frozen: database %q has no tsmigrate freeze\n", st.Database)
		if st.ReadOnly != "" {
			fmt.Fprintf(w, "  note: default_transaction_read_only = %s is set at database level, not by tsmigrate\n", st.ReadOnly)
		}
		return
	case st.ID == "":
		fmt.Fprintf(w, "frozen, NOT intact: database %q: %s\n", st.Database, st.Problem)
		return
	case st.Intact:
		fmt.Fprintf(w, "frozen: database %q is read-only for new transactions\n", st.Database)
	default:
		fmt.Fprintf(w, "frozen, NOT intact: database %q: %s\n", st.Database, st.Problem)
	}
	fmt.Fprintf(w, "  freeze id: %s\n  since:     %s\n  by:        %s on %s\n", st.ID, st.Since.UTC().Format(time.RFC3339), st.User, st.Host)
	if len(st.SessionsFromBefore) > 0 {
		fmt.Fprintf(w, "  %d session(s) from before the freeze still connected, with read-write defaults:\n", len(st.SessionsFromBefore))
		for _, s := range st.SessionsFromBefore {
			fmt.Fprintf(w, "    %s\n", s)
		}
	}
	fmt.Fprintln(w, "undo with: tsmigrate unfreeze, with the same --source")
}
