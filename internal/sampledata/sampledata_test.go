package sampledata

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

func TestCreateMatchesSizes(t *testing.T) {
	if got := At(1.0); got.Metrics != 5_180_000 || got.Devices != 200_000 || got.Events != 1_000_000 || got.Days != 60 {
		t.Fatalf("scale 1.0 is not the benchmark database of docs/benchmarks.md: %+v", got)
	}
	srv := testenv.Need(t, testenv.PG17TS, testenv.Options{})
	db := testenv.NewDB(t, srv, true)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, srv.SuperURI(db))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	sz, err := Create(ctx, conn, 0.002)
	if err != nil {
		t.Fatal(err)
	}
	var metrics, chunks, events, orphans int64
	conn.QueryRow(ctx, "SELECT count(*) FROM metrics").Scan(&metrics)
	conn.QueryRow(ctx, "SELECT count(*) FROM show_chunks('metrics')").Scan(&chunks)
	conn.QueryRow(ctx, "SELECT count(*) FROM events").Scan(&events)
	conn.QueryRow(ctx, "SELECT count(*) FROM events e LEFT JOIN devices d USING (device_id) WHERE d.device_id IS NULL").Scan(&orphans)
	if metrics != sz.Metrics || events != sz.Events || chunks != int64(sz.Days) || orphans != 0 {
		t.Fatalf("metrics %d/%d rows, %d/%d chunks, events %d/%d, %d orphans", metrics, sz.Metrics, chunks, sz.Days, events, sz.Events, orphans)
	}
}
