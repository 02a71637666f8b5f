package tsapi_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/testenv"
	"github.com/tsmigrate/tsmigrate/internal/tsapi"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func execAll(t *testing.T, c *pgx.Conn, sql ...string) {
	t.Helper()
	for _, q := range sql {
		if _, err := c.Exec(context.Background(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// tables are the source's tables before they become hypertables: the target's pre-data.
var tables = []string{
	`CREATE TABLE metrics (t timestamptz NOT NULL, device_id int NOT NULL, v float8)`,
	`CREATE TABLE ticks (n bigint NOT NULL, v int)`,
	`CREATE FUNCTION ticks_now() RETURNS bigint LANGUAGE sql STABLE AS 'SELECT 1000::bigint'`,
	`CREATE TABLE two (t timestamptz NOT NULL, v int NOT NULL CHECK (v >= 0))`,
	`CREATE TABLE days (d date NOT NULL, v int)`,
	`CREATE TABLE parts (t timestamptz NOT NULL, d int NOT NULL, v int)`,
}

// hypertables makes the source's hypertables and rows: a space dimension (metrics),
// integer time with an integer_now function (ticks), chunks made under two intervals
// (two: 1-day chunks, then 7-day chunks, the first of which TimescaleDB cut short where
// the 1-day chunks end), date time and an empty chunk (days), and chunks made under two
// numbers of partitions, those of one partition emptied (parts).
var hypertables = []string{
	`SELECT create_hypertable('metrics', 't', chunk_time_interval => interval '1 day')`,
	`SELECT add_dimension('metrics', 'device_id', number_partitions => 3)`,
	`INSERT INTO metrics SELECT '2025-03-01'::timestamptz + g * interval '10 minutes', 1 + g % 20, g / 7.0 FROM generate_series(1, 1000) g`,
	`SELECT create_hypertable('ticks', 'n', chunk_time_interval => 100)`,
	`SELECT set_integer_now_func('ticks', 'ticks_now')`,
	`INSERT INTO ticks SELECT g, g FROM generate_series(-150, 420) g`,
	`SELECT create_hypertable('two', 't', chunk_time_interval => interval '1 day')`,
	`INSERT INTO two SELECT '2025-01-01'::timestamptz + g * interval '1 hour', g FROM generate_series(0, 4*24 - 1) g`,
	`SELECT set_chunk_time_interval('two', interval '7 days')`,
	`INSERT INTO two SELECT '2025-01-05'::timestamptz + g * interval '1 hour', g FROM generate_series(0, 20*24) g`,
	`SELECT create_hypertable('days', 'd', chunk_time_interval => interval '10 days')`,
	`INSERT INTO days SELECT '2025-01-01'::date + g, g FROM generate_series(0, 40) g`,
	`DELETE FROM days WHERE d >= '2025-01-12' AND d < '2025-01-22'`,
	`SELECT create_hypertable('parts', 't', chunk_time_interval => interval '1 day')`,
	`SELECT add_dimension('parts', 'd', number_partitions => 2)`,
	`INSERT INTO parts SELECT '2025-01-01'::timestamptz + g * interval '1 hour', g % 7, g FROM generate_series(0, 47) g`,
	`SELECT set_number_partitions('parts', 3, 'd')`,
	`INSERT INTO parts SELECT '2025-01-03'::timestamptz + g * interval '1 hour', g % 7, g FROM generate_series(0, 47) g`,
	`DELETE FROM parts WHERE t >= '2025-01-03' AND _timescaledb_functions.get_partition_hash(d) >= 1431655764`,
}

// On the Apache build, as a database owner that is no superuser: every chunk of the
// source is made on the target with the same slices (the cut 7-day chunk and the empty
// one included), the chunk intervals end as the source's, a second run makes nothing,
// and the owner can insert rows in a new time range afterwards (a new chunk appears).
func TestRestoreApacheBareOwner(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	testRestore(t, srv)
}

// The same on the full build, where create_chunk makes each chunk.
func TestRestoreFullBuildBareOwner(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TSL)
	testRestore(t, srv)
}

func testRestore(t *testing.T, srv *testenv.Server) {
	ctx := context.Background()
	src := testenv.NewDB(t, srv, true)
	testenv.MustExec(t, srv, src, tables...)
	testenv.MustExec(t, srv, src, hypertables...)
	dst, dstURI := testenv.NewOwnerDB(t, srv)
	owner := testenv.Connect(t, dstURI)
	execAll(t, owner, tables...)

	s := testenv.Connect(t, srv.SuperURI(src))
	source, err := tsapi.ReadLayout(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	var cut bool
	for _, c := range source.ChunksOf(tsapi.Name{Schema: "public", Name: "two"}) {
		if w := c.Slices[0].End - c.Slices[0].Start; w != 86400e6 && w != 7*86400e6 {
			cut = true
		}
	}
	if !cut {
		t.Fatal("the fixture has no chunk that TimescaleDB cut short on the source")
	}
	var empty, emptied int
	if err := s.QueryRow(ctx, `SELECT count(*) FROM timescaledb_information.chunks c
		WHERE c.hypertable_name = 'days' AND NOT EXISTS (SELECT FROM days WHERE d >= c.range_start AND d < c.range_end)`).Scan(&empty); err != nil || empty != 1 {
		t.Fatalf("the fixture has %d empty chunks (%v), want 1", empty, err)
	}
	if err := s.QueryRow(ctx, `SELECT count(*) FROM show_chunks('parts') c WHERE NOT EXISTS (SELECT FROM parts p WHERE p.tableoid = c)`).Scan(&emptied); err != nil || emptied != 2 {
		t.Fatalf("the fixture has %d empty chunks of parts (%v), want 2", emptied, err)
	}

	res, err := tsapi.Restore(ctx, testenv.Config(t, "source", srv.SuperURI(src)), testenv.Config(t, "target", dstURI), true, false)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if len(res.Differences) > 0 {
		t.Fatalf("differences: %s", strings.Join(res.Differences, "\n"))
	}
	if res.Hypertables != 5 || res.Chunks != len(source.Chunks) || len(res.Placements) != len(source.Chunks) {
		t.Fatalf("made %d hypertables and %d chunks, placed %d; the source has 5 and %d", res.Hypertables, res.Chunks, len(res.Placements), len(source.Chunks))
	}
	for _, p := range res.Placements {
		if p.Routed {
			t.Errorf("chunk %s routed through its hypertable", p.Source.Display())
		}
	}
	target, err := tsapi.ReadLayout(ctx, owner)
	if err != nil {
		t.Fatal(err)
	}
	pairs, missing := tsapi.PairChunks(source, target, func(n tsapi.Name) (tsapi.Name, bool) { return n, true })
	if len(missing) > 0 || len(pairs) != len(target.Chunks) {
		t.Fatalf("%d source chunks lack a target chunk of their slices; %d pairs, %d target chunks", len(missing), len(pairs), len(target.Chunks))
	}
	for _, h := range source.Hypertables {
		th := target.Hypertable(h.Name)
		if th == nil {
			t.Fatalf("no hypertable %s on the target", h.Name.Display())
		}
		if fmt.Sprint(th.Dimensions) != fmt.Sprint(h.Dimensions) {
			t.Errorf("hypertable %s: dimensions %+v on the target, %+v on the source", h.Name.Display(), th.Dimensions, h.Dimensions)
		}
	}

	again, err := tsapi.Restore(ctx, testenv.Config(t, "source", srv.SuperURI(src)), testenv.Config(t, "target", dstURI), true, false)
	if err != nil || again.Hypertables+again.Chunks != 0 || len(again.Placements) != len(source.Chunks) {
		t.Fatalf("second run: %+v, %v", again, err)
	}

	before := len(target.Chunks)
	execAll(t, owner, `INSERT INTO two VALUES ('2026-06-01', 1)`, `INSERT INTO ticks VALUES (5000, 1)`)
	var n int
	if err := owner.QueryRow(ctx, "SELECT count(*) FROM timescaledb_information.chunks").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != before+2 {
		t.Errorf("%d chunks after inserting in two new ranges, %d before", n, before)
	}
	_ = dst
}

// On the full build, as a bare owner: compression settings (segmentby, orderby), a
// continuous aggregate (its materialization hypertable's chunks with the source's
// slices and its interval) and a compressed continuous aggregate are made through
// the API, and every chunk is placed, the compressed one marked so.
func TestRestoreFullBuildAggregatesAndCompression(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TSL)
	ctx := context.Background()
	src := testenv.NewDB(t, srv, true)
	create := []string{
		`CREATE TABLE m (t timestamptz NOT NULL, dev int NOT NULL, "Val" double precision)`,
	}
	testenv.MustExec(t, srv, src, create...)
	testenv.MustExec(t, srv, src,
		`SELECT create_hypertable('m', 't', chunk_time_interval => interval '1 day')`,
		`INSERT INTO m SELECT '2025-01-01'::timestamptz + g * interval '1 minute', g % 5, g * 0.5 FROM generate_series(0, 5*24*60 - 1) g`,
		`ALTER TABLE m SET (timescaledb.compress, timescaledb.compress_segmentby = 'dev', timescaledb.compress_orderby = '"Val" DESC NULLS LAST, t')`,
		`SELECT compress_chunk(c) FROM show_chunks('m') c ORDER BY c LIMIT 2`,
		`CREATE MATERIALIZED VIEW m_daily WITH (timescaledb.continuous) AS
			SELECT time_bucket('1 day', t) AS day, dev, avg("Val") AS av, count(*) AS n FROM m GROUP BY 1, 2 WITH DATA`,
		`SELECT set_chunk_time_interval('m_daily', interval '2 days')`,
		`CALL refresh_continuous_aggregate('m_daily', NULL, NULL)`,
		`CREATE MATERIALIZED VIEW m_hourly WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
			SELECT time_bucket('1 hour', t) AS hour, max("Val") AS mx FROM m GROUP BY 1 WITH DATA`,
		`ALTER MATERIALIZED VIEW m_hourly SET (timescaledb.compress = true)`,
	)
	_, dstURI := testenv.NewOwnerDB(t, srv)
	owner := testenv.Connect(t, dstURI)
	execAll(t, owner, create...)

	res, err := tsapi.Restore(ctx, testenv.Config(t, "source", srv.SuperURI(src)), testenv.Config(t, "target", dstURI), true, false)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if len(res.Differences) > 0 || res.Aggregates != 2 {
		t.Fatalf("made %d aggregates; differences: %v", res.Aggregates, res.Differences)
	}
	source, err := tsapi.ReadLayout(ctx, testenv.Connect(t, srv.SuperURI(src)))
	if err != nil {
		t.Fatal(err)
	}
	target, err := tsapi.ReadLayout(ctx, owner)
	if err != nil {
		t.Fatal(err)
	}
	compressed := 0
	for _, p := range res.Placements {
		if p.Routed {
			t.Errorf("chunk %s routed", p.Source.Display())
		}
		if p.Compressed {
			compressed++
		}
	}
	if len(res.Placements) != len(source.Chunks) || compressed != 2 {
		t.Fatalf("%d placements (%d compressed) for %d source chunks", len(res.Placements), compressed, len(source.Chunks))
	}
	for _, a := range source.Aggregates {
		ta := target.Aggregate(a.View)
		if ta == nil {
			t.Fatalf("no continuous aggregate %s on the target", a.View.Display())
		}
		if ta.MaterializedOnly != a.MaterializedOnly || ta.Query != a.Query {
			t.Errorf("%s: target %+v, source %+v", a.View.Display(), ta, a)
		}
		sh, th := source.Hypertable(a.Materialization), target.Hypertable(ta.Materialization)
		if fmt.Sprint(sh.Dimensions) != fmt.Sprint(th.Dimensions) || fmt.Sprint(sh.Compression) != fmt.Sprint(th.Compression) {
			t.Errorf("%s: materialization hypertable %+v %+v on the target, %+v %+v on the source", a.View.Display(),
				th.Dimensions, th.Compression, sh.Dimensions, sh.Compression)
		}
		if len(source.ChunksOf(a.Materialization)) == 0 || len(source.ChunksOf(a.Materialization)) != len(target.ChunksOf(ta.Materialization)) {
			t.Errorf("%s: %d materialization chunks on the source, %d on the target", a.View.Display(),
				len(source.ChunksOf(a.Materialization)), len(target.ChunksOf(ta.Materialization)))
		}
	}
	m := tsapi.Name{Schema: "public", Name: "m"}
	if s, tc := source.Hypertable(m).Compression, target.Hypertable(m).Compression; tc == nil || *s != *tc {
		t.Errorf("compression of m: %+v on the target, %+v on the source", tc, s)
	}
}
