package testenv

import (
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"
)

// Proxy forwards TCP connections to a server and cuts them when told to: tests of
// lost connections put it between tsmigrate and a server. A cut closes both sides
// of a connection, so the client sees its connection end and the server's backend
// ends its session (an open transaction rolls back).
type Proxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns []*proxied // every connection accepted, in order
	after int64      // the armed cut: more than after bytes from the server on one connection (0: none)
	all   bool       // the armed cut takes every open connection, not only that one
	cuts  int
	// The armed stall: more than stallAfter bytes from the server on one connection
	// (0: none) hold what the server sends on it for stallFor.
	stallAfter int64
	stallFor   time.Duration
	stalls     int
	latency    time.Duration // what the server sends reaches the client this late
}

type proxied struct {
	client, server net.Conn
	closed         bool
}

// StartProxy starts a proxy to s, stopped (every connection closed) when the test ends.
func StartProxy(t testing.TB, s *Server) *Proxy {
	t.Helper()
	return StartProxyOn(t, s, "127.0.0.1:0")
}

// StartProxyOn is StartProxy listening on addr ("host:port"; port 0 for any).
func StartProxyOn(t testing.TB, s *Server, addr string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: fmt.Sprintf("127.0.0.1:%d", s.Port)}
	p.wg.Go(p.serve)
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			p.end(c, false)
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

// URI is uri (one of the server's, such as Server.URI gives) through the proxy.
func (p *Proxy) URI(t testing.TB, uri string) string {
	t.Helper()
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = p.ln.Addr().String()
	return u.String()
}

// CutOneAfter arms one cut: the first connection that has carried more than n bytes
// from the server is cut.
func (p *Proxy) CutOneAfter(n int64) { p.arm(n, false) }

// CutAllAfter arms one cut: when a connection has carried more than n bytes from the
// server, every connection open at that moment is cut.
func (p *Proxy) CutAllAfter(n int64) { p.arm(n, true) }

func (p *Proxy) arm(n int64, all bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.after, p.all = max(n, 1), all
}

// StallOneAfter arms one stall: the first connection that has carried more than n
// bytes from the server stops passing what the server sends for d, then goes on, as a
// network that stops passing packets for a while: the connection stays open, nothing
// moves, nothing fails.
func (p *Proxy) StallOneAfter(n int64, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stallAfter, p.stallFor = max(n, 1), d
}

// Stalls is how many stalls happened so far.
func (p *Proxy) Stalls() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stalls
}

// stall says how long pc, which carried n bytes so far, is to hold now (0: not).
func (p *Proxy) stall(n int64) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stallAfter == 0 || n <= p.stallAfter {
		return 0
	}
	p.stallAfter = 0
	p.stalls++
	return p.stallFor
}

// Latency makes what the server sends reach the client d later, on every connection,
// from now on: a network far away (throughput is not limited). A session then sits
// idle at least d between sending a statement's result and reading the next statement,
// in a transaction when it holds one open: the server's
// idle_in_transaction_session_timeout fires on a session that does not turn it off.
func (p *Proxy) Latency(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.latency = d
}

func (p *Proxy) delay() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.latency
}

// CutPort cuts now the connection the server sees coming from port (its backend's
// pg_stat_activity.client_port). It says whether that connection was open.
func (p *Proxy) CutPort(port int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		if !c.closed && c.server.LocalAddr().(*net.TCPAddr).Port == port {
			p.end(c, true)
			return true
		}
	}
	return false
}

// Cuts is how many connections were cut so far.
func (p *Proxy) Cuts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cuts
}

func (p *Proxy) serve() {
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
		pc := &proxied{client: c, server: s}
		p.mu.Lock()
		p.conns = append(p.conns, pc)
		p.mu.Unlock()
		p.wg.Go(func() {
			io.Copy(s, c)
			p.endLocking(pc)
		})
		p.wg.Go(func() {
			p.fromServer(pc)
			p.endLocking(pc)
		})
	}
}

// fromServer forwards what the server sends until either side ends or a cut trips.
// Once the proxy has latency, a writer of its own passes each piece on when its
// latency is over (and keeps doing so, in order, should the latency go back to 0).
func (p *Proxy) fromServer(pc *proxied) {
	var late *lateWriter
	defer func() {
		if late != nil {
			late.stop()
		}
	}()
	var n int64
	buf := make([]byte, 32<<10)
	for {
		k, err := pc.server.Read(buf)
		if k > 0 {
			n += int64(k)
			if p.trip(pc, n) {
				return
			}
			if d := p.stall(n); d > 0 {
				time.Sleep(d)
			}
			latency := p.delay()
			if latency > 0 && late == nil {
				late = startLateWriter(pc.client)
			}
			if late != nil {
				if !late.send(time.Now().Add(latency), slices.Clone(buf[:k])) {
					return
				}
			} else if _, err := pc.client.Write(buf[:k]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// lateWriter writes pieces to a connection, each when it is due.
type lateWriter struct {
	pieces chan latePiece
	failed chan struct{}
	done   sync.WaitGroup
}

type latePiece struct {
	due  time.Time
	data []byte
}

func startLateWriter(c net.Conn) *lateWriter {
	w := &lateWriter{pieces: make(chan latePiece, 64), failed: make(chan struct{})}
	w.done.Go(func() {
		for pi := range w.pieces {
			time.Sleep(time.Until(pi.due))
			if _, err := c.Write(pi.data); err != nil {
				close(w.failed)
				for range w.pieces {
				}
				return
			}
		}
	})
	return w
}

// send queues data to be written at due; false when writing failed already.
func (w *lateWriter) send(due time.Time, data []byte) bool {
	select {
	case w.pieces <- latePiece{due, data}:
		return true
	case <-w.failed:
		return false
	}
}

// stop writes what is queued, then ends the writer.
func (w *lateWriter) stop() {
	close(w.pieces)
	w.done.Wait()
}

// trip makes the armed cut once pc has carried more than its bytes (n so far); it
// says whether pc was cut.
func (p *Proxy) trip(pc *proxied, n int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.after == 0 || n <= p.after {
		return false
	}
	p.after = 0
	if p.all {
		for _, c := range p.conns {
			p.end(c, true)
		}
	}
	p.end(pc, true)
	return true
}

func (p *Proxy) endLocking(pc *proxied) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.end(pc, false)
}

// end closes both sides of pc, counting a cut; p.mu is held.
func (p *Proxy) end(pc *proxied, cut bool) {
	if pc.closed {
		return
	}
	pc.closed = true
	pc.client.Close()
	pc.server.Close()
	if cut {
		p.cuts++
	}
}
