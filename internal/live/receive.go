package live

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/tsmigrate/tsmigrate/internal/clock"
	"github.com/tsmigrate/tsmigrate/internal/dbconn"
)

// Receiving: how often what arrived is committed to the target and confirmed to the
// source, and how much may wait in memory before it is.
const (
	flushEvery    = 200 * time.Millisecond
	flushBytes    = 8 << 20
	statusEvery   = 10 * time.Second
	retainedEvery = 2 * time.Second
	// maxReconnects bounds the reconnections in a row that did not get to stream.
	maxReconnects = 8
	maxBackoff    = 15 * time.Second
)

// SQL of the receiver. PostgreSQL 15, 17.
const (
	sqlDropPartial  = `DELETE FROM _tsmigrate.live_changes WHERE seq > (SELECT received_seq FROM _tsmigrate.live)`
	sqlMarkReceived = `UPDATE _tsmigrate.live SET received_seq = $1, received_lsn = $2::pg_lsn, peak_retained = greatest(peak_retained, $3)`
	// sqlSlotPosition: on the source, the WAL the slot holds back and where the WAL is.
	sqlSlotPosition = `SELECT coalesce(pg_current_wal_lsn() - restart_lsn, 0)::bigint, pg_current_wal_lsn()::text
FROM pg_replication_slots WHERE slot_name = $1`
)

// ReceiveStatus is how far the receiver got.
type ReceiveStatus struct {
	// ReceivedLSN: every transaction committed on the source up to it is kept in the
	// target (and the slot was told so).
	ReceivedLSN LSN
	// ReceivedSeq: the last message kept that ends a transaction.
	ReceivedSeq int64
	// SourceLSN: the source's WAL position when last asked.
	SourceLSN LSN
	// Retained and PeakRetained: the WAL the slot holds back on the source, now and at
	// most (in bytes, sampled every few seconds).
	Retained, PeakRetained int64
	Messages               int64
	Bytes                  int64
	// Reconnects: the replication connection was lost and made again.
	Reconnects int
}

// Receiver keeps the slot's changes in the target. Run it in its own goroutine.
type Receiver struct {
	Source, Target *dbconn.Config
	// OnRetry, when set, hears about a lost connection that is made again.
	OnRetry func(attempt int, err error)

	mu sync.Mutex
	st ReceiveStatus
}

// Status is a copy of the receiver's status.
func (r *Receiver) Status() ReceiveStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.st
}

// Run receives until ctx ends (then it returns nil) or a permanent error. A lost
// connection (to either server) is made again, from what the target holds.
func (r *Receiver) Run(ctx context.Context) error {
	failures := 0
	for {
		streamed, err := r.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if streamed {
			failures = 0
		}
		failures++
		if !retryable(err) || failures > maxReconnects {
			return fmt.Errorf("receive the source's changes: %w", err)
		}
		r.mu.Lock()
		r.st.Reconnects++
		r.mu.Unlock()
		if r.OnRetry != nil {
			r.OnRetry(failures, err)
		}
		if clock.Sleep(ctx, min(time.Duration(1<<min(failures-1, 4))*time.Second, maxBackoff)) != nil {
			return nil
		}
	}
}

// retryable: a lost or refused connection (dbconn.Lost: an EOF or a reset however
// wrapped, on either server, in whatever the session was doing), or a server shutting
// down or restarting.
func retryable(err error) bool {
	if err == nil {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code[:2] {
		case "08", "57", "53":
			return true
		}
		// 55006 object_in_use: the slot is still held by the walsender of the
		// connection just lost, which the server has not noticed yet.
		return pgErr.Code == "55006"
	}
	return dbconn.Lost(err) || pgconn.SafeToRetry(err) || errors.Is(err, errClosed) ||
		errors.Is(err, context.DeadlineExceeded)
}

var errClosed = errors.New("the replication connection closed")

type spoolRow struct {
	seq  int64
	lsn  LSN
	data []byte
}

