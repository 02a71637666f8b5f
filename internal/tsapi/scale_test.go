package tsapi_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/testenv"
	"github.com/tsmigrate/tsmigrate/internal/tsapi"
)

// On the Apache build, making a chunk reads no chunk made before it: a run that makes
// the last 50 of 200 hourly chunks (of a hypertable with a space dimension of 2
// partitions, so that a time range holds two chunks) leaves the 150 chunks made before
// unscanned and undeleted from (pg_stat_user_tables), while each of the 50 has its one
// routed row deleted. Making N chunks then costs O(N), not O(N^2): the 0.24 s a chunk at
// 3 000 chunks that stopped a 5 000-chunk migration.
func TestRestoreApacheReadsNoEarlierChunk(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	ctx := context.Background()
	src := testenv.NewDB(t, srv, true)
	create := `CREATE TABLE h (t timestamptz NOT NULL, dev int NOT NULL, v float8)`
	testenv.MustExec(t, srv, src, create,
		`SELECT create_hypertable('h', 't', chunk_time_interval => interval '1 hour')`,
		`SELECT add_dimension('h', 'dev', number_partitions => 2)`,
		`INSERT INTO h SELECT '2025-01-01'::timestamptz + (g / 4) * interval '1 hour', g % 4, g FROM generate_series(0, 4*75 - 1) g`)
	_, dstURI := testenv.NewOwnerDB(t, srv)
	owner := testenv.Connect(t, dstURI)
	execAll(t, owner, create)
	s := testenv.Connect(t, srv.SuperURI(src))
	first, err := tsapi.ReadLayout(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Chunks) != 150 {
		t.Fatalf("the fixture has %d chunks, want 150", len(first.Chunks))
	}
	srcCfg, dstCfg := testenv.Config(t, "source", srv.SuperURI(src)), testenv.Config(t, "target", dstURI)
	if res, err := tsapi.Restore(ctx, srcCfg, dstCfg, true, false); err != nil || res.Chunks != 150 || len(res.Differences) > 0 {
		t.Fatalf("first run: %+v, %v", res, err)
	}
	// The next 25 hours: 50 chunks more.
	execAll(t, s, `INSERT INTO h SELECT '2025-01-01'::timestamptz + (75 + g / 4) * interval '1 hour', g % 4, g FROM generate_series(0, 4*25 - 1) g`)

	// What the target's cumulative statistics say of its chunks: scans and deletes.
	type use struct{ scans, deleted int64 }
	stats := func() map[string]use {
		t.Helper()
		if _, err := owner.Exec(ctx, "SELECT pg_stat_clear_snapshot()"); err != nil {
			t.Fatal(err)
		}
		rows, err := owner.Query(ctx, `SELECT s.relname::text, coalesce(s.seq_scan, 0) + coalesce(s.idx_scan, 0), s.n_tup_del
FROM pg_stat_user_tables s JOIN timescaledb_information.chunks c ON c.chunk_schema = s.schemaname AND c.chunk_name = s.relname
WHERE c.hypertable_name = 'h'`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		m := map[string]use{}
		for rows.Next() {
			var n string
			var u use
			if err := rows.Scan(&n, &u.scans, &u.deleted); err != nil {
				t.Fatal(err)
			}
			m[n] = u
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return m
	}
	// The first run's statistics reach the shared ones when its session ends.
	var before map[string]use
	testenv.Eventually(t, time.Minute, func() error {
		before = stats()
		for n, u := range before {
			if u.deleted != 1 {
				return fmt.Errorf("chunk %s: %d rows deleted, want the routed one", n, u.deleted)
			}
		}
		if len(before) != 150 {
			return fmt.Errorf("%d chunks on the target, want 150", len(before))
		}
		return nil
	})
	res, err := tsapi.Restore(ctx, srcCfg, dstCfg, true, false)
	if err != nil || res.Chunks != 50 || len(res.Differences) > 0 || len(res.Placements) != 200 {
		t.Fatalf("second run: %+v, %v", res, err)
	}
	var after map[string]use
	testenv.Eventually(t, time.Minute, func() error {
		after = stats()
		made := 0
		for n, u := range after {
			if _, old := before[n]; !old && u.deleted == 1 {
				made++
			}
		}
		if made != 50 {
			return fmt.Errorf("%d new chunks with their routed row deleted, want 50 (%d chunks in all)", made, len(after))
		}
		return nil
	})
	read := 0
	for n, b := range before {
		if a := after[n]; a != b {
			read++
			if read <= 3 {
				t.Errorf("chunk %s made before the second run: scanned %d times and %d rows deleted during it", n, a.scans-b.scans, a.deleted-b.deleted)
			}
		}
	}
	if read > 0 {
		t.Errorf("making 50 chunks read %d of the 150 made before", read)
	}
}

// hoursIntoDay makes, on the Apache build, a source hypertable h of eight hourly chunks
// on 2025-01-01 and a bare owner's target whose h has 1-day chunks, on which it runs
// sql as the owner. It returns the owner's connection and a call of Restore from that
// source into that target.
func hoursIntoDay(t *testing.T, sql ...string) (*pgx.Conn, func() (*tsapi.Result, error)) {
	t.Helper()
	srv := testenv.Shared(t, testenv.PG17TS)
	src := testenv.NewDB(t, srv, true)
	create := `CREATE TABLE h (t timestamptz NOT NULL, v int)`
	testenv.MustExec(t, srv, src, create,
		`SELECT create_hypertable('h', 't', chunk_time_interval => interval '1 hour')`,
		`INSERT INTO h SELECT '2025-01-01'::timestamptz + g * interval '1 hour', g FROM generate_series(0, 7) g`)
	_, dstURI := testenv.NewOwnerDB(t, srv)
	owner := testenv.Connect(t, dstURI)
	execAll(t, owner, create, `SELECT create_hypertable('h', 't', chunk_time_interval => interval '1 day')`)
	execAll(t, owner, sql...)
	srcCfg, dstCfg := testenv.Config(t, "source", srv.SuperURI(src)), testenv.Config(t, "target", dstURI)
	return owner, func() (*tsapi.Result, error) { return tsapi.Restore(context.Background(), srcCfg, dstCfg, true, false) }
}

// On the Apache build, a target hypertable that holds a row where a chunk is to be
// made (its own chunk of a day, where the source has hours) fails the run, and keeps
// that row: the routed row is deleted from the chunk it went to only in a transaction
// that is rolled back when that chunk held more.
func TestRestoreApacheKeepsTargetRows(t *testing.T) {
	ctx := context.Background()
	owner, restore := hoursIntoDay(t, `INSERT INTO h VALUES ('2025-01-01 05:30+00', 42)`)
	_, err := restore()
	if err == nil {
		t.Fatal("restore into a hypertable holding a row succeeded")
	}
	t.Logf("restore: %v", err)
	var n, v int
	if err := owner.QueryRow(ctx, "SELECT count(*), coalesce(max(v), 0) FROM h").Scan(&n, &v); err != nil || n != 1 || v != 42 {
		t.Fatalf("the target's hypertable holds %d rows (max v %d, %v) after the failed run, want its one row (v 42)", n, v, err)
	}
}

// On the Apache build, chunks whose rows TimescaleDB routes into one chunk the target
// has already (an empty chunk of a day, where the source has hours: eight of them in
// one group) are each reported and placed in the hypertable, and the target is left
// without any of the routed rows.
func TestRestoreApacheRoutesIntoOneChunk(t *testing.T) {
	ctx := context.Background()
	owner, restore := hoursIntoDay(t, `INSERT INTO h VALUES ('2025-01-01 05:30+00', 42)`, `DELETE FROM h`)
	res, err := restore()
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if res.Chunks != 0 || len(res.Differences) != 8 || len(res.Placements) != 8 {
		t.Fatalf("made %d chunks, %d differences, %d placements; want 0, 8, 8: %v", res.Chunks, len(res.Differences), len(res.Placements), res.Differences)
	}
	for _, p := range res.Placements {
		if !p.Routed || p.Target != (tsapi.Name{Schema: "public", Name: "h"}) {
			t.Errorf("chunk %s placed in %s (routed %v), want the hypertable", p.Source.Display(), p.Target.Display(), p.Routed)
		}
	}
	var rows, chunks int
	if err := owner.QueryRow(ctx, "SELECT (SELECT count(*) FROM h), (SELECT count(*) FROM show_chunks('h'))").Scan(&rows, &chunks); err != nil || rows != 0 || chunks != 1 {
		t.Fatalf("the target holds %d rows in %d chunks (%v), want none in its one chunk", rows, chunks, err)
	}
}
