package testenv

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func TestServersStart(t *testing.T) {
	cases := []struct {
		kind    Kind
		opt     Options
		version string
	}{
		{PG15, Options{}, "15."},
		{PG15, Options{Managed: true}, "15."},
		{PG16, Options{}, "16."},
		{PG17TS, Options{}, "17."},
		{PG17TS, Options{Managed: true}, "17."},
		{PG17TS, Options{Flavour: BareOwner}, "17."},
		{PG17TSL, Options{}, "17."},
		{PG17TSL, Options{Flavour: CloudLike}, "17."},
		{PG17TSL, Options{Flavour: BareOwner}, "17."},
		{PG18TS, Options{}, "18."},
		{PG18TS, Options{Flavour: CloudLike}, "18."},
		{PG18TS, Options{Flavour: BareOwner}, "18."},
	}
	for _, c := range cases {
		name := string(c.kind)
		if c.opt.Managed || c.opt.Flavour != "" {
			name += "-managed"
			if c.opt.Flavour != "" {
				name += "-" + string(c.opt.Flavour)
			}
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := Need(t, c.kind, c.opt)
			ctx := context.Background()
			db := "postgres"
			if s.Managed {
				db = ManagedDB
			}
			conn, err := pgx.Connect(ctx, s.URI(db))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			var v string
			if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&v); err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(v, c.version) {
				t.Fatalf("version %s, want %s", v, c.version)
			}
			if (c.kind == PG17TS || c.kind == PG18TS) && !s.Managed {
				if _, err := conn.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS timescaledb"); err != nil {
					t.Fatal(err)
				}
			}
			if s.Managed {
				checkManaged(t, s, conn)
			}
		})
	}
}

// checkManaged checks what a managed-like server's tsdbadmin (conn) is and may do.
func checkManaged(t *testing.T, s *Server, conn *pgx.Conn) {
	ctx := context.Background()
	var super, createRole, createDB bool
	if err := conn.QueryRow(ctx, "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user").Scan(&super, &createRole, &createDB); err != nil {
		t.Fatal(err)
	}
	if super || !createRole || !createDB {
		t.Fatalf("tsdbadmin: superuser %v, CREATEROLE %v, CREATEDB %v; want a non-superuser with CREATEROLE and CREATEDB", super, createRole, createDB)
	}
	// Without TLS the managed server refuses.
	plain := strings.Replace(s.URI(ManagedDB), "sslmode=verify-full", "sslmode=disable", 1)
	if c, err := pgx.Connect(ctx, plain); err == nil {
		c.Close(ctx)
		t.Fatal("managed server accepted a connection without TLS")
	}
	if !s.Kind.TimescaleDB() {
		return
	}
	// The superuser created TimescaleDB in defaultdb: tsdbadmin does not own it.
	var owner string
	if err := conn.QueryRow(ctx, "SELECT extowner::regrole::text FROM pg_extension WHERE extname = 'timescaledb'").Scan(&owner); err != nil {
		t.Fatalf("TimescaleDB in defaultdb: %v", err)
	}
	if owner != "postgres" {
		t.Errorf("TimescaleDB is owned by %s, want postgres", owner)
	}
	// No real platform grants this.
	var setRestoring bool
	if err := conn.QueryRow(ctx, "SELECT has_parameter_privilege('timescaledb.restoring', 'SET')").Scan(&setRestoring); err != nil {
		t.Fatal(err)
	}
	if setRestoring {
		t.Error("tsdbadmin may SET timescaledb.restoring")
	}
	MustSchedulerRun(t, s, ManagedDB)
	// The catalog: written by a cloud-like owner, not by a bare one.
	const write = "INSERT INTO _timescaledb_catalog.dimension_slice SELECT * FROM _timescaledb_catalog.dimension_slice WHERE false"
	_, writeErr := conn.Exec(ctx, write)
	_, preErr := conn.Exec(ctx, "SELECT timescaledb_pre_restore()")
	switch s.Flavour {
	case CloudLike:
		if writeErr != nil || preErr != nil {
			t.Fatalf("cloud-like tsdbadmin: catalog write: %v; pre_restore: %v", writeErr, preErr)
		}
		var restoring string
		if err := conn.QueryRow(ctx, "SHOW timescaledb.restoring").Scan(&restoring); err != nil || restoring != "on" {
			t.Fatalf("after pre_restore timescaledb.restoring is %q (%v)", restoring, err)
		}
		// Twice: the scheduler the first call starts may still read restoring mode on
		// (see schema.PostRestore).
		for range 2 {
			if _, err := conn.Exec(ctx, "SELECT timescaledb_post_restore()"); err != nil {
				t.Fatalf("post_restore: %v", err)
			}
		}
		MustSchedulerRun(t, s, ManagedDB)
		// Restarting background workers stays superuser-only.
		_, err := conn.Exec(ctx, "SELECT _timescaledb_functions.restart_background_workers()")
		if !isInsufficientPrivilege(err) {
			t.Errorf("restart_background_workers as tsdbadmin: %v, want insufficient privilege", err)
		}
	case BareOwner:
		if !isInsufficientPrivilege(writeErr) || !isInsufficientPrivilege(preErr) {
			t.Fatalf("bare tsdbadmin: catalog write: %v; pre_restore: %v; want insufficient privilege for both", writeErr, preErr)
		}
		MustSchedulerRun(t, s, ManagedDB)
	default:
		t.Fatalf("flavour %q", s.Flavour)
	}
}

