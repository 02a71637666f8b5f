// Package testenv starts real PostgreSQL servers for tests, benchmarks and the demo:
// host PostgreSQL 15, PostgreSQL 17 + TimescaleDB from a Debian 13 root, and a
// PostgreSQL 16 server-only build. scripts/setup-servers.sh installs them.
//
// Servers run as the unprivileged postgres user (PostgreSQL refuses root), listen on
// 127.0.0.1 on a free port, use password authentication, and are stopped by Stop.
package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Kind names one of the server builds the environment offers.
type Kind string

const (
	PG15   Kind = "pg15"   // host PostgreSQL 15, no TimescaleDB
	PG16   Kind = "pg16"   // PostgreSQL 16 server-only build, no TimescaleDB
	PG17TS Kind = "pg17ts" // PostgreSQL 17 with TimescaleDB (Apache build) in the Debian 13 root
	// PG17TSL is PostgreSQL 17 with the full (Timescale License) TimescaleDB build:
	// compression, continuous aggregates, policies and user jobs. scripts/setup-servers.sh
	// makes its root (trixie-full in the cache) from the build archive beside the checkout;
	// TSMIGRATE_PG17_TSL_ROOT names another. Its tests skip when neither is there, except
	// under CI=true.
	PG17TSL Kind = "pg17tsl"
	// PG18TS is PostgreSQL 18 with TimescaleDB (Apache build) from Debian's forky suite,
	// in a root of its own: a newer PostgreSQL major and TimescaleDB version than
	// PG17TS, for migrations that upgrade on the way. Debian's testing suite moves:
	// read the versions the server reports, do not assume them.
	PG18TS Kind = "pg18ts"
)

// FullBuildEnv names the root of the PG17TSL kind.
const FullBuildEnv = "TSMIGRATE_PG17_TSL_ROOT"

// SuperPassword is the password of the superuser "postgres" on every test server.
// It is test-only and deliberately unusual, so that tests can assert it never leaks.
const SuperPassword = "s3cr3t-Pa55-for-tests"

// Flavour is how a managed-like server sets up its admin role tsdbadmin, the owner of
// defaultdb. Both flavours are TLS only, and tsdbadmin is no superuser: it has
// CREATEROLE and CREATEDB, as Timescale's tsdbadmin has. On a server with TimescaleDB
// the superuser creates the extension in defaultdb, as the services do.
type Flavour string

const (
	// CloudLike is set up the way Timescale's own images set up the database owner
	// (timescale/timescaledb-docker-ha): timescaledb_pre_restore() and
	// timescaledb_post_restore() made SECURITY DEFINER and granted to tsdbadmin alone,
	// ALL on the tables and sequences of TimescaleDB's internal schemas (and on those
	// made there later), USAGE and CREATE on those schemas. So tsdbadmin can restore
	// TimescaleDB's catalog; restarting background workers stays superuser-only.
	CloudLike Flavour = "cloud-like"
	// BareOwner is nothing more than the owner of defaultdb: it can neither run
	// timescaledb_pre_restore() nor write TimescaleDB's catalog (the strictest service,
	// or a restricted role on a stock server).
	BareOwner Flavour = "bare-owner"
)

// Options change how a server is set up.
type Options struct {
	// Managed makes a "managed-like" server: TLS only (hostssl, a certificate made here),
	// database defaultdb, and an admin role tsdbadmin that is not a superuser, set up as
	// Flavour says (CloudLike when Flavour is empty).
	Managed bool
	// Flavour picks the managed-like set-up; a Flavour implies Managed.
	Flavour Flavour
	// Settings are extra postgresql.conf lines (name -> value).
	Settings map[string]string
}

// ManagedAdmin and ManagedPassword log into a Managed server's defaultdb.
const (
	ManagedAdmin    = "tsdbadmin"
	ManagedPassword = "Tsdb-admin-pw-42"
	ManagedDB       = "defaultdb"
)

