// Package inventory says what a PostgreSQL server and one of its databases hold: versions,
// TimescaleDB (version, license, versions available), extensions, schemas, tables,
// hypertables and their chunks, continuous aggregates, jobs, sequences, large objects,
// the connected user's rights and the activity worth knowing before a freeze.
//
// Load runs a fixed number of queries whatever the size of the database (no query per
// table or chunk), takes no lock on user relations, and only reads: it is safe on a live
// production server and fast on a database with tens of thousands of chunks.
package inventory

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Database is what one database (and the server around it) holds.
type Database struct {
	Name     string        `json:"name"`
	Bytes    int64         `json:"bytes"` // pg_database_size: exact, all relations and their files
	Server   Server        `json:"server"`
	Identity Identity      `json:"identity"`
	User     User          `json:"user"`
	LoadedAt time.Time     `json:"loaded_at"`
	LoadTime time.Duration `json:"-"`
	Queries  int           `json:"queries"` // how many queries Load ran

	TimescaleDB *TimescaleDB `json:"timescaledb,omitempty"` // nil: not installed in this database

	Extensions []Extension `json:"extensions"`
	// Available lists the extensions the server could install (pg_available_extension_versions).
	Available []AvailableExtension `json:"available_extensions"`
	Schemas   []Schema             `json:"schemas"`
	// Tables are the user's relations: tables, partitioned tables, views, materialized
	// views and foreign tables, hypertables included, chunks and extension members not.
	Tables               []Table               `json:"tables"`
	Sequences            []Sequence            `json:"sequences"`
	Routines             []Object              `json:"routines"` // user functions and procedures
	Types                []Object              `json:"types"`    // user-defined types (not row or array types)
	Hypertables          []Hypertable          `json:"hypertables"`
	Chunks               []Chunk               `json:"chunks"`
	ContinuousAggregates []ContinuousAggregate `json:"continuous_aggregates"`
	Jobs                 []Job                 `json:"jobs"`
	LargeObjects         int64                 `json:"large_objects"`
	Activity             Activity              `json:"activity"`
}

// Server is the PostgreSQL server the database lives on.
type Server struct {
	Version    string `json:"version"`     // server_version, e.g. "17.12 (Debian 17.12-0+deb13u1)"
	VersionNum int    `json:"version_num"` // server_version_num, e.g. 170012
	Major      int    `json:"major"`
	InRecovery bool   `json:"in_recovery"` // a standby
	// Lock table capacity: max_locks_per_transaction × (max_connections + max_prepared_transactions).
	MaxLocksPerTransaction int `json:"max_locks_per_transaction"`
	MaxConnections         int `json:"max_connections"`
	MaxPreparedXacts       int `json:"max_prepared_transactions"`
	// Of MaxConnections, SuperuserReserved only superusers may take, and Reserved
	// (reserved_connections, PostgreSQL 16+) superusers and members of
	// pg_use_reserved_connections (User.UseReserved). ClientSessions are the client
	// sessions connected now, ClientSessionsHere those to this database (the
	// inventory's own included).
	SuperuserReserved  int `json:"superuser_reserved_connections"`
	Reserved           int `json:"reserved_connections"`
	ClientSessions     int `json:"client_sessions"`
	ClientSessionsHere int `json:"client_sessions_here"`
}

// FreeSessions is how many more client sessions user u may open on the server now.
func (s Server) FreeSessions(u User) int {
	limit := s.MaxConnections
	if !u.Superuser {
		limit -= s.SuperuserReserved
		if !u.UseReserved {
			limit -= s.Reserved
		}
	}
	return limit - s.ClientSessions
}

// LockCapacity is how many relation locks the server's shared lock table holds.
func (s Server) LockCapacity() int {
	return s.MaxLocksPerTransaction * (s.MaxConnections + s.MaxPreparedXacts)
}

// User is the role the connection logged in as and what it may do in this database.
type User struct {
	Name        string `json:"name"`
	Superuser   bool   `json:"superuser"`
	CreateDB    bool   `json:"createdb"`
	CreateRole  bool   `json:"createrole"`
	Replication bool   `json:"replication"`
	// BypassRLS: row-level security policies never apply to it (as to a superuser).
	BypassRLS bool `json:"bypassrls"`
	// UseReserved: a member of pg_use_reserved_connections (PostgreSQL 16+).
	UseReserved bool `json:"use_reserved_connections"`
	// OwnsDatabase: the user is the database's owner or a member of its owner role, so
	// it may ALTER DATABASE.
	OwnsDatabase  bool   `json:"owns_database"`
	DatabaseOwner string `json:"database_owner"`
	// CanCreate: CREATE on the database (new schemas, trusted extensions).
	CanCreate bool `json:"can_create"`
	// CanCreateInPublic: CREATE on schema public.
	CanCreateInPublic bool `json:"can_create_in_public"`
	// SignalBackend: a member of pg_signal_backend, so it may end other roles'
	// (non-superuser) sessions.
	SignalBackend bool `json:"signal_backend"`
}