// session is one replication connection's life: it says whether it got to stream. A
// session that streamed and was lost is no failure in a row: the connections work, and
// a source that writes nothing for hours sends nothing in the meantime.
func (r *Receiver) session(ctx context.Context) (bool, error) {
	tgt, err := r.Target.ConnectSession(ctx, durableSessionSQL)
	if err != nil {
		return false, err
	}
	defer tgt.Close(context.WithoutCancel(ctx))
	if _, err := tgt.Exec(ctx, sqlDropPartial); err != nil {
		return false, fmt.Errorf("target: %w", err)
	}
	st, err := ReadState(ctx, tgt.Conn)
	if err != nil {
		return false, err
	}
	r.mu.Lock()
	r.st.ReceivedLSN, r.st.ReceivedSeq = st.ReceivedLSN, st.ReceivedSeq
	r.st.PeakRetained = max(r.st.PeakRetained, st.PeakRetained)
	r.mu.Unlock()

	src, err := r.Source.ConnectSession(ctx, dbconn.NoTimeouts)
	if err != nil {
		return false, err
	}
	defer src.Close(context.WithoutCancel(ctx))
	repl, err := r.Source.ConnectReplication(ctx, replicationParams)
	if err != nil {
		return false, err
	}
	defer repl.Close(context.WithoutCancel(ctx))
	if err := pglogrepl.StartReplication(ctx, repl, st.Slot, st.ReceivedLSN, pglogrepl.StartReplicationOptions{
		Mode:       pglogrepl.LogicalReplication,
		PluginArgs: []string{"proto_version '1'", "publication_names '" + st.Publication + "'", "messages 'true'"},
	}); err != nil {
		return false, fmt.Errorf("start streaming from slot %s: %w", st.Slot, err)
	}

	s := &receiving{r: r, tgt: tgt, src: src, repl: repl, slot: st.Slot, seq: st.ReceivedSeq, complete: st.ReceivedSeq,
		completeLSN: st.ReceivedLSN, persisted: st.ReceivedLSN, confirmed: st.ReceivedLSN}
	return true, s.loop(ctx)
}

// receiving is the state of one session.
type receiving struct {
	r                        *Receiver
	tgt, src                 *dbconn.Conn
	repl                     *pgconn.PgConn
	slot                     string
	buf                      []spoolRow
	bufBytes                 int
	bufSince                 time.Time
	inTx                     bool
	seq                      int64 // last seq given
	complete                 int64 // last seq that ends a transaction (or a message outside one)
	completeLSN              LSN
	persisted                LSN // completeLSN as the last flush committed it
	confirmed                LSN // what the slot was told
	lastStatus, lastRetained time.Time
	retained                 int64
}

func (s *receiving) loop(ctx context.Context) error {
	for {
		now := time.Now()
		if len(s.buf) > 0 && (now.Sub(s.bufSince) >= flushEvery || s.bufBytes >= flushBytes) {
			if err := s.flush(ctx); err != nil {
				return err
			}
		}
		if now.Sub(s.lastRetained) >= retainedEvery {
			if err := s.sampleRetained(ctx); err != nil {
				return err
			}
		}
		if now.Sub(s.lastStatus) >= statusEvery {
			if err := s.status(ctx); err != nil {
				return err
			}
		}
		wait := flushEvery
		if len(s.buf) > 0 {
			wait = max(flushEvery-time.Since(s.bufSince), time.Millisecond)
		}
		rctx, cancel := context.WithTimeout(ctx, wait)
		msg, err := s.repl.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if pgconn.Timeout(err) {
				if s.repl.IsClosed() {
					return errClosed
				}
				continue
			}
			return err
		}
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			return pgconn.ErrorResponseToPgError(m)
		case *pgproto3.CopyData:
			if err := s.copyData(ctx, m.Data); err != nil {
				return err
			}
		case *pgproto3.CopyDone:
			return errClosed
		}
	}
}