// Server is one running PostgreSQL server.
type Server struct {
	Kind    Kind
	Port    int
	Major   int
	Managed bool
	Flavour Flavour // of a Managed server
	DataDir string  // host path
	CertDir string  // host path holding root.crt for Managed servers

	// host is the address of a server this package did not start (ExternalEnv); ""
	// for the servers it starts, on 127.0.0.1.
	host string

	paths paths
	cmd   *exec.Cmd
	done  chan struct{}
	once  sync.Once
}

// TimescaleDB says whether servers of the kind have TimescaleDB installed.
func (k Kind) TimescaleDB() bool { return k == PG17TS || k == PG17TSL || k == PG18TS }

// errNoFullBuild is why PG17TSL is unavailable when its root is not configured.
var errNoFullBuild = fmt.Errorf("the full (Timescale License) TimescaleDB build is not installed: run scripts/setup-servers.sh with the build archive beside the checkout (shared/timescaledb-full), or set %s to a Debian 13 root holding it (the Debian package is the Apache build)", FullBuildEnv)

// fullBuildRoot is the root of the PG17TSL kind: TSMIGRATE_PG17_TSL_ROOT, or the one
// scripts/setup-servers.sh makes (marked by a file it writes last), or "".
func fullBuildRoot() string {
	if root := os.Getenv(FullBuildEnv); root != "" {
		return root
	}
	root := filepath.Join(cacheDir(), "trixie-full")
	if _, err := os.Stat(filepath.Join(root, ".tsmigrate-full")); err != nil {
		return ""
	}
	return root
}

// Paths of the installed builds, from the environment or the setup script's defaults.
type paths struct {
	bin       string // server bin dir as the server process sees it
	root      string // chroot, or ""
	clientBin string // host dir with pg_dump, pg_restore, psql of the same major
	uid, gid  int
	major     int
}

func cacheDir() string {
	if d := os.Getenv("TSMIGRATE_CACHE"); d != "" {
		return d
	}
	return "/var/cache/tsmigrate"
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// Pg17Root is the Debian 13 root that holds PostgreSQL 17 and TimescaleDB.
func Pg17Root() string { return envOr("TSMIGRATE_PG17_ROOT", filepath.Join(cacheDir(), "trixie")) }

// Pg18Root is the Debian forky root that holds PostgreSQL 18 and TimescaleDB.
func Pg18Root() string { return envOr("TSMIGRATE_PG18_ROOT", filepath.Join(cacheDir(), "forky")) }

// ClientBin is a host directory with pg_dump, pg_restore and psql of the kind's major.
func ClientBin(k Kind) string {
	switch k {
	case PG17TS, PG17TSL:
		return envOr("TSMIGRATE_PG17_CLIENT_BIN", filepath.Join(cacheDir(), "bin17"))
	case PG18TS:
		return envOr("TSMIGRATE_PG18_CLIENT_BIN", filepath.Join(cacheDir(), "bin18"))
	default:
		return envOr("TSMIGRATE_PG15_BIN", "/usr/lib/postgresql/15/bin")
	}
}

func resolve(k Kind) (paths, error) {
	var p paths
	switch k {
	case PG15:
		p = paths{bin: envOr("TSMIGRATE_PG15_BIN", "/usr/lib/postgresql/15/bin"), major: 15}
	case PG16:
		p = paths{bin: envOr("TSMIGRATE_PG16_BIN", filepath.Join(cacheDir(), "pg16", "bin")), major: 16}
	case PG17TS:
		p = paths{root: Pg17Root(), bin: "/usr/lib/postgresql/17/bin", major: 17}
	case PG18TS:
		p = paths{root: Pg18Root(), bin: "/usr/lib/postgresql/18/bin", major: 18}
	case PG17TSL:
		root := fullBuildRoot()
		if root == "" {
			return p, errNoFullBuild
		}
		p = paths{root: root, bin: "/usr/lib/postgresql/17/bin", major: 17}
	default:
		return p, fmt.Errorf("unknown server kind %q", k)
	}
	p.clientBin = ClientBin(k)
	if _, err := os.Stat(filepath.Join(p.root, p.bin, "postgres")); err != nil {
		return p, fmt.Errorf("%s server not installed (%v): run scripts/setup-servers.sh", k, err)
	}
	uid, gid, err := lookupUser(filepath.Join("/", p.root, "etc", "passwd"), "postgres")
	if err != nil {
		return p, err
	}
	p.uid, p.gid = uid, gid
	return p, nil
}

func lookupUser(passwd, name string) (int, int, error) {
	f, err := os.Open(passwd)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) >= 4 && fields[0] == name {
			uid, err1 := strconv.Atoi(fields[2])
			gid, err2 := strconv.Atoi(fields[3])
			if err1 != nil || err2 != nil {
				return 0, 0, fmt.Errorf("bad passwd line for %s in %s", name, passwd)
			}
			return uid, gid, nil
		}
	}
	return 0, 0, fmt.Errorf("no user %s in %s", name, passwd)
}

