package migrate_test

import (
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// postDataSource makes a database whose post-data section takes a few seconds after the
// copy: a table too big (with --jobs 1) to have its indexes built with its rows, with
// six of them, a foreign key to it from a second table, a partitioned table's index, a
// trigger, a policy, a comment, and a hypertable whose chunks build theirs early.
func postDataSource(t *testing.T, srv *testenv.Server) string {
	src := testenv.NewDB(t, srv, true)
	testenv.MustExec(t, srv, src,
		"CREATE TABLE big (id int PRIMARY KEY, a text, b int, c text)",
		"INSERT INTO big SELECT g, md5(g::text), g % 1000, md5((g * 7)::text) FROM generate_series(1, 400000) g",
		"CREATE INDEX big_a ON big (a)", "CREATE INDEX big_c ON big (c)", "CREATE INDEX big_ab ON big (a, b)",
		"CREATE INDEX big_cb ON big (c, b)", "CREATE INDEX big_md5 ON big (md5(a || c))", "CREATE INDEX big_b ON big (b, id)",
		"COMMENT ON INDEX big_md5 IS 'an expression index'",
		"CREATE TABLE refs (id int PRIMARY KEY, big_id int REFERENCES big (id), note text)",
		"INSERT INTO refs SELECT g, 1 + g * 3, 'n' FROM generate_series(1, 100000) g",
		"CREATE TABLE parts (k int, v int) PARTITION BY RANGE (k)",
		"CREATE TABLE parts_1 PARTITION OF parts FOR VALUES FROM (0) TO (1000)",
		"CREATE INDEX parts_v ON parts (v)",
		"INSERT INTO parts SELECT g, g FROM generate_series(0, 999) g",
		"CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN NEW.note := upper(NEW.note); RETURN NEW; END'",
		"CREATE TRIGGER refs_stamp BEFORE INSERT ON refs FOR EACH ROW EXECUTE FUNCTION stamp()",
		"ALTER TABLE refs ENABLE ROW LEVEL SECURITY", "CREATE POLICY refs_mine ON refs USING (id > 0)",
		"CREATE TABLE m (t timestamptz NOT NULL, id int REFERENCES big (id), v int)",
		"SELECT create_hypertable('m', 't', chunk_time_interval => interval '1 day')",
		"CREATE INDEX m_id ON m (id, t DESC)",
		"INSERT INTO m SELECT '2025-01-01'::timestamptz + g * interval '10 minutes', 1 + g, g FROM generate_series(1, 2000) g",
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
  FROM pg_constraint WHERE connamespace::regnamespace::text IN ('public', '_timescaledb_internal')
  UNION ALL
  SELECT 'trigger ' || pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal AND tgrelid::regclass::text IN ('refs', 'm')
  UNION ALL
  SELECT 'policy ' || tablename || ' ' || policyname || ' ' || qual FROM pg_policies
  UNION ALL
  SELECT 'rls ' || relname || ' ' || relrowsecurity FROM pg_class WHERE relname = 'refs'
) x`

// SIGKILL of tsmigrate while it restores the rest of post-data (indexes of a table too
// big to build them with its rows, foreign keys, ...) after some of it is on the
// target, then --resume: exit 0, only the missing entries restored (none twice: a
// second CREATE INDEX of the same name would fail the run), every index, constraint,
// trigger and policy of the source on the target, rows equal, verify identical. On the
// way, a resume that fails in post-data keeps the source frozen when asked to.
func TestStreamKillInPostDataThenResume(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src := postDataSource(t, srv)
	dst := testenv.NewDB(t, srv, false)
	unfreezeAtCleanup(t, srv, src)
	const bigIndexes = "SELECT count(*) FROM pg_index WHERE indrelid = (SELECT oid FROM pg_class WHERE relname = 'big' AND relnamespace = 'public'::regnamespace)"
	want := scalar[int](t, connect(t, srv.SuperURI(src)), bigIndexes)

	p := startTsmigrate(t, testenv.Binary(t), "migrate", "--yes", "--jobs", "1", "--freeze-grace", "1s", "--progress", "json", "--json",
		"--pg-bin", srv.ClientBin(), "--source", srv.URI(src), "--target", srv.URI(dst))
	deadline := time.Now().Add(90 * time.Second)
	for !p.saw("==> post-data") {
		if time.Now().After(deadline) {
			t.Fatalf("no post-data phase\n%s", strings.Join(p.lines, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	g := connect(t, srv.SuperURI(dst))
	for scalar[int](t, g, bigIndexes) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no index of big on the target\n%s", strings.Join(p.lines, "\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.cmd.Wait()
	for range 300 { // the killed run's pg_restore ends after the statement it runs
		if scalar[int](t, g, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'tsmigrate'", dst) == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	have := scalar[int](t, g, bigIndexes)
	t.Logf("killed with %d of big's %d indexes on the target", have, want)
	if have < 2 || have >= want {
		t.Fatalf("killed with %d of big's %d indexes on the target: not in the middle of post-data", have, want)
	}
	if steps := scalar[string](t, g, "SELECT string_agg(name, ',' ORDER BY name) FROM _tsmigrate.steps"); steps != "post-data-started,pre-data" {
		t.Fatalf("journal steps %q", steps)
	}
	if writable(t, srv, src) {
		t.Fatal("the source is writable after tsmigrate was killed")
	}

	// A resume that fails in post-data (a table in the way of a missing index) keeps
	// the source frozen with --keep-frozen-on-failure, and can be resumed again; it
	// restored the other missing entries meanwhile.
	missing := scalar[string](t, connect(t, srv.SuperURI(src)), "SELECT min(relname) FROM pg_class WHERE relkind = 'i' AND relname LIKE 'big%' AND NOT relname = ANY($1)",
		scalar[[]string](t, g, "SELECT coalesce(array_agg(relname::text), '{}') FROM pg_class WHERE relkind = 'i' AND relname LIKE 'big%'"))
	testenv.MustExec(t, srv, dst, "CREATE TABLE "+missing+" ()")
	code, out, errOut := runCLI(t, "migrate", "--resume", "--keep-frozen-on-failure", "--yes", "--jobs", "2", "--progress", "plain", "--json",
		"--pg-bin", srv.ClientBin(), "--source", srv.URI(src), "--target", srv.URI(dst))
	var failed migrate.Summary
	if err := json.Unmarshal([]byte(out), &failed); err != nil || code != 1 || !strings.Contains(failed.Error, `relation "`+missing+`" already exists`) ||
		!failed.SourceFrozen || len(failed.Resume) == 0 {
		t.Fatalf("resume with %s in the way: exit %d, %v\n%s\n%s", missing, code, err, out, errOut)
	}
	if writable(t, srv, src) {
		t.Fatal("--keep-frozen-on-failure: a resume that failed in post-data unfroze the source")
	}
	testenv.MustExec(t, srv, dst, "DROP TABLE "+missing)

	code, out, errOut = runCLI(t, "migrate", "--resume", "--yes", "--jobs", "2", "--progress", "plain", "--json",
		"--pg-bin", srv.ClientBin(), "--source", srv.URI(src), "--target", srv.URI(dst))
	if code != 0 {
		t.Fatalf("resume: exit %d\n%s\n%s", code, out, errOut)
	}
	var sum migrate.Summary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatal(err)
	}
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
	for _, q := range []string{sqlUserObjects, "SELECT count(*) || ' ' || sum(hashtext(a || c)) FROM big", "SELECT count(*) || ' ' || sum(big_id) FROM refs",
		"SELECT count(*)::text FROM m", "SELECT count(*)::text FROM timescaledb_information.chunks"} {
		if a, b := scalar[string](t, s, q), scalar[string](t, g, q); a != b {
			t.Errorf("%s\nsource:\n%s\ntarget:\n%s", q, a, b)
		}
	}
	if writable(t, srv, src) {
		t.Fatal("the source is writable after the resumed run")
	}
}
