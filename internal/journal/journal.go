// Package journal keeps the durable progress of a stream migration in the target
// database: which data units exist, which are done, and the source freeze they were
// copied under. Workers of one or several processes claim units with row locks
// (FOR UPDATE SKIP LOCKED) inside the transaction that copies the unit and marks it
// done, so a unit's rows and its done mark commit together, and a crashed worker's
// unit becomes claimable again as soon as its transaction is gone.
//
// The journal lives in schema _tsmigrate of the target; the pipeline drops it when a
// run ends well. Verification must ignore that schema. It records its Format and the
// tsmigrate version that wrote it; a journal of another format is refused, untouched.
package journal

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/tsmigrate/tsmigrate/internal/sqltext"
	"github.com/tsmigrate/tsmigrate/internal/version"
)

// Schema is the target schema that holds the journal.
const Schema = sqltext.Journal

// Format numbers the journal's shape: what its tables hold and mean. A tsmigrate reads
// and continues only journals of its own format; one that changes the shape (a column,
// a unit kind, a step) or its meaning increments it. Journals from before formats were
// recorded (no format column in run) are format 0. Format 2: units record the table
// their rows go into on the target and whether they read decompressed. Format 3:
// units.casts.
const Format = 3

// State of a unit as recorded. A pending unit whose row is locked is being copied
// (running): the lock lives in the copying transaction and ends with it, so a crashed
// worker's unit is pending again at once. Read counts the running ones.
const (
	Pending = "pending"
	Done    = "done"
)

// Phases order the units: config tables first (all in one transaction, in foreign-key
// order), then data (tables, chunks, ranges, sequences, large objects) in parallel.
const (
	PhaseConfig = 0
	PhaseData   = 1
)

// Kind says how a unit is copied.
type Kind string

const (
	KindConfig       Kind = "config"        // extension configuration table, rows its dump condition keeps
	KindConfigSeq    Kind = "config-seq"    // an extension configuration sequence's value
	KindTable        Kind = "table"         // a whole table or chunk: TRUNCATE + COPY FREEZE
	KindRange        Kind = "range"         // ctid page range of a big table: COPY, no truncate
	KindSequences    Kind = "sequences"     // every dumped sequence's value
	KindLargeObjects Kind = "large-objects" // every large object's contents
	KindIndexes      Kind = "indexes"       // a ranged table's own indexes and constraints (PostSQL), once its ranges are done
)

// Unit is one piece of work whose rows are copied in one target transaction.
type Unit struct {
	ID      string
	Phase   int
	Ord     int // order inside the phase (foreign-key order of config tables)
	Kind    Kind
	Schema  string
	Table   string
	Parent  string   // for a chunk, its hypertable (schema.table as displayed); else ""
	Columns []string // copied columns, in order; empty for non-table units
	// Casts are the casts the source reads each column through ("text", "text[]"),
	// "" for none; empty when no column has one.
	Casts     []string
	Binary    bool   // COPY in binary format (every column's type has a usable binary form)
	Condition string // extension config dump condition ("WHERE ...") or ""
	PageLo    int64  // ctid range [PageLo, PageHi) in pages; PageHi < 0 means to the end
	PageHi    int64
	Filenode  int64 // of a range's table at planning: ranges of ctids hold only while it is the same
	EstBytes  int64 // size on the source, for ordering and progress
	EstRows   int64
	// PostSQL runs in the unit's transaction once its rows are in (a whole table or
	// chunk), or once all its ranges are (an indexes unit): the table's own indexes
	// and constraints, so that the unit's done mark stands for them too.
	PostSQL string
	// TargetSchema and TargetTable name the table the rows go into on the target when
	// it is not Schema.Table: a chunk that TimescaleDB made under another name (a
	// restore through its API), or the hypertable, which routes them into chunks.
	TargetSchema, TargetTable string
	// Decompress reads the table through TimescaleDB (SELECT, not COPY of the table):
	// a compressed chunk, whose rows are not in its own heap, read decompressed.
	Decompress bool
	State      string
	Rows       int64
	Bytes      int64
}

// Run is what the journal says about the migration as a whole.
type Run struct {
	FreezeID string
	// Baseline is the source freeze's baseline of its write counters, as recorded by
	// RecordBaseline (freeze.PendingProof.Encode); nil when none was recorded.
	Baseline []byte
	Planned  bool
	Units    int
	Done     int
	Running  int // pending units a worker holds right now
}