// Available says whether the kind is installed here, and if not, why.
func Available(k Kind) error {
	_, err := resolve(k)
	return err
}

// FreePort asks the kernel for a free TCP port on 127.0.0.1.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// hostTemp is the machine's temporary directory, read before Main gives the tests a
// TMPDIR of their own, which the servers' user may not enter.
var hostTemp = os.TempDir()

// Start initialises a new cluster of the given kind and starts it.
func Start(ctx context.Context, k Kind, opt Options) (*Server, error) {
	p, err := resolve(k)
	if err != nil {
		return nil, err
	}
	// Data directories live where the server process can see them: inside the chroot
	// for the Debian 13 build, under /tmp on the host otherwise.
	base := filepath.Join(p.root, "var", "tmp")
	if p.root == "" {
		base = hostTemp
	}
	if err := os.MkdirAll(base, 0o1777); err != nil {
		return nil, err
	}
	hostDir, err := os.MkdirTemp(base, "tsmigrate-pg-")
	if err != nil {
		return nil, err
	}
	if opt.Flavour != "" {
		opt.Managed = true
	}
	switch opt.Flavour {
	case "":
		if opt.Managed {
			opt.Flavour = CloudLike
		}
	case CloudLike, BareOwner:
	default:
		return nil, fmt.Errorf("unknown managed-like flavour %q", opt.Flavour)
	}
	s := &Server{Kind: k, Major: p.major, Managed: opt.Managed, Flavour: opt.Flavour, DataDir: hostDir, paths: p, done: make(chan struct{})}
	if err := s.init(ctx, opt); err != nil {
		os.RemoveAll(hostDir)
		return nil, err
	}
	if err := s.start(ctx); err != nil {
		os.RemoveAll(hostDir)
		return nil, err
	}
	if k == PG17TSL {
		if err := s.checkFullBuild(ctx); err != nil {
			s.Stop()
			return nil, err
		}
	}
	if opt.Managed {
		if err := s.setupManaged(ctx); err != nil {
			s.Stop()
			return nil, err
		}
	}
	return s, nil
}

// inner turns a host path into the path the server process sees.
func (s *Server) inner(hostPath string) string {
	if s.paths.root == "" {
		return hostPath
	}
	return "/" + strings.TrimPrefix(strings.TrimPrefix(hostPath, s.paths.root), "/")
}

func (s *Server) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(s.paths.bin, name), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uint32(s.paths.uid), Gid: uint32(s.paths.gid)},
		Chroot:     s.paths.root,
		Setpgid:    true,
	}
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8", "LC_ALL=C.UTF-8", "TZ=UTC"}
	return cmd
}

func chownTree(dir string, uid, gid int) error {
	return filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, gid)
	})
}

