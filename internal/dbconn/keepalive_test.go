package dbconn_test

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// socketKeepalives reads the keepalive options of conn's TCP socket: whether they are
// on, and the idle time, interval (seconds) and count.
func socketKeepalives(t *testing.T, conn *dbconn.Conn) [4]int {
	t.Helper()
	nc := conn.PgConn().Conn()
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	raw, err := nc.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got [4]int
	var serr error
	raw.Control(func(fd uintptr) {
		for i, opt := range [][2]int{{syscall.SOL_SOCKET, syscall.SO_KEEPALIVE}, {syscall.IPPROTO_TCP, unix.TCP_KEEPIDLE},
			{syscall.IPPROTO_TCP, unix.TCP_KEEPINTVL}, {syscall.IPPROTO_TCP, unix.TCP_KEEPCNT}} {
			if got[i], serr = unix.GetsockoptInt(int(fd), opt[0], opt[1]); serr != nil {
				return
			}
		}
	})
	if serr != nil {
		t.Fatal(serr)
	}
	return got
}

// Every connection tsmigrate makes has TCP keepalives that notice a vanished server
// within about a minute (30 s idle, then 3 probes 10 s apart), and pg_dump/pg_restore
// are told the same; libpq's keepalive keywords change them for both (pgx alone would
// send them to the server, which refuses to log in), keepalives=0 turns them off.
func TestKeepalives(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG15)
	ctx := context.Background()
	for _, c := range []struct {
		query string
		want  [4]int
		child []string
	}{
		{"", [4]int{1, 30, 10, 3}, []string{"keepalives_count='3'", "keepalives_idle='30'", "keepalives_interval='10'"}},
		{"&keepalives_idle=7&keepalives_interval=2&keepalives_count=4", [4]int{1, 7, 2, 4},
			[]string{"keepalives_count='4'", "keepalives_idle='7'", "keepalives_interval='2'"}},
		{"&keepalives=0", [4]int{0, -1, -1, -1}, []string{"keepalives='0'"}},
	} {
		cfg, err := dbconn.Parse("source", srv.SuperURI("postgres")+c.query)
		if err != nil {
			t.Fatalf("%q: %v", c.query, err)
		}
		conn, err := cfg.Connect(ctx)
		if err != nil {
			t.Fatalf("%q: %v", c.query, err)
		}
		got := socketKeepalives(t, conn)
		conn.Close(ctx)
		if c.want[0] == 0 {
			got[1], got[2], got[3] = -1, -1, -1 // meaningless when off
		}
		if got != c.want {
			t.Errorf("%q: socket keepalive on, idle, interval, count = %v, want %v", c.query, got, c.want)
		}
		child, err := cfg.ChildProcess()
		if err != nil {
			t.Fatal(err)
		}
		child.Close()
		for _, w := range c.child {
			if !strings.Contains(child.Conninfo, w) {
				t.Errorf("%q: pg_dump's conninfo %q lacks %s", c.query, dbconn.Redact(child.Conninfo), w)
			}
		}
	}
	if _, err := dbconn.Parse("source", srv.SuperURI("postgres")+"&keepalives_idle=soon"); err == nil || !strings.Contains(err.Error(), "keepalives_idle") {
		t.Errorf("keepalives_idle=soon: %v, want a usage error naming it", err)
	}
}
