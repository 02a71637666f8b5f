package cli

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// runBinary runs the tsmigrate binary bin without a terminal and returns its exit code
// and what it wrote to stdout and stderr together, in order.
func runBinary(t *testing.T, bin string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return ee.ExitCode(), out.String()
	case err != nil:
		t.Fatal(err)
	}
	return 0, out.String()
}

// frozenSettings are the freeze's settings on database db (none when not frozen).
func frozenSettings(t *testing.T, srv *testenv.Server, db string) []string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, srv.SuperURI(db))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, _ := conn.Query(ctx, `SELECT item FROM pg_db_role_setting s, unnest(s.setconfig) item
		WHERE s.setrole = 0 AND s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())`)
	set, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// databaseExists says whether srv has database name.
func databaseExists(t *testing.T, srv *testenv.Server, name string) bool {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, srv.SuperURI("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)`, name).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

// A usage error of migrate or freeze, found before anything starts, is one line and
// exit 2: no summary of a migration that never started, nothing frozen, no target
// database created. The same source database twice would be frozen twice (the second
// freeze failed "already frozen" after the first had frozen it).
func TestUsageErrorIsOneLine(t *testing.T) {
	bin := testenv.Binary(t)
	srv := testenv.Shared(t, testenv.PG17TS)
	src := timescaleSource(t, srv)
	tgt := testenv.NewDB(t, srv, false)
	a, b := tgt+"_a", tgt+"_b"
	t.Cleanup(func() {
		for _, n := range []string{a, b} {
			srv.Exec(context.Background(), "postgres", "DROP DATABASE IF EXISTS "+n+" WITH (FORCE)")
		}
	})
	conn := []string{"--source", srv.URI(src), "--target", srv.URI(tgt)}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"rehearsal with the stream engine", []string{"migrate", "--rehearsal", "--yes"},
			"tsmigrate: --rehearsal is for the dump engine (use --engine dump)"},
		{"one source database twice", []string{"migrate", "--yes", "--database", src + ":" + a, "--database", src + ":" + b},
			`tsmigrate: source database "` + src + `" is given twice (into "` + a + `" and "` + b + `") (give each source database once)`},
		{"negative --freeze-grace of migrate", []string{"migrate", "--yes", "--freeze-grace", "-5s"},
			"tsmigrate: --freeze-grace -5s (give 0 or more (0: end them at once))"},
		{"negative --freeze-grace of freeze", []string{"freeze", "--yes", "--freeze-grace", "-5s"},
			"tsmigrate: --freeze-grace -5s (give 0 or more (0: end them at once))"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append(append([]string{}, c.args...), conn...)
			if c.args[0] == "freeze" {
				args = args[:len(args)-2] // no --target
			} else {
				args = append(args, "--pg-bin", srv.ClientBin())
			}
			code, out := runBinary(t, bin, args...)
			if code != 2 || out != c.want+"\n" {
				t.Errorf("exit %d, output:\n%s\nwant exit 2 and the one line:\n%s", code, out, c.want)
			}
			if set := frozenSettings(t, srv, src); len(set) != 0 {
				t.Errorf("the source is left with %q", set)
				testenv.MustExec(t, srv, "postgres", "ALTER DATABASE "+src+" RESET ALL")
			}
			for _, n := range []string{a, b} {
				if databaseExists(t, srv, n) {
					t.Errorf("target database %s was created", n)
				}
			}
		})
	}
}
