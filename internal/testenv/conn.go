package testenv

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
)

// Config parses uri as tsmigrate does for a server playing role ("source", "target"),
// failing the test on error.
func Config(t testing.TB, role, uri string) *dbconn.Config {
	t.Helper()
	c, err := dbconn.Parse(role, uri)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Connect opens a connection for the test, closed when it ends.
func Connect(t testing.TB, uri string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), uri)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

var ownerSeq atomic.Int64

// NewOwnerDB makes a database on s owned by a new role that is no superuser (LOGIN,
// CREATEDB, CREATEROLE, as a managed service's admin), with TimescaleDB created in it by
// the superuser when s has it, and nothing more granted: a managed service's database
// owner at its strictest. Both go when the test ends. It returns the database's name
// and a URI that logs into it as that role.
func NewOwnerDB(t testing.TB, s *Server) (db, uri string) {
	t.Helper()
	role := fmt.Sprintf("owner%d_%d", os.Getpid(), ownerSeq.Add(1))
	db = role + "_db"
	MustExec(t, s, "postgres",
		fmt.Sprintf("CREATE ROLE %s LOGIN CREATEDB CREATEROLE PASSWORD '%s'", role, ownerPassword),
		fmt.Sprintf("CREATE DATABASE %s OWNER %s", db, role))
	t.Cleanup(func() {
		s.Exec(context.Background(), "postgres", "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)", "DROP ROLE IF EXISTS "+role)
	})
	if s.Kind.TimescaleDB() {
		MustExec(t, s, db, "CREATE EXTENSION timescaledb")
	}
	return db, s.uri(role, ownerPassword, db, "")
}

// ownerPassword is the password of NewOwnerDB's roles.
const ownerPassword = "Owner-pw-17"
