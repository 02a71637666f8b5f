package verify

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// Needs TimescaleDB's full build (testenv.PG17TSL: the Apache build cannot compress);
// it skips, saying so, without TSMIGRATE_PG17_TSL_ROOT.
//
// Equal data is identical whether a chunk is compressed on one side, both or neither:
// compressed rows are read through the hypertable over the chunk's slices. A row that
// differs in a chunk compressed on the source only is found, in that chunk, down to the
// row; so is a row missing from a chunk compressed on both sides.
func TestCompressedAgainstUncompressedChunks(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TSL)
	src := testenv.NewDB(t, srv, true)
	dst := testenv.NewDB(t, srv, true)
	for db, compress := range map[string]int{src: 3, dst: 1} {
		testenv.MustExec(t, srv, db,
			`CREATE TABLE m (ts timestamptz NOT NULL, dev int NOT NULL, v double precision, note text)`,
			`SELECT create_hypertable('m', 'ts', chunk_time_interval => interval '1 day')`,
			`INSERT INTO m SELECT '2024-01-01 00:00:00+00'::timestamptz + i * interval '1 minute', i % 4, i / 3.0, 'n' || i
			 FROM generate_series(0, 5 * 1440 - 1) i`,
			`ALTER TABLE m SET (timescaledb.compress, timescaledb.compress_segmentby = 'dev')`,
			fmt.Sprintf(`SELECT compress_chunk(c) FROM show_chunks('m') c ORDER BY c LIMIT %d`, compress))
	}
	rep := run(t, srv, src, srv, dst, 0)
	if !rep.Identical || rep.SourceRows != 5*1440 || rep.TargetRows != 5*1440 {
		t.Fatalf("identical %v, rows %d/%d, schema %v", rep.Identical, rep.SourceRows, rep.TargetRows, rep.Schema)
	}
	chunks := 0
	for _, u := range rep.Units {
		if u.Kind == "chunk" {
			chunks++
		}
	}
	if chunks != 5 {
		t.Fatalf("%d chunk units, want 5", chunks)
	}

	// Day 2 is compressed on the source only, day 1 on both sides.
	testenv.MustExec(t, srv, dst, `UPDATE m SET note = 'changed' WHERE ts = '2024-01-02 12:00:00+00'`,
		`DELETE FROM m WHERE ts = '2024-01-01 06:00:00+00'`)
	rep = run(t, srv, src, srv, dst, 5)
	var diff []string
	for _, u := range rep.Units {
		if u.Identical {
			continue
		}
		var rows []string
		for _, r := range u.Rows {
			rows = append(rows, fmt.Sprintf("%v/%v", r.Source != nil, r.Target != nil))
		}
		diff = append(diff, fmt.Sprintf("%s %s rows %s", u.Kind, u.Range, strings.Join(rows, ",")))
	}
	want := []string{
		"chunk [2024-01-01 00:00:00+00, 2024-01-02 00:00:00+00) rows true/false",
		"chunk [2024-01-02 00:00:00+00, 2024-01-03 00:00:00+00) rows true/true",
	}
	if strings.Join(diff, "\n") != strings.Join(want, "\n") {
		t.Fatalf("differing units:\n%s\nwant:\n%s", strings.Join(diff, "\n"), strings.Join(want, "\n"))
	}
}

