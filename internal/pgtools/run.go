package pgtools

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
)

// StopGrace is how long a cancelled program gets after SIGTERM before SIGKILL.
const StopGrace = 5 * time.Second

// Cmd is one run of a client program.
type Cmd struct {
	Program string         // "pg_dump" or "pg_restore"
	Conn    *dbconn.Config // the server to reach (--dbname); nil for none (pg_restore -l)
	Args    []string       // everything but the connection
	Stdout  io.Writer      // nil discards
	// Line receives every line the program writes to stderr as it comes, with the id of
	// the process that wrote it: the program, or one of its workers (pg_dump -j,
	// pg_restore -j), whose writes to the shared stderr interleave. Each process's lines
	// are whole and in its order (see stderrSocket).
	Line func(pid int, line string)
}

// ExitError is a program that ended with a non-zero status.
type ExitError struct {
	Program string
	Code    int // -1 when it was killed by a signal
}

func (e *ExitError) Error() string {
	if e.Code < 0 {
		return e.Program + " was killed"
	}
	return fmt.Sprintf("%s exited with status %d", e.Program, e.Code)
}

// Run runs c and waits for it. The program gets only the environment it needs
// (dbconn.ChildEnv), and the connection as a conninfo without the password (--dbname)
// and a passfile that exists in memory only (dbconn.Child). Cancelling ctx sends
// SIGTERM to the program's process group (pg_dump -j and pg_restore -j workers
// included), then SIGKILL after StopGrace; Run then returns ctx's error. A non-zero
// exit is an *ExitError.
func (t *Tools) Run(ctx context.Context, c Cmd) error {
	args := append([]string(nil), c.Args...)
	env := dbconn.ChildEnv()
	var files []*os.File
	if c.Conn != nil {
		child, err := c.Conn.ChildProcess()
		if err != nil {
			return fmt.Errorf("%s: %w", c.Program, err)
		}
		defer child.Close()
		env, files = child.Env, child.Files
		args = append(args, "--dbname="+child.Conninfo)
	}
	cmd := exec.CommandContext(ctx, t.Path(c.Program), args...)
	cmd.Env = env
	cmd.ExtraFiles = files
	cmd.Stdout = c.Stdout
	// Own process group: a terminal's Ctrl-C reaches tsmigrate alone, which then stops
	// the program and its workers through ctx.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = StopGrace
	stderr, reader, err := stderrSocket()
	if err != nil {
		return fmt.Errorf("%s: %w", c.Program, err)
	}
	defer reader.Close()
	cmd.Stderr = stderr
	err = cmd.Start()
	stderr.Close() // the program's and its workers' copies are theirs
	if err != nil {
		return fmt.Errorf("start %s: %w", c.Program, err)
	}
	line := c.Line
	if line == nil {
		line = func(int, string) {}
	}
	readErr := readWriters(reader, line)
	err = cmd.Wait()
	if ctx.Err() == nil && err == nil && readErr != nil {
		err = readErr
	}
	if ctx.Err() != nil {
		// Workers that ignored SIGTERM must not outlive the run.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		return fmt.Errorf("%s stopped: %w", c.Program, ctx.Err())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return &ExitError{Program: c.Program, Code: ee.ExitCode()}
	}
	if err != nil {
		return fmt.Errorf("%s: %w", c.Program, err)
	}
	return nil
}
