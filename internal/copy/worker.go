package copy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tsmigrate/tsmigrate/internal/clock"
	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/inventory"
	"github.com/tsmigrate/tsmigrate/internal/journal"
)

// Session settings of the copying connections. Checked on PostgreSQL 15 and 17.
//
// Both sides have an empty search_path, as pg_dump and pg_restore do: reg* values
// (regclass, regtype, regproc, regconfig, ...) travel as text (their binary form is
// an OID), and print as names qualified only where the session's search_path does not
// find them; under the source database's own search_path, extra.dup printed as "dup"
// and arrived as public.dup, or failed to arrive. pg_catalog is always searched, so
// built-in names need no schema on either side.
const (
	// Source: the settings pg_dump uses to read (no timeouts, row security off so that
	// a table it would apply to fails rather than copies part of its rows, stable text
	// output for the tables that travel as text).
	sourceSessionSQL = dbconn.NoTimeouts + `;
SET row_security = off; SET extra_float_digits = 3; SET DateStyle = ISO; SET IntervalStyle = postgres;
SET search_path = ''`
	// Target: no timeouts, no waiting for the WAL flush at each commit (a unit lost
	// in a crash is simply not marked done, and is copied again), xml read as content,
	// which takes documents too, as pg_restore reads it.
	targetSessionSQL = dbconn.NoTimeouts + `;
SET synchronous_commit = off; SET DateStyle = ISO; SET IntervalStyle = postgres; SET search_path = '';
SET xmloption = content`
)

// worker owns one source and one target connection.
//
// Round trips. Across a WAN every exchange a unit waits for costs a round trip, so a
// chunk or table unit is two exchanges with the target and one with the source:
//   - target: the COPY, with the TRUNCATE before it in the same query;
//   - target: the unit's indexes and constraints (PostSQL), its done mark, COMMIT, and
//     BEGIN and the claim of the worker's next unit, in one query;
//   - source: the end of the last unit's transaction (ROLLBACK), BEGIN, the snapshot's
//     import and the COPY, in one query.
//
// Small units go several in those three exchanges (see copyBatch).
//
// A COPY FROM STDIN is an exchange of its own (the server must take its data), but its
// data goes right after the query, not once the server has answered it (pgconn's
// CopyFrom); a statement that fails before it makes the server drop that data.
type worker struct {
	r        *run
	src, tgt *dbconn.Conn
	// srcTx: the source session may be in a transaction (the last unit's, left open
	// to be ended by the next unit's query): what begins the next one ends it first.
	srcTx bool
	// tgtTx: the target session may be in a transaction, opened with BEGIN in a query
	// of ours (not by pgx), to be ended with COMMIT or ROLLBACK in one; ahead: it
	// claimed the worker's next units, claimed (none when none was free).
	tgtTx, ahead bool
	claimed      []journal.Unit
	// singles: units of a batch that failed, to copy one at a time (see copyBatch).
	singles []string
}

// targetTx runs statements in the target transaction of a unit: a pgx.Tx, or the
// target's connection inside a transaction begun in a query of ours.
type targetTx interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

func (w *worker) close() {
	ctx := context.Background()
	if w.src != nil {
		w.src.Close(ctx)
		w.src = nil
	}
	if w.tgt != nil {
		w.tgt.Close(ctx)
		w.tgt = nil
	}
}

// ensureConns (re)connects what is missing or broken.
func (w *worker) ensureConns(ctx context.Context) error {
	if w.src != nil && w.src.IsClosed() {
		w.src, w.srcTx = nil, false
	}
	if w.tgt != nil && w.tgt.IsClosed() {
		w.tgt, w.tgtTx, w.ahead, w.claimed = nil, false, false, nil
	}
	var err error
	if w.src == nil {
		if w.src, err = w.r.opts.Source.ConnectSession(ctx, sourceSessionSQL); err != nil {
			return err
		}
	}
	if w.tgt == nil {
		if w.tgt, err = w.r.opts.Target.ConnectSession(ctx, targetSessionSQL); err != nil {
			return err
		}
	}
	return nil
}

