package schema

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/pgtools"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// everyPostDataKind makes an object of each kind pg_dump 15 and 17 put in the
// post-data section, a comment on several, and a partitioned table whose owner's name
// holds a space (INDEX ATTACH entries are found by their listed names).
var everyPostDataKind = []string{
	`DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'resume reader') THEN CREATE ROLE "resume reader"; END IF; END$$`,
	`CREATE SCHEMA s`,
	`CREATE TABLE devices (id int PRIMARY KEY, name text UNIQUE, v int)`,
	`COMMENT ON INDEX devices_name_key IS 'names'`,
	`CREATE INDEX devices_v ON devices ((v + 1)) WITH (fillfactor = 70)`,
	`ALTER TABLE devices CLUSTER ON devices_v`,
	`COMMENT ON INDEX devices_v IS 'v index'`,
	`ALTER TABLE devices ADD CONSTRAINT positive CHECK (id > 0) NOT VALID`,
	`COMMENT ON CONSTRAINT positive ON devices IS 'pos'`,
	`CREATE DOMAIN small AS int`,
	`ALTER DOMAIN small ADD CONSTRAINT small_lt CHECK (VALUE < 100) NOT VALID`,
	`CREATE TABLE s.readings (id int, dev int REFERENCES devices (id), v small)`,
	`CREATE TABLE parts (k int, v int, PRIMARY KEY (k)) PARTITION BY RANGE (k)`,
	`CREATE TABLE parts_1 PARTITION OF parts FOR VALUES FROM (0) TO (100)`,
	`CREATE TABLE parts_2 PARTITION OF parts FOR VALUES FROM (100) TO (200)`,
	`CREATE INDEX parts_v ON parts (v)`,
	`ALTER TABLE parts OWNER TO "resume reader"`,
	`ALTER TABLE parts_1 OWNER TO "resume reader"`,
	`ALTER TABLE parts_2 OWNER TO "resume reader"`,
	`CREATE FUNCTION trg() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'`,
	`CREATE TRIGGER t1 BEFORE INSERT ON devices FOR EACH ROW EXECUTE FUNCTION trg()`,
	`CREATE TRIGGER t2 BEFORE UPDATE ON devices FOR EACH ROW EXECUTE FUNCTION trg()`,
	`ALTER TABLE devices DISABLE TRIGGER t2`,
	`COMMENT ON TRIGGER t1 ON devices IS 'trig'`,
	`CREATE RULE r1 AS ON DELETE TO s.readings DO ALSO NOTIFY readings`,
	`ALTER TABLE devices ENABLE ROW LEVEL SECURITY`,
	`CREATE POLICY p1 ON devices USING (id > 0)`,
	`CREATE STATISTICS st1 ON id, v FROM devices`,
	`INSERT INTO devices SELECT g, 'd' || g, g FROM generate_series(1, 50) g`,
	`CREATE MATERIALIZED VIEW mv AS SELECT count(*) AS n FROM devices`,
	`CREATE PUBLICATION pub1 FOR TABLE devices`,
	`CREATE PUBLICATION pub2 FOR TABLES IN SCHEMA s`,
	`ALTER DEFAULT PRIVILEGES IN SCHEMA s GRANT SELECT ON TABLES TO "resume reader"`,
	`ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC`,
	// A view in a dependency loop: pg_dump makes a placeholder view and a RULE entry
	// "_RETURN" that replaces it (CREATE OR REPLACE VIEW) in post-data.
	`CREATE VIEW cv AS SELECT 1 AS x`,
	`CREATE FUNCTION cvf() RETURNS SETOF cv LANGUAGE sql BEGIN ATOMIC SELECT * FROM cv; END`,
	`CREATE OR REPLACE VIEW cv AS SELECT x FROM cvf()`,
	`CREATE FUNCTION evt() RETURNS event_trigger LANGUAGE plpgsql AS 'BEGIN END'`,
	`CREATE EVENT TRIGGER ev1 ON ddl_command_end EXECUTE FUNCTION evt()`,
}

// hypertableKinds adds a hypertable with an index and a foreign key (each chunk's own
// index and constraint entries) where TimescaleDB is installed.
var hypertableKinds = []string{
	`CREATE TABLE m (t timestamptz NOT NULL, dev int REFERENCES devices (id), v int)`,
	`SELECT create_hypertable('m', 't', chunk_time_interval => interval '1 day')`,
	`CREATE INDEX m_dev ON m (dev, t DESC)`,
	`INSERT INTO m SELECT '2025-01-01'::timestamptz + g * interval '1 hour', 1 + g % 50, g FROM generate_series(1, 72) g`,
}

