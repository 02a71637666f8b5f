package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// The pgcopydb way of -live (see live.go): pgcopydb 0.17 clone --follow, cut over as
// its documentation says.

// pgcopydbWork is pgcopydb's work directory inside the Debian 13 root.
const pgcopydbWork = "/var/tmp/pgcopydb-bench"

// copydbCommand is pgcopydb with args, in the Debian 13 root, the password in its
// environment only.
func copydbCommand(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "chroot", append([]string{testenv.Pg17Root(), "/usr/bin/pgcopydb"}, args...)...)
	cmd.Env = []string{"PATH=/usr/lib/postgresql/17/bin:/usr/bin:/bin", "LANG=C.UTF-8", "PGPASSWORD=" + testenv.SuperPassword}
	return cmd
}

// copydbLog is pgcopydb's output: kept in a file, and the moment it enables applying
// changes (its copy, indexes and constraints done) noted.
type copydbLog struct {
	mu       sync.Mutex
	file     *os.File
	partial  []byte
	applying time.Time
}

// copydbApplyLine is what pgcopydb 0.17 logs as its copy is done and applying starts.
const copydbApplyLine = "to enable applying changes"

func (l *copydbLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		if l.applying.IsZero() && bytes.Contains(l.partial[:i], []byte(copydbApplyLine)) {
			l.applying = time.Now()
		}
		l.partial = l.partial[i+1:]
	}
	return l.file.Write(p)
}

func (l *copydbLog) applyingAt() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.applying
}