// SQL of the journal. Checked on PostgreSQL 15 and 17.
const (
	// setupLock serialises journal creation and planning between processes.
	setupLock = `SELECT pg_advisory_xact_lock(hashtext('_tsmigrate.journal'))`

	createSQL = `
CREATE SCHEMA IF NOT EXISTS _tsmigrate;
CREATE TABLE IF NOT EXISTS _tsmigrate.run (
	one        boolean PRIMARY KEY DEFAULT true CHECK (one),
	format     int NOT NULL,
	tsmigrate_version text NOT NULL,
	freeze_id  text NOT NULL,
	freeze_baseline jsonb,
	planned    boolean NOT NULL DEFAULT false,
	created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS _tsmigrate.units (
	id         text PRIMARY KEY,
	phase      int NOT NULL,
	ord        int NOT NULL,
	kind       text NOT NULL,
	schema_name text NOT NULL,
	table_name  text NOT NULL,
	parent     text NOT NULL,
	columns    text[] NOT NULL,
	is_binary  boolean NOT NULL,
	condition  text NOT NULL,
	page_lo    bigint NOT NULL,
	page_hi    bigint NOT NULL,
	filenode   bigint NOT NULL,
	est_bytes  bigint NOT NULL,
	est_rows   bigint NOT NULL,
	post_sql   text NOT NULL DEFAULT '',
	target_schema text NOT NULL DEFAULT '',
	target_table  text NOT NULL DEFAULT '',
	decompress boolean NOT NULL DEFAULT false,
	casts      text[] NOT NULL DEFAULT '{}',
	state      text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done')),
	rows       bigint,
	bytes      bigint,
	done_at    timestamptz
);
-- Claims take the largest pending unit: an index keeps that cheap with 100 000 chunks.
CREATE INDEX IF NOT EXISTS units_pending ON _tsmigrate.units (phase, est_bytes DESC, id) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS _tsmigrate.steps (
	name    text PRIMARY KEY,
	done_at timestamptz NOT NULL DEFAULT now()
)`

	unitCols = `id, phase, ord, kind, schema_name, table_name, parent, columns, is_binary, condition,
	page_lo, page_hi, filenode, est_bytes, est_rows, post_sql, target_schema, target_table, decompress, casts,
	state, coalesce(rows, 0), coalesce(bytes, 0)`

	// claimSQL takes the largest pending unit of a phase (%d) that nobody holds, an
	// indexes unit only once every range of its table is done. The lock lasts as long
	// as the caller's transaction, which copies the unit.
	claimSQL = `SELECT ` + unitCols + ` FROM _tsmigrate.units u
WHERE state = 'pending' AND phase = %d
  AND (kind <> 'indexes' OR NOT EXISTS (SELECT FROM _tsmigrate.units r
    WHERE r.kind = 'range' AND r.state = 'pending' AND r.schema_name = u.schema_name AND r.table_name = u.table_name))
ORDER BY est_bytes DESC, id
LIMIT 1 FOR UPDATE SKIP LOCKED`

	// claimBatchSQL takes the largest pending unit of a phase (%[1]d) that nobody holds,
	// as claimSQL does, and when that one is a table (or chunk) of fewer than %[2]d
	// bytes, up to %[3]d of those in all, the largest first: the rest of the units
	// nobody holds are as small or smaller, so that each copies more small units at
	// once, and a big one alone. A unit read decompressed is not small: its size is
	// that of its heap, not of its rows. The LIMIT stops the scan at the first unit
	// when it is big.
	claimBatchSQL = `WITH first AS MATERIALIZED (
	SELECT u.id, u.kind = 'table' AND u.est_bytes < %[2]d AND NOT u.decompress AS small FROM _tsmigrate.units u
	WHERE state = 'pending' AND phase = %[1]d
	  AND (kind <> 'indexes' OR NOT EXISTS (SELECT FROM _tsmigrate.units r
	    WHERE r.kind = 'range' AND r.state = 'pending' AND r.schema_name = u.schema_name AND r.table_name = u.table_name))
	ORDER BY est_bytes DESC, id
	LIMIT 1 FOR UPDATE SKIP LOCKED)
SELECT ` + unitCols + ` FROM _tsmigrate.units u
WHERE state = 'pending' AND phase = %[1]d
  AND (id = (SELECT id FROM first) OR (SELECT small FROM first) AND kind = 'table' AND est_bytes < %[2]d AND NOT decompress)
ORDER BY est_bytes DESC, id
LIMIT (CASE WHEN (SELECT small FROM first) THEN %[3]d ELSE 1 END) FOR UPDATE SKIP LOCKED`

	// claimIDSQL takes unit %s (a literal) when it is pending and nobody holds it.
	claimIDSQL = `SELECT ` + unitCols + ` FROM _tsmigrate.units
WHERE state = 'pending' AND id = %s
FOR UPDATE SKIP LOCKED`

	// lockPhaseSQL takes every pending unit of a phase, waiting for other holders.
	lockPhaseSQL = `SELECT ` + unitCols + ` FROM _tsmigrate.units
WHERE state = 'pending' AND phase = $1
ORDER BY ord, id
FOR UPDATE`

	// idleSQL counts the pending units nobody holds: KEY SHARE conflicts with the
	// claims' FOR UPDATE, so held rows are skipped. Its own brief lock may make a
	// claim skip a row for that instant; the claimer then takes another or waits.
	idleSQL = `SELECT count(*) FROM (SELECT FROM _tsmigrate.units WHERE state = 'pending' FOR KEY SHARE SKIP LOCKED) idle`

	doneSQL = `UPDATE _tsmigrate.units SET state = 'done', rows = $2, bytes = $3, done_at = now() WHERE id = $1`
	// doneTextSQL is doneSQL with its values written in: %s the id (a literal), %d the rows and bytes.
	doneTextSQL = `UPDATE _tsmigrate.units SET state = 'done', rows = %[2]d, bytes = %[3]d, done_at = now() WHERE id = %[1]s`

	// formatSQL reads who wrote the journal. Every format keeps these two columns of
	// run, so that any tsmigrate can say which one wrote a journal it cannot continue.
	formatSQL = `SELECT format, tsmigrate_version FROM _tsmigrate.run`
)