// TimescaleDB is the extension as installed in the database.
type TimescaleDB struct {
	Version string `json:"version"`
	Schema  string `json:"schema"`
	License string `json:"license"` // "apache" or "timescale" (timescaledb.license)
}

// Extension is an installed extension.
type Extension struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Schema  string `json:"schema"`
}

// AvailableExtension is an extension the server can install, with its versions.
type AvailableExtension struct {
	Name           string   `json:"name"`
	DefaultVersion string   `json:"default_version"`
	Installed      string   `json:"installed_version,omitempty"`
	Versions       []string `json:"versions"`
}

// Schema is a schema that is neither PostgreSQL's own nor an extension's.
type Schema struct {
	Name  string `json:"name"`
	Owner string `json:"owner"`
}

// Table is a user relation.
type Table struct {
	Schema     string `json:"schema"`
	Name       string `json:"name"`
	Kind       string `json:"kind"` // table, partitioned table, view, materialized view, foreign table
	Owner      string `json:"owner"`
	Unlogged   bool   `json:"unlogged"`
	Hypertable bool   `json:"hypertable"`
	Readable   bool   `json:"readable"` // the user has SELECT on it
	// RowSecurity: row-level security is on for the table and applies to the user (not
	// its owner, or FORCE ROW LEVEL SECURITY), unless the user is a superuser or has
	// BYPASSRLS. Reading it with row_security off, as pg_dump and the copy do, fails.
	RowSecurity bool  `json:"row_security"`
	EstRows     int64 `json:"est_rows"`  // pg_class.reltuples; -1 when never analyzed
	EstBytes    int64 `json:"est_bytes"` // heap, TOAST and indexes from pg_class.relpages
}

// Sequence is a user sequence.
type Sequence struct {
	Schema   string `json:"schema"`
	Name     string `json:"name"`
	OwnedBy  string `json:"owned_by,omitempty"` // table.column of a serial/identity column
	Readable bool   `json:"readable"`           // the user has SELECT (pg_dump reads it)
}

// Object is a user function, procedure or type.
type Object struct {
	Schema string `json:"schema"`
	Name   string `json:"name"`
	Kind   string `json:"kind"`
}

// Hypertable is a TimescaleDB hypertable.
type Hypertable struct {
	Schema             string `json:"schema"`
	Name               string `json:"name"`
	Owner              string `json:"owner"`
	Dimensions         int    `json:"dimensions"`
	Chunks             int    `json:"chunks"`
	CompressionEnabled bool   `json:"compression_enabled"`
	CompressedChunks   int    `json:"compressed_chunks"`
	// EstRows and EstBytes sum the estimates of its chunks (see Chunk).
	EstRows  int64 `json:"est_rows"`
	EstBytes int64 `json:"est_bytes"`
}

// Chunk is one chunk of a hypertable; the range is that of its primary dimension.
type Chunk struct {
	HypertableSchema string     `json:"hypertable_schema"`
	HypertableName   string     `json:"hypertable_name"`
	Schema           string     `json:"schema"`
	Name             string     `json:"name"`
	RangeStart       *time.Time `json:"range_start,omitempty"`
	RangeEnd         *time.Time `json:"range_end,omitempty"`
	RangeStartInt    *int64     `json:"range_start_integer,omitempty"`
	RangeEndInt      *int64     `json:"range_end_integer,omitempty"`
	Compressed       bool       `json:"compressed"`
	Readable         bool       `json:"readable"`
	// EstRows (pg_class.reltuples, -1 when never analyzed) and EstBytes (heap, TOAST and
	// indexes from pg_class.relpages) are the chunk table's own, as of its last VACUUM or
	// ANALYZE; the data of a compressed chunk lives in an internal table not counted here.
	EstRows  int64 `json:"est_rows"`
	EstBytes int64 `json:"est_bytes"`
	// MissingDefaults counts the columns of a compressed chunk that were added with a
	// default after it was compressed: its rows read those values from the chunk's
	// catalog (pg_attribute.attmissingval), not from their compressed data.
	MissingDefaults int `json:"missing_defaults,omitempty"`
}

// ContinuousAggregate is a TimescaleDB continuous aggregate.
type ContinuousAggregate struct {
	Schema                string `json:"schema"`
	Name                  string `json:"name"`
	HypertableSchema      string `json:"hypertable_schema"`
	HypertableName        string `json:"hypertable_name"`
	MaterializedOnly      bool   `json:"materialized_only"`
	MaterializationSchema string `json:"materialization_hypertable_schema"`
	MaterializationTable  string `json:"materialization_hypertable_name"`
}