// beginSource starts a source transaction that sees the run's snapshot.
func (w *worker) beginSource(ctx context.Context) error {
	return w.inSnapshot(ctx, "", func(sql string) (pgconn.CommandTag, error) {
		res, err := w.src.PgConn().Exec(ctx, sql).ReadAll()
		if len(res) == 0 {
			return pgconn.CommandTag{}, err
		}
		return res[len(res)-1].CommandTag, err
	})
}

// inSnapshot calls run with one query that ends the session's transaction (if any),
// starts one that sees the run's snapshot, and runs then in it ("" for nothing more);
// run returns the tag of the last statement that completed. When the snapshot is gone
// (its import failed: the last statement that completed is the BEGIN), it is renewed
// (Options.RenewSnapshot) and run is called again.
func (w *worker) inSnapshot(ctx context.Context, then string, run func(sql string) (pgconn.CommandTag, error)) error {
	for {
		id := w.r.currentSnapshot()
		sql, err := importSnapshotSQL(id)
		if err != nil {
			return permanent{err}
		}
		if w.srcTx {
			sql = "ROLLBACK; " + sql
		}
		if then != "" {
			sql += "; " + then
		}
		w.srcTx = true
		tag, err := run(sql)
		if err == nil {
			return nil
		}
		if !snapshotGone(err) || tag.String() != "BEGIN" {
			return err
		}
		if err := w.r.renewSnapshot(ctx, id, err); err != nil {
			return err
		}
	}
}

// endSource ends the source transaction; a broken connection is dropped.
func (w *worker) endSource(ctx context.Context) {
	if w.src == nil || w.src.IsClosed() || !w.srcTx {
		return
	}
	w.srcTx = false
	if err := w.src.PgConn().Exec(ctx, "ROLLBACK").Close(); err != nil {
		w.src.Close(context.Background())
	}
}

func (w *worker) plan(ctx context.Context) ([]journal.Unit, error) {
	if err := w.beginSource(ctx); err != nil {
		return nil, err
	}
	defer w.endSource(ctx)
	units, err := plan(ctx, w.src.Conn, w.r.opts.RangeBytes, w.r.opts.Jobs, w.r.opts.ChunkTargets)
	if err != nil || w.r.opts.PostSQL == nil {
		return units, err
	}
	// A whole table's unit builds its indexes with its rows; a table copied in ranges
	// gets a unit of its own for them, claimed once its ranges are done.
	ranged := map[[2]string]int64{}
	for i := range units {
		u := &units[i]
		switch {
		case u.Kind == journal.KindTable && u.Phase == journal.PhaseData:
			u.PostSQL = w.r.opts.PostSQL(u.Schema, u.Table)
		case u.Kind == journal.KindRange:
			ranged[[2]string{u.Schema, u.Table}] += u.EstBytes
		}
	}
	for t, bytes := range ranged {
		if sql := w.r.opts.PostSQL(t[0], t[1]); sql != "" {
			units = append(units, journal.Unit{ID: "indexes " + inventory.DisplayName(t[0], t[1]), Phase: journal.PhaseData,
				Kind: journal.KindIndexes, Schema: t[0], Table: t[1], PageHi: -1, EstBytes: bytes, PostSQL: sql})
		}
	}
	return units, nil
}

// configPhase copies the extension configuration tables and sequences in one target
// transaction, retrying it whole on transient errors.
func (w *worker) configPhase(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		err := w.ensureConns(ctx)
		if err == nil {
			err = w.configOnce(ctx)
		}
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !transient(err) || attempt > w.r.opts.MaxRetries {
			w.r.emit(Event{Type: Failed, Attempt: attempt, Err: dbconn.Redact(err.Error())})
			return err
		}
		w.r.mu.Lock()
		w.r.res.Retries++
		w.r.mu.Unlock()
		w.r.emit(Event{Type: Retry, Attempt: attempt, Err: dbconn.Redact(err.Error())})
		if err := clock.Sleep(ctx, backoff(w.r.opts.RetryBackoff, maxBackoff, attempt)); err != nil {
			return err
		}
	}
}

