package live

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tsmigrate/tsmigrate/internal/clock"
	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/exit"
)

// Applying: how many kept messages are read at once, and when the target transaction
// that applies them commits (always at the end of a source transaction).
const (
	pageRows     = 2000
	commitOps    = 20000
	commitEvery  = time.Second
	idlePoll     = 50 * time.Millisecond
	copyMaxBytes = 4 << 20
	batchMax     = 500
)

// applySessionSQL: the applying session. The output plugin printed values under
// replicationParams; they are read back under the same. Replica role (where the
// target user may set it, tried apart) keeps the target's triggers and foreign-key
// checks from firing again for rows the source's already did, as PostgreSQL's own
// subscriber does. PostgreSQL 15, 17.
const (
	applySessionSQL = dbconn.NoTimeouts + `; SET default_transaction_read_only = off; SET search_path = '';
SET DateStyle = ISO; SET IntervalStyle = postgres; SET extra_float_digits = 3; SET TimeZone = 'UTC';
SET synchronous_commit = off`
	sqlReplicaRole = `SET session_replication_role = replica`
	sqlDurable     = `SET LOCAL synchronous_commit = on`
	// sqlOriginTriggers: the user's triggers of a target table that fire in a session
	// without replica role (enabled "origin"), not TimescaleDB's own (an extension's
	// function: the insert blocker, the continuous aggregates' invalidation).
	sqlOriginTriggers = `SELECT t.tgname::text FROM pg_trigger t WHERE t.tgrelid = $1::regclass AND NOT t.tgisinternal
	AND t.tgenabled = 'O' AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
		AND d.objid = t.tgfoid AND d.deptype = 'e') ORDER BY 1`

	sqlMarkApplied = `UPDATE _tsmigrate.live SET applied_seq = $1, applied_lsn = $2::pg_lsn, applied_commit_time = coalesce($3, applied_commit_time)`
	sqlDropApplied = `DELETE FROM _tsmigrate.live_changes WHERE seq > $1 AND seq <= $2`
	sqlPage        = `SELECT seq, lsn, data FROM _tsmigrate.live_changes WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT ` + "2000"
	sqlReceivedSeq = `SELECT received_seq FROM _tsmigrate.live`
	sqlKeepRel     = `INSERT INTO _tsmigrate.live_relations (relid, data) VALUES ($1, $2)
ON CONFLICT (relid) DO UPDATE SET data = EXCLUDED.data`
	// sqlTouch records a table or chunk to compare whole at the cut-over; sqlTouchKeyed
	// one to compare by the keys recorded (key_columns), unless it is compared whole
	// already or its key columns changed (NULL: whole).
	sqlTouch = `INSERT INTO _tsmigrate.live_touched (kind, schema_name, table_name) VALUES ($1, $2, $3)
ON CONFLICT (kind, schema_name, table_name) DO UPDATE SET key_columns = NULL WHERE live_touched.key_columns IS NOT NULL`
	sqlTouchKeyed = `INSERT INTO _tsmigrate.live_touched (kind, schema_name, table_name, key_columns) VALUES ('table', $1, $2, $3)
ON CONFLICT (kind, schema_name, table_name) DO UPDATE SET key_columns = NULL
WHERE live_touched.key_columns IS DISTINCT FROM EXCLUDED.key_columns`
	sqlTouchKeys = `INSERT INTO _tsmigrate.live_touched_keys (schema_name, table_name, key)
SELECT $1, $2, k FROM jsonb_array_elements($3::jsonb) AS k ON CONFLICT DO NOTHING`
)

// StopError is a change that cannot be applied: the apply stops, saying which and why.
type StopError struct {
	What, Hint string
	LSN        LSN
}

func (e *StopError) Error() string {
	if e.LSN != 0 {
		return fmt.Sprintf("%s (source WAL position %s)", e.What, e.LSN)
	}
	return e.What
}

// ExitError is the StopError as the CLI shows it.
func (e *StopError) ExitError() *exit.Error {
	return &exit.Error{Code: exit.Failed, Msg: "live migration stopped: " + e.Error(), Hint: e.Hint, Err: e}
}

