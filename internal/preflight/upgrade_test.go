package preflight_test

import (
	"context"
	"strings"
	"testing"

	"github.com/tsmigrate/tsmigrate/internal/preflight"
	"github.com/tsmigrate/tsmigrate/internal/schema"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// timescaleVersion is the TimescaleDB version installed in database db of srv.
func timescaleVersion(t *testing.T, srv *testenv.Server, db string) string {
	t.Helper()
	var v string
	if err := testenv.Connect(t, srv.SuperURI(db)).QueryRow(context.Background(),
		"SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// timescaleSource is a database of srv with a hypertable and a chunk.
func timescaleSource(t *testing.T, srv *testenv.Server) string {
	t.Helper()
	db := testenv.NewDB(t, srv, true)
	testenv.MustExec(t, srv, db, `CREATE TABLE m (t timestamptz NOT NULL, v int)`,
		`SELECT create_hypertable('m', 't')`, `INSERT INTO m VALUES ('2025-01-01', 1)`)
	return db
}

// A source on PostgreSQL 17 + TimescaleDB 2.19.3, a target on PostgreSQL 18 with a
// newer TimescaleDB: an upgrade on the way, which pre-flight passes, saying so, and
// for which it picks the restore through TimescaleDB's API (its catalog cannot cross
// versions). The dump engine, which restores the catalog, is refused in one line that
// points to the stream engine; so is --restore-path catalog.
func TestUpgradeOnTheWay(t *testing.T) {
	src, tgt := testenv.Shared(t, testenv.PG17TS), testenv.Shared(t, testenv.PG18TS)
	sdb, tdb := timescaleSource(t, src), testenv.NewDB(t, tgt, false)
	from := timescaleVersion(t, src, sdb)
	to := timescaleVersion(t, tgt, testenv.NewDB(t, tgt, true)) // what the target installs
	if c, ok := schema.CompareVersions(to, from); !ok || c <= 0 {
		t.Fatalf("the PostgreSQL 18 server's TimescaleDB %s is not newer than the 17 one's %s", to, from)
	}

	r := runPreflight(t, src.URI(sdb), tgt.URI(tdb))
	if r.Failed() {
		t.Errorf("pre-flight of an upgrade fails: %+v", r.Findings)
	}
	expect(t, r, "postgres-major", preflight.Pass, "upgrade from PostgreSQL 17", "to PostgreSQL 18")
	expect(t, r, "timescaledb-version", preflight.Pass, "upgrade from TimescaleDB "+from+" to "+to, "the target's default version", "CREATE EXTENSION tried")
	expect(t, r, "target-restore-mode", preflight.Pass, "catalog-less path", "newer than the source's "+from)
	expect(t, r, "timescaledb-upgrade", preflight.Pass, "no object of the source uses a TimescaleDB function or view that TimescaleDB "+to+" removed or deprecated")

	dump, err := preflight.Run(context.Background(), preflight.Options{
		Source: config(t, "source", src.URI(sdb)), Target: config(t, "target", tgt.URI(tdb)), Engine: preflight.EngineDump})
	if err != nil {
		t.Fatal(err)
	}
	expect(t, dump, "timescaledb-version", preflight.Fail, "upgrade from TimescaleDB "+from+" to "+to, "the dump engine cannot cross TimescaleDB versions")
	if f := find(t, dump, "timescaledb-version"); !strings.Contains(f.Do, "--engine stream") || strings.Contains(f.Saw, "\n") {
		t.Errorf("timescaledb-version with the dump engine: %+v; want one line pointing to --engine stream", f)
	}
	if dump.Summary.Fail != 1 {
		t.Errorf("the dump engine across versions fails %d checks, want 1: %+v", dump.Summary.Fail, dump.Findings)
	}

	catalog := runPreflightPath(t, src.URI(sdb), tgt.URI(tdb), schema.PathCatalog)
	expect(t, catalog, "target-restore-mode", preflight.Fail, "--restore-path catalog, but the target's TimescaleDB "+to+" is newer")

	// Installed beforehand, the newer version is taken as it is.
	installed := testenv.NewDB(t, tgt, true)
	r = runPreflight(t, src.URI(sdb), tgt.URI(installed))
	expect(t, r, "timescaledb-version", preflight.Pass, "upgrade from TimescaleDB "+from+" to "+to, "installed in the target database")
}

// A downgrade (PostgreSQL 18 and its TimescaleDB to PostgreSQL 17 and 2.19.3) fails
// pre-flight, both checks naming both versions.
func TestDowngradeFails(t *testing.T) {
	src, tgt := testenv.Shared(t, testenv.PG18TS), testenv.Shared(t, testenv.PG17TS)
	sdb, tdb := timescaleSource(t, src), testenv.NewDB(t, tgt, false)
	from := timescaleVersion(t, src, sdb)
	installed := testenv.NewDB(t, tgt, true)
	to := timescaleVersion(t, tgt, installed)
	r := runPreflight(t, src.URI(sdb), tgt.URI(tdb))
	expect(t, r, "postgres-major", preflight.Fail, "source runs PostgreSQL 18", "target PostgreSQL 17", "older major")
	expect(t, r, "timescaledb-version", preflight.Fail, "source uses TimescaleDB "+from, "offers only "+to)
	// With the older version installed in the target database.
	r = runPreflight(t, src.URI(sdb), tgt.URI(installed))
	expect(t, r, "timescaledb-version", preflight.Fail, "source uses TimescaleDB "+from, "has "+to+" installed")
}

// The source's objects that the target's newer TimescaleDB treats differently are
// named before anything changes: a view calling time_bucket_ng (gone in the target's
// version; instead: time_bucket) and one reading a column of TimescaleDB's information
// views that is gone fail pre-flight; a view calling a deprecated compatibility
// wrapper of 2.12 (instead: the function in _timescaledb_functions) and a PL/pgSQL
// body naming time_bucket_ng, which fails only when run, are warned about. Objects
// that use what the target still has are not named.
func TestUpgradeNamesWhatChanges(t *testing.T) {
	src, tgt := testenv.Shared(t, testenv.PG17TS), testenv.Shared(t, testenv.PG18TS)
	sdb, tdb := timescaleSource(t, src), testenv.NewDB(t, tgt, false)
	testenv.MustExec(t, src, sdb,
		`CREATE VIEW daily AS SELECT timescaledb_experimental.time_bucket_ng('1 day', t) AS d, count(*) FROM m GROUP BY 1`,
		`CREATE VIEW cagg_forms AS SELECT view_name, finalized FROM timescaledb_information.continuous_aggregates`,
		`CREATE VIEW micros AS SELECT _timescaledb_internal.to_unix_microseconds(now()) AS us`,
		`CREATE VIEW fine AS SELECT time_bucket('1 day', t) AS d, hypertable_name FROM m, timescaledb_information.hypertables`,
		`CREATE FUNCTION bucket_of(ts timestamptz) RETURNS date LANGUAGE plpgsql AS $$BEGIN RETURN timescaledb_experimental.time_bucket_ng('1 day', ts::date); END$$`,
		`CREATE TABLE stamped (t timestamptz NOT NULL DEFAULT _timescaledb_functions.to_timestamp(0))`)
	to := timescaleVersion(t, tgt, testenv.NewDB(t, tgt, true))
	r := runPreflight(t, src.URI(sdb), tgt.URI(tdb))
	var fail, warn *preflight.Finding
	for i, f := range r.Findings {
		if f.Check != "timescaledb-upgrade" {
			continue
		}
		switch f.Status {
		case preflight.Fail:
			fail = &r.Findings[i]
		case preflight.Warn:
			warn = &r.Findings[i]
		}
	}
	if fail == nil || warn == nil {
		t.Fatalf("timescaledb-upgrade: want a failure and a warning, got %+v", r.Findings)
	}
	for _, w := range []string{"2 objects", "TimescaleDB " + to,
		"view public.daily uses timescaledb_experimental.time_bucket_ng() (instead: time_bucket",
		"view public.cagg_forms uses column finalized of timescaledb_information.continuous_aggregates"} {
		if !strings.Contains(fail.Saw, w) {
			t.Errorf("timescaledb-upgrade failure %q does not say %q", fail.Saw, w)
		}
	}
	for _, w := range []string{"function public.bucket_of(timestamp with time zone) uses time_bucket_ng() in its body",
		"view public.micros uses _timescaledb_internal.to_unix_microseconds() (instead: _timescaledb_functions.to_unix_microseconds())"} {
		if !strings.Contains(warn.Saw, w) {
			t.Errorf("timescaledb-upgrade warning %q does not say %q", warn.Saw, w)
		}
	}
	t.Logf("timescaledb-upgrade:\n%s\n%s\n%s", fail.Saw, warn.Saw, fail.Do)
	for _, f := range []*preflight.Finding{fail, warn} {
		if strings.Contains(f.Saw, "fine") || strings.Contains(f.Saw, "stamped") {
			t.Errorf("timescaledb-upgrade names objects that use what the target has: %s", f.Saw)
		}
	}
}
