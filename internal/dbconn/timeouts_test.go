package dbconn_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// Every session tsmigrate makes, with a setup of its own or without, has no statement,
// lock, idle-in-transaction, idle-session or (PostgreSQL 17) transaction timeout,
// whatever the database's and the role's settings say: it holds transactions open on
// purpose, and some sessions wait long between two statements.
func TestConnectTurnsOffTimeouts(t *testing.T) {
	for _, k := range []testenv.Kind{testenv.PG15, testenv.PG17TS} {
		t.Run(string(k), func(t *testing.T) {
			srv := testenv.Shared(t, k)
			ctx := context.Background()
			db := testenv.NewDB(t, srv, false)
			settings := []string{"statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout", "idle_session_timeout"}
			if k != testenv.PG15 {
				settings = append(settings, "transaction_timeout")
			}
			for i, s := range settings {
				testenv.MustExec(t, srv, "postgres", fmt.Sprintf("ALTER DATABASE %s SET %s = '%ds'", db, s, i+1),
					fmt.Sprintf("ALTER ROLE postgres IN DATABASE %s SET %s = '%ds'", db, s, i+11))
			}
			cfg := testenv.Config(t, "source", srv.SuperURI(db))
			plain, err := cfg.Connect(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer plain.Close(ctx)
			set, err := cfg.ConnectSession(ctx, "SET work_mem = '8MB'")
			if err != nil {
				t.Fatal(err)
			}
			defer set.Close(ctx)
			for _, s := range settings {
				for name, c := range map[string]*dbconn.Conn{"Connect": plain, "ConnectSession": set} {
					var v string
					if err := c.QueryRow(ctx, "SELECT current_setting($1)", s).Scan(&v); err != nil {
						t.Fatal(err)
					}
					if v != "0" {
						t.Errorf("%s: %s = %s, want 0", name, s, v)
					}
				}
			}
		})
	}
}

// A database's idle_session_timeout ends a session that waits longer than that for its
// next statement outside a transaction: a session of tsmigrate may wait long between
// two (the counts' source session while the target counts a large table), and has it
// off.
func TestConnectSurvivesIdleSessionTimeout(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG15)
	ctx := context.Background()
	db := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, "postgres", fmt.Sprintf("ALTER DATABASE %s SET idle_session_timeout = '2s'", db))
	conn, err := testenv.Config(t, "source", srv.SuperURI(db)).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	time.Sleep(3 * time.Second)
	if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatalf("after 3 s idle: %v", err)
	}
}
