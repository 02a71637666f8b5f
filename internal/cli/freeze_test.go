package cli_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tsmigrate/tsmigrate/internal/cli"
	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/freeze"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// run runs tsmigrate in-process, without a terminal.
func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = cli.Run(context.Background(), args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

type freezeFixture struct {
	srv *testenv.Server
	db  string
	uri string
	src *dbconn.Config
}

func newFreezeFixture(t *testing.T, srv *testenv.Server) *freezeFixture {
	t.Helper()
	db := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, db, "CREATE TABLE t (a int)")
	src, err := dbconn.Parse("source", srv.URI(db))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { freeze.Unfreeze(context.Background(), src) })
	return &freezeFixture{srv: srv, db: db, uri: srv.URI(db), src: src}
}

// write inserts a row from a session that connects now and returns its SQLSTATE ("" if it worked).
func (f *freezeFixture) write(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, f.uri)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	_, err = c.Exec(ctx, "INSERT INTO t VALUES (1)")
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	if err != nil {
		t.Fatal(err)
	}
	return ""
}

func (f *freezeFixture) settings(t *testing.T) []string {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, f.srv.SuperURI("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var set []string
	c.QueryRow(ctx, `SELECT setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
		WHERE d.datname = $1 AND s.setrole = 0`, f.db).Scan(&set)
	return set
}

func TestFreezeCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("starts its own servers: not under -short")
	}
	bin := testenv.Binary(t)
	for _, k := range []testenv.Kind{testenv.PG17TS, testenv.PG15} {
		t.Run(string(k), func(t *testing.T) {
			srv := testenv.Need(t, k, testenv.Options{})
			t.Run("no terminal, no --yes", func(t *testing.T) { testFreezeNeedsConsent(t, newFreezeFixture(t, srv)) })
			t.Run("json", func(t *testing.T) { testFreezeJSON(t, newFreezeFixture(t, srv)) })
			t.Run("unfreeze after SIGKILL", func(t *testing.T) { testUnfreezeAfterKill(t, bin, newFreezeFixture(t, srv)) })
		})
	}
}

// Without a terminal and without --yes: exit 2, one line, no change on the server.
func testFreezeNeedsConsent(t *testing.T, f *freezeFixture) {
	code, out, errOut := run(t, "freeze", "--source", f.uri)
	if code != 2 || out != "" || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "--yes") {
		t.Fatalf("exit %d, stdout %q, stderr %q; want exit 2 and one line asking for --yes", code, out, errOut)
	}
	if strings.Contains(errOut, testenv.SuperPassword) {
		t.Fatal("the password is in the output")
	}
	if set := f.settings(t); len(set) != 0 {
		t.Fatalf("database settings changed: %q", set)
	}
	if st := f.write(t); st != "" {
		t.Fatalf("write failed with SQLSTATE %s", st)
	}
}

func testFreezeJSON(t *testing.T, f *freezeFixture) {
	code, out, errOut := run(t, "freeze", "--source", f.uri, "--yes", "--json", "--freeze-grace", "0s", "--proof-window", "1.5s")
	if code != 0 {
		t.Fatalf("freeze: exit %d: %s", code, errOut)
	}
	var res struct {
		ID    string `json:"freeze_id"`
		Proof struct {
			Window     float64 `json:"window_seconds"`
			XIDHolders *int    `json:"xid_holders"`
		} `json:"proof"`
		CannotStop []string `json:"cannot_stop"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("freeze --json: %v\n%s", err, out)
	}
	if res.ID == "" || res.Proof.Window < 1.4 || res.Proof.XIDHolders == nil || len(res.CannotStop) < 2 {
		t.Fatalf("freeze --json: %s", out)
	}
	if st := f.write(t); st != "25006" {
		t.Fatalf("write after freeze: SQLSTATE %q, want 25006", st)
	}

	code, out, _ = run(t, "freeze-status", "--source", f.uri, "--json")
	var st struct {
		Frozen, Intact bool
		ID             string `json:"freeze_id"`
	}
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil || !st.Frozen || !st.Intact || st.ID != res.ID {
		t.Fatalf("freeze-status --json: exit %d, %v: %s", code, err, out)
	}

	code, _, errOut = run(t, "freeze", "--source", f.uri, "--yes")
	if code != 1 || !strings.Contains(errOut, "already frozen") || !strings.Contains(errOut, res.ID) {
		t.Fatalf("freeze again: exit %d: %s", code, errOut)
	}

	code, out, _ = run(t, "unfreeze", "--source", f.uri)
	if code != 0 || !strings.HasPrefix(out, "unfrozen:") || !strings.Contains(out, res.ID) {
		t.Fatalf("unfreeze: exit %d: %s", code, out)
	}
	if st := f.write(t); st != "" {
		t.Fatalf("write after unfreeze: SQLSTATE %s", st)
	}
	code, out, _ = run(t, "unfreeze", "--source", f.uri)
	if code != 0 || !strings.HasPrefix(out, "not frozen") {
		t.Fatalf("unfreeze again: exit %d: %s", code, out)
	}
	code, out, _ = run(t, "freeze-status", "--source", f.uri)
	if code != 0 || !strings.HasPrefix(out, "not frozen") {
		t.Fatalf("freeze-status: exit %d: %s", code, out)
	}
}

// The freezing process is killed with SIGKILL while the freeze is in place (waiting,
// with --no-terminate, for a session idle in a write transaction); a new process
// undoes it.
func testUnfreezeAfterKill(t *testing.T, bin string, f *freezeFixture) {
	ctx := context.Background()
	holder, err := pgx.Connect(ctx, f.uri)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(ctx)
	if _, err := holder.Exec(ctx, "BEGIN; INSERT INTO t VALUES (2)"); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "TSMIGRATE_SOURCE="+f.uri) // not in argv
	cmd := exec.Command(bin, "freeze", "--yes", "--no-terminate", "--wait-timeout", "5m")
	cmd.Env = env
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waiting := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		var seen strings.Builder
		for sc.Scan() {
			seen.WriteString(sc.Text() + "\n")
			if strings.HasPrefix(sc.Text(), "waiting until") {
				select { // the first time only; later lines must not block the reader
				case waiting <- seen.String():
				default:
				}
			}
		}
	}()
	select {
	case <-waiting:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("tsmigrate freeze did not start waiting within 30 s")
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()

	if st := f.write(t); st != "25006" {
		t.Fatalf("write after the freezing process was killed: SQLSTATE %q, want 25006", st)
	}
	un := exec.Command(bin, "unfreeze")
	un.Env = env
	out, err := un.CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "unfrozen:") {
		t.Fatalf("unfreeze from a new process: %v\n%s", err, out)
	}
	if st := f.write(t); st != "" {
		t.Fatalf("write after unfreeze: SQLSTATE %s", st)
	}
	if _, err := holder.Exec(ctx, "COMMIT"); err != nil {
		t.Fatalf("the session waited for was disturbed: %v", err)
	}
	if set := f.settings(t); len(set) != 0 {
		t.Fatalf("settings left after unfreeze: %q", set)
	}
}
