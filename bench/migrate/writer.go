package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The writer of -live: an application that keeps writing to the source during the
// whole run of a way, at a fixed rate of rows a second, in small transactions (one a
// tick): inserts into the hypertable at the current time (into a chunk that did not
// exist when the database was loaded, so that new chunks appear during the migration),
// updates of devices and events, deletes of events. It counts the rows the source
// acknowledged (committed, by the rows each statement said it touched), the writes
// refused because the source had turned read-only (SQLSTATE 25006: the freeze of a
// cut-over), and other failures (a session ended by the freeze, say), and reconnects
// after a lost connection.

// writerApp is the writer's application_name: the pgcopydb way's freeze ends its
// sessions by it.
const writerApp = "bench-writer"

// writerTick is how often the writer commits a transaction.
const writerTick = 20 * time.Millisecond

// Statements of the writer, PostgreSQL 17 + TimescaleDB 2.19.3, on the sample schema.
// The writer's hypertable rows have device ids of their own, 1 000 of them for each
// way from 100 000 on (the sample's have 1 to 1 000): the count of those on a server
// is how many of the way's writer's inserts it has.
const (
	sqlWriterInsert = `INSERT INTO metrics (time, device_id, cpu, temperature, reading)
SELECT clock_timestamp(), $2::int + g % 10, random() * 100, 20 + random() * 40, (random() * 100)::numeric(10,3)
FROM generate_series(1, $1::int) g`
	sqlWriterUpdateDevices = `UPDATE devices SET location = 'moved-' || $2::bigint WHERE device_id = ANY($1::int[])`
	sqlWriterUpdateEvents  = `UPDATE events SET payload = payload || jsonb_build_object('w', $2::bigint) WHERE event_id = ANY($1::bigint[])`
	sqlWriterDelete        = `DELETE FROM events WHERE event_id = ANY($1::bigint[])`
)

// cursors are where the writer's updates and deletes are: kept across the ways of a run
// so that no way's writer deletes a row an earlier one deleted.
type cursors struct {
	devices    int64 // devices in the database: updates cycle over 1..devices
	events     int64 // events at load: deletes go up from 1, event updates down from here
	nextDevice int64
	nextDelete int64
	nextUpdate int64
	// device: the first device id of the current way's hypertable rows (nextWay).
	device int32
}

// nextWay gives the next way's writer device ids of its own.
func (c *cursors) nextWay() {
	if c.device == 0 {
		c.device = 100_000
	} else {
		c.device += 1000
	}
}

// ledgerEntry is the writer's running totals after one acknowledged transaction.
type ledgerEntry struct {
	at      time.Time
	inserts int64 // hypertable rows
	rows    int64 // every row written
}

// writerStats is what a writer saw.
type writerStats struct {
	Acked       int64            `json:"rows_acked"`
	AckedTables map[string]int64 `json:"rows_acked_by_change"` // "metrics insert", ...
	Txns        int64            `json:"transactions_acked"`
	Refused     int64            `json:"writes_refused_after_freeze"` // rows of refused transactions
	Failed      int64            `json:"writes_failed"`               // rows of transactions that failed otherwise
	FailedWhy   map[string]int64 `json:"failed_why,omitempty"`
	// Unsure: rows of transactions whose commit got no answer (the session ended
	// during it): they may or may not be on the source. The counts compare the target
	// with the source, which knows.
	Unsure      int64     `json:"writes_unsure"`
	LastAck     time.Time `json:"last_ack"`
	FirstRefuse time.Time `json:"first_refused,omitzero"`
	ledger      []ledgerEntry
}

type writer struct {
	uri  string
	rate int
	cur  *cursors
	mu   sync.Mutex
	st   writerStats
	conn *pgx.Conn
}

func newWriter(uri string, rate int, cur *cursors) *writer {
	return &writer{uri: uri, rate: rate, cur: cur,
		st: writerStats{AckedTables: map[string]int64{}, FailedWhy: map[string]int64{}}}
}

// run writes until ctx ends.
func (w *writer) run(ctx context.Context) {
	defer func() {
		if w.conn != nil {
			w.conn.Close(context.Background())
		}
	}()
	t := time.NewTicker(writerTick)
	defer t.Stop()
	perTick := float64(w.rate) * writerTick.Seconds()
	var owed float64
	var seq int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		owed += perTick
		n := int(owed)
		if n == 0 {
			continue
		}
		owed -= float64(n)
		seq++
		w.tx(ctx, n, seq)
	}
}

