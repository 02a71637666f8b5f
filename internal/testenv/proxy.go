package testenv

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy forwards TCP connections to a server and cuts them when told to: tests of
// lost connections put it between tsmigrate and a server. A cut closes both sides
// of a connection, so the client sees its connection end and the server's backend
// ends its session (an open transaction rolls back).
//
// It also counts what passes (Stats): bytes each way, and round trips, read from the
// protocol; and it can shape the link (Link: a delay and a rate each way), as a
// network between two regions would.
type Proxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup
	link   Link

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

	// The armed hold: the server's answer to the first query holding holdText is held
	// for holdFor; held is closed when that query is seen.
	holdText string
	holdFor  time.Duration
	held     chan struct{}

	toServer, toClient atomic.Int64 // bytes
	roundTrips         atomic.Int64
	opaque             atomic.Int64 // connections whose messages cannot be read (TLS)
}

// Link shapes what a proxy passes, each way on its own: Delay is added to every byte's
// trip (half the round trip), Rate bounds the bytes per second (0: no bound).
type Link struct {
	Delay time.Duration
	Rate  int64
}

// ProxyStats is what passed through a proxy.
type ProxyStats struct {
	ToServer, ToClient int64 // bytes
	// RoundTrips are the exchanges the clients waited for: the server's ReadyForQuery
	// messages, one for each simple query (however many statements it holds), each
	// extended-protocol Sync (a pgx batch is one), each COPY, and each connection's
	// start. Authentication's own exchanges are not counted.
	RoundTrips int64
	// Opaque counts connections whose messages could not be read (TLS): their round
	// trips are missing from RoundTrips.
	Opaque int64
}

type proxied struct {
	client, server net.Conn
	closed         bool
	ended          chan struct{} // closed with the connection
	// pending counts the client's SSLRequest and GSSENCRequest messages, which the
	// server answers with one byte instead of a message.
	pending atomic.Int32
	// holdUntil (Unix nanoseconds, 0: none): what the server sends is held until then.
	holdUntil atomic.Int64
}

// StartProxy starts a proxy to s, stopped (every connection closed) when the test ends.
func StartProxy(t testing.TB, s *Server) *Proxy {
	t.Helper()
	return StartProxyOn(t, s, "127.0.0.1:0")
}

// StartProxyOn is StartProxy listening on addr ("host:port"; port 0 for any).
func StartProxyOn(t testing.TB, s *Server, addr string) *Proxy {
	t.Helper()
	p, err := NewProxy(s, addr, Link{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// NewProxy starts a proxy to s listening on addr ("host:port"; port 0 for any) that
// shapes its connections as link says; Close stops it. For programs (the benchmarks);
// tests use StartProxy.
func NewProxy(s *Server, addr string, link Link) (*Proxy, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: fmt.Sprintf("127.0.0.1:%d", s.Port), link: link}
	p.wg.Go(p.serve)
	return p, nil
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		p.end(c, false)
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// Port is the port the proxy listens on.
func (p *Proxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

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

// Stats says what passed through the proxy so far.
func (p *Proxy) Stats() ProxyStats {
	return ProxyStats{ToServer: p.toServer.Load(), ToClient: p.toClient.Load(), RoundTrips: p.roundTrips.Load(), Opaque: p.opaque.Load()}
}

// Sub is what passed between an earlier reading o and s.
func (s ProxyStats) Sub(o ProxyStats) ProxyStats {
	return ProxyStats{ToServer: s.ToServer - o.ToServer, ToClient: s.ToClient - o.ToClient,
		RoundTrips: s.RoundTrips - o.RoundTrips, Opaque: s.Opaque - o.Opaque}
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

// HoldAnswerTo arms one hold: on the first connection that sends a query whose text
// holds text, what the server sends from then on is held for d (the answer to that
// query among it), while the server goes on: the query is in flight, as far as the
// client can tell. The channel returned is closed when the query has passed.
func (p *Proxy) HoldAnswerTo(text string, d time.Duration) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.holdText, p.holdFor, p.held = text, d, make(chan struct{})
	return p.held
}

// query sees a query the client sent on pc, and holds the answers if it is the one
// armed.
func (p *Proxy) query(pc *proxied, text []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.holdText == "" || !bytes.Contains(text, []byte(p.holdText)) {
		return
	}
	pc.holdUntil.Store(time.Now().Add(p.holdFor).UnixNano())
	p.holdText = ""
	close(p.held)
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
// It adds to a Link's delay.
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

// CutAll cuts now every connection open through the proxy, as a network that drops
// for a moment does. It says how many were open.
func (p *Proxy) CutAll() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.conns {
		if !c.closed {
			p.end(c, true)
			n++
		}
	}
	return n
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
		pc := &proxied{client: c, server: s, ended: make(chan struct{})}
		p.mu.Lock()
		p.conns = append(p.conns, pc)
		p.mu.Unlock()
		p.wg.Go(func() {
			p.forward(pc, false)
			p.endLocking(pc)
		})
		p.wg.Go(func() {
			p.forward(pc, true)
			p.endLocking(pc)
		})
	}
}

// sleep waits d, or until the connection ends.
func (pc *proxied) sleep(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-pc.ended:
	}
}

// piece is what one read took from a side, and when it is to reach the other.
type piece struct {
	b  []byte
	at time.Time
}

// forward passes one direction of pc (fromServer: the server's side) until either side
// ends or a cut trips, reading the protocol's messages on the way, delayed and paced
// as the link says.
func (p *Proxy) forward(pc *proxied, fromServer bool) {
	src, dst, count := pc.client, pc.server, &p.toServer
	if fromServer {
		src, dst, count = pc.server, pc.client, &p.toClient
	}
	rd := &reader{p: p, pc: pc, fromServer: fromServer}
	// Once the link or the proxy's latency delays what passes, a writer of its own
	// delivers what was read once its time came (and keeps doing so, in order, should
	// the latency go back to 0); the queue's bound holds back the reader (and so the
	// sender) as a full link would.
	var out chan piece
	done := make(chan struct{})
	startWriter := func() {
		out = make(chan piece, 256)
		go func() {
			defer close(done)
			for q := range out {
				if d := time.Until(q.at); d > 0 {
					time.Sleep(d)
				}
				if _, err := dst.Write(q.b); err != nil {
					for range out { // drain, so that the reader ends
					}
					return
				}
			}
		}()
	}
	if p.link != (Link{}) {
		startWriter()
	}
	defer func() {
		if out != nil {
			close(out)
			<-done
		}
	}()
	var n int64
	var free time.Time // when the link has sent what it was given
	buf := make([]byte, 32<<10)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			n += int64(k)
			count.Add(int64(k))
			rd.feed(buf[:k])
			if fromServer {
				if p.trip(pc, n) {
					return
				}
				if d := p.stall(n); d > 0 {
					pc.sleep(d)
				}
				if d := time.Until(time.Unix(0, pc.holdUntil.Load())); d > 0 {
					pc.sleep(d)
				}
			}
			var latency time.Duration
			if fromServer {
				latency = p.delay()
			}
			if out == nil && latency > 0 {
				startWriter()
			}
			if out == nil {
				if _, err := dst.Write(buf[:k]); err != nil {
					return
				}
			} else {
				now := time.Now()
				if free.Before(now) {
					free = now
				}
				if p.link.Rate > 0 {
					free = free.Add(time.Duration(float64(k) / float64(p.link.Rate) * float64(time.Second)))
				}
				out <- piece{b: append([]byte(nil), buf[:k]...), at: free.Add(p.link.Delay + latency)}
			}
		}
		if err != nil {
			return
		}
	}
}

