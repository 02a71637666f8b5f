package cli_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// A dump-engine migration given its connections as the README's quick start does
// (TSMIGRATE_SOURCE/TSMIGRATE_TARGET URIs with the password), with PGPASSWORD set as
// well, is killed with SIGKILL while pg_dump writes the data:
//   - no file of the temporary directory holds the password, then or after;
//   - no pg_dump or pg_restore ever had a password in its environment (a wrapper of
//     each records it: /proc/PID/environ as the program started);
//   - the next migration, after `tsmigrate unfreeze`, removes the dump the killed run
//     left in the temporary directory, says so, and leaves nothing there itself.
func TestKilledRunLeavesNoSecretBehind(t *testing.T) {
	const envPassword = "PGPASSWORD-not-for-children-83"
	srv := testenv.Shared(t, testenv.PG17TS)
	src := testenv.NewDB(t, srv, false)
	dst := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, src, "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS a FROM generate_series(1, 1500000) g")
	bin := testenv.Binary(t)
	tmp, records := t.TempDir(), t.TempDir()
	wrappers := t.TempDir()
	for _, p := range []string{"pg_dump", "pg_restore"} {
		script := fmt.Sprintf("#!/bin/sh\nenv > %s/%s.$$.env\nexec %s \"$@\"\n", records, p, filepath.Join(srv.ClientBin(), p))
		if err := os.WriteFile(filepath.Join(wrappers, p), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") && !strings.HasPrefix(kv, "TSMIGRATE_") && !strings.HasPrefix(kv, "TMPDIR=") {
			env = append(env, kv)
		}
	}
	env = append(env, "TMPDIR="+tmp, "PGPASSWORD="+envPassword,
		"TSMIGRATE_SOURCE="+srv.URI(src), "TSMIGRATE_TARGET="+srv.URI(dst))
	cmd := exec.Command(bin, "migrate", "--engine", "dump", "--yes", "--jobs", "2", "--freeze-grace", "1s", "--pg-bin", wrappers)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	testenv.Eventually(t, 90*time.Second, func() error {
		if files, _ := filepath.Glob(filepath.Join(tmp, "tsmigrate-dump-*", "*", "*.dat*")); len(files) == 0 {
			return fmt.Errorf("pg_dump wrote no data file in %s", tmp)
		}
		return nil
	})
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	testenv.MustExec(t, srv, src, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")

	if found := testenv.FilesHolding(tmp, testenv.SuperPassword); len(found) > 0 {
		t.Errorf("after SIGKILL, files in TMPDIR hold the password: %q", found)
	}
	if left, _ := filepath.Glob(filepath.Join(tmp, "tsmigrate-dump-*")); len(left) != 1 {
		t.Fatalf("the killed run left %q in TMPDIR, want its dump directory", left)
	}
	unfreeze := exec.Command(bin, "unfreeze")
	unfreeze.Env = env
	if b, err := unfreeze.CombinedOutput(); err != nil {
		t.Fatalf("unfreeze: %v\n%s", err, b)
	}
	dst2 := testenv.NewDB(t, srv, false)
	again := exec.Command(bin, "migrate", "--engine", "dump", "--yes", "--freeze-grace", "1s", "--no-verify", "--pg-bin", wrappers,
		"--target", srv.URI(dst2))
	again.Env = env
	b, err := again.CombinedOutput()
	if err != nil {
		t.Fatalf("the next migration: %v\n%s", err, b)
	}
	unfreeze = exec.Command(bin, "unfreeze")
	unfreeze.Env = env
	if b, err := unfreeze.CombinedOutput(); err != nil {
		t.Fatalf("unfreeze: %v\n%s", err, b)
	}
	if !strings.Contains(string(b), "removed 1 temporary directories that killed tsmigrate runs left behind") {
		t.Errorf("the next migration does not say it removed the killed run's dump:\n%s", b)
	}
	if left, _ := filepath.Glob(filepath.Join(tmp, "*")); len(left) > 0 {
		t.Errorf("TMPDIR holds %q after the next migration", left)
	}

	recs, _ := filepath.Glob(filepath.Join(records, "*.env"))
	if len(recs) < 4 {
		t.Fatalf("%d runs of pg_dump/pg_restore recorded, want at least 4", len(recs))
	}
	for _, r := range recs {
		b, err := os.ReadFile(r)
		if err != nil {
			t.Fatal(err)
		}
		for _, secret := range []string{testenv.SuperPassword, envPassword, "TSMIGRATE_"} {
			if strings.Contains(string(b), secret) {
				t.Errorf("%s: the environment holds %q", filepath.Base(r), secret)
			}
		}
	}
}