// ApplyStatus is how far the applier got.
type ApplyStatus struct {
	AppliedLSN LSN
	AppliedSeq int64
	// CommitTime: the source's commit time of the last transaction applied.
	CommitTime time.Time
	// Rows: rows inserted, updated and deleted on the target by this applier, and
	// Transactions: the source's transactions applied, as far as committed.
	Rows         int64
	Transactions int64
	// ReachedEnd: the end marker was applied.
	ReachedEnd bool
	// Reconnects: the target connection was lost and made again.
	Reconnects int
	// ReplicaRole: the target's triggers were kept from firing (session_replication_role).
	// Without it, the user's triggers of plain tables are disabled inside each target
	// transaction that changes them, and a hypertable with triggers stops the apply.
	ReplicaRole bool
}

// Applier applies the kept changes to the target.
type Applier struct {
	Target *dbconn.Config
	// End is the content of the end marker to stop at (EmitEndMarker).
	End string
	// OnRetry, when set, hears about a lost target connection that is made again.
	OnRetry func(attempt int, err error)

	mu sync.Mutex
	st ApplyStatus
}

// Status is a copy of the applier's status.
func (ap *Applier) Status() ApplyStatus {
	ap.mu.Lock()
	defer ap.mu.Unlock()
	return ap.st
}

// applier is one Run's state.
type applier struct {
	ap          *Applier
	conn        *dbconn.Conn
	rels        map[uint32]*relation
	chunkByID   map[int32]*chunkInfo
	chunkByName map[Relation]*chunkInfo
	hypertables map[int32]hypertableInfo

	tx         pgx.Tx
	txStart    time.Time
	txOps      int
	txFirstSeq int64 // applied_seq when the transaction began
	// txRows and txTransactions: the rows and source transactions applied in the
	// target transaction, counted in the status once it commits.
	txRows, txTransactions int64
	committed              bool // a target transaction committed in this session

	section     string // the TimescaleDB marker whose changes are being skipped
	sectionIns  bool   // a chunk's row was inserted in the decompression section
	sectionDels []int32

	copyRel  *relation
	copyBuf  bytes.Buffer
	copyRows int64
	batch    *pgx.Batch
	batchFor []string // what each queued statement changes, for errors

	// touched: the tables and chunks recorded in live_touched in this session, and
	// how: wholeUnit, or a table's key columns (keyed). keys: the keys of the rows
	// changed in the target transaction, by table, written before it commits.
	touched map[[3]string]string
	keys    map[Relation]map[string]bool
	// replica: the session has session_replication_role = replica. Without it, the
	// user's triggers of each target table changed are disabled in the target
	// transaction (quiet) and enabled again before it commits: nobody ever sees them
	// disabled.
	replica bool
	quieted map[Relation][]string
	// pending stops the apply at the end of the source transaction (a chunk dropped,
	// unless the hypertable was: then that).
	pending *StopError

	seq        int64 // last message of the last transaction applied
	read       int64 // last message applied (of a transaction that may go on)
	lsn        LSN   // of the last complete transaction applied
	beginTime  time.Time
	commitTime *time.Time
	reached    bool
}

// Run applies the kept changes in commit order until the end marker (End) is applied,
// or ctx ends (returns ctx.Err()), or a change cannot be applied (*StopError). A lost
// target connection is made again, and the apply goes on from the position the target
// committed with the data (what the lost transaction applied is applied again); a run
// of maxReconnects losses in a row that committed nothing ends it.
func (ap *Applier) Run(ctx context.Context) error {
	failures := 0
	for {
		committed, err := ap.session(ctx)
		if err == nil || ctx.Err() != nil || !retryable(err) {
			return err
		}
		if committed {
			failures = 0
		}
		failures++
		if failures > maxReconnects {
			return err
		}
		ap.mu.Lock()
		ap.st.Reconnects++
		ap.mu.Unlock()
		if ap.OnRetry != nil {
			ap.OnRetry(failures, err)
		}
		if err := clock.Sleep(ctx, min(time.Duration(1<<min(failures-1, 4))*time.Second, maxBackoff)); err != nil {
			return err
		}
	}
}

