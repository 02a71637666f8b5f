package migrate_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// postDataSource makes a database whose post-data section takes a few seconds after the
// copy: six tables of 300 k rows with a foreign key each to a table of 400 k rows (each
// validated in turn by the rest of post-data), a NOT VALID check, a partitioned table's
// index, a trigger, a policy, a comment, and a hypertable whose chunks' foreign keys
// are left to the rest too.
func postDataSource(t *testing.T, srv *testenv.Server) string {
	src := testenv.NewDB(t, srv, true)
	testenv.MustExec(t, srv, src,
		"CREATE TABLE big (id int PRIMARY KEY, a text)",
		"INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 400000) g",
		"ALTER TABLE big ADD CONSTRAINT id_positive CHECK (id > 0) NOT VALID",
		"CREATE TABLE parts (k int, v int) PARTITION BY RANGE (k)",
		"CREATE TABLE parts_1 PARTITION OF parts FOR VALUES FROM (0) TO (1000)",
		"CREATE INDEX parts_v ON parts (v)",
		"INSERT INTO parts SELECT g, g FROM generate_series(0, 999) g",
		"CREATE TABLE m (t timestamptz NOT NULL, id int REFERENCES big (id), v int)",
		"SELECT create_hypertable('m', 't', chunk_time_interval => interval '1 day')",
		"CREATE INDEX m_id ON m (id, t DESC)",
		"INSERT INTO m SELECT '2025-01-01'::timestamptz + g * interval '10 minutes', 1 + g, g FROM generate_series(1, 2000) g")
	for i := 1; i <= 6; i++ {
		c := fmt.Sprintf("c%d", i)
		testenv.MustExec(t, srv, src, "CREATE TABLE "+c+" (id int PRIMARY KEY, big_id int REFERENCES big (id), note text)",
			"INSERT INTO "+c+" SELECT g, 1 + (g * 7) % 400000, 'n' FROM generate_series(1, 300000) g")
	}
	testenv.MustExec(t, srv, src,
		"COMMENT ON CONSTRAINT c1_big_id_fkey ON c1 IS 'a foreign key'",
		"CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN NEW.note := upper(NEW.note); RETURN NEW; END'",
		"CREATE TRIGGER c1_stamp BEFORE INSERT ON c1 FOR EACH ROW EXECUTE FUNCTION stamp()",
		"ALTER TABLE c1 ENABLE ROW LEVEL SECURITY", "CREATE POLICY c1_mine ON c1 USING (id > 0)",
		"ANALYZE")
	return src
}

// sqlUserObjects describes the indexes, constraints, triggers, policies and comments
// of the user's schemas and the chunks, one line each (twice if made twice).
const sqlUserObjects = `
SELECT string_agg(d, E'\n' ORDER BY d) FROM (
  SELECT 'index ' || pg_get_indexdef(x.indexrelid) || ' valid=' || x.indisvalid
    || coalesce(' attached to ' || (SELECT i.inhparent::regclass::text FROM pg_inherits i WHERE i.inhrelid = x.indexrelid), '')
    || coalesce(' comment=' || obj_description(x.indexrelid, 'pg_class'), '') AS d
  FROM pg_index x JOIN pg_class ic ON ic.oid = x.indexrelid
  WHERE ic.relnamespace::regnamespace::text IN ('public', '_timescaledb_internal')
  UNION ALL
  SELECT 'constraint ' || conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid) || ' validated=' || convalidated
    || coalesce(' comment=' || obj_description(oid, 'pg_constraint'), '')
  FROM pg_constraint WHERE connamespace::regnamespace::text IN ('public', '_timescaledb_internal')
  UNION ALL
  SELECT 'trigger ' || pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal AND tgrelid::regclass::text IN ('c1', 'm')
  UNION ALL
  SELECT 'policy ' || tablename || ' ' || policyname || ' ' || qual FROM pg_policies
  UNION ALL
  SELECT 'rls ' || relname || ' ' || relrowsecurity FROM pg_class WHERE relname = 'c1'
) x`

