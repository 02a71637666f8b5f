package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// liveLeftoversAtCleanup drops what a live run that failed the test left on the
// source database db: its replication slot, its freeze.
func liveLeftoversAtCleanup(t *testing.T, srv *testenv.Server, db string) {
	t.Cleanup(func() {
		srv.Exec(context.Background(), "postgres",
			fmt.Sprintf(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '%s'`, db),
			"ALTER DATABASE "+pgx.Identifier{db}.Sanitize()+" RESET ALL")
	})
}

// TestLiveCutoverPrompt drives migrate --live --cutover prompt through the binary,
// its answer given on a pipe once the question shows, while a writer inserts into a
// hypertable: "yes" cuts over (migrated, identical, every acknowledged insert on the
// target); "no" aborts the live run: the source was never frozen and keeps no slot,
// publication or changed replica identity.
func TestLiveCutoverPrompt(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	bin := testenv.Binary(t)
	for _, answer := range []string{"yes", "no"} {
		t.Run(answer, func(t *testing.T) {
			src, dst := testenv.NewDB(t, srv, true), testenv.NewDB(t, srv, false)
			testenv.MustExec(t, srv, src,
				`CREATE TABLE m (ts timestamptz NOT NULL, dev int NOT NULL, v float8, PRIMARY KEY (ts, dev))`,
				`SELECT create_hypertable('m', 'ts', chunk_time_interval => interval '1 day')`,
				`INSERT INTO m SELECT '2026-01-01'::timestamptz + g * interval '1 minute', 1, g FROM generate_series(1, 20000) g`,
				`CREATE TABLE log (line text)`)
			liveLeftoversAtCleanup(t, srv, src)

			// The writer: one insert at a time into new chunks, until stopped.
			stop, done := make(chan struct{}), make(chan struct{})
			var acked int
			go func() {
				defer close(done)
				conn, err := pgx.Connect(context.Background(), srv.SuperURI(src))
				if err != nil {
					t.Error(err)
					return
				}
				defer conn.Close(context.Background())
				for i := 1; ; i++ {
					select {
					case <-stop:
						return
					case <-time.After(20 * time.Millisecond):
					}
					_, err := conn.Exec(context.Background(), `INSERT INTO m VALUES ('2026-03-01'::timestamptz + $1 * interval '1 minute', 2, $1)`, i)
					var pgErr *pgconn.PgError
					switch {
					case err == nil:
						acked++
					case errors.As(err, &pgErr) && pgErr.Code == "25006": // read-only: frozen
					default:
						if conn.IsClosed() {
							if conn, err = pgx.Connect(context.Background(), srv.SuperURI(src)); err != nil {
								return
							}
						}
					}
				}
			}()
			stopWriter := sync.OnceFunc(func() { close(stop); <-done })
			t.Cleanup(stopWriter)

			cmd := exec.Command(bin, "migrate", "--live", "--cutover", "prompt", "--replica-identity-full", "--yes", "--json",
				"--jobs", "2", "--freeze-grace", "1s", "--pg-bin", srv.ClientBin())
			cmd.Env = append(os.Environ(), "TSMIGRATE_SOURCE="+srv.SuperURI(src), "TSMIGRATE_TARGET="+srv.SuperURI(dst), "PGPASSFILE=/dev/null")
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stdout bytes.Buffer
			var stderr lockedBuffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill() })
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			const question = "; cut over now? this freezes writes on "
			testenv.Eventually(t, 5*time.Minute, func() error {
				select {
				case err := <-exited:
					t.Fatalf("tsmigrate ended before asking: %v\n%s", err, stderr.String())
				default:
				}
				if !strings.Contains(stderr.String(), question) {
					return fmt.Errorf("no question yet:\n%s", stderr.String())
				}
				return nil
			})
			if !strings.Contains(stderr.String(), "lag is ") || !strings.Contains(stderr.String(), "live: catch-up") {
				t.Errorf("the question or the lag is missing:\n%s", stderr.String())
			}
			io.WriteString(stdin, answer+"\n")
			stdin.Close()
			var runErr error
			select {
			case runErr = <-exited:
			case <-time.After(5 * time.Minute):
				t.Fatalf("tsmigrate still runs 5 minutes after the answer:\n%s", stderr.String())
			}
			time.Sleep(200 * time.Millisecond) // the writer tries once more
			stopWriter()

			var sum struct {
				Outcome   string `json:"outcome"`
				Error     string `json:"error"`
				Databases []struct {
					Identical *bool `json:"identical"`
				} `json:"databases"`
				DowntimeMs int64 `json:"downtime_ms"`
			}
			if err := json.Unmarshal(stdout.Bytes(), &sum); err != nil {
				t.Fatalf("summary: %v\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
			}
			sc := testenv.Connect(t, srv.SuperURI(src))
			count := func(conn *pgx.Conn, q string) int64 {
				var n int64
				if err := conn.QueryRow(context.Background(), q).Scan(&n); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
				return n
			}
			if answer == "yes" {
				if runErr != nil || sum.Outcome != "migrated" || len(sum.Databases) != 1 || sum.Databases[0].Identical == nil || !*sum.Databases[0].Identical || sum.DowntimeMs <= 0 {
					t.Fatalf("exit %v, summary %+v\nstderr:\n%s", runErr, sum, stderr.String())
				}
				tc := testenv.Connect(t, srv.SuperURI(dst))
				if got := count(tc, `SELECT count(*) FROM m WHERE dev = 2`); got != int64(acked) || acked == 0 {
					t.Errorf("the writer's inserts: %d on the target, %d acknowledged by the source", got, acked)
				}
				if n := count(tc, `SELECT count(*) FROM m`); n != count(sc, `SELECT count(*) FROM m`) {
					t.Errorf("m: %d rows on the target, %d on the source", n, count(sc, `SELECT count(*) FROM m`))
				}
			} else {
				if runErr == nil || sum.Outcome == "migrated" || !strings.Contains(stderr.String()+sum.Error, `the answer was "no"`) {
					t.Errorf("exit %v, summary %+v\nstderr:\n%s", runErr, sum, stderr.String())
				}
				if err := srv.Exec(context.Background(), src, `INSERT INTO log VALUES ('writable')`); err != nil {
					t.Errorf("the source is not writable after the abort: %v", err)
				}
			}
			if n := count(sc, `SELECT count(*) FROM pg_replication_slots WHERE database = current_database()`) + count(sc, `SELECT count(*) FROM pg_publication`); n != 0 {
				t.Errorf("%d slots and publications left on the source", n)
			}
			if n := count(sc, `SELECT count(*) FROM pg_class WHERE relname = 'log' AND relreplident <> 'd'`); n != 0 {
				t.Error("the replica identity of log was not set back")
			}
		})
	}
}
