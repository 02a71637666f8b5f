package testenv

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestServersStart(t *testing.T) {
	cases := []struct {
		kind    Kind
		opt     Options
		version string
	}{
		{PG15, Options{}, "15."},
		{PG16, Options{}, "16."},
		{PG17TS, Options{}, "17."},
		{PG17TS, Options{Managed: true}, "17."},
		{PG17TSL, Options{}, "17."},
		{PG18TS, Options{}, "18."},
	}
	for _, c := range cases {
		t.Run(string(c.kind)+map[bool]string{true: "-managed"}[c.opt.Managed], func(t *testing.T) {
			t.Parallel()
			s := Need(t, c.kind, c.opt)
			ctx := context.Background()
			db := "postgres"
			if c.opt.Managed {
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
			if c.kind == PG17TS || c.kind == PG18TS {
				if _, err := conn.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS timescaledb"); err != nil {
					t.Fatal(err)
				}
			}
			if c.opt.Managed {
				var super bool
				conn.QueryRow(ctx, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&super)
				if super {
					t.Fatal("managed admin must not be a superuser")
				}
				// Without TLS the managed server refuses.
				plain := strings.Replace(s.URI(db), "sslmode=verify-full", "sslmode=disable", 1)
				if c, err := pgx.Connect(ctx, plain); err == nil {
					c.Close(ctx)
					t.Fatal("managed server accepted a connection without TLS")
				}
			}
		})
	}
}