// sqlPostDataObjects describes what the post-data section makes in schemas public, s
// and _timescaledb_internal, one line per object (twice if made twice).
const sqlPostDataObjects = `
SELECT string_agg(d, E'\n' ORDER BY d) FROM (
  SELECT 'index ' || pg_get_indexdef(x.indexrelid) || ' valid=' || x.indisvalid || ' clustered=' || x.indisclustered
    || coalesce(' options=' || array_to_string(ic.reloptions, ','), '')
    || coalesce(' attached to ' || (SELECT i.inhparent::regclass::text FROM pg_inherits i WHERE i.inhrelid = x.indexrelid), '')
    || coalesce(' comment=' || obj_description(x.indexrelid, 'pg_class'), '') AS d
  FROM pg_index x JOIN pg_class ic ON ic.oid = x.indexrelid
  WHERE ic.relnamespace::regnamespace::text IN ('public', 's', '_timescaledb_internal')
  UNION ALL
  SELECT 'constraint ' || coalesce(conrelid::regclass::text, contypid::regtype::text) || ' ' || conname || ' ' || pg_get_constraintdef(oid)
    || ' validated=' || convalidated || coalesce(' comment=' || obj_description(oid, 'pg_constraint'), '')
  FROM pg_constraint WHERE connamespace::regnamespace::text IN ('public', 's', '_timescaledb_internal')
  UNION ALL
  SELECT 'trigger ' || pg_get_triggerdef(oid) || ' enabled=' || tgenabled::text || coalesce(' comment=' || obj_description(oid, 'pg_trigger'), '')
  FROM pg_trigger WHERE NOT tgisinternal AND tgrelid::regclass::text NOT LIKE '_timescaledb_catalog.%' AND tgrelid::regclass::text NOT LIKE '_timescaledb_config.%'
  UNION ALL
  SELECT 'rule ' || schemaname || '.' || tablename || ' ' || definition FROM pg_rules WHERE schemaname IN ('public', 's')
  UNION ALL
  SELECT 'view ' || viewname || ' ' || definition FROM pg_views WHERE schemaname = 'public'
  UNION ALL
  SELECT 'policy ' || tablename || ' ' || policyname || ' ' || qual FROM pg_policies
  UNION ALL
  SELECT 'rls ' || relname || ' ' || relrowsecurity FROM pg_class WHERE relname = 'devices'
  UNION ALL
  SELECT 'statistics ' || pg_get_statisticsobjdef(oid) FROM pg_statistic_ext
  UNION ALL
  SELECT 'matview ' || relname || ' populated=' || relispopulated FROM pg_class WHERE relkind = 'm'
  UNION ALL
  SELECT 'event trigger ' || evtname || ' ' || evtevent || ' ' || evtenabled::text FROM pg_event_trigger WHERE evtname = 'ev1'
  UNION ALL
  SELECT 'publication ' || pubname || ' ' || puballtables FROM pg_publication
  UNION ALL
  SELECT 'publication table ' || pubname || ' ' || schemaname || '.' || tablename FROM pg_publication_tables
  UNION ALL
  SELECT 'publication schema ' || p.pubname || ' ' || pn.pnnspid::regnamespace FROM pg_publication_namespace pn JOIN pg_publication p ON p.oid = pn.pnpubid
  UNION ALL
  SELECT 'default acl ' || defaclobjtype::text || ' ' || coalesce(defaclnamespace::regnamespace::text, '-') || ' ' || defaclacl::text FROM pg_default_acl
) x`

// A post-data phase that stopped half-way: FindOnTarget finds exactly the entries
// restored, RestoreRest then restores the others and runs again only the kinds that
// may run again, without a message; the target ends with the source's objects, none
// twice. Run again once all is restored, it finds every object and the restore runs
// only those kinds, again without a message. Against PostgreSQL 15 and 17 (with
// TimescaleDB, in restoring mode, as the stream engine restores).
func TestFindOnTargetThenRestoreRest(t *testing.T) {
	for _, kind := range []testenv.Kind{testenv.PG15, testenv.PG17TS} {
		t.Run(string(kind), func(t *testing.T) { findOnTargetThenRestoreRest(t, kind) })
	}
}