// migrate --roles, verbose, into a managed-like target with the source's password
// verifiers (read by the source's superuser), either engine, text summary and JSON: no
// verifier on stdout, stderr, nor in any file of TMPDIR afterwards; pre-flight --roles
// alike. The roles and their verifier did reach the target.
func TestRolesVerifierNeverShown(t *testing.T) {
	src := testenv.Need(t, testenv.PG17TS, testenv.Options{})
	testenv.MustExec(t, src, "postgres", "CREATE ROLE sec_login LOGIN PASSWORD 'Sec-login-pw-4'",
		"CREATE ROLE sec_md5 LOGIN", "CREATE DATABASE app")
	testenv.MustExec(t, src, "postgres", "SET password_encryption = 'md5'", "ALTER ROLE sec_md5 PASSWORD 'Sec-md5-pw-8'")
	testenv.MustExec(t, src, "app", "CREATE EXTENSION timescaledb", "CREATE TABLE t (x int)", "INSERT INTO t VALUES (1)",
		"ALTER TABLE t OWNER TO sec_login", "GRANT SELECT ON t TO sec_md5")
	verifiers := map[string]string{}
	for _, r := range []string{"sec_login", "sec_md5"} {
		var v string
		c := testenv.Connect(t, src.SuperURI("postgres"))
		if err := c.QueryRow(context.Background(), "SELECT rolpassword FROM pg_authid WHERE rolname = $1", r).Scan(&v); err != nil {
			t.Fatal(err)
		}
		verifiers[r] = v
	}
	bin := testenv.Binary(t)
	for i, engine := range []string{"stream", "dump"} {
		tgt := testenv.Need(t, testenv.PG17TS, testenv.Options{Flavour: testenv.CloudLike})
		tmp := t.TempDir()
		args := [][]string{
			{"preflight", "--roles", "-v"},
			{"migrate", "--roles", "--engine", engine, "--yes", "--freeze-grace", "1s", "-v", "--pg-bin", src.ClientBin()},
		}
		if i == 1 {
			args[1] = append(args[1], "--json")
		}
		for _, a := range args {
			cmd := exec.Command(bin, append(a, "--source", src.URI("app"), "--target", tgt.URI(testenv.ManagedDB))...)
			cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			out := stdout.String() + stderr.String()
			if err != nil {
				t.Fatalf("%v: %v\n%s", a, err, out)
			}
			for r, v := range verifiers {
				if strings.Contains(out, v) || strings.Contains(out, v[:20]) {
					t.Errorf("%s %s: the output holds %s's verifier:\n%s", a[0], engine, r, out)
				}
				if found := testenv.FilesHolding(tmp, v); len(found) > 0 {
					t.Errorf("%s %s: files in TMPDIR hold %s's verifier: %q", a[0], engine, r, found)
				}
			}
			if a[0] == "migrate" && !strings.Contains(out, "sec_login") {
				t.Errorf("%s: the output does not name the roles:\n%s", engine, out)
			}
		}
		c := testenv.Connect(t, tgt.SuperURI("postgres"))
		for r, v := range verifiers {
			var got string
			if err := c.QueryRow(context.Background(), "SELECT coalesce(rolpassword, '') FROM pg_authid WHERE rolname = $1", r).Scan(&got); err != nil || got != v {
				t.Errorf("%s: role %s on the target has not the source's verifier (%v)", engine, r, err)
			}
		}
		unfreeze := exec.Command(bin, "unfreeze", "--source", src.URI("app"))
		if b, err := unfreeze.CombinedOutput(); err != nil {
			t.Fatalf("unfreeze: %v\n%s", err, b)
		}
	}
}