func (s *Server) init(ctx context.Context, opt Options) error {
	pwfile := filepath.Join(s.DataDir, "pwfile")
	data := filepath.Join(s.DataDir, "data")
	if err := os.WriteFile(pwfile, []byte(SuperPassword+"\n"), 0o600); err != nil {
		return err
	}
	if err := chownTree(s.DataDir, s.paths.uid, s.paths.gid); err != nil {
		return err
	}
	if err := os.Chmod(s.DataDir, 0o700); err != nil {
		return err
	}
	cmd := s.command(ctx, "initdb", "-D", s.inner(data), "-U", "postgres", "--pwfile", s.inner(pwfile),
		"--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb %s: %v\n%s", s.Kind, err, out)
	}
	os.Remove(pwfile)
	port, err := FreePort()
	if err != nil {
		return err
	}
	s.Port = port
	conf := map[string]string{
		"listen_addresses":          "'127.0.0.1'",
		"port":                      strconv.Itoa(port),
		"unix_socket_directories":   "'/tmp'",
		"fsync":                     "off",
		"synchronous_commit":        "off",
		"full_page_writes":          "off",
		"max_connections":           "100",
		"shared_buffers":            "128MB",
		"max_wal_size":              "2GB",
		"max_prepared_transactions": "10",
		"log_min_messages":          "warning",
		"wal_level":                 "logical",
	}
	if s.Kind.TimescaleDB() {
		conf["shared_preload_libraries"] = "'timescaledb'"
		conf["timescaledb.telemetry_level"] = "off"
		conf["max_worker_processes"] = "16"
	}
	var hba strings.Builder
	hba.WriteString("local all all scram-sha-256\n")
	if opt.Managed {
		if err := s.makeCerts(data); err != nil {
			return err
		}
		conf["ssl"] = "on"
		conf["ssl_cert_file"] = "'server.crt'"
		conf["ssl_key_file"] = "'server.key'"
		hba.WriteString("hostssl all all 127.0.0.1/32 scram-sha-256\n")
		hba.WriteString("hostssl replication all 127.0.0.1/32 scram-sha-256\n")
	} else {
		hba.WriteString("host all all 127.0.0.1/32 scram-sha-256\n")
		hba.WriteString("host replication all 127.0.0.1/32 scram-sha-256\n")
	}
	for k, v := range opt.Settings {
		conf[k] = v
	}
	var c strings.Builder
	for k, v := range conf {
		fmt.Fprintf(&c, "%s = %s\n", k, v)
	}
	f, err := os.OpenFile(filepath.Join(data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(c.String()); err != nil {
		f.Close()
		return err
	}
	f.Close()
	if err := os.WriteFile(filepath.Join(data, "pg_hba.conf"), []byte(hba.String()), 0o600); err != nil {
		return err
	}
	return chownTree(s.DataDir, s.paths.uid, s.paths.gid)
}

func (s *Server) start(ctx context.Context) error {
	data := filepath.Join(s.DataDir, "data")
	// The postmaster runs as our child (not daemonised by pg_ctl), so that it dies with
	// the test process even when that is killed.
	cmd := s.command(context.Background(), "postgres", "-D", s.inner(data))
	cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
	logf, err := os.Create(filepath.Join(s.DataDir, "server.log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", s.Kind, err)
	}
	s.cmd = cmd
	go func() { cmd.Wait(); logf.Close(); close(s.done) }()

	deadline := time.Now().Add(60 * time.Second)
	for {
		conn, err := pgx.Connect(ctx, s.SuperURI("postgres"))
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		select {
		case <-s.done:
			log, _ := os.ReadFile(filepath.Join(s.DataDir, "server.log"))
			return fmt.Errorf("%s server exited at start:\n%s", s.Kind, log)
		case <-ctx.Done():
			s.Stop()
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return fmt.Errorf("%s server not ready after 60s: %v", s.Kind, err)
		}
	}
}

// checkFullBuild makes sure a PG17TSL root really holds the full build: a root with the
// Apache build would make the tests of compression fail for the wrong reason.
func (s *Server) checkFullBuild(ctx context.Context) error {
	// The license setting is defined once the extension's library is loaded: ask in a
	// database that has it, made for the purpose.
	if err := s.CreateDatabase(ctx, "tsmigrate_license_check", true); err != nil {
		return err
	}
	defer s.Exec(context.WithoutCancel(ctx), "postgres", "DROP DATABASE tsmigrate_license_check")
	conn, err := pgx.Connect(ctx, s.SuperURI("tsmigrate_license_check"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var license string
	if err := conn.QueryRow(ctx, "SELECT coalesce(current_setting('timescaledb.license', true), '')").Scan(&license); err != nil {
		return fmt.Errorf("read timescaledb.license: %w", err)
	}
	if license != "timescale" {
		return fmt.Errorf("%s=%s runs TimescaleDB with timescaledb.license = %q, not the full build (timescale)", FullBuildEnv, s.paths.root, license)
	}
	return nil
}

// Stop shuts the server down (fast mode) and removes its files.
func (s *Server) Stop() {
	s.once.Do(func() {
		if s.cmd != nil && s.cmd.Process != nil {
			s.cmd.Process.Signal(syscall.SIGINT)
			select {
			case <-s.done:
			case <-time.After(30 * time.Second):
				s.cmd.Process.Kill()
				<-s.done
			}
		}
		os.RemoveAll(s.DataDir)
		if s.CertDir != "" {
			os.RemoveAll(s.CertDir)
		}
	})
}

// Restart shuts the server down (fast mode) and starts it again on the same data
// directory and port, as an administrator's restart would. Not for a shared server.
func (s *Server) Restart(ctx context.Context) error {
	s.cmd.Process.Signal(syscall.SIGINT)
	<-s.done
	s.done = make(chan struct{})
	return s.start(ctx)
}

// Kill stops the server at once, without shutdown (a crash).
func (s *Server) Kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
}

func (s *Server) uri(user, password, db string, extra string) string {
	host := s.host
	if host == "" {
		host = "127.0.0.1"
	}
	u := url.URL{Scheme: "postgres", User: url.UserPassword(user, password),
		Host: net.JoinHostPort(host, strconv.Itoa(s.Port)), Path: "/" + db}
	q := "sslmode=disable"
	if s.Managed {
		q = "sslmode=verify-full&sslrootcert=" + url.QueryEscape(filepath.Join(s.CertDir, "root.crt"))
	}
	if extra != "" {
		q += "&" + extra
	}
	u.RawQuery = q
	return u.String()
}

// SuperURI is a libpq URI for the superuser postgres on database db.
func (s *Server) SuperURI(db string) string { return s.uri("postgres", SuperPassword, db, "") }

// URI is the URI a user of the server would use: the superuser on a plain server, the
// non-superuser tsdbadmin on a Managed one.
func (s *Server) URI(db string) string {
	if s.Managed {
		return s.uri(ManagedAdmin, ManagedPassword, db, "")
	}
	return s.SuperURI(db)
}

// ClientBin is the host directory of this server's pg_dump / pg_restore / psql.
func (s *Server) ClientBin() string { return s.paths.clientBin }

// Exec runs SQL statements on database db as the superuser.
func (s *Server) Exec(ctx context.Context, db string, sql ...string) error {
	conn, err := pgx.Connect(ctx, s.SuperURI(db))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	for _, q := range sql {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", firstLine(q), err)
		}
	}
	return nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + "..."
	}
	return s
}

