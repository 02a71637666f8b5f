package live

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/inventory"
	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// SQL of the set-up. Checked on PostgreSQL 15 and 17 with TimescaleDB 2.19.3.
var (
	// sqlHasTimescale: whether the database has TimescaleDB.
	sqlHasTimescale = `SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb')`

	// sqlChunkSchemas: the schemas TimescaleDB makes chunks in (compressed and
	// materialization hypertables' too), published whole so that later chunks are.
	sqlChunkSchemas = `SELECT DISTINCT associated_schema_name::text FROM _timescaledb_catalog.hypertable
UNION SELECT '_timescaledb_internal' ORDER BY 1`

	// sqlPlainTables: the user's tables that hold rows, published by name: not
	// hypertables (their rows are in chunks), not in a chunk schema (published whole),
	// not unlogged (logical decoding does not see them), not an extension's.
	// $1: the chunk schemas. relreplident and whether a primary key exists tell
	// whether UPDATE and DELETE keep working once the table is published.
	sqlPlainTables = `SELECT n.nspname::text, c.relname::text, c.relreplident::text,
	EXISTS (SELECT FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence = 'p' AND ` + sqltext.DataSchema("n.nspname") + `
	AND n.nspname <> ALL ($1::text[]) AND NOT ` + sqltext.ExtensionMember(sqltext.Catalog("pg_class"), "c.oid") + `
	AND NOT (n.nspname = '_timescaledb_catalog' OR n.nspname = '_timescaledb_config' OR n.nspname = '_timescaledb_cache')
	AND NOT ` + hypertableCond + `
ORDER BY 1, 2`

	// hypertableCond: the relation c in schema n is a hypertable (TimescaleDB 2.x).
	hypertableCond = `EXISTS (SELECT FROM _timescaledb_catalog.hypertable h WHERE h.schema_name = n.nspname AND h.table_name = c.relname)`

	// sqlHypertables: the user's hypertables and continuous aggregates'
	// materialization hypertables (not the internal compressed ones, whose rows
	// TimescaleDB moves without the executor's replica identity check), with what
	// their chunks' UPDATE and DELETE need. materialized: TimescaleDB's refresh
	// writes it.
	sqlHypertables = `SELECT h.schema_name::text, h.table_name::text, c.relreplident::text,
	EXISTS (SELECT FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
	EXISTS (SELECT FROM _timescaledb_catalog.continuous_agg a WHERE a.mat_hypertable_id = h.id)
FROM _timescaledb_catalog.hypertable h JOIN pg_namespace n ON n.nspname = h.schema_name
JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = h.table_name
WHERE h.compression_state <> 2 ORDER BY 1, 2`

	// sqlExtensionTables: TimescaleDB's own tables in the chunk schemas ($1) that
	// would refuse UPDATE and DELETE once published (2.19.3:
	// _timescaledb_internal.bgw_policy_chunk_stats, which a policy updates and a
	// dropped chunk deletes from), with a unique index on NOT NULL columns to use as
	// replica identity ("" for none: FULL).
	sqlExtensionTables = `SELECT n.nspname::text, c.relname::text, c.relreplident::text,
	coalesce((SELECT ic.relname::text FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
		WHERE i.indrelid = c.oid AND i.indisunique AND i.indimmediate AND i.indpred IS NULL AND i.indexprs IS NULL
		AND NOT EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum = ANY (i.indkey) AND NOT a.attnotnull)
		ORDER BY ic.relname LIMIT 1), '')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname = ANY ($1::text[]) AND ` + sqltext.ExtensionMember(sqltext.Catalog("pg_class"), "c.oid") + `
	AND (c.relreplident = 'n' OR c.relreplident = 'd' AND NOT EXISTS (SELECT FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
ORDER BY 1, 2`
)

// Relation is a table as the publication sees it.
type Relation struct {
	Schema, Name string
}

func (r Relation) String() string { return inventory.DisplayName(r.Schema, r.Name) }

func (r Relation) quoted() string { return pgx.Identifier{r.Schema, r.Name}.Sanitize() }

// IdentityChange is a replica identity the live migration sets on the source for its
// duration, and sets back (Drop): what the table had (Was: d, n, f, or i with Index).
type IdentityChange struct {
	Table Relation `json:"table"`
	// Kind: "table", "hypertable" (its chunks, present and future, follow it),
	// "materialization" (a continuous aggregate's, which its refresh rewrites), or
	// "timescaledb" (TimescaleDB's own table in a chunk schema).
	Kind     string `json:"kind"`
	Was      string `json:"was"`
	WasIndex string `json:"was_index,omitempty"`
	// Index: set to USING INDEX Index; "" for FULL.
	Index string `json:"index,omitempty"`
}

