package migrate_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// A --worker started before the migration it joins (so while that run is in
// pre-flight, freezing the source and restoring the schema) waits, saying so, and joins
// the data phase: both exit 0, every unit copied once, and each summary says which
// process copied what.
func TestStreamWorkerStartedFirstWaits(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src := bigSource(t, srv)
	dst := testenv.NewDB(t, srv, false)
	unfreezeAtCleanup(t, srv, src)
	bin := testenv.Binary(t)
	conn := []string{"--pg-bin", srv.ClientBin(), "--source", srv.URI(src), "--target", srv.URI(dst), "--progress", "json", "--json"}

	worker := startTsmigrate(t, bin, append([]string{"migrate", "--worker", "--jobs", "1"}, conn...)...)
	testenv.Eventually(t, 60*time.Second, func() error {
		if worker.saw("    waiting for the migration to reach its data phase") {
			return nil
		}
		select {
		case <-worker.done:
			t.Fatalf("the worker ended instead of waiting:\n%s\n%s", worker.stdout.String(), strings.Join(worker.lines, "\n"))
		default:
		}
		return errors.New("the worker does not say it waits")
	})
	first := startTsmigrate(t, bin, append([]string{"migrate", "--yes", "--jobs", "1", "--freeze-grace", "1s"}, conn...)...)
	assertShared(t, first, worker)
}

// assertShared waits for a migration and a worker that joined it: both exit 0, the
// worker copied some units, every unit was copied once, each summary says which process
// copied what, and verify found the data identical.
func assertShared(t *testing.T, first, worker *proc) {
	t.Helper()
	wcode, wsum := worker.wait(t)
	code, sum := first.wait(t)
	if code != 0 || wcode != 0 {
		t.Fatalf("exit %d and %d (worker)\n%s\n%s", code, wcode, strings.Join(first.lines, "\n"), strings.Join(worker.lines, "\n"))
	}
	_, planned := first.events("")
	a, b := sum.Databases[0].Data, wsum.Databases[0].Data
	t.Logf("planned %d; first %+v; worker %+v", planned, a, b)
	if wsum.Outcome != migrate.OutcomeCopied || a == nil || b == nil || b.Units == 0 || a.Units == 0 || a.Units+b.Units != planned ||
		a.ByOthers != b.Units || a.Skipped != 0 {
		t.Fatalf("first copied %+v, worker %+v (outcome %s); %d units planned", a, b, wsum.Outcome, planned)
	}
	if d := sum.Databases[0]; d.Identical == nil || !*d.Identical {
		t.Fatalf("not identical: %+v", d)
	}
}

// A worker whose migration does not reach its data phase within --worker-wait exits 2
// with one line that says what it waited for, and never advises to unfreeze the source
// or reset the target (the run it came to join may be healthy).
func TestStreamWorkerWaitBound(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src := testenv.NewDB(t, srv, true)
	dst := testenv.NewDB(t, srv, false)
	t0 := time.Now()
	code, out, errOut := runCLI(t, "migrate", "--worker", "--worker-wait", "2s", "--pg-bin", srv.ClientBin(),
		"--source", srv.URI(src), "--target", srv.URI(dst))
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	last := lines[len(lines)-1]
	if code != exit.Usage || strings.Count(errOut, "tsmigrate:") != 1 || !strings.Contains(last, "cannot join: target database "+dst+" holds no migration journal yet") ||
		!strings.Contains(last, "still after waiting 2s") {
		t.Fatalf("exit %d, want %d and one line saying what it waited for\n%s\n%s", code, exit.Usage, out, errOut)
	}
	if d := time.Since(t0); d < 2*time.Second {
		t.Errorf("gave up after %s, before --worker-wait", d)
	}
	for _, bad := range []string{"unfreeze", "reset the target", "drop"} {
		if strings.Contains(strings.ToLower(errOut+out), bad) {
			t.Errorf("a refused worker is told to %q:\n%s\n%s", bad, out, errOut)
		}
	}
}
