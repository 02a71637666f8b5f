// Package dbconn holds the connection settings of the source and the target: libpq URIs
// or key=value strings, the PG* environment and ~/.pgpass (through pgx), TLS as sslmode
// says, connect timeouts, redaction of passwords, and handing the settings to pg_dump
// and pg_restore without a password on their command line.
package dbconn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tsmigrate/tsmigrate/internal/exit"
)

// DefaultConnectTimeout applies when the connection string sets no connect_timeout.
const DefaultConnectTimeout = 10 * time.Second

// Config is how to reach one server. Role ("source" or "target") names it in messages.
type Config struct {
	Role string
	// OnWarning, when set, hears every warning (see Warnings) about each connection that
	// Connect makes, possibly from several goroutines at once: a caller that shows them
	// once per server dedupes them itself. WithDatabase copies it.
	OnWarning func(warning string)
	params    map[string]string
	pgx       *pgx.ConnConfig // resolved: environment and passfile applied
}

// Parse reads a connection string for role. An empty string means libpq defaults and
// the PG* environment. A malformed string is a usage error (exit 2) whose message never
// contains the password.
func Parse(role, s string) (*Config, error) {
	p, err := parseConnString(s)
	if err != nil {
		return nil, exit.Usagef("give a postgres:// URI or key=value pairs, as psql takes them",
			"%s: invalid connection string: %s", role, err)
	}
	if pw, ok := p["password"]; ok {
		RegisterSecret(pw)
	}
	c := &Config{Role: role, params: p}
	if err := c.resolve(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Config) resolve() error {
	pc, err := pgx.ParseConfig(formatKeywords(c.params))
	if err != nil {
		return exit.Usagef("check the connection string's keywords and values",
			"%s: invalid connection string: %s", c.Role, Redact(oneLine(unwrapParseError(err))))
	}
	if _, set := c.params["connect_timeout"]; !set {
		pc.ConnectTimeout = DefaultConnectTimeout
	}
	kc, err := keepalives(c.params)
	if err != nil {
		return exit.Usagef("give the keepalive keywords whole seconds, as libpq takes them", "%s: invalid connection string: %s", c.Role, err)
	}
	for _, k := range keepaliveKeys {
		delete(pc.RuntimeParams, k)
	}
	dialer := &net.Dialer{KeepAliveConfig: kc}
	if !kc.Enable {
		dialer.KeepAlive = -1
	}
	pc.DialFunc = dialer.DialContext
	pc.RuntimeParams["application_name"] = "tsmigrate"
	// pgx reads and writes strings as UTF-8, and a session's client_encoding is its
	// database's encoding unless asked: on a LATIN1 database names and values came
	// as LATIN1 bytes and went, unconverted, to a UTF8 target ("invalid byte sequence
	// for encoding UTF8"). The server converts from and to its own encoding.
	// pg_dump and pg_restore (ChildProcess) keep the user's: their archives say theirs.
	pc.RuntimeParams["client_encoding"] = "UTF8"
	RegisterSecret(pc.Password)
	c.pgx = pc
	return nil
}

func unwrapParseError(err error) string {
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) && pe.Unwrap() != nil {
		return pe.Unwrap().Error()
	}
	return err.Error()
}

// WithDatabase is a copy of c that connects to database name.
func (c *Config) WithDatabase(name string) *Config {
	p := make(map[string]string, len(c.params)+1)
	for k, v := range c.params {
		p[k] = v
	}
	p["dbname"] = name
	n := &Config{Role: c.Role, OnWarning: c.OnWarning, params: p}
	n.pgx = c.pgx.Copy()
	n.pgx.Database = name
	return n
}

// Database is the database name the config connects to.
func (c *Config) Database() string { return c.pgx.Database }

// User is the role the config logs in as.
func (c *Config) User() string { return c.pgx.User }

// Host is the first host (or socket directory) and port.
func (c *Config) Host() (string, uint16) { return c.pgx.Host, c.pgx.Port }

// HasPassword says whether a password is known (from the string, PGPASSWORD, a
// passfile entry, or SetPassword).
func (c *Config) HasPassword() bool { return c.pgx.Password != "" }

// SetPassword sets the password, e.g. one read from a prompt.
func (c *Config) SetPassword(pw string) {
	RegisterSecret(pw)
	c.params["password"] = pw
	c.pgx.Password = pw
}

// String shows the config without its password: user@host:port/dbname.
func (c *Config) String() string {
	return fmt.Sprintf("%s@%s/%s", c.pgx.User, c.hostPort(), c.pgx.Database)
}

func (c *Config) hostPort() string {
	if strings.HasPrefix(c.pgx.Host, "/") {
		return fmt.Sprintf("%s:%d", c.pgx.Host, c.pgx.Port)
	}
	return net.JoinHostPort(c.pgx.Host, fmt.Sprint(c.pgx.Port))
}

// ConnString is the connection string without its password, as key=value pairs that
// --source/--target accept: for advice such as "run: tsmigrate unfreeze --source ...".
func (c *Config) ConnString() string {
	p := make(map[string]string, len(c.params)+1)
	for k, v := range c.params {
		if k != "password" {
			p[k] = v
		}
	}
	p["dbname"] = c.pgx.Database
	return formatKeywords(p)
}

