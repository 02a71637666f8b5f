package copy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

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
type worker struct {
	r        *run
	src, tgt *dbconn.Conn
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
		w.src = nil
	}
	if w.tgt != nil && w.tgt.IsClosed() {
		w.tgt = nil
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
// When the snapshot is gone, it is renewed (Options.RenewSnapshot) and imported again.
func (w *worker) beginSource(ctx context.Context) error {
	for {
		id := w.r.currentSnapshot()
		sql, err := importSnapshotSQL(id)
		if err != nil {
			return permanent{err}
		}
		err = w.src.PgConn().Exec(ctx, sql).Close()
		if err == nil {
			return nil
		}
		w.endSource(ctx)
		if !snapshotGone(err) {
			return fmt.Errorf("import source snapshot: %w", err)
		}
		if err := w.r.renewSnapshot(ctx, id, err); err != nil {
			return err
		}
	}
}

// endSource ends the source transaction; a broken connection is dropped.
func (w *worker) endSource(ctx context.Context) {
	if w.src == nil || w.src.IsClosed() {
		return
	}
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
	defer w.rollback(tx)
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
	if err := tx.Commit(ctx); err != nil {
		return &UnitError{Unit: "extension configuration tables", Side: "target", Err: err}
	}
	for _, d := range done {
		w.r.end(d.l, d.rows, d.bytes, d.start)
	}
	return nil
}

// rollback ends a target transaction; a connection that cannot is dropped.
func (w *worker) rollback(tx pgx.Tx) {
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
	tx, err := w.tgt.Begin(ctx)
	if err != nil {
		return true, fmt.Errorf("begin target transaction: %w", err)
	}
	defer w.rollback(tx)
	u, err := journal.Claim(ctx, tx, journal.PhaseData, id)
	if err != nil {
		return true, err
	}
	if u == nil {
		w.rollback(tx)
		if id != "" {
			return true, nil // done or taken by another worker meanwhile
		}
		n, err := journal.CountPending(ctx, w.tgt.Conn)
		if err != nil || n == 0 {
			return n > 0, err
		}
		return true, clock.Sleep(ctx, pollIdle)
	}
	start := time.Now()
	l := w.r.begin(u)
	rows, err := w.copyUnit(ctx, tx, u, l)
	if err == nil {
		if err = journal.MarkDone(ctx, tx, u.ID, rows, l.bytes.Load()); err == nil {
			err = tx.Commit(ctx)
		}
		if err != nil {
			err = &UnitError{Unit: describe(u), Side: "target", Err: err}
		}
	}
	if err != nil {
		return true, &unitFailure{l: l, err: err}
	}
	w.r.end(l, rows, l.bytes.Load(), start)
	return true, nil
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

// copyUnit copies one unit inside the target transaction tx. Errors are *UnitError.
func (w *worker) copyUnit(ctx context.Context, tx pgx.Tx, u *journal.Unit, l *live) (int64, error) {
	if u.Kind == journal.KindIndexes { // nothing to read
		l.building.Store(true)
		if _, err := tx.Exec(ctx, u.PostSQL); err != nil {
			return 0, &UnitError{Unit: describe(u), Side: "target", Err: err}
		}
		return 0, nil
	}
	if err := w.beginSource(ctx); err != nil {
		return 0, &UnitError{Unit: describe(u), Side: "source", Err: err}
	}
	defer w.endSource(ctx)
	var rows int64
	var err error
	switch u.Kind {
	case journal.KindTable, journal.KindRange, journal.KindConfig:
		if u.Kind == journal.KindRange {
			if err := w.sameFile(ctx, u); err != nil {
				return 0, &UnitError{Unit: describe(u), Side: "source", Err: err}
			}
		}
		srcSQL, dstSQL, truncate := copySQL(u)
		if truncate {
			if _, err := tx.Exec(ctx, "TRUNCATE ONLY "+targetQualified(u)); err != nil {
				return 0, &UnitError{Unit: describe(u), Side: "target", Err: err}
			}
		}
		rows, err = pipe(ctx, w.src.PgConn(), tx.Conn().PgConn(), srcSQL, dstSQL, u.Kind != journal.KindConfig, l)
		if err == nil && u.PostSQL != "" {
			l.building.Store(true)
			if _, err := tx.Exec(ctx, u.PostSQL); err != nil {
				return 0, &UnitError{Unit: describe(u), Side: "target (its indexes and constraints)", Err: err}
			}
		}
	case journal.KindConfigSeq:
		rows, err = copySequences(ctx, w.src.Conn, tx, []string{qualified(u)}, l)
	case journal.KindSequences:
		rows, err = w.copyAllSequences(ctx, tx, l)
	case journal.KindLargeObjects:
		rows, err = copyLargeObjects(ctx, w.src.Conn, tx, l)
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
