package preflight_test

import (
	"context"
	"strings"
	"testing"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/preflight"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// runLive runs pre-flight for migrate --live (with --replica-identity-full when full).
func runLive(t *testing.T, source, target string, full bool) *preflight.Report {
	t.Helper()
	r, err := preflight.Run(context.Background(), preflight.Options{Live: true, ReplicaIdentityFull: full,
		Source: config(t, "source", source), Target: config(t, "target", target)})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// expectDo is expect, and that the finding's do mentions words.
func expectDo(t *testing.T, r *preflight.Report, check string, st preflight.Status, words ...string) {
	t.Helper()
	expect(t, r, check, st)
	f := find(t, r, check)
	for _, w := range words {
		if !strings.Contains(f.Do, w) {
			t.Errorf("%s: do %q does not mention %q", check, f.Do, w)
		}
	}
}

// sourceState is what a live pre-flight must leave as it was on the source: slots,
// publications and every table's replica identity.
func sourceState(t *testing.T, srv *testenv.Server, db string) string {
	t.Helper()
	conn := testenv.Connect(t, srv.SuperURI(db))
	var s string
	if err := conn.QueryRow(context.Background(), `SELECT
	(SELECT count(*) FROM pg_replication_slots)::text || ' slots, ' ||
	(SELECT count(*) FROM pg_publication)::text || ' publications, ' ||
	coalesce((SELECT string_agg(oid::regclass::text || '=' || relreplident::text, ' ' ORDER BY oid) FROM pg_class WHERE relkind IN ('r', 'p')), '')`).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// The replica-identity check: the tables and hypertables published without a primary
// key or replica identity fail, naming each, unless --replica-identity-full (then a
// warning); nothing changes on the source either way.
func TestLiveReplicaIdentity(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src, tgt := testenv.NewDB(t, srv, true), testenv.NewDB(t, srv, true)
	testenv.MustExec(t, srv, src,
		`CREATE TABLE m (time timestamptz NOT NULL, v int)`,
		`SELECT create_hypertable('m', 'time')`,
		`INSERT INTO m VALUES (now(), 1)`,
		`CREATE TABLE keyed (id int PRIMARY KEY)`,
		`CREATE TABLE log (line text)`,
		`CREATE TABLE full_log (line text)`,
		`ALTER TABLE full_log REPLICA IDENTITY FULL`,
		`CREATE TABLE nothing (line text)`,
		`ALTER TABLE nothing REPLICA IDENTITY NOTHING`,
		`CREATE TABLE by_index (a int NOT NULL)`,
		`CREATE UNIQUE INDEX by_index_a ON by_index (a)`,
		`ALTER TABLE by_index REPLICA IDENTITY USING INDEX by_index_a`)
	before := sourceState(t, srv, src)

	r := runLive(t, srv.SuperURI(src), srv.SuperURI(tgt), false)
	expectDo(t, r, "live-replica-identity", preflight.Fail, "add a primary key to each", "--replica-identity-full")
	f := find(t, r, "live-replica-identity")
	for _, w := range []string{"of the 5 tables and 1 hypertable published, 3 have neither a primary key nor a replica identity",
		"hypertable public.m", "table public.log", "table public.nothing", "their UPDATE and DELETE would fail on the source"} {
		if !strings.Contains(f.Saw, w) {
			t.Errorf("live-replica-identity: %q does not mention %q", f.Saw, w)
		}
	}
	for _, w := range []string{"keyed", "full_log", "by_index"} {
		if strings.Contains(f.Saw, w) {
			t.Errorf("live-replica-identity names %s, which has a replica identity: %s", w, f.Saw)
		}
	}
	if !r.Failed() {
		t.Error("the report does not fail")
	}

	r = runLive(t, srv.SuperURI(src), srv.SuperURI(tgt), true)
	expectDo(t, r, "live-replica-identity", preflight.Warn, "whole old row", "primary key")
	expect(t, r, "live-replica-identity", preflight.Warn, "hypertable public.m", "--replica-identity-full sets REPLICA IDENTITY FULL on them for the migration and puts back")
	if after := sourceState(t, srv, src); after != before {
		t.Errorf("pre-flight changed the source:\nbefore %s\nafter  %s", before, after)
	}

	testenv.MustExec(t, srv, src,
		`ALTER TABLE m ADD PRIMARY KEY (time)`,
		`ALTER TABLE log ADD COLUMN id serial PRIMARY KEY`,
		`ALTER TABLE nothing REPLICA IDENTITY FULL`)
	r = runLive(t, srv.SuperURI(src), srv.SuperURI(tgt), false)
	expect(t, r, "live-replica-identity", preflight.Pass, "every one of the 5 tables and 1 hypertable published has a primary key or a replica identity")
	expect(t, runLive(t, srv.SuperURI(src), srv.SuperURI(tgt), true), "live-replica-identity", preflight.Pass, "--replica-identity-full has nothing to do")
}

// A source with wal_level = replica and one slot and one WAL sender: live-wal-level
// fails; live-slots and live-wal-senders pass while one is free and fail once it is
// taken. Without --live none of these checks runs.
func TestLiveSourceServer(t *testing.T) {
	srv := testenv.Need(t, testenv.PG17TS, testenv.Options{Settings: map[string]string{
		"wal_level": "replica", "max_replication_slots": "1", "max_wal_senders": "1"}})
	src, tgt := testenv.NewDB(t, srv, true), testenv.NewDB(t, srv, true)
	testenv.MustExec(t, srv, src, `CREATE TABLE keyed (id int PRIMARY KEY)`)

	offline := runPreflight(t, srv.SuperURI(src), srv.SuperURI(tgt))
	for _, f := range offline.Findings {
		if strings.HasPrefix(f.Check, "live-") {
			t.Errorf("without --live: finding %+v", f)
		}
	}

	r := runLive(t, srv.SuperURI(src), srv.SuperURI(tgt), false)
	expect(t, r, "live-wal-level", preflight.Fail, "wal_level = replica")
	expectDo(t, r, "live-wal-level", preflight.Fail, "ALTER SYSTEM SET wal_level = logical, then restart")
	expect(t, r, "live-slots", preflight.Pass, "max_replication_slots = 1, 0 in use, 1 free")
	expect(t, r, "live-wal-senders", preflight.Pass, "max_wal_senders = 1, 0 in use, 1 free")
	expect(t, r, "live-replication", preflight.Pass, "postgres is a superuser", "(one opened and closed)")
	expect(t, r, "live-replica-identity", preflight.Pass)

	testenv.MustExec(t, srv, src, `SELECT pg_create_physical_replication_slot('pf_taken')`)
	t.Cleanup(func() { srv.Exec(context.Background(), "postgres", `SELECT pg_drop_replication_slot('pf_taken')`) })
	cfg := config(t, "source", srv.SuperURI(src))
	repl, err := cfg.ConnectReplication(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer repl.Close(context.Background())

	r = runLive(t, srv.SuperURI(src), srv.SuperURI(tgt), false)
	expect(t, r, "live-slots", preflight.Fail, "max_replication_slots = 1, 1 in use, 0 free: too few")
	expectDo(t, r, "live-slots", preflight.Fail, "raise max_replication_slots to 2 or more")
	expect(t, r, "live-wal-senders", preflight.Fail, "max_wal_senders = 1, 1 in use, 0 free: too few")
	expectDo(t, r, "live-wal-senders", preflight.Fail, "raise max_wal_senders to 2 or more")
	expect(t, r, "live-replication", preflight.Pass, "not tried: no WAL sender free")
	if !r.Failed() {
		t.Error("the report does not fail")
	}
}

// On a source with logical decoding: every live check passes for a superuser.
func TestLivePasses(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src, tgt := testenv.NewDB(t, srv, true), testenv.NewDB(t, srv, true)
	testenv.MustExec(t, srv, src,
		`CREATE TABLE m (time timestamptz NOT NULL, v int, PRIMARY KEY (time))`,
		`SELECT create_hypertable('m', 'time')`)
	before := sourceState(t, srv, src)
	r := runLive(t, srv.SuperURI(src), srv.SuperURI(tgt), false)
	expect(t, r, "live-wal-level", preflight.Pass, "wal_level = logical")
	expect(t, r, "live-slots", preflight.Pass)
	expect(t, r, "live-wal-senders", preflight.Pass)
	expect(t, r, "live-replication", preflight.Pass, "(one opened and closed)")
	expect(t, r, "live-publication", preflight.Pass, "postgres is a superuser")
	expect(t, r, "live-replica-identity", preflight.Pass)
	if r.Failed() {
		for _, f := range r.Findings {
			if f.Status == preflight.Fail {
				t.Errorf("failed: %+v", f)
			}
		}
	}
	if after := sourceState(t, srv, src); after != before {
		t.Errorf("pre-flight changed the source:\nbefore %s\nafter  %s", before, after)
	}
}

// A source user without REPLICATION may not open the replication connection; one
// that is not a superuser may not publish TimescaleDB's chunk schemas (a superuser
// must), and without TimescaleDB may publish only the tables it owns.
func TestLiveRights(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	ts, plain, tgt := testenv.NewDB(t, srv, true), testenv.NewDB(t, srv, false), testenv.NewDB(t, srv, true)
	owner := role(t, srv, "")
	other := role(t, srv, "")
	for _, db := range []string{ts, plain} {
		testenv.MustExec(t, srv, "postgres", "ALTER DATABASE "+db+" OWNER TO "+owner)
		testenv.MustExec(t, srv, db, "GRANT CREATE ON SCHEMA public TO "+owner+", "+other)
	}
	testenv.MustExec(t, srv, plain,
		`SET ROLE `+owner, `CREATE TABLE mine (id int PRIMARY KEY)`, `RESET ROLE`,
		`SET ROLE `+other, `CREATE TABLE theirs (id int PRIMARY KEY)`, `GRANT SELECT ON theirs TO `+owner, `RESET ROLE`)
	uri := func(db string) string { return userURI(srv, owner, "pw-"+owner, db) }

	r := runLive(t, uri(plain), srv.SuperURI(tgt), false)
	expect(t, r, "live-replication", preflight.Fail, owner+" is neither a superuser nor has REPLICATION")
	expectDo(t, r, "live-replication", preflight.Fail, "ALTER ROLE "+owner+" REPLICATION")
	expect(t, r, "live-publication", preflight.Fail, owner+" may publish only the tables it owns, and does not own public.theirs")
	if saw := find(t, r, "live-publication").Saw; strings.Contains(saw, "mine") {
		t.Errorf("live-publication names a table %s owns: %s", owner, saw)
	}

	testenv.MustExec(t, srv, "postgres", "ALTER ROLE "+owner+" REPLICATION")
	testenv.MustExec(t, srv, plain, "ALTER TABLE theirs OWNER TO "+owner)
	r = runLive(t, uri(plain), srv.SuperURI(tgt), false)
	expect(t, r, "live-replication", preflight.Pass, owner+" has REPLICATION", "(one opened and closed)")
	expect(t, r, "live-publication", preflight.Pass, owner+" may create a publication in "+plain+" and owns the 2 tables it publishes")

	testenv.MustExec(t, srv, ts,
		`SET ROLE `+owner,
		`CREATE TABLE m (time timestamptz NOT NULL, v int, PRIMARY KEY (time))`,
		`SELECT create_hypertable('m', 'time')`,
		`RESET ROLE`)
	r = runLive(t, uri(ts), srv.SuperURI(tgt), false)
	expect(t, r, "live-publication", preflight.Fail, "publishes TimescaleDB's chunk schemas (_timescaledb_internal)",
		"PostgreSQL lets only a superuser publish FOR TABLES IN SCHEMA, and "+owner+" is not one")
	expectDo(t, r, "live-publication", preflight.Fail, "connect to the source as a superuser", "migrate without --live")
}

// With --live the connections check counts the live migration's sessions, and not
// the applications' sessions on the source database as ended: they stay connected
// until the cut-over.
func TestLiveConnections(t *testing.T) {
	// 22 sessions, of which pre-flight's own two and those of sessions just closed
	// whose backends have not yet exited (a loaded machine) are taken: a live
	// migration with --jobs 4 needs 9 + 13 on one server, with --jobs 3 8 + 11.
	srv := testenv.Need(t, testenv.PG17TS, testenv.Options{Settings: map[string]string{"max_connections": "22"}})
	src, tgt := testenv.NewDB(t, srv, false), testenv.NewDB(t, srv, false)
	check := func(jobs int, live bool) preflight.Finding {
		r, err := preflight.Run(context.Background(), preflight.Options{Jobs: jobs, Live: live,
			Source: config(t, "source", srv.SuperURI(src)), Target: config(t, "target", srv.SuperURI(tgt))})
		if err != nil {
			t.Fatal(err)
		}
		return find(t, r, "connections")
	}
	if f := check(4, false); f.Status != preflight.Pass {
		t.Errorf("--jobs 4: %+v", f)
	}
	f := check(4, true)
	if f.Status != preflight.Fail || !strings.Contains(f.Saw, "a live migration with --jobs 4 opens up to 9 client sessions on the source (2 to keep its snapshot and stream its changes) and 13 on the target") ||
		!strings.Contains(f.Saw, "a replication connection to the source") || !strings.Contains(f.Do, "migrate with --jobs 3 or fewer") {
		t.Errorf("--live --jobs 4: %+v", f)
	}
	if f := check(3, true); f.Status != preflight.Pass {
		t.Errorf("--live --jobs 3: %+v", f)
	}
}

// --live with the dump engine is refused before anything is read.
func TestLiveNeedsStream(t *testing.T) {
	src, _ := dbconn.Parse("source", "postgres://u@127.0.0.1:1/db")
	tgt, _ := dbconn.Parse("target", "postgres://u@127.0.0.1:1/db2")
	_, err := preflight.Run(context.Background(), preflight.Options{Live: true, Engine: preflight.EngineDump, Source: src, Target: tgt})
	if err == nil || !strings.Contains(err.Error(), "a live migration needs the stream engine") {
		t.Errorf("got %v", err)
	}
}
