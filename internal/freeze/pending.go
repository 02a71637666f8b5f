package freeze

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/clock"
	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/exit"
)

// A deferred proof (Options.DeferProof) is for a caller that reads the database right
// after the freeze (a migration's dump or copy) instead of waiting for a proof window
// first. Freeze then takes a baseline of the write counters once the database is
// quiet, and PendingProof.Finish, called when the reading is done, checks that nothing
// moved since: no restarts, any change fails, since the reader's snapshot may miss the
// write. It proves more than a window before the read: the whole read is covered.
//
// When is the baseline complete? A backend flushes its write counts when it exits,
// and when it goes idle at least PGSTAT_MIN_INTERVAL (1 s) after its previous flush
// (else up to PGSTAT_IDLE_INTERVAL, 10 s, later). Sessions from before the freeze that
// were ended or left have exited, so their counts are in; sessions that were waited
// for, or kept (KeepPIDs), may flush later, so the baseline waits for the counters to
// stay still for baselineQuiet then. Counts of a write before the baseline that flush
// after it fail Finish: the safe direction.
//
// Finish must also see the counts of writes committed shortly before it, which a
// session still connected may not have flushed yet: when it wrote less than a second
// after its previous flush, it flushes when it next goes idle a second later, or when
// idle for PGSTAT_IDLE_INTERVAL (10 s, PostgreSQL 15 and 17), or when it exits. So:
//   - if the server's next transaction id has not moved since the baseline, no
//     transaction wrote anywhere on the server: nothing to wait for;
//   - else, when other sessions of the database are connected, Finish waits until each
//     has been idle for flushHorizon (at most flushHorizon in all) before it samples.
// What it cannot see: the counts of a session that wrote and then stayed busy (in a
// transaction, or running queries back to back) through that wait; such a session
// can only be one the freeze does not stop (CannotStop).

// Quiet time the baseline waits for when sessions from before the freeze stay connected.
const baselineQuiet = time.Second

// flushHorizon: PGSTAT_IDLE_INTERVAL (10 s, PostgreSQL 15 and 17) and a margin.
const flushHorizon = 10*time.Second + 500*time.Millisecond

// sqlLastBusy is when the database's other sessions (those the proof watches, see
// sqlSessions) were last busy: now for one that is not idle, when it became idle for
// one that is; NULL when there is none. Not the session holding the freeze's locks
// ($1, 0 for none): it is the freeze's own, writes nothing, and stays in its
// transaction to the end, so it would always make Finish wait the whole flushHorizon.
const sqlLastBusy = `
SELECT max(CASE WHEN a.state = 'idle' THEN a.state_change ELSE clock_timestamp() END), clock_timestamp()
FROM pg_stat_activity a
WHERE a.datid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND a.pid <> pg_backend_pid() AND a.pid <> $1
  AND a.backend_type NOT IN ('autovacuum worker', 'walsender', 'parallel worker')`

// PendingProof is a freeze's baseline, waiting for Finish.
type PendingProof struct {
	src    *dbconn.Config
	id     string
	window time.Duration
	base   sample
	taken  time.Time
	// guard holds the locks that stop writes until Finish or Release (nil: none, as
	// for a restored baseline until Hold).
	guard *guard
}

// Hold takes the locks that stop writes for a baseline restored from another process
// (a resumed migration), without ending anyone: it waits up to DefaultWaitTimeout for
// sessions that hold write locks to let go. The locks went with the process that took
// the baseline, so the time since counts as a time without them: Finish fails if a
// session connected before Hold stays busy past the flush horizon (its writes of that
// time might not show in the counters yet).
func (p *PendingProof) Hold(ctx context.Context) error {
	if p.guard != nil {
		return nil
	}
	conn, err := p.src.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	plan, err := planLocks(ctx, conn.Conn, true)
	if err != nil {
		return err
	}
	lconn, err := p.src.ConnectSession(ctx, sqlSessionSetup)
	if err != nil {
		return err
	}
	g := &guard{src: p.src, plan: plan, conn: lconn, lapsed: true, lapseFrom: p.base.at,
		why: []string{"the process that took the baseline ended before its proof"}}
	if _, err := g.acquire(ctx, conn.Conn, Options{}.withDefaults(), false); err != nil {
		lconn.Close(context.WithoutCancel(ctx))
		return err
	}
	g.heldNow(ctx)
	g.start()
	p.guard = g
	return nil
}

// Release lets go of the locks that stop writes while the database is read, if any
// are held (Finish does too): for a caller that gives up before Finish. Safe to call
// more than once, and on a nil PendingProof.
func (p *PendingProof) Release() {
	if p != nil && p.guard != nil {
		p.guard.release(false)
		p.guard = nil
	}
}

