// Package sampledata creates the sample time-series database used by the demo and the
// benchmarks (docs/benchmarks.md), and the baselines measured on it.
//
// At scale 1.0 (about 825 MB on PostgreSQL 17 + TimescaleDB 2.19.3):
//   - metrics: hypertable, 5.18 M rows over 60 daily chunks, 2 indexes
//   - devices: 200 k rows, primary key
//   - events:  1 M rows, jsonb payload, bigserial primary key, foreign key to devices
package sampledata

import (
	"context"
	"fmt"
	"math"

	"github.com/jackc/pgx/v5"
)

// Sizes of the database at a scale.
type Sizes struct {
	Devices int64
	Events  int64
	Metrics int64 // rows of the hypertable
	Days    int   // one chunk a day
}

// At gives the row counts at scale (1.0 is the benchmark database).
func At(scale float64) Sizes {
	n := func(base float64) int64 { return int64(math.Max(1, math.Round(base*scale))) }
	days := 60
	if scale < 1 {
		days = int(math.Max(3, math.Round(60*math.Sqrt(scale))))
	}
	return Sizes{Devices: n(200_000), Events: n(1_000_000), Metrics: n(5_180_000), Days: days}
}

// The schema, checked on PostgreSQL 15/17 with TimescaleDB 2.19.3.
const schemaSQL = `
CREATE TABLE devices (
    device_id   integer PRIMARY KEY,
    name        text NOT NULL,
    model       text NOT NULL,
    location    text,
    installed   timestamptz NOT NULL
);
CREATE TABLE events (
    event_id    bigserial PRIMARY KEY,
    device_id   integer NOT NULL REFERENCES devices (device_id),
    at          timestamptz NOT NULL,
    kind        text NOT NULL,
    payload     jsonb NOT NULL
);
CREATE TABLE metrics (
    time        timestamptz NOT NULL,
    device_id   integer NOT NULL,
    cpu         double precision,
    temperature double precision,
    reading     numeric(10,3)
);
SELECT create_hypertable('metrics', 'time', chunk_time_interval => interval '1 day');
CREATE INDEX metrics_device_time_idx ON metrics (device_id, time DESC);
`

// Create builds the sample schema and data in the database conn is connected to, which
// must have the timescaledb extension. Deterministic: the same scale gives the same rows.
func Create(ctx context.Context, conn *pgx.Conn, scale float64) (Sizes, error) {
	sz := At(scale)
	if _, err := conn.Exec(ctx, schemaSQL); err != nil {
		return sz, fmt.Errorf("create sample schema: %w", err)
	}
	steps := []struct {
		what string
		sql  string
	}{
		{"devices", fmt.Sprintf(`INSERT INTO devices
			SELECT i, 'device-' || i, (ARRAY['alpha','beta','gamma','delta'])[1 + i %% 4],
			       CASE WHEN i %% 7 = 0 THEN NULL ELSE 'site-' || (i %% 97) END,
			       timestamptz '2024-01-01 00:00:00+00' + (i %% 1000) * interval '1 hour'
			FROM generate_series(1, %d) i`, sz.Devices)},
		{"events", fmt.Sprintf(`INSERT INTO events (device_id, at, kind, payload)
			SELECT 1 + (i::bigint * 7919) %% %d,
			       timestamptz '2025-01-01 00:00:00+00' + (i %% (%d * 86400)) * interval '1 second',
			       (ARRAY['boot','alarm','update','heartbeat'])[1 + i %% 4],
			       jsonb_build_object('seq', i, 'level', i %% 5, 'msg', 'event number ' || i,
			                          'tags', jsonb_build_array('t' || (i %% 13), 't' || (i %% 17)))
			FROM generate_series(1, %d) i`, sz.Devices, sz.Days, sz.Events)},
		{"metrics", fmt.Sprintf(`INSERT INTO metrics
			SELECT timestamptz '2025-01-01 00:00:00+00' + (i::bigint * %d * 86400 / %d) * interval '1 second',
			       1 + i %% 1000,
			       (i %% 10000) / 100.0 + 0.125,
			       20 + ((i * 31) %% 400) / 10.0,
			       ((i * 17) %% 100000) / 1000.0
			FROM generate_series(0, %d - 1) i`, sz.Days, sz.Metrics, sz.Metrics)},
		{"analyze", `ANALYZE`},
	}
	for _, s := range steps {
		if _, err := conn.Exec(ctx, s.sql); err != nil {
			return sz, fmt.Errorf("load sample %s: %w", s.what, err)
		}
	}
	return sz, nil
}

// chunksSchemaSQL is the many-chunks dataset's schema: a hypertable of hourly chunks
// with one index besides TimescaleDB's own on time. PostgreSQL 15/17, TimescaleDB 2.19.3.
const chunksSchemaSQL = `
CREATE TABLE metrics (
    time        timestamptz NOT NULL,
    device_id   integer NOT NULL,
    cpu         double precision,
    temperature double precision
);
SELECT create_hypertable('metrics', 'time', chunk_time_interval => interval '1 hour');
CREATE INDEX metrics_device_time_idx ON metrics (device_id, time DESC);
`

// CreateChunks builds a database of many small chunks (what costs per chunk, not per
// row, dominates its migration): hypertable metrics with chunks hourly chunks of rows
// rows each and one index besides time's, in the database conn is connected to, which
// must have the timescaledb extension. Deterministic.
func CreateChunks(ctx context.Context, conn *pgx.Conn, chunks, rows int) error {
	if _, err := conn.Exec(ctx, chunksSchemaSQL); err != nil {
		return fmt.Errorf("create the chunks schema: %w", err)
	}
	// In slices of 500 chunks: a statement making thousands of chunks at once runs out
	// of the lock table (a lock per chunk, held to its end).
	for lo := 0; lo < chunks; lo += 500 {
		hi := min(chunks, lo+500)
		if _, err := conn.Exec(ctx, fmt.Sprintf(`INSERT INTO metrics
			SELECT timestamptz '2020-01-01 00:00:00+00' + (i / %[1]d) * interval '1 hour' + (i %% %[1]d) * (interval '1 hour' / %[1]d),
			       1 + (i * 7919) %% 500, (i %% 1000) / 10.0, 20 + (i %% 300) / 10.0
			FROM generate_series(%[2]d::bigint * %[1]d, %[3]d::bigint * %[1]d - 1) i`, rows, lo, hi)); err != nil {
			return fmt.Errorf("load chunks %d to %d: %w", lo, hi, err)
		}
	}
	return nil
}
