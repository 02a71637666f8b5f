// Command demo runs tsmigrate end to end on two local servers: a self-hosted-like source
// (PostgreSQL 17 + TimescaleDB) with sample time-series data, and a managed-like target
// (TLS only, database defaultdb, non-superuser tsdbadmin). Run it with `make demo`.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/sampledata"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

func main() {
	scale := flag.Float64("scale", 0.02, "size of the sample data (1.0 is about 825 MB)")
	keep := flag.Bool("keep", false, "keep both servers running after the demo, until Ctrl-C")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *scale, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) {
	fmt.Printf("\n\033[1m==> %s\033[0m\n", fmt.Sprintf(format, args...))
}

func run(ctx context.Context, scale float64, keep bool) error {
	if err := testenv.Available(testenv.PG17TS); err != nil {
		return fmt.Errorf("%v (make demo runs it for you)", err)
	}
	step("starting two local servers: a source (PostgreSQL 17 + TimescaleDB) and a managed-like target (TLS only, defaultdb owned by tsdbadmin and nothing more)")
	src, err := testenv.Start(ctx, testenv.PG17TS, testenv.Options{})
	if err != nil {
		return err
	}
	defer src.Stop()
	dst, err := testenv.Start(ctx, testenv.PG17TS, testenv.Options{Flavour: testenv.BareOwner})
	if err != nil {
		return err
	}
	defer dst.Stop()
	fmt.Printf("source: 127.0.0.1:%d   target: 127.0.0.1:%d (sslmode=verify-full)\n", src.Port, dst.Port)

	step("loading sample time-series data into the source database \"app\" (scale %g)", scale)
	if err := src.CreateDatabase(ctx, "app", true); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, src.SuperURI("app"))
	if err != nil {
		return err
	}
	t0 := time.Now()
	sz, err := sampledata.Create(ctx, conn, scale)
	conn.Close(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("devices %d rows, events %d rows, metrics (hypertable) %d rows in %d daily chunks, loaded in %s\n",
		sz.Devices, sz.Events, sz.Metrics, sz.Days, time.Since(t0).Round(time.Millisecond))

	binDir, err := os.MkdirTemp("", "tsmigrate-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(binDir)
	bin, err := testenv.BuildTsmigrate(ctx, binDir)
	if err != nil {
		return err
	}
	env := append(os.Environ(),
		"TSMIGRATE_SOURCE="+src.SuperURI("app"),
		// As the managed-like target's tsdbadmin, over TLS: the database's owner and
		// nothing more (testenv.BareOwner), so the restore goes through TimescaleDB's API.
		"TSMIGRATE_TARGET="+dst.URI(testenv.ManagedDB))
	fmt.Println("\nThe connection strings are in TSMIGRATE_SOURCE and TSMIGRATE_TARGET (passwords stay off the command line).")

	for _, c := range demoSteps() {
		step("%s", c.title)
		fmt.Printf("$ tsmigrate %s\n", strings.Join(c.args, " "))
		code, err := tsmigrate(ctx, bin, env, c.args...)
		if err != nil {
			return err
		}
		if code != c.want {
			return fmt.Errorf("tsmigrate %s exited %d, expected %d", c.args[0], code, c.want)
		}
	}
	step("demo finished")
	if keep {
		fmt.Printf("servers keep running until Ctrl-C:\n  source %s\n  target %s\n",
			src.SuperURI("app"), dst.URI(testenv.ManagedDB))
		<-ctx.Done()
	}
	return nil
}

type demoStep struct {
	title string
	args  []string
	want  int
}

func demoSteps() []demoStep {
	pgBin := testenv.ClientBin(testenv.PG17TS)
	return []demoStep{
		{"pre-flight checks on both servers", []string{"preflight"}, 0},
		{"the whole migration, stream engine (the default): pre-flight, write freeze, schema, rows straight from server to server with progress, indexes, ANALYZE, verification, summary",
			[]string{"migrate", "--yes", "--jobs", "2", "--pg-bin", pgBin, "--database", "app:" + testenv.ManagedDB}, 0},
		{"verifying again, on its own: row counts and checksums of every table and chunk, and the schema",
			[]string{"verify", "--database", "app:" + testenv.ManagedDB}, 0},
		{"after a migration the source stays frozen, so that no write lands on the old server",
			[]string{"freeze-status"}, 0},
		{"undoing the freeze (only when going back to the source)", []string{"unfreeze"}, 0},
	}
}

func tsmigrate(ctx context.Context, bin string, env []string, args ...string) (int, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), nil
	}
	if err != nil {
		return 0, err
	}
	return 0, nil
}