// ErrNoJournal is returned by Read when the target holds no journal.
var ErrNoJournal = errors.New("no journal on the target")

// FormatError is returned by Read and Open when the target holds a journal of another
// format than Format, which this tsmigrate cannot continue (nor change).
type FormatError struct {
	Format  int    // the journal's; 0 for journals from before formats were recorded
	Version string // the tsmigrate that wrote it ("" for format 0)
}

func (e *FormatError) Error() string {
	who := "a tsmigrate from before journals recorded their format"
	if e.Format > 0 {
		who = fmt.Sprintf("tsmigrate %s (journal format %d)", e.Version, e.Format)
	}
	return fmt.Sprintf("its migration journal was written by %s, and this tsmigrate (%s) continues journals of format %d only",
		who, version.Get(), Format)
}

// readFormat says whether the target holds a journal this tsmigrate can continue: nil,
// ErrNoJournal or a *FormatError. It reads under a savepoint, so that tx goes on when
// there is no journal.
func readFormat(ctx context.Context, tx pgx.Tx) error {
	var f FormatError
	err := pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error {
		return sp.QueryRow(ctx, formatSQL).Scan(&f.Format, &f.Version)
	})
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000") || errors.Is(err, pgx.ErrNoRows):
		// undefined_table, invalid_schema_name (PostgreSQL 15, 17)
		return ErrNoJournal
	case errors.As(err, &pgErr) && pgErr.Code == "42703": // undefined_column: format 0
		return &FormatError{}
	case err != nil:
		return err
	case f.Format != Format:
		return &f
	}
	return nil
}

// Open creates the journal on the target if it is missing and records freezeID, this
// format and this tsmigrate's version; an existing journal of this format is left as
// it is, one of another format is left untouched and refused (*FormatError). It
// returns what the journal says; the caller compares Run.FreezeID with its own to
// decide whether a resume is safe.
func Open(ctx context.Context, conn *pgx.Conn, freezeID string) (*Run, error) {
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, setupLock); err != nil {
			return err
		}
		if err := readFormat(ctx, tx); !errors.Is(err, ErrNoJournal) {
			return err
		}
		if _, err := tx.Exec(ctx, createSQL); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO _tsmigrate.run (format, tsmigrate_version, freeze_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
			Format, version.Get().String(), freezeID)
		return err
	})
	var fe *FormatError
	if errors.As(err, &fe) {
		return nil, fe
	}
	if err != nil {
		return nil, fmt.Errorf("open journal on target: %w", err)
	}
	return Read(ctx, conn)
}

