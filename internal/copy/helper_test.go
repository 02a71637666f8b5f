package copy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/pgtools"
	"github.com/tsmigrate/tsmigrate/internal/schema"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		childMain()
		return
	}
	testenv.Main(m)
}

// fixture holds the shapes that break naive copies: hypertables with many chunks,
// integer time with a space dimension, foreign keys, a table big enough to split,
// partitions, an unlogged table, a generated column, an array of an enum (no safe
// binary form between servers), a table without columns, mixed-case, spaced and
// non-ASCII names, sequences and large objects.
var fixture = []string{
	`CREATE TYPE mood AS ENUM ('ok', 'sad', 'happy')`,
	`CREATE TABLE devices (id int PRIMARY KEY, name text NOT NULL)`,
	`INSERT INTO devices SELECT g, 'device ' || g FROM generate_series(1, 200) g`,
	`CREATE TABLE metrics (ts timestamptz NOT NULL, device int REFERENCES devices, v double precision, tags jsonb)`,
	`SELECT create_hypertable('metrics', 'ts', chunk_time_interval => interval '1 day')`,
	`INSERT INTO metrics SELECT '2024-01-01'::timestamptz + g * interval '1 minute', g % 200 + 1, g * 0.5,
		jsonb_build_object('k', g) FROM generate_series(1, 30 * 1440) g`,
	`CREATE TABLE counters (t bigint NOT NULL, dev int NOT NULL, n int)`,
	`SELECT create_hypertable('counters', 't', chunk_time_interval => 1000)`,
	`SELECT add_dimension('counters', 'dev', number_partitions => 4)`,
	`INSERT INTO counters SELECT g, g % 10, g FROM generate_series(1, 10000) g`,
	`CREATE TABLE orders (id bigserial PRIMARY KEY, device int REFERENCES devices, amount numeric,
		moods mood[], status mood, total numeric GENERATED ALWAYS AS (amount * 2) STORED)`,
	`INSERT INTO orders (device, amount, moods, status) SELECT g % 200 + 1, g / 7.0, ARRAY['ok', 'happy']::mood[], 'sad'
		FROM generate_series(1, 20000) g`,
	`CREATE TABLE big (id bigserial PRIMARY KEY, payload text)`,
	`INSERT INTO big (payload) SELECT repeat(md5(g::text), 4) FROM generate_series(1, 60000) g`,
	`CREATE TABLE parted (k int, v text) PARTITION BY RANGE (k)`,
	`CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (1000)`,
	`CREATE TABLE parted_2 PARTITION OF parted FOR VALUES FROM (1000) TO (2000)`,
	`INSERT INTO parted SELECT g, 'v' || g FROM generate_series(0, 1999) g`,
	`CREATE UNLOGGED TABLE scratch (id int, note text)`,
	`INSERT INTO scratch SELECT g, 'n' || g FROM generate_series(1, 100) g`,
	`CREATE TABLE nocols ()`,
	`INSERT INTO nocols SELECT FROM generate_series(1, 3)`,
	`CREATE SCHEMA "Other Schema"`,
	`CREATE TABLE "Other Schema"."Odd Name" ("Id" int, "välue" text)`,
	`INSERT INTO "Other Schema"."Odd Name" SELECT g, 'ü' || g FROM generate_series(1, 50) g`,
	`CREATE SEQUENCE ticket START 100`,
	`SELECT setval('ticket', 4242)`,
	`SELECT lo_from_bytea(0, convert_to(repeat('large object ', 50000), 'UTF8'))`,
	`SELECT lo_from_bytea(0, '\x00ff00'::bytea)`,
}

type pair struct {
	srv      *testenv.Server
	src, dst string
	tools    *pgtools.Tools
	archive  string // the source's schema (pre-data and post-data)
}

func (p pair) source(t *testing.T) *dbconn.Config {
	return mustParse(t, "source", p.srv.SuperURI(p.src))
}
func (p pair) target(t *testing.T) *dbconn.Config {
	return mustParse(t, "target", p.srv.SuperURI(p.dst))
}

