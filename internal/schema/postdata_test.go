package schema

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/pgtools"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// dumpAndSplit dumps the schema of database src and splits its post-data section; it
// returns the dump file, a connection to src (closed at the test's end) and the plan.
func dumpAndSplit(t *testing.T, srv *testenv.Server, tools *pgtools.Tools, src string) (string, *pgx.Conn, *PostDataPlan) {
	t.Helper()
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "schema.dump")
	if _, err := DumpSchema(ctx, tools, cfg(t, "source", srv.URI(src)), file, nil); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, srv.SuperURI(src))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	post, err := SplitPostData(ctx, tools, conn, file)
	if err != nil {
		t.Fatal(err)
	}
	return file, conn, post
}

// Each table's own indexes and constraints come out as SQL to run with its rows; the
// section's restore then builds everything else and nothing twice, and the target
// ends with the source's indexes and constraints.
func TestSplitPostDataThenRestoreRest(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	ctx := context.Background()
	tools := &pgtools.Tools{Dir: srv.ClientBin()}
	src := testenv.NewDB(t, srv, true)
	testenv.MustExec(t, srv, src,
		`CREATE TABLE devices (id int PRIMARY KEY, name text UNIQUE, "Mixed Case" int)`,
		`CREATE INDEX devices_mixed ON devices (("Mixed Case" + 1)) WITH (fillfactor = 70)`,
		`ALTER TABLE devices CLUSTER ON devices_mixed`,
		`ALTER INDEX devices_mixed ALTER COLUMN 1 SET STATISTICS 500`,
		`ALTER TABLE devices ADD CONSTRAINT positive CHECK (id > 0) NOT VALID`,
		`CREATE TABLE readings (t timestamptz NOT NULL, dev int NOT NULL REFERENCES devices (id), v float8)`,
		`SELECT create_hypertable('readings', 't', chunk_time_interval => interval '1 day')`,
		`CREATE INDEX readings_dev ON readings (dev, t DESC)`,
		`INSERT INTO devices SELECT g, 'd' || g, g FROM generate_series(1, 20) g`,
		`INSERT INTO readings SELECT '2025-01-01'::timestamptz + g * interval '1 hour', 1 + g % 20, g FROM generate_series(1, 100) g`,
		`CREATE TABLE parts (k int, v int) PARTITION BY RANGE (k)`,
		`CREATE TABLE parts_1 PARTITION OF parts FOR VALUES FROM (0) TO (100)`,
		`CREATE INDEX parts_v ON parts (v)`)
	file, conn, post := dumpAndSplit(t, srv, tools, src)
	if post.Fallback != "" {
		t.Fatalf("fell back: %s", post.Fallback)
	}
	dev := post.SQL(TableName{"public", "devices"})
	for _, want := range []string{"devices_pkey", "devices_name_key", "devices_mixed", "CLUSTER ON devices_mixed", "SET STATISTICS 500", "SET LOCAL search_path = ''"} {
		if !strings.Contains(dev, want) {
			t.Errorf("devices' SQL lacks %q:\n%s", want, dev)
		}
	}
	var chunk TableName
	if err := conn.QueryRow(ctx, `SELECT chunk_schema, chunk_name FROM timescaledb_information.chunks ORDER BY 2 LIMIT 1`).Scan(&chunk.Schema, &chunk.Name); err != nil {
		t.Fatal(err)
	}
	if c := post.SQL(chunk); !strings.Contains(c, "readings_dev") || !strings.Contains(c, "_t_idx") {
		t.Errorf("chunk %s's SQL lacks its two indexes:\n%s", chunk.Name, c)
	}
	// Foreign keys and partitioned tables' indexes stay for the section's restore.
	for _, tn := range []TableName{{"public", "readings"}, {"public", "parts"}, {"public", "devices"}} {
		if s := post.SQL(tn); strings.Contains(s, "FOREIGN KEY") || strings.Contains(s, "CHECK") {
			t.Errorf("%s's early SQL holds a foreign key or a check constraint:\n%s", tn.Name, s)
		}
	}
	if strings.Contains(post.SQL(TableName{"public", "parts"}), "parts_v") {
		t.Error("a partitioned table's index is in its early SQL")
	}

	// Restore: pre-data, each table's early SQL in a transaction, then the rest.
	dst := testenv.NewDB(t, srv, true)
	target := cfg(t, "target", srv.URI(dst))
	tc, err := target.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close(ctx)
	if err := PreRestore(ctx, tc.Conn); err != nil {
		t.Fatal(err)
	}
	if _, err := RestoreSection(ctx, tools, target, file, PreData, 1, nil, nil); err != nil {
		t.Fatal(err)
	}
	tc.Close(ctx)
	tc, err = target.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	built := map[TableName]bool{}
	for _, tn := range []TableName{{"public", "devices"}, chunk} {
		if err := pgx.BeginFunc(ctx, tc.Conn, func(tx pgx.Tx) error { _, err := tx.Exec(ctx, post.SQL(tn)); return err }); err != nil {
			t.Fatalf("early SQL of %s: %v", tn.Name, err)
		}
		built[tn] = true
	}
	if _, err := post.RestoreRest(ctx, tools, target, 2, func(tn TableName) bool { return built[tn] }, nil, nil); err != nil {
		t.Fatalf("restore the rest of post-data: %v", err)
	}
	const defs = `
SELECT string_agg(d, E'\n' ORDER BY d) FROM (
  SELECT pg_get_indexdef(indexrelid) || coalesce(' ' || array_to_string(ic.reloptions, ','), '') || CASE WHEN indisclustered THEN ' clustered' ELSE '' END AS d
  FROM pg_index JOIN pg_class ic ON ic.oid = indexrelid JOIN pg_namespace n ON n.oid = ic.relnamespace
  WHERE n.nspname IN ('public', '_timescaledb_internal')
  UNION ALL
  SELECT conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid) || CASE WHEN convalidated THEN '' ELSE ' not valid' END
  FROM pg_constraint WHERE connamespace IN ('public'::regnamespace, '_timescaledb_internal'::regnamespace)
  UNION ALL
  SELECT attrelid::regclass || ' stats ' || attstattarget FROM pg_attribute WHERE attrelid = 'public.devices_mixed'::regclass
) x`
	var want, got string
	if err := conn.QueryRow(ctx, defs).Scan(&want); err != nil {
		t.Fatal(err)
	}
	if err := tc.QueryRow(ctx, defs).Scan(&got); err != nil {
		t.Fatal(err)
	}
	tc.Close(ctx)
	if got != want {
		t.Errorf("indexes and constraints differ\nsource:\n%s\ntarget:\n%s", want, got)
	}
}
