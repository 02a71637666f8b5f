package copy

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

func TestRetryOnCutConnection(t *testing.T) {
	p := newPair(t)
	proxy := testenv.StartProxy(t, p.srv)
	proxy.CutOneAfter(1 << 20)
	var retries atomic.Int32
	res, err := Run(context.Background(), Options{Source: mustParse(t, "source", proxy.URI(t, p.srv.SuperURI(p.src))), Target: p.target(t), Jobs: 2,
		FreezeID: "f", RangeBytes: testRange, RetryBackoff: 50 * time.Millisecond,
		OnEvent: func(e Event) {
			if e.Type == Retry {
				retries.Add(1)
				t.Logf("retry: %s", e.Err)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if proxy.Cuts() != 1 || res.Retries < 1 || retries.Load() < 1 {
		t.Fatalf("%d cuts, %d retries counted, %d retry events", proxy.Cuts(), res.Retries, retries.Load())
	}
	p.finish(t)
	p.assertEqual(t)
}

// A source connection that stops passing data for a while (the network holds its
// packets; nothing fails) is told in the progress: Stalled events once no byte moved
// for StallAfter, naming the units copying, and the copy then ends well.
func TestStallNotice(t *testing.T) {
	p := newPair(t)
	proxy := testenv.StartProxy(t, p.srv)
	proxy.StallOneAfter(256<<10, 3500*time.Millisecond)
	var stalls []Event
	var mu sync.Mutex
	_, err := Run(context.Background(), Options{Source: mustParse(t, "source", proxy.URI(t, p.srv.SuperURI(p.src))), Target: p.target(t), Jobs: 1,
		FreezeID: "f", RangeBytes: testRange, StallAfter: time.Second, ProgressEvery: 100 * time.Millisecond,
		OnEvent: func(e Event) {
			if e.Type == Stalled {
				mu.Lock()
				stalls = append(stalls, e)
				mu.Unlock()
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	longest := time.Duration(0)
	for i, e := range stalls {
		t.Logf("stalled %s: %d units copying", e.Quiet, len(e.Units))
		if e.Quiet < time.Second || len(e.Units) != 1 || e.Units[0].ID == "" {
			t.Errorf("event %d: quiet %s, units %+v", i, e.Quiet, e.Units)
		}
		longest = max(longest, e.Quiet)
	}
	if proxy.Stalls() != 1 || longest < 2*time.Second {
		t.Fatalf("%d stalls, %d Stalled events (longest quiet %s), want the stall told at 1 s and again at 2 s at least", proxy.Stalls(), len(stalls), longest)
	}
	p.finish(t)
	p.assertEqual(t)
}
