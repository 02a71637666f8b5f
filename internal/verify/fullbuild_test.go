package verify

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// Needs TimescaleDB's full build (testenv.PG17TSL: the Apache build cannot compress);
// it skips, saying so, without TSMIGRATE_PG17_TSL_ROOT.
//
// Equal data is identical whether a chunk is compressed on one side, both or neither:
// compressed rows are read through the hypertable over the chunk's slices. A row that
// differs in a chunk compressed on the source only is found, in that chunk, down to the
// row; so is a row missing from a chunk compressed on both sides.
func TestCompressedAgainstUncompressedChunks(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TSL)
	src := testenv.NewDB(t, srv, true)
	dst := testenv.NewDB(t, srv, true)
	for db, compress := range map[string]int{src: 3, dst: 1} {
		testenv.MustExec(t, srv, db,
			`CREATE TABLE m (ts timestamptz NOT NULL, dev int NOT NULL, v double precision, note text)`,
			`SELECT create_hypertable('m', 'ts', chunk_time_interval => interval '1 day')`,
			`INSERT INTO m SELECT '2024-01-01 00:00:00+00'::timestamptz + i * interval '1 minute', i % 4, i / 3.0, 'n' || i
			 FROM generate_series(0, 5 * 1440 - 1) i`,
			`ALTER TABLE m SET (timescaledb.compress, timescaledb.compress_segmentby = 'dev')`,
			fmt.Sprintf(`SELECT compress_chunk(c) FROM show_chunks('m') c ORDER BY c LIMIT %d`, compress))
	}
	rep := run(t, srv, src, srv, dst, 0)
	if !rep.Identical() || rep.SourceRows != 5*1440 || rep.TargetRows != 5*1440 {
		t.Fatalf("identical %v, rows %d/%d, schema %v", rep.Identical(), rep.SourceRows, rep.TargetRows, rep.Schema)
	}
	chunks := 0
	for _, u := range rep.Units {
		if u.Kind == "chunk" {
			chunks++
		}
	}
	if chunks != 5 {
		t.Fatalf("%d chunk units, want 5", chunks)
	}

	// Day 2 is compressed on the source only, day 1 on both sides.
	testenv.MustExec(t, srv, dst, `UPDATE m SET note = 'changed' WHERE ts = '2024-01-02 12:00:00+00'`,
		`DELETE FROM m WHERE ts = '2024-01-01 06:00:00+00'`)
	rep = run(t, srv, src, srv, dst, 5)
	var diff []string
	for _, u := range rep.Units {
		if u.Identical {
			continue
		}
		var rows []string
		for _, r := range u.Rows {
			rows = append(rows, fmt.Sprintf("%v/%v", r.Source != nil, r.Target != nil))
		}
		diff = append(diff, fmt.Sprintf("%s %s rows %s", u.Kind, u.Range, strings.Join(rows, ",")))
	}
	want := []string{
		"chunk [2024-01-01 00:00:00+00, 2024-01-02 00:00:00+00) rows true/false",
		"chunk [2024-01-02 00:00:00+00, 2024-01-03 00:00:00+00) rows true/true",
	}
	if strings.Join(diff, "\n") != strings.Join(want, "\n") {
		t.Fatalf("differing units:\n%s\nwant:\n%s", strings.Join(diff, "\n"), strings.Join(want, "\n"))
	}
}
