package copy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/tsmigrate/tsmigrate/internal/journal"
)

// Small units in batches. A database of thousands of small chunks spends its copy on
// what each unit costs whatever its size: a transaction on each side, the snapshot's
// import, the claim and the done mark, and above all the exchanges between tsmigrate
// and the servers, each of which waits for a round trip across a WAN and, on a busy
// machine, for the processes at either end to be scheduled again. So a worker whose
// claim finds a small unit (a whole table or chunk of under smallUnitBytes) claims up
// to Options.BatchUnits of them (journal.ClaimBatchSQL) and copies them together:
//   - source: one query: the end of the last transaction, BEGIN, the snapshot's import
//     and every unit's COPY TO, each unit's rows kept in memory (at most
//     batchMaxBuffered in all);
//   - target: one query of every unit's COPY FROM STDIN with each one's rows after it
//     (the server reads them in turn), then as for one unit: the units' indexes and
//     constraints, their done marks, COMMIT, BEGIN and the next claim, in one query.
//
// Three exchanges for the batch instead of three for each unit; the journal still
// has a row per unit, each marked done in the transaction that holds its rows. When
// anything goes wrong in a batch (a row refused, a lost connection, more rows than
// the estimates said), its transaction is rolled back and its units are copied again
// one at a time, each as a unit of its own: a failure is then told, retried and
// counted for the unit that has it, as without batches.
const (
	// smallUnitBytes: tables and chunks estimated under this size go in batches. They
	// are copied without TRUNCATE and FREEZE too (freezeMinBytes).
	smallUnitBytes = 256 << 10
	// defaultBatchUnits bounds the units of a batch (Options.BatchUnits 0).
	defaultBatchUnits = 64
	// copyMessage: the rows are sent in COPY messages of this size, as the pipe does.
	copyMessage = pipeBuffer
)

// batchMaxBuffered bounds the rows a batch holds in memory: a table whose estimate was
// stale (never vacuumed nor analyzed) may be much bigger than it said; past this bound
// the batch stops and its units go one at a time, streamed. A variable for the tests.
var batchMaxBuffered = 16 << 20

// errBatchTooBig: a batch's rows were more than batchMaxBuffered.
var errBatchTooBig = errors.New("the batch's rows are more than its estimates said")

// batchSize is how many small units a claim takes at once: up to Options.BatchUnits,
// and few enough that every job gets several batches of the small units pending, so
// that the last ones end together.
func batchSize(limit, jobs int, units []journal.Unit) int {
	small := 0
	for i := range units {
		if u := &units[i]; u.Phase == journal.PhaseData && u.State != journal.Done && batchable(u) {
			small++
		}
	}
	return max(1, min(limit, small/(4*max(jobs, 1))))
}

// batchable says whether u may be copied in a batch (see smallUnitBytes; a chunk read
// decompressed is as small as its heap, which holds none of its rows: not small).
func batchable(u *journal.Unit) bool {
	return u.Kind == journal.KindTable && u.EstBytes < smallUnitBytes && !u.Decompress
}

// copied is one unit's rows as the source sent them.
type copied struct {
	data []byte
	rows int64
}

// copyBatch copies the units us, claimed together in the target's transaction. When
// the batch fails, its transactions are rolled back and its units queued to be copied
// one at a time (w.singles); the error returned is only the context's.
func (w *worker) copyBatch(ctx context.Context, us []journal.Unit) error {
	start := time.Now()
	ls := make([]*live, len(us))
	for i := range us {
		ls[i] = w.r.begin(&us[i])
	}
	rows, err := w.batchOnce(ctx, us, ls)
	if err == nil {
		for i, l := range ls {
			w.r.end(l, rows[i], l.bytes.Load(), start)
		}
		return nil
	}
	// Forgotten while still held: once rolled back, another worker may claim them.
	for _, l := range ls {
		w.r.drop(l)
	}
	w.rollback(ctx)
	w.endSource(ctx)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	for i := range us {
		w.singles = append(w.singles, us[i].ID)
	}
	return nil
}

// batchOnce copies the units us in the target's transaction, which it commits, and
// returns the rows of each.
func (w *worker) batchOnce(ctx context.Context, us []journal.Unit, ls []*live) ([]int64, error) {
	srcSQL, dstSQL := make([]string, len(us)), make([]string, len(us))
	for i := range us {
		var truncate bool
		if srcSQL[i], dstSQL[i], truncate = copySQL(&us[i]); truncate || !batchable(&us[i]) {
			return nil, fmt.Errorf("unit %s is not for a batch", us[i].ID)
		}
	}
	var got []copied
	err := w.inSnapshot(ctx, strings.Join(srcSQL, ";\n"), func(sql string) (pgconn.CommandTag, error) {
		var tag pgconn.CommandTag
		var err error
		got, tag, err = readCopies(ctx, w.src.PgConn(), sql, len(us), ls)
		return tag, err
	})
	if err != nil {
		if !errors.As(err, new(*pgconn.PgError)) {
			w.src.Close(context.WithoutCancel(ctx))
		}
		return nil, err
	}
	rows, err := writeCopies(ctx, w.tgt.PgConn(), dstSQL, got)
	if err != nil {
		if !errors.As(err, new(*pgconn.PgError)) {
			w.tgt.Close(context.WithoutCancel(ctx))
		}
		return nil, err
	}
	for i := range us {
		if rows[i] != got[i].rows {
			return nil, fmt.Errorf("%s: source sent %d rows, target took %d", describe(&us[i]), got[i].rows, rows[i])
		}
	}
	return rows, w.finish(ctx, us, rows, ls)
}