// reader follows the messages of one direction of a connection.
type reader struct {
	p          *Proxy
	pc         *proxied
	fromServer bool
	started    bool   // the client: its startup message is past
	opaque     bool   // TLS: nothing more can be read
	head       []byte // a message's type and length, as far as read
	skip       int    // bytes left of the current message's body
	query      []byte // the text of a query of the client, as far as read (see HoldAnswerTo)
	inQuery    bool
}

// maxQuery bounds the text of a query that HoldAnswerTo looks into.
const maxQuery = 1 << 20

// Startup-phase request codes (the protocol's SSLRequest, GSSENCRequest).
const (
	sslRequest    = 80877103
	gssencRequest = 80877104
)

func (r *reader) feed(b []byte) {
	for len(b) > 0 && !r.opaque {
		if r.skip > 0 {
			k := min(r.skip, len(b))
			if r.inQuery {
				r.query = append(r.query, b[:k]...)
			}
			r.skip -= k
			b = b[k:]
			if r.skip == 0 && r.inQuery {
				r.p.query(r.pc, r.query)
				r.query, r.inQuery = r.query[:0], false
			}
			continue
		}
		if r.fromServer && len(r.head) == 0 && r.pc.pending.Load() > 0 {
			// The one-byte answer to an SSLRequest or GSSENCRequest.
			r.pc.pending.Add(-1)
			if b[0] != 'N' {
				r.opaque = true
				r.p.opaque.Add(1)
				return
			}
			b = b[1:]
			continue
		}
		// A typed message: its type and length; a startup-phase message of the client
		// (no type): its length and request code, 8 bytes at least.
		typed := r.fromServer || r.started
		want := 8
		if typed {
			want = 5
		}
		k := min(want-len(r.head), len(b))
		r.head = append(r.head, b[:k]...)
		b = b[k:]
		if len(r.head) < want {
			return
		}
		if typed {
			if r.fromServer && r.head[0] == 'Z' {
				r.p.roundTrips.Add(1)
			}
			r.skip = int(binary.BigEndian.Uint32(r.head[1:])) - 4
			r.inQuery = !r.fromServer && r.head[0] == 'Q' && r.skip <= maxQuery
			r.head = r.head[:0]
			continue
		}
		// SSLRequest and GSSENCRequest are answered with one byte; after a CancelRequest
		// nothing follows; else this is the startup message.
		switch binary.BigEndian.Uint32(r.head[4:]) {
		case sslRequest, gssencRequest:
			r.pc.pending.Add(1)
		default:
			r.started = true
		}
		r.head, r.skip = r.head[:0], int(binary.BigEndian.Uint32(r.head[:4]))-8
	}
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
	close(pc.ended)
	pc.client.Close()
	pc.server.Close()
	if cut {
		p.cuts++
	}
}