// SIGKILL of tsmigrate while it restores the rest of post-data (foreign keys, ...) after
// some of it is on the target, then --resume: exit 0, only the missing entries restored
// (none twice: a second ADD CONSTRAINT of the same name would fail the run), every
// index, constraint, trigger and policy of the source on the target, rows equal, verify
// identical. On the way, a resume that fails in post-data keeps the source frozen when
// asked to.
func TestStreamKillInPostDataThenResume(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src := postDataSource(t, srv)
	dst := testenv.NewDB(t, srv, false)
	unfreezeAtCleanup(t, srv, src)
	const fks = "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conrelid::regclass::text ~ '^c[0-9]$'"
	const want = 6

	g := connect(t, srv.SuperURI(dst))
	killWhen(t, srv, src, dst, "post-data", "a foreign key on the target", func() bool { return scalar[int](t, g, fks) >= 2 })
	sessionsGone(t, g, dst) // the killed run's pg_restore ends after the statement it runs
	have := scalar[int](t, g, fks)
	t.Logf("killed with %d of the %d foreign keys on the target", have, want)
	if have < 2 || have >= want {
		t.Fatalf("killed with %d of the %d foreign keys on the target: not in the middle of post-data", have, want)
	}
	if steps := scalar[string](t, g, "SELECT string_agg(name, ',' ORDER BY name) FROM _tsmigrate.steps"); steps != "post-data-started,pre-data" {
		t.Fatalf("journal steps %q", steps)
	}
	if writable(t, srv, src) {
		t.Fatal("the source is writable after tsmigrate was killed")
	}

	// A resume that fails in post-data (a row on the target that a missing foreign key
	// rejects) keeps the source frozen with --keep-frozen-on-failure, and can be
	// resumed again; it restored the other missing entries meanwhile.
	missing := scalar[string](t, g, "SELECT max(c) FROM (VALUES ('c1'), ('c2'), ('c3'), ('c4'), ('c5'), ('c6')) v(c) WHERE NOT EXISTS (SELECT FROM pg_constraint WHERE contype = 'f' AND conrelid = c::regclass)")
	testenv.MustExec(t, srv, dst, "INSERT INTO "+missing+" VALUES (0, -1, 'orphan')")
	code, out, errOut := runCLI(t, "migrate", "--resume", "--keep-frozen-on-failure", "--yes", "--jobs", "2", "--progress", "plain", "--json",
		"--pg-bin", srv.ClientBin(), "--source", srv.URI(src), "--target", srv.URI(dst))
	var failed migrate.Summary
	if err := json.Unmarshal([]byte(out), &failed); err != nil || code != 1 || !strings.Contains(failed.Error, missing+"_big_id_fkey") ||
		!failed.Frozen() || len(failed.Resume) == 0 {
		t.Fatalf("resume with an orphan row in %s: exit %d, %v\n%s\n%s", missing, code, err, out, errOut)
	}
	for _, l := range strings.Split(errOut, "\n") {
		if strings.Contains(l, "entries left after the copy are on the target already") {
			t.Log(strings.TrimSpace(l))
		}
	}
	if writable(t, srv, src) {
		t.Fatal("--keep-frozen-on-failure: a resume that failed in post-data unfroze the source")
	}
	testenv.MustExec(t, srv, dst, "DELETE FROM "+missing+" WHERE id = 0")

	sum, errOut := resume(t, srv, src, dst)
	d := sum.Databases[0]
	if sum.Outcome != migrate.OutcomeMigrated || d.Identical == nil || !*d.Identical || len(d.Tables) == 0 {
		t.Fatalf("resumed: %+v", sum)
	}
	for _, tr := range d.Tables {
		if tr.Source != tr.Target || tr.SourceChunks != tr.TargetChunks {
			t.Errorf("%s: source %d rows %d chunks, target %d rows %d chunks", tr.Name, tr.Source, tr.SourceChunks, tr.Target, tr.TargetChunks)
		}
	}
	for _, ph := range sum.Phases {
		if ph.Phase == migrate.PhaseCopy || ph.Phase == migrate.PhasePreData {
			t.Errorf("the resumed run did the %s phase again", ph.Phase)
		}
	}
	found := false
	for _, l := range strings.Split(errOut, "\n") {
		if strings.Contains(l, "entries left after the copy are on the target already") {
			found = true
			t.Log(strings.TrimSpace(l))
		}
	}
	if !found {
		t.Errorf("the resumed run does not say what it found on the target:\n%s", errOut)
	}
	s := connect(t, srv.SuperURI(src)) // the freeze ended the sessions from before it
	for _, q := range []string{sqlUserObjects, "SELECT count(*) || ' ' || sum(hashtext(a)) FROM big", "SELECT count(*) || ' ' || sum(big_id) FROM c6",
		"SELECT count(*)::text FROM m", "SELECT count(*)::text FROM timescaledb_information.chunks"} {
		if a, b := scalar[string](t, s, q), scalar[string](t, g, q); a != b {
			t.Errorf("%s\nsource:\n%s\ntarget:\n%s", q, a, b)
		}
	}
	if writable(t, srv, src) {
		t.Fatal("the source is writable after the resumed run")
	}
}