// The rows a continuous aggregate has materialized are compared like any hypertable's,
// chunk by chunk, paired by the aggregate's name although its materialization
// hypertable is named differently on the two sides; a row deleted from it on the
// target alone shows, named by the aggregate.
func TestContinuousAggregateData(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TSL)
	src := testenv.NewDB(t, srv, true)
	dst := testenv.NewDB(t, srv, true)
	// An extra hypertable on the target only, made first and dropped afterwards: the
	// target's hypertable ids, and so its materialization hypertable's name, differ.
	testenv.MustExec(t, srv, dst, `CREATE TABLE other (ts timestamptz NOT NULL)`,
		`SELECT create_hypertable('other', 'ts')`)
	for _, db := range []string{src, dst} {
		testenv.MustExec(t, srv, db,
			`CREATE TABLE m (ts timestamptz NOT NULL, dev int NOT NULL, v double precision)`,
			`SELECT create_hypertable('m', 'ts', chunk_time_interval => interval '1 day')`,
			`INSERT INTO m SELECT '2024-01-01 00:00:00+00'::timestamptz + i * interval '1 minute', i % 4, i / 3.0
			 FROM generate_series(0, 5 * 1440 - 1) i`,
			`CREATE MATERIALIZED VIEW m_hourly WITH (timescaledb.continuous) AS
			 SELECT time_bucket('1 hour', ts) AS bucket, dev, avg(v) AS v, count(*) AS n FROM m GROUP BY 1, 2 WITH NO DATA`,
			`SELECT set_chunk_time_interval(format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name)::regclass, interval '2 days')
			 FROM timescaledb_information.continuous_aggregates WHERE view_name = 'm_hourly'`,
			`CALL refresh_continuous_aggregate('m_hourly', NULL, NULL)`)
	}
	testenv.MustExec(t, srv, dst, `DROP TABLE other`)
	var srcMat, dstMat string
	for db, mat := range map[string]*string{src: &srcMat, dst: &dstMat} {
		conn, err := pgx.Connect(context.Background(), srv.URI(db))
		if err != nil {
			t.Fatal(err)
		}
		err = conn.QueryRow(context.Background(), `SELECT format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name)
			FROM timescaledb_information.continuous_aggregates WHERE view_name = 'm_hourly'`).Scan(mat)
		conn.Close(context.Background())
		if err != nil {
			t.Fatal(err)
		}
	}
	if srcMat == dstMat {
		t.Fatalf("both materialization hypertables are %s: the test needs them named differently", srcMat)
	}

	aggregate := func(rep *Report) (units int, rows int64, diff []string) {
		for _, u := range rep.Units {
			if !u.Aggregate {
				continue
			}
			if u.Table != "public.m_hourly" || u.Kind != "chunk" {
				t.Errorf("aggregate unit %s (%s), want chunks of public.m_hourly", u.Name(), u.Kind)
			}
			units++
			rows += u.Source.Rows
			if !u.Identical {
				diff = append(diff, u.Name()+": "+u.Problem)
			}
		}
		return units, rows, diff
	}
	rep := run(t, srv, src, srv, dst, 0)
	units, rows, diff := aggregate(rep)
	if !rep.Identical || units != 3 || rows != 5*24*4 || diff != nil {
		t.Fatalf("identical %v, %d aggregate units (want 3), %d materialized rows (want %d), differing %v, schema %v",
			rep.Identical, units, rows, 5*24*4, diff, rep.Schema)
	}

	testenv.MustExec(t, srv, dst, fmt.Sprintf(`DELETE FROM %s WHERE bucket = '2024-01-04 05:00:00+00' AND dev = 1`, dstMat))
	rep = run(t, srv, src, srv, dst, 0)
	_, _, diff = aggregate(rep)
	if rep.Identical || len(diff) != 1 || !strings.HasPrefix(diff[0], "continuous aggregate public.m_hourly chunk ") {
		t.Fatalf("after deleting one materialized row on the target: identical %v, differing aggregate units %v", rep.Identical, diff)
	}
	if rep.UnitsDiffering != 1 {
		t.Fatalf("%d units differ, want only the aggregate's", rep.UnitsDiffering)
	}
}

// CompressedOnly compares the rows of compressed chunks alone, and no schema: a column
// added with a default after the chunks were compressed reads 7 from the source's
// compressed chunk and 8 from the target's (the value lives in the chunk's catalog,
// not in its rows), and shows; an uncompressed chunk, a plain table and a schema that
// differ do not.
func TestCompressedOnly(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TSL)
	src := testenv.NewDB(t, srv, true)
	dst := testenv.NewDB(t, srv, true)
	for db, def := range map[string]int{src: 7, dst: 8} {
		testenv.MustExec(t, srv, db,
			`CREATE TABLE m (ts timestamptz NOT NULL, v int)`,
			`SELECT create_hypertable('m', 'ts', chunk_time_interval => interval '1 day')`,
			`INSERT INTO m SELECT '2024-01-01'::timestamptz + i * interval '1 hour', i FROM generate_series(0, 71) i`,
			`ALTER TABLE m SET (timescaledb.compress)`,
			`SELECT compress_chunk(c) FROM show_chunks('m') c ORDER BY c LIMIT 1`,
			fmt.Sprintf(`ALTER TABLE m ADD COLUMN a int DEFAULT %d`, def),
			fmt.Sprintf(`CREATE TABLE plain (x int); INSERT INTO plain VALUES (%d)`, def))
	}
	testenv.MustExec(t, srv, dst, `UPDATE m SET v = -1 WHERE ts = '2024-01-03 05:00:00+00'`, `CREATE TABLE only_here (x int)`)
	s, _ := dbconn.Parse("source", srv.URI(src))
	d, _ := dbconn.Parse("target", srv.URI(dst))
	rep, err := Run(context.Background(), Options{Source: s, Target: d, CompressedOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var units []string
	for _, u := range rep.Units {
		units = append(units, fmt.Sprintf("%s %s %s identical=%v", u.Kind, u.Table, u.Range, u.Identical))
	}
	want := "chunk public.m [2024-01-01 00:00:00+00, 2024-01-02 00:00:00+00) identical=false"
	if strings.Join(units, "\n") != want || len(rep.Schema) != 0 || rep.Identical {
		t.Fatalf("units:\n%s\nwant:\n%s\nschema %v", strings.Join(units, "\n"), want, rep.Schema)
	}
}