func (c IdentityChange) setSQL() string {
	if c.Index != "" {
		return "ALTER TABLE " + c.Table.quoted() + " REPLICA IDENTITY USING INDEX " + pgx.Identifier{c.Index}.Sanitize()
	}
	return "ALTER TABLE " + c.Table.quoted() + " REPLICA IDENTITY FULL"
}

func (c IdentityChange) resetSQL() string {
	what := map[string]string{"d": "DEFAULT", "n": "NOTHING", "f": "FULL"}[c.Was]
	if c.Was == "i" {
		what = "USING INDEX " + pgx.Identifier{c.WasIndex}.Sanitize()
	}
	return "ALTER TABLE " + c.Table.quoted() + " REPLICA IDENTITY " + what
}

// Plan is what Start publishes and which replica identities it must set.
type Plan struct {
	Timescale    bool
	ChunkSchemas []string
	Tables       []Relation // plain tables, published by name
	Hypertables  []Relation
	// Identity: the replica identities to set. Missing: the user's tables and
	// hypertables without one (no primary key, no replica identity), whose UPDATE
	// and DELETE would fail on the source once published: FULL is set on them only
	// with Options.ReplicaIdentityFull.
	Identity []IdentityChange
	Missing  []IdentityChange
}

// ReadPlan reads what a live migration of the database conn is connected to would
// publish.
func ReadPlan(ctx context.Context, conn *pgx.Conn) (*Plan, error) {
	p := &Plan{}
	if err := conn.QueryRow(ctx, sqlHasTimescale).Scan(&p.Timescale); err != nil {
		return nil, fmt.Errorf("read the source's extensions: %w", err)
	}
	if p.Timescale {
		rows, _ := conn.Query(ctx, sqlChunkSchemas)
		var err error
		if p.ChunkSchemas, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return nil, fmt.Errorf("read TimescaleDB's chunk schemas: %w", err)
		}
	}
	q := sqlPlainTables
	if !p.Timescale {
		q = strings.Replace(q, "AND NOT "+hypertableCond, "", 1)
	}
	// Not nil: a NULL array would make "<> ALL" NULL for every table, and publish none.
	rows, _ := conn.Query(ctx, q, append([]string{}, p.ChunkSchemas...))
	var s, n, ri string
	var pk, mat bool
	if _, err := pgx.ForEachRow(rows, []any{&s, &n, &ri, &pk}, func() error {
		r := Relation{s, n}
		p.Tables = append(p.Tables, r)
		if ri == "n" || ri == "d" && !pk {
			p.Missing = append(p.Missing, IdentityChange{Table: r, Kind: "table", Was: ri})
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list the tables to publish: %w", err)
	}
	if !p.Timescale {
		return p, nil
	}
	rows, _ = conn.Query(ctx, sqlHypertables)
	if _, err := pgx.ForEachRow(rows, []any{&s, &n, &ri, &pk, &mat}, func() error {
		r := Relation{s, n}
		if !mat {
			p.Hypertables = append(p.Hypertables, r)
		}
		switch {
		case !(ri == "n" || ri == "d" && !pk):
		case mat:
			p.Identity = append(p.Identity, IdentityChange{Table: r, Kind: "materialization", Was: ri})
		default:
			p.Missing = append(p.Missing, IdentityChange{Table: r, Kind: "hypertable", Was: ri})
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list the hypertables: %w", err)
	}
	var idx string
	rows, _ = conn.Query(ctx, sqlExtensionTables, p.ChunkSchemas)
	if _, err := pgx.ForEachRow(rows, []any{&s, &n, &ri, &idx}, func() error {
		p.Identity = append(p.Identity, IdentityChange{Table: Relation{s, n}, Kind: "timescaledb", Was: ri, Index: idx})
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list TimescaleDB's tables in its chunk schemas: %w", err)
	}
	return p, nil
}

// MissingIdentityError: tables whose UPDATE and DELETE would fail on the source once
// published, and Options.ReplicaIdentityFull was not given.
type MissingIdentityError struct{ Tables []IdentityChange }

func (e *MissingIdentityError) Error() string {
	var names []string
	for _, t := range e.Tables {
		names = append(names, t.Kind+" "+t.Table.String())
	}
	return fmt.Sprintf("%d table(s) have neither a primary key nor a replica identity, so their UPDATE and DELETE would fail on the source once published: %s",
		len(e.Tables), strings.Join(names, ", "))
}

// Hint says what to do.
func (e *MissingIdentityError) Hint() string {
	return "add a primary key to each, or run with --replica-identity-full (tsmigrate sets REPLICA IDENTITY FULL for the migration and puts back what was there at its end)"
}

// Options of Start.
type Options struct {
	Names Names
	// ReplicaIdentityFull sets REPLICA IDENTITY FULL on the user's tables and
	// hypertables that have no replica identity (Plan.Missing), for the migration.
	ReplicaIdentityFull bool
}

// Stream is a started live migration on the source.
type Stream struct {
	Names
	// StartLSN: the slot's consistent point; the snapshot sees every transaction
	// that committed before it, the slot streams those that commit after.
	StartLSN LSN
	// Identity: the replica identities Start set, to set back (Drop).
	Identity []IdentityChange
	Plan     *Plan

	holder   *dbconn.Conn
	snapshot string
}

// Snapshot is the ID of the slot's snapshot, re-exported by a transaction that holds
// it until Close: every read of the copy imports it.
func (s *Stream) Snapshot() string { return s.snapshot }

// Close ends the transaction that holds the snapshot; the slot and the publication
// stay.
func (s *Stream) Close(ctx context.Context) error {
	if s.holder == nil {
		return nil
	}
	s.holder.PgConn().Exec(ctx, "ROLLBACK").Close()
	err := s.holder.Close(ctx)
	s.holder = nil
	return err
}

// sqlHolder imports the slot's snapshot and exports it again. Checked on PostgreSQL 15
// and 17. The snapshot name comes from the server (CREATE_REPLICATION_SLOT).
const sqlHolderBegin = `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`

// Start publishes, sets replica identities and creates the slot (see the package
// comment). On failure, what it made is dropped again.
func Start(ctx context.Context, source *dbconn.Config, opt Options) (_ *Stream, err error) {
	if err := opt.Names.valid(); err != nil {
		return nil, err
	}
	conn, err := source.ConnectSession(ctx, dbconn.NoTimeouts+"; SET default_transaction_read_only = off")
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	plan, err := ReadPlan(ctx, conn.Conn)
	if err != nil {
		return nil, err
	}
	s := &Stream{Names: opt.Names, Plan: plan}
	defer func() {
		if err != nil {
			s.Close(context.WithoutCancel(ctx))
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			Drop(cctx, source, s.Names, s.Identity)
		}
	}()
	changes := plan.Identity
	if len(plan.Missing) > 0 {
		if !opt.ReplicaIdentityFull {
			return nil, &MissingIdentityError{Tables: plan.Missing}
		}
		changes = append(changes, plan.Missing...)
	}
	for _, c := range changes {
		if c.Was == "i" {
			if err := conn.QueryRow(ctx, sqlIdentityIndex, c.Table.quoted()).Scan(&c.WasIndex); err != nil {
				return nil, fmt.Errorf("read the replica identity index of %s: %w", c.Table, err)
			}
		}
		if _, err := conn.Exec(ctx, c.setSQL()); err != nil {
			return nil, fmt.Errorf("set the replica identity of %s %s: %w", c.Kind, c.Table, err)
		}
		s.Identity = append(s.Identity, c)
	}
	if _, err := conn.Exec(ctx, publicationSQL(s.Publication, plan)); err != nil {
		return nil, fmt.Errorf("create publication %s: %w", s.Publication, err)
	}

	repl, err := source.ConnectReplication(ctx, replicationParams)
	if err != nil {
		return nil, err
	}
	defer repl.Close(context.WithoutCancel(ctx))
	res, err := pglogrepl.CreateReplicationSlot(ctx, repl, s.Slot, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "EXPORT_SNAPSHOT"})
	if err != nil {
		return nil, fmt.Errorf("create replication slot %s: %w", s.Slot, err)
	}
	if s.StartLSN, err = pglogrepl.ParseLSN(res.ConsistentPoint); err != nil {
		return nil, fmt.Errorf("create replication slot %s: %w", s.Slot, err)
	}
	// The exported snapshot lives until the replication connection's next command:
	// a holder transaction imports it now and exports it again for the copy.
	if s.holder, err = source.ConnectSession(ctx, dbconn.NoTimeouts); err != nil {
		return nil, err
	}
	if err := s.holder.PgConn().Exec(ctx, sqlHolderBegin).Close(); err != nil {
		return nil, fmt.Errorf("hold the slot's snapshot: %w", err)
	}
	if _, err := s.holder.Exec(ctx, "SET TRANSACTION SNAPSHOT "+sqltext.Literal(res.SnapshotName)); err != nil {
		return nil, fmt.Errorf("import the slot's snapshot: %w", err)
	}
	if err := s.holder.QueryRow(ctx, `SELECT pg_export_snapshot()`).Scan(&s.snapshot); err != nil {
		return nil, fmt.Errorf("export the slot's snapshot: %w", err)
	}
	return s, nil
}

// sqlIdentityIndex names a table's replica identity index. PostgreSQL 15, 17.
const sqlIdentityIndex = `SELECT ic.relname::text FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
WHERE i.indrelid = $1::regclass AND i.indisreplident`

// publicationSQL publishes plan: the chunk schemas whole, TimescaleDB's chunk and
// hypertable catalogs and the plain tables by name.
func publicationSQL(name string, plan *Plan) string {
	var items []string
	if len(plan.ChunkSchemas) > 0 {
		var schemas []string
		for _, s := range plan.ChunkSchemas {
			schemas = append(schemas, pgx.Identifier{s}.Sanitize())
		}
		items = append(items, "TABLES IN SCHEMA "+strings.Join(schemas, ", "))
	}
	var tables []string
	if plan.Timescale {
		tables = append(tables, chunkCatalog.quoted(), hypertableCatalog.quoted())
	}
	for _, t := range plan.Tables {
		tables = append(tables, t.quoted())
	}
	if len(tables) > 0 {
		items = append(items, "TABLE "+strings.Join(tables, ", "))
	}
	if len(items) == 0 {
		return "CREATE PUBLICATION " + pgx.Identifier{name}.Sanitize()
	}
	return "CREATE PUBLICATION " + pgx.Identifier{name}.Sanitize() + " FOR " + strings.Join(items, ", ")
}

// chunkCatalog is TimescaleDB's catalog of chunks: a new chunk's row comes in the
// stream before the chunk's first row, and says which hypertable it belongs to.
var chunkCatalog = Relation{"_timescaledb_catalog", "chunk"}

// hypertableCatalog is TimescaleDB's catalog of hypertables: a row made, renamed or
// deleted is DDL on the source during the migration, which the apply stops at, naming
// the hypertable.
var hypertableCatalog = Relation{"_timescaledb_catalog", "hypertable"}

// SQL of Drop. PostgreSQL 15, 17.
const (
	sqlDropSlot = `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`
	// sqlSlotHolder: the backend streaming from the slot, if any.
	sqlSlotHolder = `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`
)

// Drop removes the slot and the publication from the source and sets back the replica
// identities that were changed. What is already gone is skipped; every step is tried
// and the errors joined. A walsender still streaming from the slot (of a run that was
// killed, before the server noticed) is ended first.
func Drop(ctx context.Context, source *dbconn.Config, names Names, identity []IdentityChange) error {
	if err := names.valid(); err != nil {
		return err
	}
	conn, err := source.ConnectSession(ctx, dbconn.NoTimeouts+"; SET default_transaction_read_only = off")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var errs []error
	for attempt := 0; ; attempt++ {
		var pid int32
		err := conn.QueryRow(ctx, sqlSlotHolder, names.Slot).Scan(&pid)
		if errors.Is(err, pgx.ErrNoRows) {
			break
		}
		if err != nil || attempt >= 20 {
			if err == nil {
				err = fmt.Errorf("backend %d still streams from it", pid)
			}
			errs = append(errs, fmt.Errorf("drop replication slot %s: %w", names.Slot, err))
			break
		}
		conn.Exec(ctx, `SELECT pg_terminate_backend($1)`, pid)
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := conn.Exec(ctx, sqlDropSlot, names.Slot); err != nil {
		errs = append(errs, fmt.Errorf("drop replication slot %s: %w", names.Slot, err))
	}
	if _, err := conn.Exec(ctx, "DROP PUBLICATION IF EXISTS "+pgx.Identifier{names.Publication}.Sanitize()); err != nil {
		errs = append(errs, fmt.Errorf("drop publication %s: %w", names.Publication, err))
	}
	for _, c := range identity {
		if _, err := conn.Exec(ctx, c.resetSQL()); err != nil && !undefinedTable(err) {
			errs = append(errs, fmt.Errorf("set back the replica identity of %s: %w", c.Table, err))
		}
	}
	if len(errs) > 0 {
		return &exit.Error{Code: exit.Failed, Err: errors.Join(errs...),
			Msg:  "cleaning up the live migration on the source failed: " + dbconn.Redact(errors.Join(errs...).Error()),
			Hint: fmt.Sprintf("on the source run: SELECT pg_drop_replication_slot(%s); DROP PUBLICATION IF EXISTS %s", sqltext.Literal(names.Slot), names.Publication)}
	}
	return nil
}

// undefinedTable: 42P01, a table dropped meanwhile.
func undefinedTable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42P01"
}