// tx writes n rows in one transaction: 60% inserts into the hypertable, 30% updates
// (devices and events in turn), 10% deletes of events, rounded so that each kind gets
// its share over time.
func (w *writer) tx(ctx context.Context, n int, seq int64) {
	ins := n * 6 / 10
	upd := n * 3 / 10
	del := n - ins - upd
	if ins == 0 {
		ins, del = del, 0
	}
	if w.conn == nil || w.conn.IsClosed() {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		c, err := pgx.Connect(cctx, w.uri+"&application_name="+writerApp)
		cancel()
		if err != nil {
			w.fail(ctx, n, err, false)
			return
		}
		w.conn = c
	}
	c := w.cur
	devs := make([]int32, 0, upd)
	evUpd := make([]int64, 0, upd)
	for i := 0; i < upd; i++ {
		if i%2 == 0 {
			devs = append(devs, int32(1+c.nextDevice%c.devices))
			c.nextDevice++
		} else {
			evUpd = append(evUpd, c.events-c.nextUpdate%(c.events/2))
			c.nextUpdate++
		}
	}
	evDel := make([]int64, 0, del)
	for i := 0; i < del; i++ {
		evDel = append(evDel, 1+c.nextDelete+int64(i))
	}
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(sqlWriterInsert, ins, c.device)
	if len(devs) > 0 {
		b.Queue(sqlWriterUpdateDevices, devs, seq)
	}
	if len(evUpd) > 0 {
		b.Queue(sqlWriterUpdateEvents, evUpd, seq)
	}
	if len(evDel) > 0 {
		b.Queue(sqlWriterDelete, evDel)
	}
	b.Queue("COMMIT")
	qctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res := w.conn.SendBatch(qctx, b)
	var tags []pgconn.CommandTag
	var err error
	for i := 0; i < b.Len(); i++ {
		var tag pgconn.CommandTag
		if tag, err = res.Exec(); err != nil {
			break
		}
		tags = append(tags, tag)
	}
	if cerr := res.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		// The commit was sent but not answered: the transaction may have committed.
		unsure := len(tags) == b.Len()-1 && !pgconn.SafeToRetry(err)
		w.fail(ctx, n, err, unsure)
		if !w.conn.IsClosed() && w.conn.PgConn().TxStatus() != 'I' {
			w.conn.Exec(context.Background(), "ROLLBACK")
		}
		return
	}
	if len(evDel) > 0 {
		c.nextDelete += int64(len(evDel))
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	kinds := []string{"metrics insert"}
	if len(devs) > 0 {
		kinds = append(kinds, "devices update")
	}
	if len(evUpd) > 0 {
		kinds = append(kinds, "events update")
	}
	if len(evDel) > 0 {
		kinds = append(kinds, "events delete")
	}
	var rows, inserts int64
	for i, k := range kinds {
		a := tags[1+i].RowsAffected()
		w.st.AckedTables[k] += a
		rows += a
		if i == 0 {
			inserts = a
		}
	}
	w.st.Acked += rows
	w.st.Txns++
	w.st.LastAck = time.Now()
	prev := ledgerEntry{}
	if l := len(w.st.ledger); l > 0 {
		prev = w.st.ledger[l-1]
	}
	w.st.ledger = append(w.st.ledger, ledgerEntry{at: w.st.LastAck, inserts: prev.inserts + inserts, rows: prev.rows + rows})
}

// fail counts a transaction of n rows that did not commit (or may have: unsure).
func (w *writer) fail(ctx context.Context, n int, err error, unsure bool) {
	if ctx.Err() != nil {
		return // the way ended: not the source's doing
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "25006": // read_only_sql_transaction
		w.st.Refused += int64(n)
		if w.st.FirstRefuse.IsZero() {
			w.st.FirstRefuse = time.Now()
		}
	case unsure:
		w.st.Unsure += int64(n)
	default:
		w.st.Failed += int64(n)
		why := err.Error()
		if errors.As(err, &pgErr) {
			why = pgErr.Code + " " + pgErr.Message
		}
		if len(why) > 80 {
			why = why[:80]
		}
		w.st.FailedWhy[why] += int64(n)
	}
}

// stats is a copy of what the writer saw so far.
func (w *writer) stats() writerStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.st
	s.AckedTables = cloneMap(s.AckedTables)
	s.FailedWhy = cloneMap(s.FailedWhy)
	s.ledger = append([]ledgerEntry(nil), s.ledger...)
	return s
}

// rowsAtInserts is how many rows the writer had written when it had inserted n rows
// into the hypertable: the target applies the source's transactions in commit order,
// so a target with n of the writer's inserts has (about) that many of its rows.
func (s *writerStats) rowsAtInserts(n int64) int64 {
	if n <= 0 {
		return 0
	}
	i := sort.Search(len(s.ledger), func(i int) bool { return s.ledger[i].inserts >= n })
	if i == len(s.ledger) {
		if i == 0 {
			return 0
		}
		return s.ledger[i-1].rows
	}
	return s.ledger[i].rows
}

func (s *writerStats) failures() string {
	var parts []string
	for k, v := range s.FailedWhy {
		parts = append(parts, fmt.Sprintf("%d: %s", v, k))
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}

func cloneMap(m map[string]int64) map[string]int64 {
	c := make(map[string]int64, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}