func (w *worker) configOnce(ctx context.Context) error {
	tx, err := w.tgt.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin target transaction: %w", err)
	}
	defer w.rollbackTx(tx)
	units, err := journal.LockPhase(ctx, tx, journal.PhaseConfig)
	if err != nil || len(units) == 0 {
		return err
	}
	type doneUnit struct {
		l           *live
		rows, bytes int64
		start       time.Time
	}
	var done []doneUnit
	for i := range units {
		u := &units[i]
		start := time.Now()
		l := w.r.begin(u)
		rows, err := w.copyUnit(ctx, tx, u, l)
		if err == nil && u.PostSQL != "" {
			_, err = tx.Exec(ctx, u.PostSQL)
		}
		if err == nil {
			err = journal.MarkDone(ctx, tx, u.ID, rows, l.bytes.Load())
		}
		if err != nil {
			w.r.mu.Lock()
			delete(w.r.live, u.ID)
			w.r.mu.Unlock()
			return err
		}
		done = append(done, doneUnit{l, rows, l.bytes.Load(), start})
	}
	w.endSource(ctx)
	if err := tx.Commit(ctx); err != nil {
		return &UnitError{Unit: "extension configuration tables", Side: "target", Err: err}
	}
	for _, d := range done {
		w.r.end(d.l, d.rows, d.bytes, d.start)
	}
	return nil
}

// rollbackTx ends a pgx target transaction; a connection that cannot is dropped.
func (w *worker) rollbackTx(tx pgx.Tx) {
	if err := tx.Rollback(context.Background()); err != nil && !errors.Is(err, pgx.ErrTxClosed) {
		if w.tgt != nil {
			w.tgt.Close(context.Background())
		}
	}
}

// dataPhase claims and copies data units until none is left, waiting for units that
// other workers (of this process or another) hold, in case they give them back.
func (w *worker) dataPhase(ctx context.Context) error {
	retryID := ""
	connFailures := 0
	for {
		if err := w.ensureConns(ctx); err != nil {
			connFailures++
			if !transient(err) || connFailures > w.r.opts.MaxRetries || ctx.Err() != nil {
				return err
			}
			if err := clock.Sleep(ctx, backoff(w.r.opts.RetryBackoff, maxBackoff, connFailures)); err != nil {
				return err
			}
			continue
		}
		connFailures = 0
		if retryID == "" && len(w.singles) > 0 {
			retryID, w.singles = w.singles[0], w.singles[1:]
		}
		more, err := w.next(ctx, retryID)
		retryID = ""
		var ue *unitFailure
		if errors.As(err, &ue) {
			if err := w.r.failed(ctx, ue.l, ue.err); err != nil {
				return ue.err
			}
			retryID = ue.l.info.ID
			continue
		}
		if err != nil {
			if !transient(err) || ctx.Err() != nil {
				return err
			}
			connFailures++
			if connFailures > w.r.opts.MaxRetries {
				return err
			}
			continue
		}
		if !more {
			return nil
		}
	}
}

// unitFailure carries a unit's error out of next.
type unitFailure struct {
	l   *live
	err error
}

func (f *unitFailure) Error() string { return f.err.Error() }

// next claims one unit (id, when given and still pending and free) and copies it.
// It returns false when every unit is done.
func (w *worker) next(ctx context.Context, id string) (bool, error) {
	if err := w.claim(ctx, id); err != nil {
		return true, err
	}
	us := w.claimed
	w.ahead, w.claimed = false, nil
	if len(us) == 0 {
		w.rollback(ctx)
		w.endSource(ctx)
		if id != "" {
			return true, nil // done or taken by another worker meanwhile
		}
		n, err := journal.CountPending(ctx, w.tgt.Conn)
		if err != nil || n == 0 {
			return n > 0, err
		}
		return true, clock.Sleep(ctx, pollIdle)
	}
	if len(us) > 1 {
		return true, w.copyBatch(ctx, us)
	}
	u := &us[0]
	start := time.Now()
	l := w.r.begin(u)
	rows, err := w.copyUnit(ctx, w.tgt.Conn, u, l)
	if err == nil {
		err = w.finish(ctx, us, []int64{rows}, []*live{l})
	}
	if err != nil {
		w.rollback(ctx)
		w.endSource(ctx)
		return true, &unitFailure{l: l, err: err}
	}
	w.r.end(l, rows, l.bytes.Load(), start)
	return true, nil
}

