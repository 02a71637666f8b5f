package copy

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

func TestJobsFor(t *testing.T) {
	near := server{rtt: 60 * time.Microsecond, cores: 2, coresFrom: "this machine's", free: 90}
	far := server{rtt: 10 * time.Millisecond, cores: 2, coresFrom: "this machine's", free: 90}
	small := []int64{20 << 10, 20 << 10, 30 << 10}
	many := make([]int64, 1000)
	for i := range many {
		many[i] = 20 << 10
	}
	cases := []struct {
		name     string
		src, tgt server
		sizes    []int64
		want     int
		says     string
	}{
		{"servers near: as many as cores", near, near, small, 2, "on 2 cores (this machine's)"},
		{"target across a WAN, small units: more", near, far, small, 11, "round trips of 10ms to the target and 60µs to the source"},
		{"big units wait little for their round trips", near, far, []int64{1 << 30}, 2, "1024 MB"},
		{"bounded by the sessions the target takes", near, server{rtt: 10 * time.Millisecond, cores: 2, coresFrom: "this machine's", free: 9}, small, 5, "the servers take 9 more sessions"},
		{"at most maxAutoJobs", near, server{rtt: 100 * time.Millisecond, cores: 8, coresFrom: "its max_parallel_workers", free: 500}, small, maxAutoJobs, "the target's: its max_parallel_workers"},
		{"many small units go in batches: the servers' work, not the wait, bounds", near, far, many, 2, "a batch of 64 units of 20 kB"},
	}
	for _, c := range cases {
		got, why := jobsFor(c.src, c.tgt, c.sizes, defaultBatchUnits)
		if got != c.want || !strings.Contains(why, c.says) {
			t.Errorf("%s: %d (%s), want %d, saying %q", c.name, got, why, c.want, c.says)
		}
	}
}

// With the target across a link of 10 ms each way, a run that chooses its jobs copies
// more units at once than cores, and says why; given jobs win.
func TestJobsAutoAcrossLink(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	p := newPairOf(t, srv,
		`CREATE TABLE m (t timestamptz NOT NULL, v int)`,
		`SELECT create_hypertable('m', 't', chunk_time_interval => interval '1 hour')`,
		`INSERT INTO m SELECT '2024-01-01 00:00+00'::timestamptz + g * interval '1 minute', g FROM generate_series(0, 6 * 60 - 1) g`)
	link, err := testenv.NewProxy(srv, "127.0.0.1:0", testenv.Link{Delay: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer link.Close()
	target := mustParse(t, "target", link.URI(t, srv.SuperURI(p.dst)))
	var chosen []Event
	res, err := Run(context.Background(), Options{Source: p.source(t), Target: target, FreezeID: "f",
		OnEvent: func(e Event) {
			if e.Type == JobsChosen {
				chosen = append(chosen, e)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d at once: %s", res.Jobs, res.JobsWhy)
	if res.Jobs <= DefaultJobs() || !strings.Contains(res.JobsWhy, "to the target") || len(chosen) != 1 || chosen[0].Jobs != res.Jobs {
		t.Errorf("across 20 ms of round trip: %d units at once (%q), events %+v; want more than %d, said", res.Jobs, res.JobsWhy, chosen, DefaultJobs())
	}
	p.finish(t)
	var n int
	if err := dbConn(t, srv, p.dst).QueryRow(context.Background(), `SELECT count(*) FROM m`).Scan(&n); err != nil || n != 360 {
		t.Fatalf("target rows %d, %v", n, err)
	}

	q := newPairOf(t, srv, `CREATE TABLE x (a int)`, `INSERT INTO x VALUES (1)`)
	res, err = Run(context.Background(), Options{Source: q.source(t), Target: mustParse(t, "target", link.URI(t, srv.SuperURI(q.dst))), FreezeID: "f", Jobs: 3})
	if err != nil || res.Jobs != 3 || res.JobsWhy != "given (3)" {
		t.Fatalf("jobs given: %d (%q), %v", res.Jobs, res.JobsWhy, err)
	}
}