func (s *receiving) copyData(ctx context.Context, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		k, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return err
		}
		// Nothing open and everything kept: every transaction that committed before
		// the server's position was sent (pgoutput sends nothing for those that
		// touch nothing published), so the slot may move on to it.
		if !s.inTx && len(s.buf) == 0 && k.ServerWALEnd > s.completeLSN {
			s.completeLSN = k.ServerWALEnd
		}
		if k.ReplyRequested {
			return s.status(ctx)
		}
	case pglogrepl.XLogDataByteID:
		x, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return err
		}
		if len(x.WALData) == 0 {
			return nil
		}
		s.seq++
		row := spoolRow{seq: s.seq, lsn: x.WALStart, data: append([]byte(nil), x.WALData...)}
		if len(s.buf) == 0 {
			s.bufSince = time.Now()
		}
		s.buf = append(s.buf, row)
		s.bufBytes += len(row.data) + 32
		switch pglogrepl.MessageType(x.WALData[0]) {
		case pglogrepl.MessageTypeBegin:
			s.inTx = true
		case pglogrepl.MessageTypeCommit:
			var c pglogrepl.CommitMessage
			if err := c.Decode(x.WALData[1:]); err != nil {
				return fmt.Errorf("decode a commit: %w", err)
			}
			s.inTx = false
			s.complete, s.completeLSN = s.seq, c.TransactionEndLSN
		case pglogrepl.MessageTypeMessage:
			if !s.inTx {
				s.complete, s.completeLSN = s.seq, max(s.completeLSN, x.WALStart)
			}
		}
		s.r.mu.Lock()
		s.r.st.Messages++
		s.r.st.Bytes += int64(len(row.data))
		s.r.mu.Unlock()
	}
	return nil
}

// flush commits the buffered messages to the target, with how far they are complete,
// then tells the slot.
func (s *receiving) flush(ctx context.Context) error {
	err := pgx.BeginFunc(ctx, s.tgt.Conn, func(tx pgx.Tx) error {
		if len(s.buf) > 0 {
			if _, err := tx.CopyFrom(ctx, pgx.Identifier{"_tsmigrate", "live_changes"}, []string{"seq", "lsn", "data"},
				pgx.CopyFromSlice(len(s.buf), func(i int) ([]any, error) {
					return []any{s.buf[i].seq, int64(s.buf[i].lsn), s.buf[i].data}, nil
				})); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, sqlMarkReceived, s.complete, s.completeLSN.String(), s.retained)
		return err
	})
	if err != nil {
		return fmt.Errorf("keep the changes in the target: %w", err)
	}
	s.buf, s.bufBytes = s.buf[:0], 0
	s.persisted = s.completeLSN
	s.r.mu.Lock()
	s.r.st.ReceivedLSN, s.r.st.ReceivedSeq = s.completeLSN, s.complete
	s.r.mu.Unlock()
	return s.status(ctx)
}

// status tells the slot how far the target keeps the changes: what the last flush
// committed, or, with nothing pending, how far the server said it had sent.
func (s *receiving) status(ctx context.Context) error {
	pos := s.persisted
	if len(s.buf) == 0 && !s.inTx {
		pos = max(pos, s.completeLSN)
	}
	s.confirmed = max(s.confirmed, pos)
	if err := pglogrepl.SendStandbyStatusUpdate(ctx, s.repl, pglogrepl.StandbyStatusUpdate{WALWritePosition: s.confirmed}); err != nil {
		return err
	}
	s.r.mu.Lock()
	s.r.st.ReceivedLSN = max(s.r.st.ReceivedLSN, s.confirmed)
	s.r.mu.Unlock()
	s.lastStatus = time.Now()
	return nil
}

func (s *receiving) sampleRetained(ctx context.Context) error {
	var retained int64
	var cur string
	err := s.src.QueryRow(ctx, sqlSlotPosition, s.slot).Scan(&retained, &cur)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("replication slot %s is gone from the source", s.slot)
	}
	if err != nil {
		return err
	}
	l, err := pglogrepl.ParseLSN(cur)
	if err != nil {
		return err
	}
	s.retained = retained
	s.lastRetained = time.Now()
	s.r.mu.Lock()
	s.r.st.SourceLSN, s.r.st.Retained = l, retained
	s.r.st.PeakRetained = max(s.r.st.PeakRetained, retained)
	s.r.mu.Unlock()
	return nil
}
