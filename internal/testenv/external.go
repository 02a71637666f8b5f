package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// ExternalEnv names the environment variable that points the tests at a server of kind
// k the contributor runs already (where root and debootstrap are not at hand):
// TSMIGRATE_TEST_PG15, TSMIGRATE_TEST_PG17TS, ... = HOST:PORT. The superuser postgres
// must log in there with SuperPassword, over TCP, without TLS: the tests check that this
// password never leaks. Shared returns that server instead of starting one; tests that
// need a server of their own (Need: restarts, kills, managed-like set-ups) still start
// one, and skip when they cannot.
func ExternalEnv(k Kind) string { return "TSMIGRATE_TEST_" + strings.ToUpper(string(k)) }

// external is the server ExternalEnv(k) names, or nil when it names none.
func external(ctx context.Context, k Kind) (*Server, error) {
	addr := os.Getenv(ExternalEnv(k))
	if addr == "" {
		return nil, nil
	}
	host, port, err := net.SplitHostPort(addr)
	n, perr := strconv.Atoi(port)
	if err != nil || perr != nil {
		return nil, fmt.Errorf("%s=%q: give HOST:PORT", ExternalEnv(k), addr)
	}
	done := make(chan struct{})
	close(done) // no process of ours to wait for
	s := &Server{Kind: k, Port: n, host: host, paths: paths{clientBin: ClientBin(k)}, done: done}
	conn, err := pgx.Connect(ctx, s.SuperURI("postgres"))
	if err != nil {
		return nil, fmt.Errorf("%s=%s: log in as postgres with testenv.SuperPassword: %w", ExternalEnv(k), addr, err)
	}
	defer conn.Close(ctx)
	var version int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		return nil, fmt.Errorf("%s=%s: read the server's version: %w", ExternalEnv(k), addr, err)
	}
	s.Major = version / 10000
	return s, nil
}
