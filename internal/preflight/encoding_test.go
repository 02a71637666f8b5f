package preflight_test

import (
	"fmt"
	"testing"

	"github.com/tsmigrate/tsmigrate/internal/preflight"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// databaseIn creates a database in encoding enc (locale C, which fits every encoding).
func databaseIn(t *testing.T, srv *testenv.Server, enc string) string {
	t.Helper()
	name := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, "postgres", "DROP DATABASE "+name,
		fmt.Sprintf("CREATE DATABASE %s ENCODING '%s' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0", name, enc))
	return name
}

// A target database in UTF8 or the source's encoding holds the source's characters; one
// in another encoding lacks some, and fails before anything changes, naming both.
func TestEncodingCheck(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG15)
	for _, c := range []struct {
		src, tgt string
		want     preflight.Status
	}{
		{"LATIN1", "LATIN1", preflight.Pass},
		{"LATIN1", "UTF8", preflight.Pass},
		{"UTF8", "LATIN1", preflight.Fail},
		{"LATIN1", "WIN1252", preflight.Fail},
		{"SQL_ASCII", "UTF8", preflight.Warn},
		{"LATIN1", "SQL_ASCII", preflight.Warn},
	} {
		t.Run(c.src+"-"+c.tgt, func(t *testing.T) {
			src, tgt := databaseIn(t, srv, c.src), databaseIn(t, srv, c.tgt)
			r := runPreflight(t, srv.URI(src), srv.URI(tgt))
			expect(t, r, "encoding", c.want, "encoding "+c.src, "in "+c.tgt)
			if got := r.Failed(); got != (c.want == preflight.Fail) {
				t.Errorf("the report failed: %v (%+v)", got, r.Findings)
			}
		})
	}
}