// Baseline is when the baseline was sampled (the server's clock).
func (p *PendingProof) Baseline() time.Time { return p.base.at }

// baseline waits until no backend of the database holds a transaction id, no prepared
// transaction exists and (when sessions from before stay connected) the counters stay
// still for baselineQuiet, then returns that sample. It gives up like prove does.
func baseline(ctx context.Context, src *dbconn.Config, conn *pgx.Conn, id string, sessions []Session, opt Options) (*PendingProof, error) {
	quiet := time.Duration(0)
	for _, s := range sessions {
		if s.Outcome == "waited" {
			quiet = baselineQuiet
		}
	}
	if len(opt.KeepPIDs) > 0 {
		quiet = baselineQuiet
	}
	giveUp := time.Now().Add(3*opt.ProofWindow + 2*time.Second)
	var last sample
	var still time.Time
	for first := true; ; first = false {
		cur, err := takeSample(ctx, conn)
		if err != nil {
			return nil, err
		}
		reason := ""
		switch {
		case len(cur.prepared) > 0:
			return nil, notProven(fmt.Sprintf("%d prepared transaction(s) in the database: %s; COMMIT PREPARED or ROLLBACK PREPARED them, then freeze again",
				len(cur.prepared), strings.Join(cur.prepared, ", ")))
		case len(cur.holders) > 0:
			reason = "a session holds a transaction id: " + describe(cur.holders)
			still = time.Now()
		case first || cur.rows != last.rows:
			still = time.Now()
		}
		last = cur
		if reason == "" && time.Since(still) >= quiet {
			if cur.catalogRows, _, cur.seqsHash, err = catalogState(ctx, conn, cur.nextXID, cur.nextXID); err != nil {
				return nil, fmt.Errorf("prove the freeze: %w", err)
			}
			cur.hasCatalog = true
			return &PendingProof{src: src, id: id, window: opt.ProofWindow, base: cur, taken: time.Now()}, nil
		}
		if time.Now().After(giveUp) {
			if reason == "" {
				reason = "the write counters kept moving"
			}
			return nil, notProven("writes did not stop: " + reason)
		}
		if err := clock.Sleep(ctx, pollInterval); err != nil {
			return nil, err
		}
	}
}

// Finish proves that the database did not change since the baseline: it waits until
// the proof window has passed since the baseline (usually it has), then checks that
// the write counter equals the baseline's, that no backend holds a transaction id and
// that no prepared transaction exists. Any difference fails with ErrNotProven, naming
// it. Finish connects anew; it does not undo the freeze.
func (p *PendingProof) Finish(ctx context.Context) (Proof, error) {
	// The locks' report first: it pauses the guard, whose traffic would otherwise
	// compete with the proof's reads (held checks at the end that the locks stayed).
	var lapses, notes []string
	if p.guard != nil {
		var err error
		if lapses, notes, err = p.guard.report(ctx, flushHorizon+2*guardTick); err != nil {
			return Proof{}, err
		}
	}
	if err := clock.Sleep(ctx, time.Until(p.taken.Add(p.window))); err != nil {
		return Proof{}, err
	}
	cur, samples, moved, err := p.compare(ctx)
	if err != nil {
		return Proof{}, err
	}
	moved = append(lapses, moved...)
	tables := 0
	if p.guard != nil {
		tables = len(p.guard.plan.oids)
		if len(lapses) == 0 && !p.guard.held(ctx) {
			moved = append(moved, "the session holding the freeze's locks was lost as the proof ended: writes may have gone unstopped since")
		}
		notes = append(notes, p.guard.release(len(moved) == 0)...)
		p.guard = nil // the proof is over: a Finish again compares the counters alone
	}
	if len(moved) > 0 {
		return Proof{}, &exit.Error{Code: exit.Failed, Err: ErrNotProven,
			Msg: fmt.Sprintf("the freeze proof failed: database %q changed after the freeze's baseline (%s), while it was being read: %s; the copy may miss that write",
				p.src.Database(), p.base.at.UTC().Format(time.RFC3339), strings.Join(moved, "; ")),
			Hint: "find the writer in pg_stat_activity; a session that SET default_transaction_read_only = off is not stopped by the freeze"}
	}
	return Proof{Start: p.base.at, End: cur.at, WindowSeconds: cur.at.Sub(p.base.at).Seconds(), Samples: samples,
		RowsWritten: cur.rows, Commits: cur.commits - p.base.commits, ServerWALBytes: cur.wal - p.base.wal,
		CountersTracked: cur.tracked, TablesLocked: tables, LockNotes: notes}, nil
}