// liveCopydb runs pgcopydb clone --follow and cuts it over once it applies changes
// with little lag: the source made read-only, the writer's sessions ended, the end
// position set to the source's current one; then waits until the target has every
// change and pgcopydb exits.
func (b *bench) liveCopydb(ctx context.Context, f *liveFigures, smp *sampler, target string) (frozen, applying time.Time, err error) {
	root := testenv.Pg17Root()
	if _, err := os.Stat(filepath.Join(root, "usr/bin/pgcopydb")); err != nil {
		return frozen, applying, fmt.Errorf("pgcopydb not installed: run scripts/setup-servers.sh --with-pgcopydb")
	}
	if err := b.onTarget(ctx, target, "CREATE EXTENSION timescaledb", "SELECT timescaledb_pre_restore()"); err != nil {
		return frozen, applying, err
	}
	defer b.onTarget(context.WithoutCancel(ctx), target, "SELECT timescaledb_post_restore()")
	srcConn, err := pgx.Connect(ctx, b.src.SuperURI("bench"))
	if err != nil {
		return frozen, applying, err
	}
	defer srcConn.Close(context.WithoutCancel(ctx))
	dst, err := pgx.Connect(ctx, b.dst.SuperURI(target))
	if err != nil {
		return frozen, applying, err
	}
	defer dst.Close(context.WithoutCancel(ctx))

	os.RemoveAll(filepath.Join(root, pgcopydbWork))
	conn := []string{"--dir", pgcopydbWork, "--source", b.uri(b.src, "bench"), "--target", b.uri(b.dst, target)}
	logPath := filepath.Join(os.TempDir(), "pgcopydb-live-bench.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return frozen, applying, err
	}
	defer logFile.Close()
	out := &copydbLog{file: logFile}
	cmd := copydbCommand(ctx, append([]string{"clone", "--follow", "--table-jobs", fmt.Sprint(b.jobs), "--index-jobs", fmt.Sprint(b.jobs)}, conn...)...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return frozen, applying, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	running := true
	defer func() {
		if running {
			cmd.Process.Kill()
			<-exited
		}
	}()
	failed := func(done error, when string) error {
		running = false
		return fmt.Errorf("pgcopydb clone --follow %s: %v: %s (log in %s)", when, done, copydbWhy(logPath), logPath)
	}

	// Until the cut-over: the sentinel every second, for the lag.
	t := time.NewTicker(time.Second)
	defer t.Stop()
	deadline := time.Now().Add(b.liveTimeout)
	for {
		select {
		case <-ctx.Done():
			return frozen, out.applyingAt(), ctx.Err()
		case done := <-exited:
			return frozen, out.applyingAt(), failed(done, "exited before the cut-over")
		case <-t.C:
		}
		applying = out.applyingAt()
		lag, serr := copydbLag(ctx, srcConn, conn)
		if serr != nil {
			continue
		}
		f.PeakLagBytes = max(f.PeakLagBytes, lag)
		// Cut over as tsmigrate's --cutover auto does: once the lag is small, here
		// under a megabyte of WAL, with the target holding a writer row written after
		// the copy and at most a few seconds old.
		if !applying.IsZero() && lag < cutoverLag && smp.stale(applying) < cutoverStale {
			break
		}
		if time.Now().After(deadline) {
			return frozen, applying, fmt.Errorf("pgcopydb did not catch up within %s (lag %d bytes; log in %s)", b.liveTimeout, lag, logPath)
		}
	}

	// The cut-over: writes stop, the end position is set, pgcopydb applies up to it.
	frozen = time.Now()
	if _, err := srcConn.Exec(ctx, "ALTER DATABASE bench SET default_transaction_read_only = on"); err != nil {
		return frozen, applying, err
	}
	srcConn.Exec(ctx, sqlEndWriter)
	if out, err := copydbCommand(ctx, append([]string{"stream", "sentinel", "set", "endpos", "--current"}, conn[:4]...)...).CombinedOutput(); err != nil {
		return frozen, applying, fmt.Errorf("pgcopydb stream sentinel set endpos --current: %v: %s", err, firstLine(string(out)))
	}
	// The target has every change once it holds as many of the writer's hypertable
	// rows as the frozen source (every transaction of the writer inserts some, and
	// pgcopydb applies them in commit order); pgcopydb exits later (it sets the
	// sequences after that).
	var want, n int64
	var newest time.Time
	if err := srcConn.QueryRow(ctx, sqlWriterApplied, b.cursors.device).Scan(&want, &newest); err != nil {
		return frozen, applying, err
	}
	var applied time.Time
	giveUp := time.After(b.liveTimeout)
	poll := time.NewTicker(250 * time.Millisecond)
	defer poll.Stop()
	for running {
		select {
		case done := <-exited:
			if done != nil {
				return frozen, applying, failed(done, "after the cut-over")
			}
			running = false
		case <-giveUp:
			return frozen, applying, fmt.Errorf("pgcopydb did not reach the end position within %s (log in %s)", b.liveTimeout, logPath)
		case <-poll.C:
			if applied.IsZero() && dst.QueryRow(ctx, sqlWriterApplied, b.cursors.device).Scan(&n, &newest) == nil && n >= want {
				applied = time.Now()
			}
		}
	}
	exit := time.Since(frozen)
	if applied.IsZero() {
		applied = time.Now()
	}
	f.Downtime, f.DowntimeToExit = applied.Sub(frozen).Seconds(), exit.Seconds()
	f.DownHow = fmt.Sprintf("measured: read-only source to the target holding the frozen source's last writer rows; to pgcopydb's exit (sequences set) %.2f s", exit.Seconds())
	return frozen, applying, nil
}

// cutoverLag and cutoverStale: the pgcopydb way cuts over with less than cutoverLag
// bytes of WAL not applied and the target's newest writer row at most cutoverStale old.
const (
	cutoverLag   = 1 << 20
	cutoverStale = 3 * time.Second
)

// copydbLag reads pgcopydb's sentinel and the source's position: the bytes of WAL
// between what pgcopydb applied and the source's position.
func copydbLag(ctx context.Context, src *pgx.Conn, conn []string) (int64, error) {
	var s struct {
		ReplayLSN string `json:"replay_lsn"`
	}
	out, err := copydbCommand(ctx, append([]string{"stream", "sentinel", "get", "--json"}, conn[:4]...)...).Output()
	if err != nil {
		return 0, err
	}
	if err := json.Unmarshal(bytes.TrimSpace(out), &s); err != nil {
		return 0, err
	}
	var cur string
	if err := src.QueryRow(ctx, sqlCurrentLSN).Scan(&cur); err != nil {
		return 0, err
	}
	c, err1 := pglogrepl.ParseLSN(cur)
	rp, err2 := pglogrepl.ParseLSN(s.ReplayLSN)
	if err1 != nil || err2 != nil || rp == 0 {
		return 0, errors.Join(err1, err2, errors.New("no replay position yet"))
	}
	return int64(c) - int64(rp), nil
}

// copydbWhy is the first error pgcopydb logged (pg_dump's warnings, which it logs as
// errors on every TimescaleDB database, left out).
func copydbWhy(logPath string) string {
	data, _ := os.ReadFile(logPath)
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, " ERROR ") && !strings.Contains(line, "pg_dump:") {
			if _, msg, ok := strings.Cut(line, "ERROR:"); ok {
				return strings.TrimSpace(msg)
			}
		}
	}
	return "no error in its log"
}