// IsLocal says whether the server is reached over a Unix socket or a loopback address.
func (c *Config) IsLocal() bool {
	h := c.pgx.Host
	if strings.HasPrefix(h, "/") || h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// PgxConfig is a copy of the resolved pgx configuration.
func (c *Config) PgxConfig() *pgx.ConnConfig { return c.pgx.Copy() }

// Conn is a connection plus what was learnt while making it.
type Conn struct {
	*pgx.Conn
	TLS bool
	// Reached is the server's address the connection reached (of the hosts the
	// connection string names, the one that answered); nil when unknown.
	Reached net.Addr
}

// ConnectError is a server that cannot be reached or logged into: exit 2.
func connectError(c *Config, err error) error {
	return &exit.Error{
		Code: exit.Usage,
		Msg:  fmt.Sprintf("%s: cannot connect to %s: %s", c.Role, c.String(), Redact(Reason(err))),
		Hint: connectHint(err),
		Err:  err,
	}
}

func connectHint(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "28P01", "28000":
			return "check the user name and password (URI, PGPASSWORD, ~/.pgpass, or --password-prompt)"
		case "3D000":
			return "create the database first, or name an existing one"
		}
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return "check host, port and firewall; raise connect_timeout if the server is slow to answer"
	}
	return "check host, port, and that the server accepts connections from here"
}

// Reason is the one-line cause of a connection or query error, without pgx's prefixes.
func Reason(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return fmt.Sprintf("%s (SQLSTATE %s)", pgErr.Message, pgErr.Code)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timed out"
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Err != nil {
		return oneLine(opErr.Err.Error())
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return oneLine(dnsErr.Error())
	}
	msg := err.Error()
	// pgx: "failed to connect to `user=... database=...`: host (addr): <cause>"
	if i := strings.LastIndex(msg, "): "); i >= 0 && strings.HasPrefix(msg, "failed to connect") {
		msg = msg[i+3:]
	}
	return oneLine(msg)
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// Connect opens a connection, turns off its timeouts (NoTimeouts) and passes its
// Warnings to OnWarning. A failure to reach or log in is an *exit.Error with code 2,
// naming the role and the reason.
//
// Every session of tsmigrate is made here, a reconnect included, so none is cut short
// by a timeout that the database's or the role's settings give it (and a migration
// gives the target database the source database's settings): under load, the freeze's
// session was ended by the source database's idle_in_transaction_session_timeout of
// 20 ms between two statements of its transaction, and pre-flight's probe of a target
// whose server waited longer than that for each next statement.
func (c *Config) Connect(ctx context.Context) (*Conn, error) {
	return c.connect(ctx, c.pgx.Copy(), NoTimeouts)
}

// ConnectSession connects as Connect does and sets the session up: setup runs as one
// simple-protocol query string, so it may hold several statements separated by
// semicolons. A failure of setup closes the connection and wraps the server's error.
func (c *Config) ConnectSession(ctx context.Context, setup string) (*Conn, error) {
	return c.connect(ctx, c.pgx.Copy(), NoTimeouts+";\n"+setup)
}

// ConnectNotices is Connect with the server's notices and warnings passed to onNotice
// (elsewhere they are dropped).
func (c *Config) ConnectNotices(ctx context.Context, onNotice func(*pgconn.Notice)) (*Conn, error) {
	cfg := c.pgx.Copy()
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { onNotice(n) }
	return c.connect(ctx, cfg, NoTimeouts)
}

// connect connects with cfg and runs setup, in one round trip.
func (c *Config) connect(ctx context.Context, cfg *pgx.ConnConfig, setup string) (*Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, connectError(c, err)
	}
	nc := conn.PgConn().Conn()
	_, isTLS := nc.(*tls.Conn)
	cn := &Conn{Conn: conn, TLS: isTLS, Reached: nc.RemoteAddr()}
	if c.OnWarning != nil {
		for _, w := range c.Warnings(cn) {
			c.OnWarning(w)
		}
	}
	if err := conn.PgConn().Exec(ctx, setup).Close(); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("set up the %s session: %w", c.Role, err)
	}
	return cn, nil
}

// Warnings says what is risky about a connection that worked: today, a server that is
// not on this machine reached without TLS. "On this machine" is decided from the
// address the connection reached (a Unix socket or a loopback address), else from the
// connection string's first host (a Unix socket, localhost, or a loopback address).
func (c *Config) Warnings(conn *Conn) []string {
	local, where := c.OnThisMachine(conn)
	if conn.TLS || local {
		return nil
	}
	return []string{fmt.Sprintf("%s: %s is reached without TLS: passwords and data cross the network in clear; set sslmode=require (or verify-full) in the connection string",
		c.Role, where)}
}

// OnThisMachine says whether the server conn reached is on this machine, judged from
// the address it reached (a Unix socket or a loopback address), else from the
// connection string's first host; where is that address, for a message.
func (c *Config) OnThisMachine(conn *Conn) (local bool, where string) {
	local, where = c.IsLocal(), c.hostPort()
	switch a := conn.Reached.(type) {
	case *net.UnixAddr:
		local = true
	case *net.TCPAddr:
		local, where = a.IP.IsLoopback(), a.String()
	}
	return local, where
}

// ConnectReplication opens a logical replication connection (replication=database) to
// the configured database, with params as extra session settings sent at start-up
// (they apply to what the walsender's output plugin prints). Errors as Connect's.
func (c *Config) ConnectReplication(ctx context.Context, params map[string]string) (*pgconn.PgConn, error) {
	cfg := c.pgx.Copy().Config
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	for k, v := range params {
		cfg.RuntimeParams[k] = v
	}
	cfg.RuntimeParams["replication"] = "database"
	conn, err := pgconn.ConnectConfig(ctx, &cfg)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, connectError(c, err)
	}
	return conn, nil
}