// Moved says what changed in the database since the baseline, in the words Finish
// fails with; none when nothing did. It checks what Finish checks without waiting for
// the proof window: for a caller that must know before it goes on (a resumed
// migration, whose baseline a killed process took).
func (p *PendingProof) Moved(ctx context.Context) ([]string, error) {
	_, _, moved, err := p.compare(ctx)
	return moved, err
}

// compare samples the database (twice when sessions may hold unflushed counts, see
// above) and lists what differs from the baseline.
func (p *PendingProof) compare(ctx context.Context) (cur sample, samples int, moved []string, err error) {
	conn, err := p.src.Connect(ctx)
	if err != nil {
		return cur, 0, nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if cur, err = takeSample(ctx, conn.Conn); err != nil {
		return cur, 0, nil, err
	}
	samples = 2
	if cur.nextXID != p.base.nextXID && cur.rows == p.base.rows && len(cur.holders) == 0 {
		// Some transaction wrote somewhere on the server: let the database's sessions
		// flush what they may hold.
		var lastBusy *time.Time
		var now time.Time
		if err := conn.QueryRow(ctx, sqlLastBusy, p.guard.pid()).Scan(&lastBusy, &now); err != nil {
			return cur, 0, nil, fmt.Errorf("prove the freeze: list sessions: %w", err)
		}
		if lastBusy != nil {
			if err := clock.Sleep(ctx, min(lastBusy.Add(flushHorizon).Sub(now), flushHorizon)); err != nil {
				return cur, 0, nil, err
			}
		}
		// Sample again even when no session is left: one that exited between the first
		// sample and the list of sessions flushed its counts on its way out (seen once
		// under load: a write by a session that had just closed went unnoticed).
		if cur, err = takeSample(ctx, conn.Conn); err != nil {
			return cur, 0, nil, err
		}
		samples++
	}
	// The counters live in memory: a crash discards them, a clean shutdown saves them,
	// and nothing counts while the server is down (single-user mode included). Counters
	// from before a restart or a reset prove nothing about the time in between.
	if !cur.started.Equal(p.base.started) {
		moved = append(moved, fmt.Sprintf("the server restarted (at %s; the baseline was taken under the server started at %s), so its write counters cannot be compared",
			cur.started.UTC().Format(time.RFC3339), p.base.started.UTC().Format(time.RFC3339)))
	}
	if !sameTime(cur.statsReset, p.base.statsReset) {
		moved = append(moved, fmt.Sprintf("the database's statistics were reset (at %s: pg_stat_reset() or a reset of one table's counters), so its write counters cannot be compared",
			whenReset(cur.statsReset)))
	}
	if p.base.tracked && !cur.tracked {
		moved = append(moved, "track_counts was turned off, so the write counters no longer count")
	}
	if cur.rows != p.base.rows {
		moved = append(moved, fmt.Sprintf("rows written moved from %d to %d", p.base.rows, cur.rows))
	}
	if p.base.hasCatalog && cur.nextXID != p.base.nextXID {
		rows, newer, seqs, err := catalogState(ctx, conn.Conn, p.base.nextXID, cur.nextXID)
		if err != nil {
			return cur, 0, nil, fmt.Errorf("prove the freeze: %w", err)
		}
		if newer > 0 || rows != p.base.catalogRows {
			moved = append(moved, fmt.Sprintf("the catalog changed: %d of its rows written since the baseline, %d rows against %d then (an object was created, changed, dropped, commented on or granted on, or a large object written)",
				newer, rows, p.base.catalogRows))
		}
		if seqs != p.base.seqsHash {
			moved = append(moved, "a sequence moved (nextval or setval)")
		}
	}
	if len(cur.holders) > 0 {
		moved = append(moved, "a session holds a transaction id: "+describe(cur.holders))
	}
	if len(cur.prepared) > 0 {
		moved = append(moved, fmt.Sprintf("%d prepared transaction(s): %s", len(cur.prepared), strings.Join(cur.prepared, ", ")))
	}
	set, err := settings(ctx, conn)
	if err != nil {
		return cur, 0, nil, fmt.Errorf("prove the freeze: %w", err)
	}
	if st, _ := stateFrom(p.src.Database(), set); !st.Intact || st.ID != p.id {
		moved = append(moved, fmt.Sprintf("freeze %s was undone or changed by someone else (now: frozen %v, freeze id %q, default_transaction_read_only %q)",
			p.id, st.Frozen, st.ID, st.ReadOnly))
	}
	return cur, samples, moved, nil
}

func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

func whenReset(t *time.Time) string {
	if t == nil {
		return "an unknown time"
	}
	return t.UTC().Format(time.RFC3339)
}