func findOnTargetThenRestoreRest(t *testing.T, kind testenv.Kind) {
	srv := testenv.Shared(t, kind)
	ctx := context.Background()
	tools := &pgtools.Tools{Dir: srv.ClientBin()}
	ts := kind.TimescaleDB()
	src := testenv.NewDB(t, srv, ts)
	testenv.MustExec(t, srv, src, everyPostDataKind...)
	if ts {
		testenv.MustExec(t, srv, src, hypertableKinds...)
	}
	file, sc, post := dumpAndSplit(t, srv, tools, src)
	dst := testenv.NewDB(t, srv, ts)
	target := cfg(t, "target", srv.URI(dst))
	dc, err := pgx.Connect(ctx, srv.SuperURI(dst))
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close(ctx)
	if ts {
		if err := PreRestore(ctx, dc); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := RestoreSection(ctx, tools, target, file, PreData, 1, nil, nil); err != nil {
		t.Fatal(err)
	}

	// The first run: the first half of the section, in its order (which follows the
	// dependencies), as a pg_restore that was killed there leaves it.
	section, err := listTOC(ctx, tools, "--section="+PostData, file)
	if err != nil {
		t.Fatal(err)
	}
	none := func(TableName) bool { return false }
	half := len(section.Entries) / 2
	first := map[int]bool{}
	kinds := map[string]bool{}
	for i, e := range section.Entries {
		first[e.ID] = i < half
		kinds[e.Desc] = true
	}
	for _, want := range []string{"INDEX", "INDEX ATTACH", "CONSTRAINT", "FK CONSTRAINT", "CHECK CONSTRAINT", "TRIGGER", "RULE",
		"POLICY", "ROW SECURITY", "STATISTICS", "MATERIALIZED VIEW DATA", "EVENT TRIGGER", "PUBLICATION", "PUBLICATION TABLE",
		"PUBLICATION TABLES IN SCHEMA", "DEFAULT ACL", "COMMENT"} {
		if !kinds[want] {
			t.Errorf("the fixture's post-data section holds no %s entry", want)
		}
	}
	list := filepath.Join(t.TempDir(), "first.list")
	if _, err := section.WriteList(list, func(e TOCEntry) bool { return first[e.ID] }); err != nil {
		t.Fatal(err)
	}
	opt := RestoreOptions{Tools: tools, Target: target, Archive: file}
	if _, err := restoreList(ctx, opt, section, list, 1, "--section="+PostData); err != nil {
		t.Fatalf("restore the first half: %v", err)
	}

	on, err := post.FindOnTarget(ctx, sc, dc, none)
	if err != nil {
		t.Fatal(err)
	}
	again := 0
	for _, e := range section.Entries {
		k, err := restKind(e)
		if err != nil {
			t.Fatal(err)
		}
		rerun := k == "" || e.Desc == "RULE" && strings.HasSuffix(e.Name, " _RETURN")
		if rerun {
			again++
		}
		if want := first[e.ID] && !rerun; on.Present[e.ID] != want {
			t.Errorf("%s (first half: %v): found on the target %v, want %v", e.Line, first[e.ID], on.Present[e.ID], want)
		}
	}
	if on.Entries != len(section.Entries) || on.Again != again {
		t.Errorf("found %d entries, %d to run again; want %d and %d", on.Entries, on.Again, len(section.Entries), again)
	}
	t.Logf("%d entries, %d restored by the first half, %d run again", on.Entries, len(on.Present), on.Again)

	restoreRest := func(on *RestOnTarget) {
		t.Helper()
		msgs, err := post.RestoreRest(ctx, tools, target, 2, none, on, nil)
		if err != nil {
			t.Fatalf("restore the rest: %v", err)
		}
		for _, m := range msgs {
			t.Errorf("pg_restore said: %s", m.Summary())
		}
		var want, got string
		if err := sc.QueryRow(ctx, sqlPostDataObjects).Scan(&want); err != nil {
			t.Fatal(err)
		}
		if err := dc.QueryRow(ctx, sqlPostDataObjects).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("post-data objects differ\nsource:\n%s\ntarget:\n%s", want, got)
		}
	}
	restoreRest(on)

	// All there: every object is found, only the kinds that may run again run.
	all, err := post.FindOnTarget(ctx, sc, dc, none)
	if err != nil {
		t.Fatal(err)
	}
	if all.Entries != len(section.Entries) || len(all.Present)+all.Again != all.Entries || all.Again != again {
		t.Fatalf("after the whole restore: %d entries, %d found, %d run again (want %d)", all.Entries, len(all.Present), all.Again, again)
	}
	restoreRest(all)

	// An object the source lost since the dump cannot be told about.
	testenv.MustExec(t, srv, src, "DROP TRIGGER t1 ON devices")
	var nr *NotResumableError
	if _, err := post.FindOnTarget(ctx, sc, dc, none); !errors.As(err, &nr) || nr.Entry.Desc != "TRIGGER" ||
		!strings.Contains(err.Error(), "not on the source") {
		t.Fatalf("FindOnTarget with a trigger gone from the source: %v", err)
	}
}