// claim makes sure the target session is in a transaction that claimed units: id
// when given, else the largest free one, with more small ones (w.claimed, none when
// none is free). The last unit's final query claimed ahead already unless it failed.
func (w *worker) claim(ctx context.Context, id string) error {
	if w.ahead && (id == "" || len(w.claimed) == 1 && w.claimed[0].ID == id) {
		return nil
	}
	w.rollback(ctx)
	w.ahead, w.claimed, w.tgtTx = false, nil, true
	res, err := w.tgt.PgConn().Exec(ctx, "BEGIN; "+w.claimSQL(id)).ReadAll()
	if err != nil {
		return fmt.Errorf("claim unit: %w", err)
	}
	if len(res) != 2 {
		return fmt.Errorf("claim unit: %d results, want 2", len(res))
	}
	us, err := journal.Claimed(w.tgt.TypeMap(), res[1])
	if err != nil {
		return err
	}
	w.ahead, w.claimed = true, us
	return nil
}

// claimSQL claims unit id, or when id is "" the next unit of a batch that failed, or
// else the largest free unit with, when it is small, more small ones (a batch).
func (w *worker) claimSQL(id string) string {
	if id == "" && len(w.singles) > 0 {
		id = w.singles[0]
	}
	if id != "" || w.r.batch <= 1 {
		return journal.ClaimSQL(journal.PhaseData, id)
	}
	return journal.ClaimBatchSQL(journal.PhaseData, smallUnitBytes, w.r.batch)
}

// finish ends the transaction of units us (one, or a batch) in one query: each one's
// indexes and constraints and its done mark with its rows and bytes, COMMIT; then
// BEGIN and the claim of the next units (w.claimed), which saves the next ones that
// round trip. An error once the COMMIT went through is not theirs: the next units are
// claimed again.
func (w *worker) finish(ctx context.Context, us []journal.Unit, rows []int64, ls []*live) error {
	var b strings.Builder
	post := false
	for i := range us {
		if u := &us[i]; u.PostSQL != "" {
			ls[i].building.Store(true)
			b.WriteString(u.PostSQL)
			b.WriteString(";\n")
			post = true
		}
		b.WriteString(journal.DoneSQL(us[i].ID, rows[i], ls[i].bytes.Load()))
		b.WriteString(";\n")
	}
	b.WriteString("COMMIT;\nBEGIN;\n")
	b.WriteString(w.claimSQL(""))
	res, err := w.tgt.PgConn().Exec(ctx, b.String()).ReadAll()
	at := slices.IndexFunc(res, func(r *pgconn.Result) bool { return r.Err == nil && r.CommandTag.String() == "COMMIT" })
	if at < 0 {
		side := "target"
		switch {
		case len(res) > 0 && res[len(res)-1].Err == nil && strings.HasPrefix(res[len(res)-1].CommandTag.String(), "UPDATE "):
			// the statement that failed is the one after the last done: the done mark
			// was, so the COMMIT failed
			side = "target (its commit)"
		case post:
			side = "target (its indexes and constraints)"
		}
		if err == nil {
			err = errors.New("no COMMIT in the results")
		}
		what := describe(&us[0])
		if len(us) > 1 {
			what = fmt.Sprintf("%d units from %s", len(us), what)
		}
		return &UnitError{Unit: what, Side: side, Err: err}
	}
	w.tgtTx = false
	if len(res) > at+1 && res[at+1].Err == nil {
		w.tgtTx = true // BEGIN
	}
	if err == nil && len(res) == at+3 {
		if w.claimed, err = journal.Claimed(w.tgt.TypeMap(), res[at+2]); err == nil {
			w.ahead = true
		}
	}
	return nil
}

