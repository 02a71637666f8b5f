package copy

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/tsmigrate/tsmigrate/internal/schema"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// Round trips per chunk unit (see worker): across a WAN each costs the round trip
// time, and a database may hold tens of thousands of chunks. One chunk's unit, its
// indexes built with its rows as the stream engine builds them, waits for exactly
// two exchanges with the target and one with the source; small chunks go in batches
// (see copyBatch), a batch of them in those same three exchanges. Counted by the
// protocol (ReadyForQuery messages) in proxies before each server, as the difference
// between two sources alike but for their number of chunks, so that what a run does
// once (connecting, planning, the configuration tables) drops out.
func TestRoundTripsPerChunk(t *testing.T) {
	const (
		wantTarget = 2
		wantSource = 1
	)
	srv := testenv.Shared(t, testenv.PG17TS)
	count := func(chunks, batch int) (target, source int64) {
		p := newPairOf(t, srv,
			`CREATE TABLE m (t timestamptz NOT NULL, dev int, v double precision)`,
			`SELECT create_hypertable('m', 't', chunk_time_interval => interval '1 hour')`,
			`CREATE INDEX m_dev ON m (dev, t)`,
			fmt.Sprintf(`INSERT INTO m SELECT '2024-01-01 00:00+00'::timestamptz + g * interval '1 hour' / 20, g %% 7, g
				FROM generate_series(0, %d * 20 - 1) g`, chunks))
		ctx := context.Background()
		post, err := schema.SplitPostData(ctx, p.tools, dbConn(t, srv, p.src), p.archive)
		if err != nil {
			t.Fatal(err)
		}
		sp, tp := testenv.StartProxy(t, srv), testenv.StartProxy(t, srv)
		res, err := Run(ctx, Options{
			Source:     mustParse(t, "source", sp.URI(t, srv.SuperURI(p.src))),
			Target:     mustParse(t, "target", tp.URI(t, srv.SuperURI(p.dst))),
			Jobs:       1,
			BatchUnits: batch,
			FreezeID:   "f",
			PostSQL: func(s, tbl string) string {
				return post.SQL(schema.TableName{Schema: s, Name: tbl})
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		built := 0
		for _, u := range res.Units {
			if strings.HasPrefix(u.Relation, "_timescaledb_internal.") && u.Rows == 20 {
				built++
			}
		}
		if built != chunks {
			t.Fatalf("%d chunks of 20 rows copied, want %d", built, chunks)
		}
		p.assertChunkIndexes(t, chunks)
		return tp.Stats().RoundTrips, sp.Stats().RoundTrips
	}
	// One at a time: 20 chunks more, 20 units more.
	t10, s10 := count(10, 1)
	t30, s30 := count(30, 1)
	target, source := float64(t30-t10)/20, float64(s30-s10)/20
	t.Logf("round trips per chunk unit: target %.2f (%d and %d in all), source %.2f (%d and %d)", target, t10, t30, source, s10, s30)
	if target != wantTarget || source != wantSource {
		t.Errorf("a chunk unit took %.2f round trips to the target and %.2f to the source, want %d and %d", target, source, wantTarget, wantSource)
	}
	// In batches of 5: 40 chunks more, 8 batches more.
	t40, s40 := count(40, 5)
	t80, s80 := count(80, 5)
	target, source = float64(t80-t40)/8, float64(s80-s40)/8
	t.Logf("round trips per batch of 5 chunks: target %.2f (%d and %d in all), source %.2f (%d and %d); per chunk %.2f and %.2f",
		target, t40, t80, source, s40, s80, target/5, source/5)
	if target != wantTarget || source != wantSource {
		t.Errorf("a batch of chunks took %.2f round trips to the target and %.2f to the source, want %d and %d", target, source, wantTarget, wantSource)
	}
}

// assertChunkIndexes checks that every chunk of m has its two indexes on the target,
// built by its unit.
func (p pair) assertChunkIndexes(t *testing.T, chunks int) {
	t.Helper()
	var n int
	if err := dbConn(t, p.srv, p.dst).QueryRow(context.Background(), `SELECT count(*) FROM pg_indexes i
		JOIN timescaledb_information.chunks c ON (c.chunk_schema, c.chunk_name) = (i.schemaname, i.tablename)
		WHERE c.hypertable_name = 'm'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 2*chunks {
		t.Errorf("%d chunk indexes on the target, want %d", n, 2*chunks)
	}
}
