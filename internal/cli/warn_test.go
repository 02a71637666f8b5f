package cli

import (
	"context"
	"encoding/json"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// byHostName is srv's URI for db with the machine's host name in place of 127.0.0.1: a
// server that tsmigrate cannot tell is local (it judges by the connection string), so it
// stands for a remote server reached without TLS. Skips when the host name does not
// reach the loopback address the test servers listen on.
func byHostName(t *testing.T, srv *testenv.Server, db string) string {
	t.Helper()
	name, err := os.Hostname()
	if err != nil {
		t.Skipf("no host name: %v", err)
	}
	addrs, err := net.DefaultResolver.LookupHost(context.Background(), name)
	if err != nil || !containsLoopback(addrs) {
		t.Skipf("host name %q does not resolve to a loopback address (%v, %v)", name, addrs, err)
	}
	u, err := url.Parse(srv.URI(db))
	if err != nil {
		t.Fatal(err)
	}
	u.Host = net.JoinHostPort(name, u.Port())
	return u.String()
}

func containsLoopback(addrs []string) bool {
	for _, a := range addrs {
		if ip := net.ParseIP(a); ip != nil && ip.To4() != nil && ip.IsLoopback() {
			return true
		}
	}
	return false
}

// Every command that connects warns, once per server and on stderr, when a server that
// is not local is reached without TLS; --json output on stdout stays one document.
func TestNoTLSWarningOncePerServer(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG15)
	src, dst := testenv.NewDB(t, srv, false), testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, src, `CREATE TABLE a (x int)`, `CREATE TABLE b (x int)`, `CREATE TABLE c (x int)`)
	testenv.MustExec(t, srv, dst, `CREATE TABLE a (x int)`, `CREATE TABLE b (x int)`, `CREATE TABLE c (x int)`)
	remote := byHostName(t, srv, src)
	host, _ := os.Hostname()
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