// session is one target connection's apply: it says whether it committed anything.
func (ap *Applier) session(ctx context.Context) (committed bool, err error) {
	conn, err := ap.Target.ConnectSession(ctx, applySessionSQL)
	if err != nil {
		return false, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	replica := conn.PgConn().Exec(ctx, sqlReplicaRole).Close() == nil
	ap.mu.Lock()
	ap.st.ReplicaRole = replica
	ap.mu.Unlock()
	a := &applier{ap: ap, conn: conn, rels: map[uint32]*relation{}, chunkByID: map[int32]*chunkInfo{},
		chunkByName: map[Relation]*chunkInfo{}, hypertables: map[int32]hypertableInfo{}, touched: map[[3]string]string{},
		keys:    map[Relation]map[string]bool{},
		replica: replica, quieted: map[Relation][]string{}}
	defer func() { committed = a.committed }()
	if err := a.load(ctx); err != nil {
		return false, err
	}
	defer func() {
		if a.tx != nil {
			a.tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	for !a.reached {
		var received int64
		if err := conn.QueryRow(ctx, sqlReceivedSeq).Scan(&received); err != nil {
			return false, fmt.Errorf("apply: read how far changes were received: %w", err)
		}
		if received <= a.read {
			if err := a.commit(ctx); err != nil {
				return false, err
			}
			if err := clock.Sleep(ctx, idlePoll); err != nil {
				return false, err
			}
			continue
		}
		if err := a.page(ctx, received); err != nil {
			return false, err
		}
	}
	return false, a.commit(ctx)
}

// load reads the state the applier keeps in the target.
func (a *applier) load(ctx context.Context) error {
	st, err := ReadState(ctx, a.conn.Conn)
	if err != nil {
		return err
	}
	a.seq, a.read, a.lsn = st.AppliedSeq, st.AppliedSeq, st.AppliedLSN
	a.ap.mu.Lock()
	a.ap.st.AppliedLSN, a.ap.st.AppliedSeq = st.AppliedLSN, st.AppliedSeq
	if st.AppliedCommitTime != nil {
		a.ap.st.CommitTime = *st.AppliedCommitTime
	}
	a.ap.mu.Unlock()
	rows, _ := a.conn.Query(ctx, `SELECT data FROM _tsmigrate.live_relations`)
	var data []byte
	if _, err := pgx.ForEachRow(rows, []any{&data}, func() error {
		return a.relationMessage(data)
	}); err != nil {
		return fmt.Errorf("apply: read the relations kept: %w", err)
	}
	rows, _ = a.conn.Query(ctx, `SELECT id, schema_name, table_name, compressed FROM _tsmigrate.live_hypertables`)
	var id int32
	var s, n string
	var compressed bool
	if _, err := pgx.ForEachRow(rows, []any{&id, &s, &n, &compressed}, func() error {
		a.hypertables[id] = hypertableInfo{Relation{s, n}, compressed}
		return nil
	}); err != nil {
		return fmt.Errorf("apply: read the hypertables kept: %w", err)
	}
	rows, _ = a.conn.Query(ctx, `SELECT id, hypertable_id, schema_name, table_name, compressed_chunk_id FROM _tsmigrate.live_chunks`)
	var ht int32
	var cid *int32
	if _, err := pgx.ForEachRow(rows, []any{&id, &ht, &s, &n, &cid}, func() error {
		c := &chunkInfo{id: id, hypertable: ht, name: Relation{s, n}, compressedID: cid}
		a.chunkByID[id], a.chunkByName[c.name] = c, c
		return nil
	}); err != nil {
		return fmt.Errorf("apply: read the chunks kept: %w", err)
	}
	return nil
}

func (a *applier) relationMessage(data []byte) error {
	m, err := pglogrepl.Parse(data)
	if err != nil {
		return fmt.Errorf("decode a relation message: %w", err)
	}
	rm, ok := m.(*pglogrepl.RelationMessage)
	if !ok {
		return fmt.Errorf("decode a relation message: got %T", m)
	}
	a.rels[rm.RelationID] = &relation{msg: rm}
	return nil
}

// page applies the next kept messages, up to received.
func (a *applier) page(ctx context.Context, received int64) error {
	if err := a.begin(ctx); err != nil {
		return err
	}
	rows, err := a.tx.Query(ctx, sqlPage, a.read, received)
	if err != nil {
		return fmt.Errorf("apply: read the kept changes: %w", err)
	}
	type kept struct {
		seq, lsn int64
		data     []byte
	}
	var msgs []kept
	var k kept
	if _, err := pgx.ForEachRow(rows, []any{&k.seq, &k.lsn, &k.data}, func() error {
		msgs = append(msgs, kept{k.seq, k.lsn, append([]byte(nil), k.data...)})
		return nil
	}); err != nil {
		return fmt.Errorf("apply: read the kept changes: %w", err)
	}
	for _, m := range msgs {
		if err := a.begin(ctx); err != nil {
			return err
		}
		a.read = m.seq
		if err := a.message(ctx, m.seq, LSN(m.lsn), m.data); err != nil {
			var se *StopError
			if errors.As(err, &se) && se.LSN == 0 {
				se.LSN = LSN(m.lsn)
			}
			return err
		}
		if a.reached {
			return nil
		}
	}
	return nil
}

func (a *applier) begin(ctx context.Context) error {
	if a.tx != nil {
		return nil
	}
	tx, err := a.conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("apply: begin a target transaction: %w", err)
	}
	a.tx, a.txStart, a.txOps, a.txFirstSeq = tx, time.Now(), 0, a.seq
	return nil
}

// message applies one kept message, seq in the order received.
func (a *applier) message(ctx context.Context, seq int64, lsn LSN, data []byte) error {
	m, err := pglogrepl.Parse(data)
	if err != nil {
		return fmt.Errorf("apply: decode message %d: %w", seq, err)
	}
	switch m := m.(type) {
	case *pglogrepl.BeginMessage:
		a.beginTime = m.CommitTime
	case *pglogrepl.CommitMessage:
		if a.pending != nil {
			return a.pending
		}
		a.seq, a.lsn = seq, m.TransactionEndLSN
		t := m.CommitTime
		a.commitTime = &t
		a.txTransactions++
		if a.txOps >= commitOps || time.Since(a.txStart) >= commitEvery {
			return a.commit(ctx)
		}
	case *pglogrepl.RelationMessage:
		if err := a.flush(ctx); err != nil {
			return err
		}
		a.rels[m.RelationID] = &relation{msg: m}
		if _, err := a.tx.Exec(ctx, sqlKeepRel, m.RelationID, data); err != nil {
			return fmt.Errorf("apply: keep a relation: %w", err)
		}
	case *pglogrepl.InsertMessage:
		return a.change(ctx, m.RelationID, 'I', nil, m.Tuple)
	case *pglogrepl.UpdateMessage:
		old := m.OldTuple
		if m.OldTupleType == 0 {
			old = nil
		}
		return a.change(ctx, m.RelationID, 'U', old, m.NewTuple)
	case *pglogrepl.DeleteMessage:
		return a.change(ctx, m.RelationID, 'D', m.OldTuple, nil)
	case *pglogrepl.TruncateMessage:
		return a.truncate(ctx, m)
	case *pglogrepl.LogicalDecodingMessage:
		return a.logicalMessage(ctx, seq, m)
	}
	return nil
}

func (a *applier) logicalMessage(ctx context.Context, seq int64, m *pglogrepl.LogicalDecodingMessage) error {
	switch m.Prefix {
	case compressionStart, decompressionStart:
		a.section, a.sectionIns, a.sectionDels = m.Prefix, false, nil
	case compressionEnd, decompressionEnd:
		// A decompression that deleted compressed rows and put none back: TimescaleDB
		// before 2.26 marks so the deletion of whole compressed batches by a user's
		// DELETE. Whatever it was, the chunk is compared again at the cut-over.
		if a.section == decompressionStart && !a.sectionIns {
			for _, id := range a.sectionDels {
				if c := a.chunkOfCompressed(id); c != nil {
					if err := a.touch(ctx, "chunk", c.name); err != nil {
						return err
					}
				}
			}
		}
		a.section = ""
	case EndPrefix:
		if m.Transactional || string(m.Content) != a.ap.End || a.ap.End == "" {
			return nil
		}
		a.seq = seq
		a.lsn = max(a.lsn, m.LSN)
		a.reached = true
	}
	if !m.Transactional && !a.reached {
		a.seq = seq
	}
	return nil
}

// wholeUnit: a table or chunk compared whole at the cut-over (touched).
const wholeUnit = "\x00whole"

// touch records that a source table or chunk changed, for the verify at the cut-over,
// which compares it whole.
func (a *applier) touch(ctx context.Context, kind string, r Relation) error {
	k := [3]string{kind, r.Schema, r.Name}
	if a.touched[k] == wholeUnit {
		return nil
	}
	if _, err := a.tx.Exec(ctx, sqlTouch, kind, r.Schema, r.Name); err != nil {
		return fmt.Errorf("apply: record what changed: %w", err)
	}
	a.touched[k] = wholeUnit
	return nil
}

// touchRows records the rows of a plain table that an insert, update or delete
// changes, by their replica identity key (the old key and the new one of an update
// that changes it), for the verify at the cut-over, which then compares only those
// rows. A table without such a key (FULL, or a key it cannot tell: an unchanged
// TOASTed value, a type without equality) is recorded whole.
func (a *applier) touchRows(ctx context.Context, rel *relation, old, new *pglogrepl.TupleData) error {
	rk, err := rel.rowKey()
	if err != nil {
		return err
	}
	if rk.whole {
		return a.touch(ctx, "table", rel.source)
	}
	// value is tuple t's text of column i, or "" when t lacks it.
	value := func(t *pglogrepl.TupleData, i int) (string, bool) {
		if t == nil || i >= len(t.Columns) || t.Columns[i].DataType != pglogrepl.TupleDataTypeText {
			return "", false
		}
		return string(t.Columns[i].Data), true
	}
	var found [][]string
	for _, t := range []*pglogrepl.TupleData{old, new} {
		if t == nil {
			continue
		}
		key := make([]string, len(rk.idx))
		for j, i := range rk.idx {
			v, ok := value(t, i)
			if !ok && t == new {
				v, ok = value(old, i) // an unchanged TOASTed key: the old tuple holds it
			}
			if !ok {
				return a.touch(ctx, "table", rel.source)
			}
			key[j] = v
		}
		found = append(found, key)
	}
	if len(found) == 0 {
		return a.touch(ctx, "table", rel.source)
	}
	k := [3]string{"table", rel.source.Schema, rel.source.Name}
	switch a.touched[k] {
	case wholeUnit:
		return nil
	case rk.colsJSON:
	default:
		if _, err := a.tx.Exec(ctx, sqlTouchKeyed, rel.source.Schema, rel.source.Name, rk.cols); err != nil {
			return fmt.Errorf("apply: record what changed: %w", err)
		}
		a.touched[k] = rk.colsJSON
	}
	m := a.keys[rel.source]
	if m == nil {
		m = map[string]bool{}
		a.keys[rel.source] = m
	}
	for _, key := range found {
		b, err := json.Marshal(key)
		if err != nil {
			return err
		}
		m[string(b)] = true
	}
	return nil
}

// rowKey finds, once, how the rows of rel are told at the cut-over (see rowKey): by
// its replica identity key, or whole for a chunk's, FULL, without a key, or with a key
// column compared by its text.
func (rel *relation) rowKey() (*rowKey, error) {
	if rel.key != nil {
		return rel.key, nil
	}
	rk := &rowKey{whole: rel.kind != relPlain || rel.full()}
	for i, c := range rel.cols {
		if c.key {
			rk.whole = rk.whole || c.byText
			rk.cols, rk.idx = append(rk.cols, c.name), append(rk.idx, i)
		}
	}
	rk.whole = rk.whole || len(rk.cols) == 0
	b, err := json.Marshal(rk.cols)
	if err != nil {
		return nil, err
	}
	rk.colsJSON = string(b)
	rel.key = rk
	return rk, nil
}

// writeKeys writes the keys of the rows changed in the target transaction.
func (a *applier) writeKeys(ctx context.Context) error {
	for r, m := range a.keys {
		keys := "[" + strings.Join(slices.Collect(maps.Keys(m)), ",") + "]" // each a JSON array
		if _, err := a.tx.Exec(ctx, sqlTouchKeys, r.Schema, r.Name, keys); err != nil {
			return fmt.Errorf("apply: record the keys of the rows changed in %s: %w", r, err)
		}
	}
	clear(a.keys)
	return nil
}

// relation finds the relation of id, resolved.
func (a *applier) relation(ctx context.Context, id uint32) (*relation, error) {
	rel := a.rels[id]
	if rel == nil {
		return nil, fmt.Errorf("apply: a change to relation %d, which no relation message described", id)
	}
	if !rel.resolved {
		if err := a.resolve(rel); err != nil {
			return nil, err
		}
		rel.resolved = true
	}
	if rel.kind == relPlain || rel.kind == relChunk {
		if err := a.columns(ctx, a.tx, rel); err != nil {
			return nil, err
		}
	}
	return rel, nil
}

// change applies an insert ('I'), update ('U') or delete ('D').
func (a *applier) change(ctx context.Context, id uint32, op byte, old, new *pglogrepl.TupleData) error {
	rel, err := a.relation(ctx, id)
	if err != nil {
		return err
	}
	switch rel.kind {
	case relIgnore:
		return nil
	case relHypertables:
		return a.hypertableChange(rel, op, old, new)
	case relCatalog:
		t := new
		if op == 'D' {
			t = old
		}
		if t == nil {
			return fmt.Errorf("apply: a change to TimescaleDB's chunk catalog without its row")
		}
		return a.catalogChange(ctx, a.tx, rel, op, t)
	case relCompressed:
		if a.section == "" {
			return &StopError{What: fmt.Sprintf("rows of compressed chunk %s changed outside TimescaleDB's compression markers", rel.source),
				Hint: "this TimescaleDB changes compressed rows in a way tsmigrate cannot apply; migrate offline (without --live)"}
		}
		if a.section == decompressionStart && op == 'D' {
			if c := a.chunkByName[rel.source]; c != nil {
				a.sectionDels = append(a.sectionDels, c.id)
			}
		}
		return nil
	}
	if a.section != "" {
		// Rows TimescaleDB moves between a chunk and its compressed form: the
		// hypertable's rows do not change.
		if op == 'I' && rel.kind == relChunk {
			a.sectionIns = true
		}
		return nil
	}
	if rel.kind == relChunk {
		err = a.touch(ctx, "chunk", rel.source)
	} else {
		err = a.touchRows(ctx, rel, old, new)
	}
	if err != nil {
		return err
	}
	if err := a.quiet(ctx, rel.target, rel.kind == relChunk); err != nil {
		return err
	}
	a.txOps++
	a.txRows++
	if op == 'I' {
		return a.insert(ctx, rel, new)
	}
	if err := a.flushCopy(ctx); err != nil {
		return err
	}
	return a.statement(ctx, rel, op, old, new)
}

func (a *applier) truncate(ctx context.Context, m *pglogrepl.TruncateMessage) error {
	var names []string
	for _, id := range m.RelationIDs {
		rel, err := a.relation(ctx, id)
		if err != nil {
			return err
		}
		switch rel.kind {
		case relPlain:
			names = append(names, rel.target.quoted())
			if err := a.touch(ctx, "table", rel.source); err != nil {
				return err
			}
			if err := a.quiet(ctx, rel.target, false); err != nil {
				return err
			}
		case relChunk, relCompressed:
			return &StopError{What: fmt.Sprintf("chunk %s was truncated on the source during the migration (TRUNCATE of a hypertable or of a chunk)", rel.source),
				Hint: "tsmigrate does not carry a TRUNCATE of a hypertable's rows; start the migration over"}
		}
	}
	if len(names) == 0 {
		return nil
	}
	if err := a.flush(ctx); err != nil {
		return err
	}
	sql := "TRUNCATE ONLY " + strings.Join(names, ", ")
	if m.Option&2 != 0 {
		sql += " RESTART IDENTITY"
	}
	if _, err := a.tx.Exec(ctx, sql); err != nil {
		return fmt.Errorf("apply: %s: %w", sql, err)
	}
	a.txOps++
	return nil
}

// flush sends what is buffered: the rows for COPY, the queued statements.
func (a *applier) flush(ctx context.Context) error {
	if err := a.flushCopy(ctx); err != nil {
		return err
	}
	return a.flushBatch(ctx)
}

// commit ends the target transaction with the position applied.
func (a *applier) commit(ctx context.Context) error {
	if a.tx == nil {
		return nil
	}
	if err := a.flush(ctx); err != nil {
		return err
	}
	if err := a.writeKeys(ctx); err != nil {
		return err
	}
	if a.seq > a.txFirstSeq {
		if _, err := a.tx.Exec(ctx, sqlMarkApplied, a.seq, a.lsn.String(), a.commitTime); err != nil {
			return fmt.Errorf("apply: record the position applied: %w", err)
		}
		if _, err := a.tx.Exec(ctx, sqlDropApplied, a.txFirstSeq, a.seq); err != nil {
			return fmt.Errorf("apply: drop the changes applied: %w", err)
		}
	}
	if err := a.unquiet(ctx); err != nil {
		return err
	}
	if a.reached {
		// The last commit, after which the applications may write to the target:
		// on disk when it returns, whatever synchronous_commit says.
		if _, err := a.tx.Exec(ctx, sqlDurable); err != nil {
			return fmt.Errorf("apply: %w", err)
		}
	}
	if err := a.tx.Commit(ctx); err != nil {
		return fmt.Errorf("apply: commit: %w", err)
	}
	a.tx = nil
	a.committed = true
	clear(a.quieted)
	a.ap.mu.Lock()
	a.ap.st.Rows += a.txRows
	a.ap.st.Transactions += a.txTransactions
	a.txRows, a.txTransactions = 0, 0
	a.ap.st.ReachedEnd = a.reached
	a.ap.st.AppliedLSN, a.ap.st.AppliedSeq = a.lsn, a.seq
	if a.commitTime != nil {
		a.ap.st.CommitTime = *a.commitTime
	}
	a.ap.mu.Unlock()
	return nil
}

// quiet disables, in the target transaction, the user's triggers of table that would
// fire for the rows applied (the session has no replica role): the source's triggers
// fired already, and what they changed is in the stream. TimescaleDB refuses to
// disable a hypertable's triggers (2.19.3), and those of a chunk the apply creates
// would fire: a hypertable with triggers stops the apply.
func (a *applier) quiet(ctx context.Context, table Relation, hypertable bool) error {
	if a.replica {
		return nil
	}
	if _, ok := a.quieted[table]; ok {
		return nil
	}
	rows, _ := a.tx.Query(ctx, sqlOriginTriggers, table.quoted())
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("apply: read the triggers of %s on the target: %w", table, err)
	}
	if len(names) > 0 && hypertable {
		return &StopError{What: fmt.Sprintf("hypertable %s has trigger(s) %s, which would fire again on the target for the rows applied (the source's fired already, and their effects are in the changes), and the target user may not keep them from firing: session_replication_role is refused, and TimescaleDB does not disable a hypertable's triggers",
			table, strings.Join(names, ", ")),
			Hint: "run the live migration as a target user that may SET session_replication_role (a superuser, or on PostgreSQL 15+: GRANT SET ON PARAMETER session_replication_role TO <user>), or migrate without --live"}
	}
	if len(names) > 0 {
		if err := a.flush(ctx); err != nil {
			return err
		}
	}
	for _, n := range names {
		if _, err := a.tx.Exec(ctx, "ALTER TABLE "+table.quoted()+" DISABLE TRIGGER "+pgx.Identifier{n}.Sanitize()); err != nil {
			return fmt.Errorf("apply: the target's session may not keep triggers from firing (session_replication_role), and trigger %s of %s cannot be disabled for the apply: %w", n, table, err)
		}
	}
	a.quieted[table] = names
	return nil
}

// unquiet enables again, before the target transaction commits, what quiet disabled.
func (a *applier) unquiet(ctx context.Context) error {
	for table, names := range a.quieted {
		for _, n := range names {
			if _, err := a.tx.Exec(ctx, "ALTER TABLE "+table.quoted()+" ENABLE TRIGGER "+pgx.Identifier{n}.Sanitize()); err != nil {
				return fmt.Errorf("apply: enable trigger %s of %s again: %w", n, table, err)
			}
		}
	}
	return nil
}

func isUndefinedObject(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "42704" || pgErr.Code == "3F000")
}
