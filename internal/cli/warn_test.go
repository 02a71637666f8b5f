package cli

import (
	"encoding/json"
	"net"
	"strings"
	"testing"

	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// remoteURI is srv's URI for db through a proxy that listens on one of this machine's
// addresses that is not a loopback one: a server that tsmigrate reaches at a remote
// address, without TLS. It skips when the machine has no such address.
func remoteURI(t *testing.T, srv *testenv.Server, db string) (uri, host string) {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Skipf("no interface addresses: %v", err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			host = n.IP.String()
			break
		}
	}
	if host == "" {
		t.Skipf("this machine has no IPv4 address but loopback ones (%v)", addrs)
	}
	p := testenv.StartProxyOn(t, srv, net.JoinHostPort(host, "0"))
	return p.URI(t, srv.URI(db)), host
}

// Every command that connects warns, once per server and on stderr, when a server that
// is not local is reached without TLS; --json output on stdout stays one document.
func TestNoTLSWarningOncePerServer(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG15)
	src, dst := testenv.NewDB(t, srv, false), testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, src, `CREATE TABLE a (x int)`, `CREATE TABLE b (x int)`, `CREATE TABLE c (x int)`)
	testenv.MustExec(t, srv, dst, `CREATE TABLE a (x int)`, `CREATE TABLE b (x int)`, `CREATE TABLE c (x int)`)
	remote, host := remoteURI(t, srv, src)
	want := "tsmigrate: warning: source: " + host + ":"

	for _, args := range [][]string{
		{"freeze-status", "--source", remote, "--json"},
		{"unfreeze", "--source", remote, "--json"},
		// three jobs: several connections to each server, one warning
		{"verify", "--source", remote, "--target", srv.URI(dst), "--jobs", "3", "--json"},
		{"preflight", "--source", remote, "--target", srv.URI(dst), "--json"},
	} {
		t.Run(args[0], func(t *testing.T) {
			r := run(t, args...)
			if strings.Count(r.stderr, "warning:") != 1 || !strings.Contains(r.stderr, want) ||
				!strings.Contains(r.stderr, "without TLS") || strings.Contains(r.stderr, "target:") {
				t.Errorf("stderr %q: want exactly one no-TLS warning, for the source", r.stderr)
			}
			var doc map[string]any
			dec := json.NewDecoder(strings.NewReader(r.stdout))
			if err := dec.Decode(&doc); err != nil || dec.More() {
				t.Errorf("stdout is not one JSON document (%v):\n%s", err, r.stdout)
			}
			if strings.Contains(r.stdout+r.stderr, testenv.SuperPassword) {
				t.Error("the password appears in the output")
			}
		})
	}

	// The same servers named by their loopback address: no warning.
	r := run(t, "freeze-status", "--source", srv.URI(src))
	if r.code != 0 || strings.Contains(r.stderr, "warning") {
		t.Errorf("loopback source: exit %d, stderr %q", r.code, r.stderr)
	}
}
