package cli

import (
	"bytes"
	"testing"

	"github.com/tsmigrate/tsmigrate/internal/preflight"
)

func TestRenderReport(t *testing.T) {
	r := &preflight.Report{
		Source: preflight.Side{Server: "app@db1:5432/shop", PostgreSQL: "17.2", TimescaleDB: "2.19.3", License: "timescale"},
		Target: preflight.Side{Server: "tsdbadmin@db2:5432/defaultdb", PostgreSQL: "16.4"},
		Findings: []preflight.Finding{
			{Check: "connect", Status: preflight.Pass, Server: "source", Saw: "logged in"},
			{Check: "postgres-major", Status: preflight.Fail, Server: "both",
				Saw: "source runs PostgreSQL 17 (17.2), target PostgreSQL 16 (16.4): the majors differ",
				Do:  "use a target running PostgreSQL 17: a dump cannot be restored into an older major"},
		},
		Summary:    preflight.Summary{Pass: 1, Fail: 1},
		DurationMS: 1234,
	}
	plain := `source  app@db1:5432/shop  PostgreSQL 17.2, TimescaleDB 2.19.3 (timescale)
target  tsdbadmin@db2:5432/defaultdb  PostgreSQL 16.4

PASS  connect         source  logged in
FAIL  postgres-major  both    source runs PostgreSQL 17 (17.2), target PostgreSQL 16 (16.4): the majors differ
                              do: use a target running PostgreSQL 17: a dump cannot be restored into an older major

1 passed, 0 warnings, 1 failed (1.2s)
`
	var b bytes.Buffer
	renderReport(&b, r, false)
	if b.String() != plain {
		t.Errorf("plain output:\n%s\nwant:\n%s", b.String(), plain)
	}

	// On a terminal (100 columns when the writer is not one): colour, wrapped lines.
	tty := `source  app@db1:5432/shop  PostgreSQL 17.2, TimescaleDB 2.19.3 (timescale)
target  tsdbadmin@db2:5432/defaultdb  PostgreSQL 16.4

` + "\x1b[32mPASS\x1b[0m" + `  connect         source  logged in
` + "\x1b[1;31mFAIL\x1b[0m" + `  postgres-major  both    source runs PostgreSQL 17 (17.2), target PostgreSQL 16 (16.4): the
                              majors differ
                              do: use a target running PostgreSQL 17: a dump cannot be restored into
                              an older major

1 passed, 0 warnings, 1 failed (1.2s)
`
	b.Reset()
	renderReport(&b, r, true)
	if b.String() != tty {
		t.Errorf("terminal output:\n%q\nwant:\n%q", b.String(), tty)
	}
}