func isInsufficientPrivilege(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42501"
}

// Eventually returns once the check passes, and fails the test with the check's last
// error when it never does.
func TestEventually(t *testing.T) {
	n := 0
	Eventually(t, time.Minute, func() error {
		if n++; n < 3 {
			return fmt.Errorf("attempt %d", n)
		}
		return nil
	})
	if n != 3 {
		t.Errorf("checked %d times, want 3", n)
	}

	rec := &recorder{TB: t}
	done := make(chan struct{})
	go func() { // Fatalf ends the goroutine, as it ends a test
		defer close(done)
		Eventually(rec, 50*time.Millisecond, func() error { return errors.New("never") })
	}()
	<-done
	if rec.failure != "after 50ms: never" {
		t.Errorf("failure %q, want %q", rec.failure, "after 50ms: never")
	}
}

// recorder is a testing.TB whose Fatalf records the failure and ends the goroutine.
type recorder struct {
	testing.TB
	failure string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.failure = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// ExternalEnv points Shared at a server running already: the tests log into it as they
// log into the servers this package starts, and stopping it leaves it running.
func TestExternalServer(t *testing.T) {
	own := Need(t, PG15, Options{})
	ctx := context.Background()
	t.Setenv(ExternalEnv(PG15), fmt.Sprintf("localhost:%d", own.Port))
	s, err := external(ctx, PG15)
	if err != nil || s == nil {
		t.Fatalf("external: %v, %v", s, err)
	}
	db := NewDB(t, s, false)
	MustExec(t, s, db, "CREATE TABLE t (a int)", "INSERT INTO t VALUES (1)")
	if s.Major != 15 || s.ClientBin() != ClientBin(PG15) || !strings.Contains(s.URI(db), "@localhost:") {
		t.Errorf("major %d, client bin %s, URI %s", s.Major, s.ClientBin(), s.URI(db))
	}
	s.Stop()
	if err := own.Exec(ctx, db, "SELECT * FROM t"); err != nil {
		t.Errorf("after Stop of the external server, the server it named: %v", err)
	}

	t.Setenv(ExternalEnv(PG15), "localhost")
	if _, err := external(ctx, PG15); err == nil || !strings.Contains(err.Error(), "TSMIGRATE_TEST_PG15=\"localhost\": give HOST:PORT") {
		t.Errorf("no port: %v", err)
	}
	t.Setenv(ExternalEnv(PG15), "127.0.0.1:1")
	if _, err := external(ctx, PG15); err == nil || !strings.Contains(err.Error(), "log in as postgres") {
		t.Errorf("nothing there: %v", err)
	}
}
