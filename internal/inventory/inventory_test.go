package inventory_test

import (
	"context"
	"net/url"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/inventory"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func load(t *testing.T, uri string) *inventory.Database {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	d, err := inventory.Load(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestLoadTimescaleDB(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	db := testenv.NewDB(t, srv, true)
	testenv.MustExec(t, srv, db,
		`CREATE TABLE metrics (time timestamptz NOT NULL, device int, value float8)`,
		`SELECT create_hypertable('metrics', 'time', chunk_time_interval => interval '1 day')`,
		`INSERT INTO metrics SELECT t, 1, 1 FROM generate_series('2025-01-01'::timestamptz, '2025-01-03 12:00', interval '1 hour') t`,
		`CREATE SCHEMA app`,
		`CREATE TABLE app."Devices" (id bigserial PRIMARY KEY, name text)`,
		`CREATE UNLOGGED TABLE scratch (x int)`,
		`CREATE VIEW v AS SELECT 1 AS one`,
		`CREATE TYPE mood AS ENUM ('ok', 'sad')`,
		`CREATE FUNCTION app.f() RETURNS int LANGUAGE sql AS 'SELECT 1'`,
		`CREATE EXTENSION hstore`,
		`SELECT lo_create(0)`,
		`ANALYZE`,
	)
	d := load(t, srv.SuperURI(db))

	if d.Server.Major != 17 || d.Name != db || d.Bytes <= 0 {
		t.Errorf("server %+v name %s bytes %d", d.Server, d.Name, d.Bytes)
	}
	if d.TimescaleDB == nil || d.TimescaleDB.Version != "2.19.3" || d.TimescaleDB.License != "apache" {
		t.Fatalf("timescaledb %+v", d.TimescaleDB)
	}
	if !d.User.Superuser || !d.User.OwnsDatabase || !d.User.CanCreate {
		t.Errorf("user %+v", d.User)
	}
	if v, ok := d.AvailableVersions("timescaledb"); !ok || !slices.Contains(v, "2.19.3") {
		t.Errorf("available timescaledb versions %v", v)
	}
	var names []string
	for _, e := range d.Extensions {
		names = append(names, e.Name)
	}
	if !slices.Contains(names, "hstore") || !slices.Contains(names, "timescaledb") {
		t.Errorf("extensions %v", names)
	}
	var tables []string
	for _, tb := range d.Tables {
		tables = append(tables, inventory.DisplayName(tb.Schema, tb.Name)+"/"+tb.Kind)
	}
	want := []string{`app."Devices"/table`, "public.metrics/table", "public.scratch/table", "public.v/view"}
	if !slices.Equal(tables, want) {
		t.Errorf("tables %v, want %v", tables, want)
	}
	for _, tb := range d.Tables {
		if tb.Name == "metrics" && !tb.Hypertable {
			t.Error("metrics is not marked as a hypertable")
		}
		if tb.Name == "scratch" && !tb.Unlogged {
			t.Error("scratch is not marked unlogged")
		}
	}
	if len(d.Hypertables) != 1 || d.Hypertables[0].Chunks != 3 || len(d.Chunks) != 3 ||
		d.Hypertables[0].EstRows != 61 || d.Hypertables[0].EstBytes <= 0 {
		t.Errorf("hypertables %+v, %d chunks", d.Hypertables, len(d.Chunks))
	}
	for _, c := range d.Chunks {
		if c.RangeStart == nil || c.RangeEnd == nil || !c.Readable || c.EstBytes <= 0 {
			t.Errorf("chunk %+v", c)
		}
	}
	if len(d.Sequences) != 1 || d.Sequences[0].OwnedBy != `app."Devices".id` {
		t.Errorf("sequences %+v", d.Sequences)
	}
	if len(d.Routines) != 1 || d.Routines[0].Name != "f" || len(d.Types) != 1 || d.Types[0].Name != "mood" {
		t.Errorf("routines %+v types %+v", d.Routines, d.Types)
	}
	if d.LargeObjects != 1 {
		t.Errorf("large objects %d", d.LargeObjects)
	}
	var schemas []string
	for _, s := range d.Schemas {
		schemas = append(schemas, s.Name)
	}
	if !slices.Equal(schemas, []string{"app", "public"}) {
		t.Errorf("schemas %v", schemas)
	}
}