// rollback ends the target session's transaction begun in a query of ours, if any; a
// connection that cannot is dropped.
func (w *worker) rollback(ctx context.Context) {
	if w.tgt == nil || !w.tgtTx {
		return
	}
	w.tgtTx, w.ahead, w.claimed = false, false, nil
	if err := w.tgt.PgConn().Exec(context.WithoutCancel(ctx), "ROLLBACK").Close(); err != nil {
		w.tgt.Close(context.Background())
	}
}

// sameFile checks that a range's table was not rewritten (VACUUM FULL, CLUSTER, a
// rewriting ALTER TABLE) since the plan: its rows would sit at other ctids, and the
// ranges copied before and after could overlap or miss rows.
func (w *worker) sameFile(ctx context.Context, u *journal.Unit) error {
	var now int64
	if err := w.src.QueryRow(ctx, `SELECT coalesce(pg_relation_filenode($1::regclass), 0)::bigint`, qualified(u)).Scan(&now); err != nil {
		return err
	}
	if now != u.Filenode {
		return &exit.Error{Code: exit.Failed,
			Msg:  fmt.Sprintf("table %s was rewritten on the source since the migration was planned", inventory.DisplayName(u.Schema, u.Table)),
			Hint: "its ctid ranges no longer hold; start the migration over on an empty target"}
	}
	return nil
}

// copyUnit copies one unit's rows inside the target transaction tx (its PostSQL is
// the caller's). Errors are *UnitError.
func (w *worker) copyUnit(ctx context.Context, tx targetTx, u *journal.Unit, l *live) (int64, error) {
	var rows int64
	var err error
	switch u.Kind {
	case journal.KindIndexes: // nothing to read: the caller builds them
		l.building.Store(true)
		return 0, nil
	case journal.KindTable, journal.KindRange, journal.KindConfig:
		srcSQL, dstSQL, truncate := copySQL(u)
		if truncate {
			dstSQL = "TRUNCATE ONLY " + targetQualified(u) + "; " + dstSQL
		}
		read := func(out io.Writer) (pgconn.CommandTag, error) {
			var tag pgconn.CommandTag
			err := w.inSnapshot(ctx, srcSQL, func(sql string) (pgconn.CommandTag, error) {
				var err error
				tag, err = w.src.PgConn().CopyTo(ctx, out, sql)
				return tag, err
			})
			return tag, err
		}
		if u.Kind == journal.KindRange {
			if err := w.beginSource(ctx); err != nil {
				return 0, &UnitError{Unit: describe(u), Side: "source", Err: err}
			}
			if err := w.sameFile(ctx, u); err != nil {
				return 0, &UnitError{Unit: describe(u), Side: "source", Err: err}
			}
			read = func(out io.Writer) (pgconn.CommandTag, error) { return w.src.PgConn().CopyTo(ctx, out, srcSQL) }
		}
		rows, err = pipe(ctx, read, w.tgt.PgConn(), dstSQL, u.Kind != journal.KindConfig, l)
	case journal.KindConfigSeq, journal.KindSequences, journal.KindLargeObjects:
		if err := w.beginSource(ctx); err != nil {
			return 0, &UnitError{Unit: describe(u), Side: "source", Err: err}
		}
		switch u.Kind {
		case journal.KindConfigSeq:
			rows, err = copySequences(ctx, w.src.Conn, tx, []string{qualified(u)}, l)
		case journal.KindSequences:
			rows, err = w.copyAllSequences(ctx, tx, l)
		default:
			rows, err = copyLargeObjects(ctx, w.src.Conn, tx, l)
		}
	default:
		err = permanent{fmt.Errorf("unknown unit kind %q", u.Kind)}
	}
	if err != nil {
		var se sideError
		if errors.As(err, &se) {
			return 0, &UnitError{Unit: describe(u), Side: se.side, Err: se.err}
		}
		return 0, &UnitError{Unit: describe(u), Side: "copy", Err: err}
	}
	return rows, nil
}