// CreateDatabase creates database name (with the TimescaleDB extension when withTS).
func (s *Server) CreateDatabase(ctx context.Context, name string, withTS bool) error {
	if err := s.Exec(ctx, "postgres", "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return err
	}
	if withTS {
		return s.Exec(ctx, name, "CREATE EXTENSION IF NOT EXISTS timescaledb")
	}
	return nil
}

// setupManaged makes tsdbadmin and defaultdb as the server's Flavour says.
func (s *Server) setupManaged(ctx context.Context) error {
	admin := pgx.Identifier{ManagedAdmin}.Sanitize()
	if err := s.Exec(ctx, "postgres",
		fmt.Sprintf("CREATE ROLE %s LOGIN CREATEDB CREATEROLE PASSWORD '%s'", admin, ManagedPassword),
		fmt.Sprintf("CREATE DATABASE %s OWNER %s", pgx.Identifier{ManagedDB}.Sanitize(), admin)); err != nil {
		return err
	}
	if !s.Kind.TimescaleDB() {
		return nil
	}
	stmts := []string{"CREATE EXTENSION timescaledb"}
	if s.Flavour == CloudLike {
		stmts = append(stmts, cloudLikeGrants(admin)...)
	}
	return s.Exec(ctx, ManagedDB, stmts...)
}