// The number of queries does not grow with the number of tables or chunks.
func TestQueriesBounded(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	small, big := testenv.NewDB(t, srv, true), testenv.NewDB(t, srv, true)
	create := []string{
		`CREATE TABLE m (time timestamptz NOT NULL, v int)`,
		`SELECT create_hypertable('m', 'time', chunk_time_interval => interval '1 hour')`,
	}
	testenv.MustExec(t, srv, small, append(create, `INSERT INTO m VALUES ('2025-01-01', 1)`)...)
	testenv.MustExec(t, srv, big, append(create,
		`INSERT INTO m SELECT t, 1 FROM generate_series('2025-01-01'::timestamptz, '2025-01-03', interval '1 hour') t`,
		`CREATE TABLE a (x int)`, `CREATE TABLE b (x serial)`)...)
	s, b := load(t, srv.SuperURI(small)), load(t, srv.SuperURI(big))
	if len(b.Chunks) != 49 {
		t.Fatalf("%d chunks, want 49", len(b.Chunks))
	}
	if s.Queries != b.Queries {
		t.Errorf("queries: %d for 1 chunk, %d for 49", s.Queries, b.Queries)
	}
}

func TestLoadPlainPostgres(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG15)
	db := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, db, `CREATE TABLE t (x int)`, `BEGIN; PREPARE TRANSACTION 'p1'`)
	t.Cleanup(func() { srv.Exec(context.Background(), db, `ROLLBACK PREPARED 'p1'`) })
	d := load(t, srv.SuperURI(db))
	if d.Server.Major != 15 || d.TimescaleDB != nil || len(d.Tables) != 1 {
		t.Errorf("major %d timescaledb %+v tables %+v", d.Server.Major, d.TimescaleDB, d.Tables)
	}
	if len(d.Activity.PreparedTransactions) != 1 || d.Activity.PreparedTransactions[0].GID != "p1" {
		t.Errorf("prepared %+v", d.Activity.PreparedTransactions)
	}
}

// A server is the same whichever address reached it, and as whichever role; a role that
// may not read the system identifier still tells it by the server's start time and
// port. Two servers, or two databases of one, differ.
func TestIdentity(t *testing.T) {
	srv := testenv.Need(t, testenv.PG17TS, testenv.Options{})
	other := testenv.Shared(t, testenv.PG17TS)
	a, b := testenv.NewDB(t, srv, false), testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, "postgres", `CREATE ROLE plain LOGIN PASSWORD 'pw-plain'`)
	testenv.MustExec(t, srv, a, `REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC`)
	super := load(t, srv.SuperURI(a)).Identity
	proxy := testenv.StartProxy(t, srv)
	u, _ := url.Parse(proxy.URI(t, srv.SuperURI(a)))
	u.User = url.UserPassword("plain", "pw-plain")
	plain := load(t, u.String()).Identity
	if super.SystemID == "" || plain.SystemID != "" || !plain.SameDatabase(super) || !super.SameDatabase(plain) {
		t.Errorf("the same database: %+v and %+v", super, plain)
	}
	if id := load(t, srv.SuperURI(b)).Identity; !id.SameServer(super) || id.SameDatabase(super) {
		t.Errorf("another database of the same server: %+v and %+v", id, super)
	}
	if id := load(t, other.SuperURI("postgres")).Identity; id.SameServer(super) || id.SameServer(plain) {
		t.Errorf("another server: %+v and %+v", id, super)
	}
}
