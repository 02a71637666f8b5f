package dbconn

import (
	"net"
	"slices"
	"strings"
	"testing"
)

// The no-TLS warning: a server named by a remote address or host name and reached
// without TLS gets one, naming the role and the server; a local one, or TLS, none.
func TestWarnings(t *testing.T) {
	cases := []struct {
		conninfo string
		tls      bool
		want     string // "" for no warning
	}{
		{"host=10.255.255.1 port=5432 user=u dbname=d", false, "source: 10.255.255.1:5432 is reached without TLS"},
		{"postgres://u@db.example.com:6432/d", false, "source: db.example.com:6432 is reached without TLS"},
		{"postgres://u@[2001:db8::1]:5432/d", false, "source: [2001:db8::1]:5432 is reached without TLS"},
		{"host=10.255.255.1 user=u", true, ""},
		{"host=127.0.0.1 user=u", false, ""},
		{"host=127.3.4.5 user=u", false, ""},
		{"host=::1 user=u", false, ""},
		{"host=localhost user=u", false, ""},
		{"host=/var/run/postgresql user=u", false, ""},
	}
	for _, c := range cases {
		cfg, err := Parse("source", c.conninfo)
		if err != nil {
			t.Fatalf("%s: %v", c.conninfo, err)
		}
		got := cfg.Warnings(&Conn{TLS: c.tls})
		switch {
		case c.want == "" && len(got) != 0:
			t.Errorf("%s (TLS %v): warnings %q, want none", c.conninfo, c.tls, got)
		case c.want != "" && (len(got) != 1 || !strings.HasPrefix(got[0], c.want) || !strings.Contains(got[0], "sslmode=require")):
			t.Errorf("%s (TLS %v): warnings %q, want one starting %q and saying what to set", c.conninfo, c.tls, got, c.want)
		}
	}
}

// The address the connection reached decides, when known: a connection string whose
// first host is remote but that reached a loopback address (the first host did not
// answer) gets no warning, and one that reached a remote address names it.
func TestWarningsByAddressReached(t *testing.T) {
	cfg, err := Parse("target", "host=10.255.255.1,127.0.0.1 port=5432,5433 user=u")
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Warnings(&Conn{Reached: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5433}}); len(got) != 0 {
		t.Errorf("loopback reached: warnings %q", got)
	}
	if got := cfg.Warnings(&Conn{Reached: &net.UnixAddr{Name: "/run/postgresql/.s.PGSQL.5432", Net: "unix"}}); len(got) != 0 {
		t.Errorf("Unix socket reached: warnings %q", got)
	}
	local, err := Parse("target", "host=localhost user=u")
	if err != nil {
		t.Fatal(err)
	}
	got := local.Warnings(&Conn{Reached: &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 5432}})
	if len(got) != 1 || !strings.HasPrefix(got[0], "target: 10.1.2.3:5432 is reached without TLS") {
		t.Errorf("remote address reached: warnings %q", got)
	}
}

// WithDatabase keeps the warning callback, so that every connection of a command that
// switches databases (verify --database) still reports.
func TestWithDatabaseKeepsOnWarning(t *testing.T) {
	cfg, err := Parse("target", "host=10.255.255.1 user=u dbname=a")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	cfg.OnWarning = func(w string) { got = append(got, w) }
	other := cfg.WithDatabase("b")
	if other.OnWarning == nil {
		t.Fatal("WithDatabase dropped OnWarning")
	}
	other.OnWarning("x")
	if !slices.Equal(got, []string{"x"}) || other.Database() != "b" {
		t.Fatalf("got %q, database %q", got, other.Database())
	}
}