// readCopies runs sql on the source, whose last n statements are COPY TO STDOUT, and
// returns each one's rows, and the tag of the last statement that completed.
func readCopies(ctx context.Context, c *pgconn.PgConn, sql string, n int, ls []*live) ([]copied, pgconn.CommandTag, error) {
	got := make([]copied, n)
	var tag pgconn.CommandTag
	cur, buffered := -1, 0
	err := exchange(ctx, c, func(fe *pgproto3.Frontend) { fe.Send(&pgproto3.Query{String: sql}) }, func(m pgproto3.BackendMessage) error {
		switch m := m.(type) {
		case *pgproto3.CopyOutResponse:
			if cur++; cur >= n {
				return fmt.Errorf("batch: more than the %d COPY results asked for", n)
			}
		case *pgproto3.CopyData:
			if buffered += len(m.Data); buffered > batchMaxBuffered {
				return errBatchTooBig
			}
			got[cur].data = append(got[cur].data, m.Data...)
			ls[cur].rows.Add(1)
			ls[cur].bytes.Add(int64(len(m.Data)))
		case *pgproto3.CommandComplete:
			tag = pgconn.NewCommandTag(string(m.CommandTag))
			if cur >= 0 {
				got[cur].rows = tag.RowsAffected()
			}
		}
		return nil
	})
	if err == nil && cur != n-1 {
		err = fmt.Errorf("batch: %d COPY results, want %d", cur+1, n)
	}
	return got, tag, err
}

// writeCopies runs the COPY FROM STDIN statements sql in one query on the target,
// each one's rows (from) after it, and returns the rows each took.
func writeCopies(ctx context.Context, c *pgconn.PgConn, sql []string, from []copied) ([]int64, error) {
	rows := make([]int64, len(sql))
	cur := -1
	err := exchange(ctx, c, func(fe *pgproto3.Frontend) {
		fe.Send(&pgproto3.Query{String: strings.Join(sql, ";\n")})
		for _, f := range from {
			for d := f.data; len(d) > 0; {
				part := d[:min(len(d), copyMessage)]
				fe.Send(&pgproto3.CopyData{Data: part})
				d = d[len(part):]
			}
			fe.Send(&pgproto3.CopyDone{})
		}
	}, func(m pgproto3.BackendMessage) error {
		switch m := m.(type) {
		case *pgproto3.CopyInResponse:
			if cur++; cur >= len(sql) {
				return fmt.Errorf("batch: more than the %d COPY statements sent", len(sql))
			}
		case *pgproto3.CommandComplete:
			if cur >= 0 {
				rows[cur] = pgconn.NewCommandTag(string(m.CommandTag)).RowsAffected()
			}
		}
		return nil
	})
	if err == nil && cur != len(sql)-1 {
		err = fmt.Errorf("batch: %d COPY statements ran, want %d", cur+1, len(sql))
	}
	return rows, err
}

// exchange sends what send writes in one write, then reads the server's messages up
// to ReadyForQuery, passing each to on (ErrorResponse and ReadyForQuery excepted). It
// returns the server's first error, or on's; the connection is closed when it is left
// in the middle of an exchange (on's error, a network error, the context done).
func exchange(ctx context.Context, c *pgconn.PgConn, send func(*pgproto3.Frontend), on func(pgproto3.BackendMessage) error) error {
	fe := c.Frontend()
	send(fe)
	// The write does not watch the context: a deadline in the past ends it.
	stop := context.AfterFunc(ctx, func() { c.Conn().SetDeadline(time.Now()) })
	err := fe.Flush()
	if !stop() {
		err = ctx.Err()
	}
	if err != nil {
		c.Close(context.WithoutCancel(ctx))
		return err
	}
	var first error
	for {
		m, err := c.ReceiveMessage(ctx)
		if err != nil {
			c.Close(context.WithoutCancel(ctx))
			return err
		}
		switch m := m.(type) {
		case *pgproto3.ReadyForQuery:
			return first
		case *pgproto3.ErrorResponse:
			if first == nil {
				first = pgconn.ErrorResponseToPgError(m)
			}
		default:
			if err := on(m); err != nil {
				// The rest of the exchange is not read: a batch too big for memory
				// stops here rather than at the end of its rows.
				c.Close(context.WithoutCancel(ctx))
				return err
			}
		}
	}
}
