package inventory

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// identitySQL tells one server, and one of its databases, from another, whatever
// address a connection reached it by: the cluster's system identifier where the user
// may read it (pg_control_system(); a standby or a copy of a base backup shares its
// primary's), the time the server started and its port (every role may read both),
// and the database's OID. PostgreSQL 15, 17. The privilege is checked apart: a query
// naming a function the user may not execute fails whether or not it is called.
const (
	identitySQL = `SELECT has_function_privilege('pg_control_system()', 'EXECUTE'),
	pg_postmaster_start_time(), current_setting('port')::int,
	(SELECT oid FROM pg_database WHERE datname = current_database())`
	systemIDSQL = `SELECT system_identifier::text FROM pg_control_system()`
)

// Identity is which server, and which of its databases, a connection is on.
type Identity struct {
	SystemID string    `json:"system_identifier,omitempty"` // "" when the user may not read it
	Started  time.Time `json:"started"`
	Port     int       `json:"port"`
	Database uint32    `json:"database_oid"`
}

// SameServer says whether a and b are the same running server: started at the same
// moment on the same port (two servers started in the same microsecond on the same
// port do not happen), and of the same cluster where both system identifiers are known.
func (a Identity) SameServer(b Identity) bool {
	if a.SystemID != "" && b.SystemID != "" && a.SystemID != b.SystemID {
		return false
	}
	return a.Started.Equal(b.Started) && a.Port == b.Port
}

// SameDatabase says whether a and b are the same database of the same server.
func (a Identity) SameDatabase(b Identity) bool { return a.SameServer(b) && a.Database == b.Database }

// ReadIdentity reads the identity of the server and database conn is connected to.
func ReadIdentity(ctx context.Context, conn *pgx.Conn) (Identity, error) {
	var id Identity
	var may bool
	if err := conn.QueryRow(ctx, identitySQL).Scan(&may, &id.Started, &id.Port, &id.Database); err != nil {
		return id, fmt.Errorf("read the server's identity: %w", err)
	}
	if may {
		if err := conn.QueryRow(ctx, systemIDSQL).Scan(&id.SystemID); err != nil {
			return id, fmt.Errorf("read the server's system identifier: %w", err)
		}
	}
	return id, nil
}
