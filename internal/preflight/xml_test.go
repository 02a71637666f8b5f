package preflight_test

import (
	"context"
	"strings"
	"testing"

	"github.com/tsmigrate/tsmigrate/internal/preflight"
	"github.com/tsmigrate/tsmigrate/internal/schema"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// XML documents with a declaration: named as a failure for the dump engine, nothing
// read for the stream engine (the default).
func TestXMLDeclarationsCheck(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG15)
	src, tgt := testenv.NewDB(t, srv, false), testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, src, `CREATE TABLE "My Docs" (x xml, y xml[], z xml)`,
		`INSERT INTO "My Docs" VALUES ('<?xml version="1.0"?><a/>', NULL, '<b/>'), (NULL, ARRAY['<?xml version="1.0"?><c/>'::xml], NULL)`)
	for _, c := range []struct {
		engine string
		want   preflight.Status
	}{{preflight.EngineDump, preflight.Fail}, {"", ""}, {preflight.EngineStream, ""}} {
		r, err := preflight.Run(context.Background(), preflight.Options{Source: config(t, "source", srv.URI(src)),
			Target: config(t, "target", srv.URI(tgt)), Engine: c.engine})
		if err != nil {
			t.Fatal(err)
		}
		var got []preflight.Finding
		for _, f := range r.Findings {
			if f.Check == "xml-declarations" {
				got = append(got, f)
			}
		}
		switch {
		case c.want == "" && len(got) != 0:
			t.Errorf("engine %q: %+v, want no finding", c.engine, got)
		case c.want != "" && (len(got) != 1 || got[0].Status != c.want || !strings.Contains(got[0].Saw, `public."My Docs".x, public."My Docs".y`) ||
			strings.Contains(got[0].Saw, ".z") || !strings.Contains(got[0].Do, "--engine stream")):
			t.Errorf("engine %q: %+v, want %s naming x and y", c.engine, got, c.want)
		}
	}
}

// On TimescaleDB's full build: compressed chunks travel in TimescaleDB's compressed
// form, which loses XML declarations, so the stream engine fails the check for a
// hypertable whose compressed chunks hold some, and only for that one.
func TestXMLDeclarationsInCompressedChunksFullBuild(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TSL)
	src, tgt := testenv.NewDB(t, srv, true), testenv.NewDB(t, srv, true)
	for _, h := range []string{"lossy", "kept"} {
		testenv.MustExec(t, srv, src, "CREATE TABLE "+h+" (t timestamptz NOT NULL, x xml)",
			"SELECT create_hypertable('"+h+"', 't', chunk_time_interval => interval '1 day')",
			"ALTER TABLE "+h+" SET (timescaledb.compress)")
	}
	testenv.MustExec(t, srv, src,
		`INSERT INTO lossy VALUES ('2025-01-01', '<?xml version="1.0"?><a/>'), ('2025-01-05', '<b/>')`,
		`INSERT INTO kept VALUES ('2025-01-01', '<a/>'), ('2025-01-05', '<?xml version="1.0"?><b/>')`,
		`SELECT compress_chunk(c) FROM show_chunks('lossy', older_than => '2025-01-03'::timestamptz) c`,
		`SELECT compress_chunk(c) FROM show_chunks('kept', older_than => '2025-01-03'::timestamptz) c`)
	r, err := preflight.Run(context.Background(), preflight.Options{Source: config(t, "source", srv.URI(src)),
		Target: config(t, "target", srv.URI(tgt)), Engine: preflight.EngineStream})
	if err != nil {
		t.Fatal(err)
	}
	f := find(t, r, "xml-declarations")
	if f.Status != preflight.Fail || !strings.Contains(f.Saw, "compressed chunks of 1 column") || !strings.Contains(f.Saw, "public.lossy.x") ||
		strings.Contains(f.Saw, "kept") || !strings.Contains(f.Do, "decompress_chunk") {
		t.Errorf("xml-declarations: %+v", f)
	}
	// Through TimescaleDB's API compressed chunks are read decompressed: nothing lost.
	r, err = preflight.Run(context.Background(), preflight.Options{Source: config(t, "source", srv.URI(src)),
		Target: config(t, "target", srv.URI(tgt)), Engine: preflight.EngineStream, RestorePath: schema.PathAPI})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range r.Findings {
		if f.Check == "xml-declarations" {
			t.Errorf("restore path api: %+v", f)
		}
	}
}
