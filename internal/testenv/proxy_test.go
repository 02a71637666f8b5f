package testenv

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// The proxy counts the exchanges a client waits for, whatever they hold: a simple
// query of several statements, a pgx batch, a COPY; and the bytes each way.
func TestProxyCountsRoundTrips(t *testing.T) {
	ctx := context.Background()
	s := Shared(t, PG17TS)
	db := NewDB(t, s, false)
	p := StartProxy(t, s)
	before := p.Stats()
	conn, err := pgx.Connect(ctx, p.URI(t, s.SuperURI(db)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	connected := p.Stats().Sub(before)
	if connected.RoundTrips != 1 || connected.Opaque != 0 {
		t.Fatalf("connecting: %+v, want 1 round trip (the startup's ReadyForQuery)", connected)
	}
	batch := func() error {
		b := &pgx.Batch{}
		for i := range 3 {
			b.Queue("INSERT INTO t VALUES ($1)", i)
		}
		return conn.SendBatch(ctx, b).Close()
	}
	steps := []struct {
		what string
		run  func() error
		want int64
	}{
		{"one statement, simple protocol", func() error {
			return conn.PgConn().Exec(ctx, "CREATE TABLE t (a int)").Close()
		}, 1},
		{"four statements in one simple query", func() error {
			return conn.PgConn().Exec(ctx, "BEGIN; INSERT INTO t VALUES (1); INSERT INTO t VALUES (2); COMMIT").Close()
		}, 1},
		{"a batch of three queries, its statement prepared first", batch, 2},
		{"the same batch again", batch, 1},
		{"a COPY after a statement, in one query", func() error {
			_, err := conn.PgConn().CopyFrom(ctx, strings.NewReader("7\n8\n"), "TRUNCATE t; COPY t FROM STDIN")
			return err
		}, 1},
	}
	for _, st := range steps {
		b := p.Stats()
		if err := st.run(); err != nil {
			t.Fatalf("%s: %v", st.what, err)
		}
		got := p.Stats().Sub(b)
		if got.RoundTrips != st.want || got.ToServer == 0 || got.ToClient == 0 {
			t.Errorf("%s: %+v, want %d round trips and bytes both ways", st.what, got, st.want)
		}
	}
}

// A shaped link delays each way and bounds its rate.
func TestProxyShapesLink(t *testing.T) {
	ctx := context.Background()
	s := Shared(t, PG17TS)
	db := NewDB(t, s, false)
	p, err := NewProxy(s, "127.0.0.1:0", Link{Delay: 25 * time.Millisecond, Rate: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	conn, err := pgx.Connect(ctx, p.URI(t, s.SuperURI(db)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	t0 := time.Now()
	for range 4 {
		if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(t0) / 4; d < 50*time.Millisecond {
		t.Errorf("a round trip took %s through a link of 25 ms each way", d)
	}
	// 2 MiB from the server at 1 MiB/s: two seconds at least.
	t0 = time.Now()
	var n int
	if err := conn.QueryRow(ctx, "SELECT length(repeat('x', 2 << 20))").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SELECT repeat('x', 2 << 20)"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d < 2*time.Second {
		t.Errorf("2 MiB came in %s through a link of 1 MiB/s", d)
	}
}

// CutAll ends every open connection at once; the proxy takes new ones afterwards.
func TestProxyCutAll(t *testing.T) {
	ctx := context.Background()
	s := Shared(t, PG17TS)
	db := NewDB(t, s, false)
	p := StartProxy(t, s)
	var conns []*pgx.Conn
	for range 2 {
		conn, err := pgx.Connect(ctx, p.URI(t, s.SuperURI(db)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		conns = append(conns, conn)
	}
	if n := p.CutAll(); n != 2 || p.Cuts() != 2 {
		t.Fatalf("CutAll cut %d (Cuts %d), want the 2 open connections", n, p.Cuts())
	}
	for i, conn := range conns {
		if _, err := conn.Exec(ctx, "SELECT 1"); err == nil {
			t.Errorf("connection %d still works after CutAll", i)
		}
	}
	conn, err := pgx.Connect(ctx, p.URI(t, s.SuperURI(db)))
	if err != nil {
		t.Fatalf("a new connection after CutAll: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
}