// Entry kinds a resume does not know stop it; those whose statements may run again
// run again; the others are looked up.
func TestRestKind(t *testing.T) {
	for line, want := range map[string]string{
		"3484; 0 0 ACL public TABLE devices postgres":                  "!",
		"3500; 0 0 SUBSCRIPTION TABLE public sub1 devices postgres":    "!",
		"3474; 6100 16445 SUBSCRIPTION - sub1 postgres":                "SUBSCRIPTION",
		"3501; 0 0 STATISTICS DATA public devices_pkey postgres":       "!",
		"3485; 0 0 COMMENT public INDEX devices_v postgres":            "",
		"2071; 826 1 DEFAULT ACL s DEFAULT PRIVILEGES FOR TABLES pg":   "",
		"3317; 2606 16404 FK CONSTRAINT s readings readings_fkey pg":   "CONSTRAINT",
		"3302; 2606 16397 CHECK CONSTRAINT public devices positive pg": "CONSTRAINT",
		"3315; 0 0 INDEX ATTACH public parts_1_v_idx odd owner":        "INDEX ATTACH",
	} {
		e, ok := ParseTOCLine(line)
		if !ok {
			t.Fatalf("unparsable %q", line)
		}
		got, err := restKind(e)
		var nr *NotResumableError
		switch {
		case want == "!" && (!errors.As(err, &nr) || !strings.Contains(err.Error(), e.Object()) || !strings.Contains(err.Error(), "not known")):
			t.Errorf("%s: %q, %v; want a NotResumableError naming it", line, got, err)
		case want != "!" && (err != nil || got != want):
			t.Errorf("%s: %q, %v; want %q", line, got, err, want)
		}
	}
	e, _ := ParseTOCLine("3315; 0 0 INDEX ATTACH public parts_1_v_idx odd owner")
	if l := e.listed(); l != "public parts_1_v_idx odd owner" {
		t.Errorf("listed %q", l)
	}
}

// A subscription entry is found on the target by its name, in the target's database
// only. (Not in everyPostDataKind: a database with a subscription cannot be dropped
// before the subscription is, and its restore warns, as it should.)
func TestLookUpSubscription(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	ctx := context.Background()
	src, with, without := testenv.NewDB(t, srv, false), testenv.NewDB(t, srv, false), testenv.NewDB(t, srv, false)
	create := `CREATE SUBSCRIPTION sub_l CONNECTION 'host=127.0.0.1 port=1 dbname=x' PUBLICATION p WITH (connect = false)`
	drop := []string{`ALTER SUBSCRIPTION sub_l SET (slot_name = NONE)`, `DROP SUBSCRIPTION sub_l`}
	for _, db := range []string{src, with} {
		testenv.MustExec(t, srv, db, create)
		t.Cleanup(func() { srv.Exec(ctx, db, drop...) })
	}
	conn := func(db string) *pgx.Conn {
		c, err := pgx.Connect(ctx, srv.SuperURI(db))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(ctx) })
		return c
	}
	sc := conn(src)
	var oid uint32
	if err := sc.QueryRow(ctx, `SELECT oid FROM pg_subscription WHERE subname = 'sub_l' AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&oid); err != nil {
		t.Fatal(err)
	}
	e, ok := ParseTOCLine(fmt.Sprintf("3474; 6100 %d SUBSCRIPTION - sub_l postgres", oid))
	if !ok {
		t.Fatal("unparsable TOC line")
	}
	kind, err := restKind(e)
	if err != nil {
		t.Fatal(err)
	}
	for db, want := range map[string]bool{with: true, without: false} {
		present := map[int]bool{}
		if _, err := lookUp(ctx, sc, conn(db), sqlLookups[kind], []TOCEntry{e}, present); err != nil {
			t.Fatal(err)
		}
		if present[e.ID] != want {
			t.Errorf("subscription on target %s: found %v, want %v", db, present[e.ID], want)
		}
	}
}
