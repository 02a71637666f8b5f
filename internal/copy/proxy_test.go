package copy

import (
	"context"
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
