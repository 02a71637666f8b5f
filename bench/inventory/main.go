// Command inventory measures how long inventory.Load and a whole preflight take on a
// TimescaleDB database with many chunks (10 000 by default), on a PostgreSQL 17 +
// TimescaleDB server that it starts and stops itself. See bench/README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/inventory"
	"github.com/tsmigrate/tsmigrate/internal/preflight"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

func main() {
	chunks := flag.Int("chunks", 10000, "chunks to create (one row each)")
	runs := flag.Int("runs", 3, "timed runs of each measurement")
	flag.Parse()
	if err := run(context.Background(), *chunks, *runs); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// chunkBatch is how many chunks one INSERT creates: each new chunk takes locks until
// commit, and the default lock table holds about 7 000.
const chunkBatch = 1000

func run(ctx context.Context, chunks, runs int) error {
	srv, err := testenv.Start(ctx, testenv.PG17TS, testenv.Options{})
	if err != nil {
		return err
	}
	defer srv.Stop()
	const src, tgt = "bench_source", "bench_target"
	if err := srv.CreateDatabase(ctx, src, true); err != nil {
		return err
	}
	if err := srv.CreateDatabase(ctx, tgt, false); err != nil {
		return err
	}
	start := time.Now()
	stmts := []string{
		`CREATE TABLE metrics (time timestamptz NOT NULL, device int, value float8)`,
		`SELECT create_hypertable('metrics', 'time', chunk_time_interval => interval '1 minute')`,
	}
	for from := 0; from < chunks; from += chunkBatch {
		to := min(from+chunkBatch, chunks) - 1
		stmts = append(stmts, fmt.Sprintf(`INSERT INTO metrics
			SELECT '2025-01-01'::timestamptz + i * interval '1 minute', i %% 100, i FROM generate_series(%d, %d) i`, from, to))
	}
	stmts = append(stmts, `VACUUM ANALYZE`)
	if err := srv.Exec(ctx, src, stmts...); err != nil {
		return err
	}
	fmt.Printf("setup: hypertable with %d chunks created in %s\n", chunks, time.Since(start).Round(time.Millisecond))

	conn, err := pgx.Connect(ctx, srv.SuperURI(src))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	for i := 0; i < runs; i++ {
		d, err := inventory.Load(ctx, conn)
		if err != nil {
			return err
		}
		fmt.Printf("inventory.Load: %d chunks, %d tables, %d queries in %s\n",
			len(d.Chunks), len(d.Tables), d.Queries, d.LoadTime.Round(time.Millisecond))
	}

	source, err := dbconn.Parse("source", srv.SuperURI(src))
	if err != nil {
		return err
	}
	target, err := dbconn.Parse("target", srv.SuperURI(tgt))
	if err != nil {
		return err
	}
	for i := 0; i < runs; i++ {
		t0 := time.Now()
		r, err := preflight.Run(ctx, preflight.Options{Source: source, Target: target})
		if err != nil {
			return err
		}
		fmt.Printf("preflight.Run (connect both, both inventories, target probe, %d findings: %d pass, %d warn, %d fail) in %s\n",
			len(r.Findings), r.Summary.Pass, r.Summary.Warn, r.Summary.Fail, time.Since(t0).Round(time.Millisecond))
		if i == runs-1 {
			for _, f := range r.Findings {
				if f.Status != preflight.Pass {
					fmt.Printf("  %s %s: %s\n", f.Status, f.Check, f.Saw)
				}
			}
		}
	}
	return nil
}