// Job is a TimescaleDB background job; IDs from 1000 are the user's (policies, add_job).
type Job struct {
	ID               int        `json:"id"`
	Application      string     `json:"application_name"`
	Proc             string     `json:"proc"` // schema.name
	Owner            string     `json:"owner"`
	Scheduled        bool       `json:"scheduled"`
	ScheduleInterval string     `json:"schedule_interval"`
	HypertableSchema string     `json:"hypertable_schema,omitempty"`
	HypertableName   string     `json:"hypertable_name,omitempty"`
	NextStart        *time.Time `json:"next_start,omitempty"`
}

// UserJob says whether the job is the user's rather than TimescaleDB's own.
func (j Job) UserJob() bool { return j.ID >= 1000 }

// Activity is what is going on in the database and on the server right now.
type Activity struct {
	// Sessions are the other backends connected to this database.
	Sessions             []Session             `json:"sessions"`
	PreparedTransactions []PreparedTransaction `json:"prepared_transactions"`
	ReplicationSlots     []ReplicationSlot     `json:"replication_slots"`
	// Subscriptions are the logical replication subscriptions of this database.
	Subscriptions []Subscription `json:"subscriptions"`
}

// Subscription is a logical replication subscription of the database.
type Subscription struct {
	Name    string `json:"name"`
	Enabled bool   `json:"enabled"`
}

// Session is another backend connected to the database.
type Session struct {
	PID         int        `json:"pid"`
	User        string     `json:"user"`
	Application string     `json:"application_name"`
	State       string     `json:"state"`
	XactStart   *time.Time `json:"xact_start,omitempty"`
	XactSeconds float64    `json:"xact_seconds"` // how long its transaction has been open; 0 when none
	HoldsXID    bool       `json:"holds_xid"`    // it has written (holds a transaction id)
}

// PreparedTransaction is a two-phase transaction waiting for COMMIT/ROLLBACK PREPARED.
type PreparedTransaction struct {
	GID      string    `json:"gid"`
	Database string    `json:"database"`
	Owner    string    `json:"owner"`
	Prepared time.Time `json:"prepared"`
}

// ReplicationSlot is a replication slot on the server.
type ReplicationSlot struct {
	Name     string `json:"name"`
	Type     string `json:"type"` // physical or logical
	Plugin   string `json:"plugin,omitempty"`
	Database string `json:"database,omitempty"`
	Active   bool   `json:"active"`
}

// HasTimescaleDB says whether the TimescaleDB extension is installed in the database.
func (d *Database) HasTimescaleDB() bool { return d.TimescaleDB != nil }

// UsesCompression says whether any hypertable (or continuous aggregate) has compression on.
func (d *Database) UsesCompression() bool {
	for _, h := range d.Hypertables {
		if h.CompressionEnabled || h.CompressedChunks > 0 {
			return true
		}
	}
	return false
}

// UserJobs are the jobs with IDs from 1000: policies and add_job jobs.
func (d *Database) UserJobs() []Job {
	var out []Job
	for _, j := range d.Jobs {
		if j.UserJob() {
			out = append(out, j)
		}
	}
	return out
}

// AvailableVersions gives the versions of extension name the server can install,
// and whether it knows the extension at all.
func (d *Database) AvailableVersions(name string) ([]string, bool) {
	for _, a := range d.Available {
		if a.Name == name {
			return a.Versions, true
		}
	}
	return nil, false
}

// Load reads the inventory of the database conn is connected to. conn must not be in a
// transaction that should stay clean: Load runs plain read-only queries on it.
func Load(ctx context.Context, conn *pgx.Conn) (*Database, error) {
	start := time.Now()
	d := &Database{LoadedAt: start.UTC()}
	l := loader{conn: conn, d: d}
	steps := []struct {
		what        string
		run         func(context.Context) error
		timescaledb bool // only when the extension is installed (found by "extensions")
	}{
		{"server", l.server, false},
		{"connections", l.connections, false},
		{"identity", l.identity, false},
		{"user", l.user, false},
		{"extensions", l.extensions, false},
		{"available extensions", l.available, false},
		{"schemas", l.schemas, false},
		{"tables", l.tables, false},
		{"sequences", l.sequences, false},
		{"routines and types", l.objects, false},
		{"large objects", l.largeObjects, false},
		{"sessions", l.sessions, false},
		{"prepared transactions", l.prepared, false},
		{"replication slots", l.slots, false},
		{"subscriptions", l.subscriptions, false},
		{"timescaledb license", l.license, true},
		{"hypertables", l.hypertables, true},
		{"chunks", l.chunks, true},
		{"continuous aggregates", l.caggs, true},
		{"jobs", l.jobs, true},
	}
	for _, s := range steps {
		if s.timescaledb && d.TimescaleDB == nil {
			continue
		}
		if err := s.run(ctx); err != nil {
			return nil, fmt.Errorf("inventory of %s: %w", s.what, err)
		}
	}
	if d.TimescaleDB != nil {
		l.markHypertables()
	}
	d.LoadTime = time.Since(start)
	return d, nil
}