// Read says what the journal on the target holds, or ErrNoJournal, or a *FormatError
// for a journal of another format.
func Read(ctx context.Context, conn *pgx.Conn) (*Run, error) {
	var r Run
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if err := readFormat(ctx, tx); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, `SELECT r.freeze_id, r.freeze_baseline, r.planned,
	(SELECT count(*) FROM _tsmigrate.units), (SELECT count(*) FROM _tsmigrate.units WHERE state = 'done')
FROM _tsmigrate.run r`).Scan(&r.FreezeID, &r.Baseline, &r.Planned, &r.Units, &r.Done)
		if err != nil {
			return err
		}
		var idle int
		if err := tx.QueryRow(ctx, idleSQL).Scan(&idle); err != nil {
			return err
		}
		r.Running = r.Units - r.Done - idle
		return nil
	})
	var fe *FormatError
	switch {
	case errors.Is(err, ErrNoJournal):
		return nil, ErrNoJournal
	case errors.As(err, &fe):
		return nil, fe
	case err != nil:
		return nil, fmt.Errorf("read journal on target: %w", err)
	}
	return &r, nil
}

// RecordBaseline stores the baseline of the source freeze freezeID with the run, so
// that a process resuming the migration can finish that freeze's proof.
func RecordBaseline(ctx context.Context, conn *pgx.Conn, freezeID string, baseline []byte) error {
	tag, err := conn.Exec(ctx, `UPDATE _tsmigrate.run SET freeze_baseline = $2::jsonb WHERE freeze_id = $1`, freezeID, string(baseline))
	if err == nil && tag.RowsAffected() != 1 {
		err = fmt.Errorf("the journal is not of freeze %s", freezeID)
	}
	if err != nil {
		return fmt.Errorf("record the freeze's baseline in the journal: %w", err)
	}
	return nil
}

