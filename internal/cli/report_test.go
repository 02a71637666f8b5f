package cli

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// A blocking pre-flight finding is printed as one, not as a warning; the summary says
// pre-flight blocked the run.
func TestMigrateBlockedFinding(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src := timescaleSource(t, srv)
	tgt := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, tgt, `CREATE TABLE leftover (x int)`)
	r := run(t, "migrate", "--source", srv.URI(src), "--target", srv.URI(tgt), "--pg-bin", srv.ClientBin(), "--yes")
	if r.code != 3 || !strings.Contains(r.stdout, "BLOCKED by pre-flight (nothing changed)") {
		t.Fatalf("exit %d, stdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	want := "FAIL [" + src + "] target-empty: the target database " + tgt + " is not empty: table public.leftover"
	if !strings.Contains(r.stderr, want) {
		t.Errorf("stderr does not hold %q:\n%s", want, r.stderr)
	}
	for _, l := range strings.Split(r.stderr, "\n") {
		if strings.HasPrefix(l, "warning:") && strings.Contains(l, "FAIL") {
			t.Errorf("a blocking finding printed as a warning: %s", l)
		}
	}
}

// A migrate that fails in verify lists a few of the differences in its text summary,
// and how many more there are. An event trigger on the target comments every table
// the run creates in public: seven schema differences.
func TestMigrateVerifyDifferencesListed(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src := testenv.NewDB(t, srv, false)
	tgt := testenv.NewDB(t, srv, false)
	for i := 1; i <= 7; i++ {
		testenv.MustExec(t, srv, src, fmt.Sprintf(`CREATE TABLE t%d (x int)`, i), fmt.Sprintf(`INSERT INTO t%d VALUES (%d)`, i, i))
	}
	onCreateTable(t, srv, tgt, "tsm_test_comment", `EXECUTE format('COMMENT ON TABLE %s IS %L', r.object_identity, 'added on the target');`)
	t.Cleanup(func() { run(t, "unfreeze", "--source", srv.URI(src)) })
	r := run(t, "migrate", "--source", srv.URI(src), "--target", srv.URI(tgt), "--pg-bin", srv.ClientBin(), "--yes", "--freeze-grace", "0s")
	if r.code != 1 || !strings.Contains(r.stderr, "verify found differences") {
		t.Fatalf("exit %d, stdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	if n := strings.Count(r.stdout, "    DIFF schema: "); n != summaryDifferences ||
		!strings.Contains(r.stdout, "added on the target") ||
		!strings.Contains(r.stdout, fmt.Sprintf("    and %d more (tsmigrate verify --database %s:%s lists them all)", 7-summaryDifferences, src, tgt)) {
		t.Errorf("%d differences listed; summary:\n%s", n, r.stdout)
	}
}

// verify exits as diff(1) does: 0 the same, 1 different, 2 could not compare. A source
// user that may not read one of the tables cannot compare them: exit 2, one line.
func TestVerifyCouldNotCompare(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src, dst := verifyPair(t, srv)
	const reader, pw = "verify_reader", "pw-verify-reader"
	testenv.MustExec(t, srv, "postgres", fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", reader, pw))
	t.Cleanup(func() {
		for _, db := range []string{src, dst} {
			srv.Exec(context.Background(), db, "DROP OWNED BY "+reader)
		}
		srv.Exec(context.Background(), "postgres", "DROP ROLE IF EXISTS "+reader)
	})
	testenv.MustExec(t, srv, src, `GRANT SELECT ON ALL TABLES IN SCHEMA public TO `+reader, `REVOKE SELECT ON notes FROM `+reader)
	code, out, errOut := runCLI(t, "verify", "--source", userURI(srv, reader, pw, src), "--target", srv.URI(dst))
	if code != 2 || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "verify: could not compare 1 data unit") ||
		!strings.Contains(out, "NOT COMPARED table public.notes: cannot be read: permission denied for table notes") ||
		!strings.Contains(out, "verdict: NOT COMPARED (1 data unit could not be read)") {
		t.Errorf("exit %d, want 2 and one line\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
}

// Row-level security that applies to the verifying user hid rows from the checksums:
// two databases whose policies showed it the same rows were called identical whatever
// the other rows. verify reads every row or says it could not (exit 2).
func TestVerifyRowSecurity(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src, dst := verifyPair(t, srv, `UPDATE notes SET body = 'changed' WHERE id = 5`)
	const reader, pw = "verify_rls_reader", "pw-verify-rls"
	testenv.MustExec(t, srv, "postgres", fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", reader, pw))
	t.Cleanup(func() {
		for _, db := range []string{src, dst} {
			srv.Exec(context.Background(), db, "DROP OWNED BY "+reader)
		}
		srv.Exec(context.Background(), "postgres", "DROP ROLE IF EXISTS "+reader)
	})
	for _, db := range []string{src, dst} {
		testenv.MustExec(t, srv, db, `GRANT SELECT ON ALL TABLES IN SCHEMA public TO `+reader,
			`ALTER TABLE notes ENABLE ROW LEVEL SECURITY`, `CREATE POLICY few ON notes FOR SELECT USING (id < 3)`)
	}
	code, out, errOut := runCLI(t, "verify", "--source", userURI(srv, reader, pw, src), "--target", userURI(srv, reader, pw, dst))
	if code != 2 || !strings.Contains(out, "NOT COMPARED table public.notes: cannot be read: query would be affected by row-level security policy for table \"notes\"") {
		t.Errorf("exit %d, want 2\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
}