func mustParse(t *testing.T, role, uri string) *dbconn.Config {
	t.Helper()
	c, err := dbconn.Parse(role, uri)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newPair makes a source with the fixture (plus extra SQL) and a target holding its
// pre-data schema in TimescaleDB restore mode, as the pipeline leaves it.
func newPair(t *testing.T, extra ...string) pair {
	t.Helper()
	return newPairOn(t, testenv.Shared(t, testenv.PG17TS), extra...)
}

// newPairOn is newPair on a server of the test's choice.
func newPairOn(t *testing.T, srv *testenv.Server, extra ...string) pair {
	t.Helper()
	return newPairOf(t, srv, append(append([]string{}, fixture...), extra...)...)
}

// newPairOf is newPairOn with a source made by sql alone, without the fixture.
func newPairOf(t *testing.T, srv *testenv.Server, sql ...string) pair {
	t.Helper()
	ctx := context.Background()
	p := pair{srv: srv, src: testenv.NewDB(t, srv, true), dst: testenv.NewDB(t, srv, true),
		archive: filepath.Join(t.TempDir(), "schema.dump")}
	testenv.MustExec(t, srv, p.src, sql...)
	var err error
	if p.tools, err = pgtools.Find(ctx, pgtools.Options{PgBin: srv.ClientBin(), SourceMajor: srv.Major, TargetMajor: srv.Major}); err != nil {
		t.Fatal(err)
	}
	if _, err := schema.DumpSchema(ctx, p.tools, p.source(t), p.archive, nil); err != nil {
		t.Fatal(err)
	}
	p.onTarget(t, schema.PreRestore)
	if _, err := schema.RestoreSection(ctx, p.tools, p.target(t), p.archive, schema.PreData, 1, nil, nil); err != nil {
		t.Fatal(err)
	}
	return p
}

// finish restores post-data and ends restore mode on the target.
func (p pair) finish(t *testing.T) {
	t.Helper()
	if _, err := schema.RestoreSection(context.Background(), p.tools, p.target(t), p.archive, schema.PostData, 2, nil, nil); err != nil {
		t.Fatal(err)
	}
	p.onTarget(t, schema.PostRestore)
}

// dbConn opens a superuser connection to db, closed when the test ends.
func dbConn(t *testing.T, srv *testenv.Server, db string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), srv.SuperURI(db))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func (p pair) onTarget(t *testing.T, f func(context.Context, *pgx.Conn) error) {
	t.Helper()
	if err := f(context.Background(), dbConn(t, p.srv, p.dst)); err != nil {
		t.Fatal(err)
	}
}

// Content checks what a user would: each table's row count and checksum (chunks one
// by one and hypertables whole), chunks per hypertable, sequences, large objects.
const (
	// Tables pg_dump dumps: not extension members, or extension configuration tables
	// (TimescaleDB's catalog: hypertables, chunks, slices, ...), but not metadata,
	// whose install_timestamp is each server's own.
	dumped = `(NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
	OR c.oid IN (SELECT unnest(extconfig) FROM pg_extension)) AND c.oid <> '_timescaledb_catalog.metadata'::regclass`
	// The full build's internal compressed hypertables hold no rows of their own and
	// cannot be read whole (TimescaleDB 2.19.3: "chunk ... has no dimension slices"):
	// their chunks are compared one by one.
	tablesCheckSQL = `SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('information_schema', '_tsmigrate') AND n.nspname NOT LIKE 'pg\_%'
	AND ` + dumped + ` AND (n.nspname, c.relname) NOT IN (SELECT schema_name, table_name FROM _timescaledb_catalog.hypertable WHERE compression_state = 2)
ORDER BY 1`
	sequencesCheckSQL = `SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'S' AND ` + dumped + ` ORDER BY 1`
)

func content(t *testing.T, srv *testenv.Server, db string) map[string]string {
	t.Helper()
	ctx := context.Background()
	conn := dbConn(t, srv, db)
	out := map[string]string{}
	rows, _ := conn.Query(ctx, tablesCheckSQL)
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	for _, tbl := range tables {
		var n int64
		var sum *string
		if err := conn.QueryRow(ctx, `SELECT count(*), md5(string_agg(t::text, ',' ORDER BY t::text)) FROM `+tbl+` t`).Scan(&n, &sum); err != nil {
			t.Fatal(err)
		}
		out["table "+tbl] = fmt.Sprintf("%d rows %v", n, deref(sum))
	}
	rows, _ = conn.Query(ctx, `SELECT format('%I.%I', hypertable_schema, hypertable_name), num_chunks FROM timescaledb_information.hypertables`)
	for rows.Next() {
		var h string
		var n int
		rows.Scan(&h, &n)
		out["chunks of "+h] = fmt.Sprint(n)
	}
	rows, _ = conn.Query(ctx, sequencesCheckSQL)
	seqs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range seqs {
		var last int64
		var called bool
		conn.QueryRow(ctx, `SELECT last_value, is_called FROM `+s).Scan(&last, &called)
		out["sequence "+s] = fmt.Sprint(last, called)
	}
	rows, _ = conn.Query(ctx, `SELECT oid::text, md5(lo_get(oid)) FROM pg_largeobject_metadata ORDER BY oid`)
	for rows.Next() {
		var oid, sum string
		rows.Scan(&oid, &sum)
		out["large object "+oid] = sum
	}
	return out
}

func deref(s *string) string {
	if s == nil {
		return "-"
	}
	return *s
}

// assertEqual compares source and target after finish.
func (p pair) assertEqual(t *testing.T) {
	t.Helper()
	want, got := content(t, p.srv, p.src), content(t, p.srv, p.dst)
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: source %s, target %s", k, w, got[k])
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: on the target only", k)
		}
	}
	for _, k := range []string{"table _timescaledb_catalog.chunk", "table _timescaledb_catalog.dimension_slice",
		"sequence _timescaledb_catalog.chunk_id_seq", "sequence public.ticket", "table public.nocols",
		`table "Other Schema"."Odd Name"`, "chunks of public.counters"} {
		if _, ok := want[k]; !ok {
			t.Errorf("%s not compared", k)
		}
	}
}