// Plan records units unless a plan is already recorded (by this process earlier or by
// another one); either way it returns the recorded units. plan is called only when no
// plan exists, under a lock, so that two processes starting together plan once.
func Plan(ctx context.Context, conn *pgx.Conn, plan func() ([]Unit, error)) ([]Unit, error) {
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, setupLock); err != nil {
			return err
		}
		var planned bool
		if err := tx.QueryRow(ctx, `SELECT planned FROM _tsmigrate.run`).Scan(&planned); err != nil {
			return err
		}
		if planned {
			return nil
		}
		units, err := plan()
		if err != nil {
			return err
		}
		rows := make([][]any, len(units))
		for i, u := range units {
			cols := u.Columns
			if cols == nil {
				cols = []string{}
			}
			casts := u.Casts
			if casts == nil {
				casts = []string{}
			}
			rows[i] = []any{u.ID, u.Phase, u.Ord, string(u.Kind), u.Schema, u.Table, u.Parent, cols, u.Binary,
				u.Condition, u.PageLo, u.PageHi, u.Filenode, u.EstBytes, u.EstRows, u.PostSQL, u.TargetSchema, u.TargetTable, u.Decompress, casts}
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{Schema, "units"},
			[]string{"id", "phase", "ord", "kind", "schema_name", "table_name", "parent", "columns", "is_binary",
				"condition", "page_lo", "page_hi", "filenode", "est_bytes", "est_rows", "post_sql",
				"target_schema", "target_table", "decompress", "casts"},
			pgx.CopyFromRows(rows)); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE _tsmigrate.run SET planned = true`)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("record plan in journal: %w", err)
	}
	return Units(ctx, conn)
}

// Units lists every recorded unit.
func Units(ctx context.Context, conn *pgx.Conn) ([]Unit, error) {
	rows, err := conn.Query(ctx, `SELECT `+unitCols+` FROM _tsmigrate.units ORDER BY phase, ord, est_bytes DESC, id`)
	if err != nil {
		return nil, fmt.Errorf("list journal units: %w", err)
	}
	us, err := pgx.CollectRows(rows, scanUnit)
	if err != nil {
		return nil, fmt.Errorf("list journal units: %w", err)
	}
	return us, nil
}

func scanUnit(row pgx.CollectableRow) (Unit, error) {
	var u Unit
	var kind string
	err := row.Scan(unitDest(&u, &kind)...)
	u.Kind = Kind(kind)
	return u, err
}

// unitDest are the destinations of unitCols in u (the kind in kind).
func unitDest(u *Unit, kind *string) []any {
	return []any{&u.ID, &u.Phase, &u.Ord, kind, &u.Schema, &u.Table, &u.Parent, &u.Columns, &u.Binary, &u.Condition,
		&u.PageLo, &u.PageHi, &u.Filenode, &u.EstBytes, &u.EstRows, &u.PostSQL, &u.TargetSchema, &u.TargetTable, &u.Decompress, &u.Casts,
		&u.State, &u.Rows, &u.Bytes}
}

// ClaimSQL is the query that locks the largest pending unit of phase that no other
// transaction holds, or the unit id when id is not empty, with its values written in:
// to send in a transaction, with other statements in one simple-protocol query (a
// unit's last statements and the claim of the next go in one round trip). The lock
// ends with the transaction: commit after DoneSQL, or roll back to hand the unit back.
// Claimed reads its result.
func ClaimSQL(phase int, id string) string {
	if id != "" {
		return fmt.Sprintf(claimIDSQL, sqltext.Literal(id))
	}
	return fmt.Sprintf(claimSQL, phase)
}

// ClaimBatchSQL is ClaimSQL for several units at once: the largest pending unit of
// phase that no other transaction holds, and when it is a table or chunk of fewer
// than small bytes (not read decompressed), up to limit such small units in all
// (largest first), so that they are copied in one transaction. Claimed reads its
// result.
func ClaimBatchSQL(phase int, small int64, limit int) string {
	return fmt.Sprintf(claimBatchSQL, phase, small, max(limit, 1))
}

// Claimed reads the units a ClaimSQL or ClaimBatchSQL query locked from its result
// (text or binary values, decoded with m), in its order; none when it locked none.
func Claimed(m *pgtype.Map, r *pgconn.Result) ([]Unit, error) {
	if r.Err != nil {
		return nil, fmt.Errorf("claim unit: %w", r.Err)
	}
	us := make([]Unit, len(r.Rows))
	for j, row := range r.Rows {
		u := &us[j]
		var kind string
		dest := unitDest(u, &kind)
		if len(r.FieldDescriptions) != len(dest) || len(row) != len(dest) {
			return nil, fmt.Errorf("claim unit: %d columns, want %d", len(row), len(dest))
		}
		for i, fd := range r.FieldDescriptions {
			if err := m.Scan(fd.DataTypeOID, fd.Format, row[i], dest[i]); err != nil {
				return nil, fmt.Errorf("claim unit: column %s: %w", fd.Name, err)
			}
		}
		u.Kind = Kind(kind)
	}
	return us, nil
}

// DoneSQL is MarkDone's statement with its values written in, to send with other
// statements in one simple-protocol query.
func DoneSQL(id string, rows, bytes int64) string {
	return fmt.Sprintf(doneTextSQL, sqltext.Literal(id), rows, bytes)
}

// LockPhase locks every pending unit of phase, waiting for any other transaction
// that holds one, and returns them in order. Used for the config tables, which go in
// one transaction.
func LockPhase(ctx context.Context, tx pgx.Tx, phase int) ([]Unit, error) {
	rows, err := tx.Query(ctx, lockPhaseSQL, phase)
	if err != nil {
		return nil, fmt.Errorf("lock units: %w", err)
	}
	us, err := pgx.CollectRows(rows, scanUnit)
	if err != nil {
		return nil, fmt.Errorf("lock units: %w", err)
	}
	return us, nil
}

// MarkDone records unit id as done with its counts, in tx (the copying transaction).
func MarkDone(ctx context.Context, tx pgx.Tx, id string, rows, bytes int64) error {
	if _, err := tx.Exec(ctx, doneSQL, id, rows, bytes); err != nil {
		return fmt.Errorf("mark unit %s done: %w", id, err)
	}
	return nil
}

// CountPending counts units not yet done, locked or not.
func CountPending(ctx context.Context, conn *pgx.Conn) (int, error) {
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM _tsmigrate.units WHERE state = 'pending'`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count pending units: %w", err)
	}
	return n, nil
}

// StepDone says whether the pipeline recorded step name as done.
func StepDone(ctx context.Context, conn *pgx.Conn, name string) (bool, error) {
	var ok bool
	err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM _tsmigrate.steps WHERE name = $1)`, name).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("read journal step %s: %w", name, err)
	}
	return ok, nil
}

// MarkStep records that the pipeline finished step name.
func MarkStep(ctx context.Context, conn *pgx.Conn, name string) error {
	if _, err := conn.Exec(ctx, `INSERT INTO _tsmigrate.steps (name) VALUES ($1) ON CONFLICT DO NOTHING`, name); err != nil {
		return fmt.Errorf("record journal step %s: %w", name, err)
	}
	return nil
}

// Drop removes the journal from the target (after a run that ended well).
func Drop(ctx context.Context, conn *pgx.Conn) error {
	if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS _tsmigrate CASCADE`); err != nil {
		return fmt.Errorf("drop journal: %w", err)
	}
	return nil
}
