package copy

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// cutProxy forwards TCP connections to a server and cuts the first connection that
// has carried more than cutAfter bytes from the server, once.
type cutProxy struct {
	ln       net.Listener
	target   string
	cutAfter int64
	cut      atomic.Bool
	wg       sync.WaitGroup
}

func newCutProxy(t *testing.T, target string, cutAfter int64) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, cutAfter: cutAfter}
	p.wg.Go(p.serve)
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *cutProxy) port() int { return p.ln.Addr().(*net.TCPAddr).Port }

func (p *cutProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.wg.Go(func() { io.Copy(s, c); s.Close() })
		p.wg.Go(func() {
			var n int64
			buf := make([]byte, 32<<10)
			for {
				k, err := s.Read(buf)
				if k > 0 {
					n += int64(k)
					if n > p.cutAfter && p.cut.CompareAndSwap(false, true) {
						break
					}
					if _, err := c.Write(buf[:k]); err != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			c.Close()
			s.Close()
		})
	}
}

func TestRetryOnCutConnection(t *testing.T) {
	p := newPair(t)
	proxy := newCutProxy(t, fmt.Sprintf("127.0.0.1:%d", p.srv.Port), 1<<20)
	srcURI := strings.Replace(p.srv.SuperURI(p.src), fmt.Sprintf(":%d/", p.srv.Port), fmt.Sprintf(":%d/", proxy.port()), 1)
	var retries atomic.Int32
	res, err := Run(context.Background(), Options{Source: mustParse(t, "source", srcURI), Target: p.target(t), Jobs: 2,
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
	if !proxy.cut.Load() || res.Retries < 1 || retries.Load() < 1 {
		t.Fatalf("cut %v, %d retries counted, %d retry events", proxy.cut.Load(), res.Retries, retries.Load())
	}
	p.finish(t)
	p.assertEqual(t)
}