// cloudLikeGrants give the database owner admin (quoted) what Timescale's images give
// it once TimescaleDB is created (the effect of after-create.sql of
// timescale/timescaledb-docker-ha, for the restore). Checked on TimescaleDB 2.19.3 and
// 2.31.0 (PG18TS).
func cloudLikeGrants(admin string) []string {
	var out []string
	for _, f := range []string{"timescaledb_pre_restore()", "timescaledb_post_restore()"} {
		fn := "public." + f
		out = append(out,
			"ALTER FUNCTION "+fn+" SECURITY DEFINER SET search_path = pg_catalog, pg_temp",
			"REVOKE EXECUTE ON FUNCTION "+fn+" FROM PUBLIC",
			"GRANT EXECUTE ON FUNCTION "+fn+" TO "+admin)
	}
	for _, sch := range []string{"_timescaledb_catalog", "_timescaledb_config", "_timescaledb_internal", "_timescaledb_cache"} {
		out = append(out,
			"GRANT USAGE, CREATE ON SCHEMA "+sch+" TO "+admin,
			"GRANT ALL ON ALL TABLES IN SCHEMA "+sch+" TO "+admin,
			"GRANT ALL ON ALL SEQUENCES IN SCHEMA "+sch+" TO "+admin,
			"ALTER DEFAULT PRIVILEGES IN SCHEMA "+sch+" GRANT ALL ON TABLES TO "+admin,
			"ALTER DEFAULT PRIVILEGES IN SCHEMA "+sch+" GRANT ALL ON SEQUENCES TO "+admin)
	}
	return out
}

// sqlScheduler gives the process id of database $1's TimescaleDB scheduler (no row
// when it has none): the background worker that runs its jobs, which
// timescaledb_pre_restore() stops and timescaledb_post_restore() starts again.
// Checked on TimescaleDB 2.19.3.
const sqlScheduler = `SELECT pid FROM pg_stat_activity
WHERE backend_type = 'TimescaleDB Background Worker Scheduler' AND datname = $1`

// schedulerSettle is how long a scheduler must stay to count as running: one started
// while its database is in restoring mode exits at once.
const schedulerSettle = time.Second

// SchedulerRunning waits up to wait for database db's TimescaleDB scheduler to run (one
// is started asynchronously): listed in pg_stat_activity, and the same process still
// there schedulerSettle later.
func (s *Server) SchedulerRunning(ctx context.Context, db string, wait time.Duration) (bool, error) {
	conn, err := pgx.Connect(ctx, s.SuperURI("postgres"))
	if err != nil {
		return false, err
	}
	defer conn.Close(ctx)
	scheduler := func() (int, error) {
		var pid int
		err := conn.QueryRow(ctx, sqlScheduler, db).Scan(&pid)
		if errors.Is(err, pgx.ErrNoRows) {
			return 0, nil
		}
		if err != nil {
			return 0, fmt.Errorf("look for the TimescaleDB scheduler of %s: %w", db, err)
		}
		return pid, nil
	}
	deadline := time.Now().Add(wait)
	for {
		pid, err := scheduler()
		if err != nil {
			return false, err
		}
		pause := 100 * time.Millisecond
		if pid != 0 {
			pause = schedulerSettle
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(pause):
		}
		if pid != 0 {
			again, err := scheduler()
			if err != nil {
				return false, err
			}
			if again == pid {
				return true, nil
			}
		}
		if time.Now().After(deadline) {
			return false, nil
		}
	}
}
