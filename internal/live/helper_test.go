package live

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func mustParse(t *testing.T, role, uri string) *dbconn.Config {
	t.Helper()
	c, err := dbconn.Parse(role, uri)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// dbConn opens a superuser connection to db, closed when the test ends.
func dbConn(t *testing.T, srv *testenv.Server, db string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), srv.SuperURI(db))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func queryInt(t *testing.T, conn *pgx.Conn, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := conn.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}
