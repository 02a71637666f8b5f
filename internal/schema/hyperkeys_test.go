package schema

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/pgtools"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// A foreign key to a hypertable is left out of the restore in restoring mode, and
// added afterwards with a copy on every chunk; run again (a resumed migration), the
// restore of the keys finds them there and changes nothing.
func TestHypertableKeysRestoredAfterRestoringModeOnce(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	ctx := context.Background()
	tools := &pgtools.Tools{Dir: srv.ClientBin()}
	src, dst := testenv.NewDB(t, srv, true), testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, src,
		"CREATE TABLE m (time timestamptz NOT NULL, id int, PRIMARY KEY (time, id))",
		"SELECT create_hypertable('m', by_range('time', interval '1 day'))",
		"INSERT INTO m SELECT '2025-01-01'::timestamptz + g * interval '6 hours', g FROM generate_series(1, 20) g",
		"CREATE TABLE refs (t timestamptz, id int, FOREIGN KEY (t, id) REFERENCES m (time, id))",
		"INSERT INTO refs SELECT '2025-01-01'::timestamptz + g * interval '6 hours', g FROM generate_series(1, 13, 4) g")
	const keys = `SELECT count(*) FROM pg_constraint WHERE conrelid = 'refs'::regclass AND contype = 'f'`
	want := count(t, srv, src, keys)
	if want != 7 { // the key and a copy on each of 6 chunks
		t.Fatalf("the source has %d keys on refs", want)
	}
	dir := filepath.Join(t.TempDir(), "dump")
	if _, err := Dump(ctx, DumpOptions{Tools: tools, Source: cfg(t, "source", srv.URI(src)), Dir: dir, Jobs: 1}); err != nil {
		t.Fatalf("dump: %v", err)
	}
	s, err := pgx.Connect(ctx, srv.SuperURI(src))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	toc, err := ReadTOC(ctx, tools, dir)
	if err != nil {
		t.Fatal(err)
	}
	hk, err := FindHypertableKeys(ctx, s, toc, dir)
	if err != nil || !hk.Any() {
		t.Fatalf("keys found: %v, %v", hk.Any(), err)
	}
	var version string
	if err := s.QueryRow(ctx, "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").Scan(&version); err != nil {
		t.Fatal(err)
	}
	target := cfg(t, "target", srv.URI(dst))
	if _, err := Restore(ctx, RestoreOptions{Tools: tools, Target: target, Archive: dir, Jobs: 2,
		TimescaleDB: version, TimescaleDBSchema: "public", HypertableKeys: hk}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if n := count(t, srv, dst, keys); n != 0 {
		t.Fatalf("the restore in restoring mode made %d keys on refs", n)
	}
	for run := 1; run <= 2; run++ {
		msgs, err := hk.Restore(ctx, tools, target, s, 2, nil)
		if err != nil {
			t.Fatalf("restore the keys, run %d: %v (%v)", run, err, msgs)
		}
		if n := count(t, srv, dst, keys); n != want {
			t.Fatalf("after run %d the target has %d keys on refs, the source %d", run, n, want)
		}
	}
}
