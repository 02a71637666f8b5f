package migrate_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// hourly reads a query's (bucket, sum, count) rows before the hour before, as text.
func hourly(t *testing.T, c *pgx.Conn, q string, before time.Time) map[string]string {
	t.Helper()
	rows, err := c.Query(context.Background(), q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	out := map[string]string{}
	var b time.Time
	var s, n int64
	if _, err := pgx.ForEachRow(rows, []any{&b, &s, &n}, func() error {
		if b.Before(before) {
			out[b.UTC().Format(time.DateTime)] = fmt.Sprintf("sum %d, %d rows", s, n)
		}
		return nil
	}); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return out
}

func bucketDiff(a, b map[string]string) []string {
	var out []string
	for k, v := range a {
		if b[k] != v {
			out = append(out, fmt.Sprintf("%s: %q vs %q", k, v, b[k]))
		}
	}
	for k, v := range b {
		if _, ok := a[k]; !ok {
			out = append(out, fmt.Sprintf("%s: missing vs %q", k, v))
		}
	}
	return out
}

// Changes a live run applies in buckets a continuous aggregate had materialized reach
// it on the target: the target's refresh of the aggregate gives what its raw rows give,
// as the source's does. Before the cut-over refreshed the aggregates over the chunks
// changed, the six buckets changed during the run kept their old values on the target
// after refresh_continuous_aggregate(NULL, NULL) (the applier's session fires no
// invalidation trigger; the source's invalidation logs are not in the stream).
func TestLiveRefreshesChangedAggregatesFullBuild(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TSL)
	ctx := context.Background()
	src := testenv.NewDB(t, srv, true)
	dst := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, src,
		`CREATE TABLE m (ts timestamptz NOT NULL PRIMARY KEY, v bigint NOT NULL)`,
		`SELECT create_hypertable('m', 'ts', chunk_time_interval => interval '6 hours')`,
		`INSERT INTO m SELECT date_trunc('hour', now()) - interval '48 hours' + g * interval '1 minute', g FROM generate_series(0, 48*60-1) g`,
		`CREATE MATERIALIZED VIEW m_hourly WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
		 SELECT time_bucket('1 hour', ts) AS b, sum(v) AS s, count(*) AS n FROM m GROUP BY 1 WITH NO DATA`,
		`CALL refresh_continuous_aggregate('m_hourly', NULL, NULL)`)
	unfreezeAtCleanup(t, srv, src)
	liveSlotsAtCleanup(t, srv, src)
	h0 := scalar[time.Time](t, connect(t, srv.SuperURI(src)), `SELECT date_trunc('hour', now())`).UTC()

	// The writer changes materialized buckets during the copy, and again once changes
	// are being applied.
	var wmu sync.Mutex
	var failed []string
	w := func(c *pgx.Conn, q string, at time.Duration) {
		if _, err := c.Exec(ctx, q, h0.Add(at)); err != nil {
			wmu.Lock()
			failed = append(failed, q+": "+err.Error())
			wmu.Unlock()
		}
	}
	writes := func(first bool) {
		c, err := pgx.Connect(ctx, srv.SuperURI(src))
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close(ctx)
		if first {
			w(c, `UPDATE m SET v = v + 1000000 WHERE ts >= $1 AND ts < $1::timestamptz + interval '10 minutes'`, -40*time.Hour)
			w(c, `INSERT INTO m VALUES ($1::timestamptz + interval '30 seconds', 777)`, -30*time.Hour)
			w(c, `DELETE FROM m WHERE ts >= $1 AND ts < $1::timestamptz + interval '5 minutes'`, -20*time.Hour)
			w(c, `UPDATE m SET v = v + 5 WHERE ts = $1::timestamptz + interval '10 minutes'`, -time.Hour)
			return
		}
		w(c, `UPDATE m SET v = v + 2000000 WHERE ts >= $1 AND ts < $1::timestamptz + interval '3 minutes'`, -10*time.Hour)
		w(c, `INSERT INTO m VALUES ($1::timestamptz + interval '15 seconds', 555)`, -45*time.Hour)
	}
	var wg sync.WaitGroup
	var copyOnce, catchOnce sync.Once
	var notes []string
	sum, err := migrate.Run(ctx, migrate.Options{Engine: migrate.EngineStream, Live: true, Cutover: migrate.CutoverAuto,
		Source: cfg(t, "source", srv.SuperURI(src)), Target: cfg(t, "target", srv.SuperURI(dst)),
		Jobs: 2, PgBin: srv.ClientBin(), FreezeGrace: time.Second,
		OnEvent: func(e migrate.Event) {
			switch {
			case e.Type == migrate.EventPhase && e.Phase == migrate.PhaseCopy:
				copyOnce.Do(func() { wg.Add(1); go func() { defer wg.Done(); writes(true) }() })
			case e.Type == migrate.EventLive && e.Live.Stage == "catch-up":
				catchOnce.Do(func() { wg.Add(1); go func() { defer wg.Done(); writes(false) }() })
			case e.Type == migrate.EventNote:
				notes = append(notes, e.Text)
			}
		}})
	wg.Wait()
	if err != nil || len(failed) > 0 {
		t.Fatalf("migrate --live: %v; writes failed: %v", err, failed)
	}
	if sum.Live == nil || sum.Live.RowsApplied == 0 {
		t.Fatalf("no change applied: %+v", sum.Live)
	}
	if all := strings.Join(notes, "\n"); !strings.Contains(all, "refreshed the continuous aggregates over the chunks changes were applied to") ||
		!strings.Contains(all, "public.m_hourly (") {
		t.Errorf("no note names the aggregate refreshed:\n%s", strings.Join(notes, "\n"))
	}
	sc, tc := connect(t, srv.SuperURI(src)), connect(t, srv.SuperURI(dst))
	for _, c := range []*pgx.Conn{sc, tc} {
		if _, err := c.Exec(ctx, `SET default_transaction_read_only = off`); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exec(ctx, `CALL refresh_continuous_aggregate('public.m_hourly', NULL, NULL)`); err != nil {
			t.Fatal(err)
		}
	}
	const agg, raw = `SELECT b, s::bigint, n::bigint FROM public.m_hourly`,
		`SELECT time_bucket('1 hour', ts), sum(v)::bigint, count(*)::bigint FROM public.m GROUP BY 1`
	if d := bucketDiff(hourly(t, tc, raw, h0), hourly(t, tc, agg, h0)); len(d) > 0 {
		t.Errorf("the target's aggregate, refreshed, is not what its rows give: %v", d)
	}
	if d := bucketDiff(hourly(t, sc, agg, h0), hourly(t, tc, agg, h0)); len(d) > 0 {
		t.Errorf("the aggregates differ, source vs target, once both are refreshed: %v", d)
	}
}
