package copy

import (
	"context"
	"strings"
	"testing"

	"github.com/tsmigrate/tsmigrate/internal/testenv"
	"github.com/tsmigrate/tsmigrate/internal/verify"
)

// compressedFixture, on TimescaleDB's full build (testenv.PG17TSL; the Apache build
// cannot compress, and the test skips, saying so, without TSMIGRATE_PG17_TSL_ROOT):
// the fixture's metrics compressed by device with 20 of its 30 chunks compressed, one
// of them partially (rows inserted after compression), and the integer-time counters
// with all its chunks compressed.
var compressedFixture = []string{
	`ALTER TABLE metrics SET (timescaledb.compress, timescaledb.compress_segmentby = 'device', timescaledb.compress_orderby = 'ts DESC')`,
	`SELECT compress_chunk(c) FROM show_chunks('metrics', older_than => '2024-01-21'::timestamptz) c`,
	`INSERT INTO metrics VALUES ('2024-01-02 00:00:30', 1, -1, '{"late": true}')`,
	`ALTER TABLE counters SET (timescaledb.compress)`,
	`SELECT compress_chunk(c) FROM show_chunks('counters') c`,
}

// The copy moves compressed chunks as they are: the compress_hyper tables' rows (never
// decompressed) and the chunks' own rows, so the target keeps the same chunks
// compressed, reads the same rows through the hypertables, decompresses them, and
// verify finds the two sides identical.
func TestCopyCompressedChunks(t *testing.T) {
	ctx := context.Background()
	p := newPairOn(t, testenv.Shared(t, testenv.PG17TSL), compressedFixture...)
	if _, err := Run(ctx, Options{Source: p.source(t), Target: p.target(t), Jobs: 2, FreezeID: "f1", RangeBytes: testRange}); err != nil {
		t.Fatal(err)
	}
	p.finish(t)
	p.assertEqual(t)

	s, g := dbConn(t, p.srv, p.src), dbConn(t, p.srv, p.dst)
	for _, q := range []string{
		`SELECT count(*) FROM timescaledb_information.chunks WHERE is_compressed`,
		`SELECT count(*) FROM timescaledb_information.chunks WHERE NOT is_compressed`,
		`SELECT count(*) FROM metrics`,
		`SELECT sum(v)::bigint FROM metrics WHERE ts < '2024-01-21'`,
		`SELECT count(*) FROM metrics WHERE tags ? 'late'`,
		`SELECT sum(n) FROM counters WHERE dev = 3`,
	} {
		var a, b int64
		if err := s.QueryRow(ctx, q).Scan(&a); err != nil {
			t.Fatalf("source: %s: %v", q, err)
		}
		if err := g.QueryRow(ctx, q).Scan(&b); err != nil {
			t.Fatalf("target: %s: %v", q, err)
		}
		if a != b || a == 0 {
			t.Errorf("%s: source %d, target %d", q, a, b)
		}
	}
	rep, err := verify.Run(ctx, verify.Options{Source: p.source(t), Target: p.target(t), Jobs: 2})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Identical {
		t.Fatalf("verify: %d units differ, schema differences %+v", rep.UnitsDiffering, rep.Schema)
	}
	// The target's compressed chunks are real: decompressing gives the rows back.
	var before, after int64
	g.QueryRow(ctx, `SELECT sum(v)::bigint FROM metrics`).Scan(&before)
	testenv.MustExec(t, p.srv, p.dst, `SELECT decompress_chunk(c) FROM show_chunks('metrics', older_than => '2024-01-21'::timestamptz) c`)
	if err := g.QueryRow(ctx, `SELECT sum(v)::bigint FROM metrics`).Scan(&after); err != nil || after != before {
		t.Errorf("after decompressing on the target: sum %d, before %d (%v)", after, before, err)
	}
}

// A compressed hypertable with an xml column: its chunks are read through a SELECT (xml
// through its text, which keeps a document's XML declaration), FROM ONLY the chunk, so
// that a compressed chunk gives its own rows alone, as COPY does, not its compressed
// ones too: no row twice, and the declaration of the row a partially compressed chunk
// holds as a row of its own is kept. (Those of its compressed rows are not: TimescaleDB's
// compressed form, in text or binary, holds xml's output; pre-flight names them.)
func TestCopyXMLInCompressedChunks(t *testing.T) {
	ctx := context.Background()
	p := newPairOn(t, testenv.Shared(t, testenv.PG17TSL),
		`CREATE TABLE docs (t timestamptz NOT NULL, dev int, x xml)`,
		`SELECT create_hypertable('docs', 't', chunk_time_interval => interval '1 day')`,
		`INSERT INTO docs SELECT '2024-01-01'::timestamptz + g * interval '3 hours', g % 3, ('<d>' || g || '</d>')::xml FROM generate_series(1, 40) g`,
		`ALTER TABLE docs SET (timescaledb.compress, timescaledb.compress_segmentby = 'dev')`,
		`SELECT compress_chunk(c) FROM show_chunks('docs') c`,
		`INSERT INTO docs VALUES ('2024-01-01 00:30', 1, '<?xml version="1.0"?><late/>')`)
	if _, err := Run(ctx, Options{Source: p.source(t), Target: p.target(t), Jobs: 2, FreezeID: "f1", RangeBytes: testRange}); err != nil {
		t.Fatal(err)
	}
	p.finish(t)
	s, g := dbConn(t, p.srv, p.src), dbConn(t, p.srv, p.dst)
	const read = `SELECT count(*) || ' ' || count(*) FILTER (WHERE x::text LIKE '<?xml%') || ' ' || md5(string_agg(x::text, ',' ORDER BY t)) FROM docs`
	var a, b string
	if err := s.QueryRow(ctx, read).Scan(&a); err != nil {
		t.Fatal(err)
	}
	if err := g.QueryRow(ctx, read).Scan(&b); err != nil {
		t.Fatal(err)
	}
	if a != b || !strings.HasPrefix(a, "41 1 ") {
		t.Errorf("docs: source %s, target %s (rows, declarations, digest)", a, b)
	}
}
