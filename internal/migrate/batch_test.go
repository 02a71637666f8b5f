package migrate_test

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// killWithQueryInFlight starts tsmigrate migrate of a bigSource into a new database,
// its target reached through a proxy that holds the server's answer to the first query
// holding text, and SIGKILLs tsmigrate once the server has done what cond (a query on
// the target that counts) says, while tsmigrate still waits for the answer: the query
// is in flight. It returns once the killed run's sessions are gone, with the server,
// the source and the target databases.
func killWithQueryInFlight(t *testing.T, text, cond string) (srv *testenv.Server, src, dst string) {
	t.Helper()
	srv = testenv.Shared(t, testenv.PG17TS)
	src = bigSource(t, srv)
	dst = testenv.NewDB(t, srv, false)
	unfreezeAtCleanup(t, srv, src)
	proxy := testenv.StartProxy(t, srv)
	held := proxy.HoldAnswerTo(text, 5*time.Minute)
	p := startTsmigrate(t, testenv.Binary(t), "migrate", "--yes", "--jobs", "1", "--freeze-grace", "1s", "--progress", "json", "--json",
		"--pg-bin", srv.ClientBin(), "--source", srv.URI(src), "--target", proxy.URI(t, srv.URI(dst)))
	select {
	case <-held:
	case <-p.done:
		t.Fatalf("tsmigrate ended before it sent a query holding %q\n%s", text, p.stdout.String())
	case <-time.After(3 * time.Minute):
		t.Fatalf("tsmigrate sent no query holding %q", text)
	}
	g := connect(t, srv.SuperURI(dst))
	deadline := time.Now().Add(time.Minute)
	for scalar[int](t, g, cond) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the query held in flight did not get to %s", cond)
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.cmd.Wait()
	for range 100 { // the killed sessions end once the proxy passes on their end
		if scalar[int](t, g, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'tsmigrate'", dst) == 0 {
			return srv, src, dst
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("the killed run's sessions did not end")
	return
}

// SIGKILL of tsmigrate while the last query of a chunk's unit is in flight (its
// indexes, its done mark, COMMIT, and BEGIN and the claim of the next unit, sent
// together): the server committed the unit, tsmigrate never heard it did. --resume
// counts that unit done and copies every other one once; the target equals the source.
func TestStreamKillWithUnitBatchInFlightThenResume(t *testing.T) {
	srv, src, dst := killWithQueryInFlight(t, "COMMIT;\nBEGIN;\n",
		"SELECT count(*) FROM _tsmigrate.units WHERE state = 'done' AND phase = 1")
	g := connect(t, srv.SuperURI(dst))
	done := scalar[int](t, g, "SELECT count(*) FROM _tsmigrate.units WHERE state = 'done'")
	total := scalar[int](t, g, "SELECT count(*) FROM _tsmigrate.units")
	if data := scalar[int](t, g, "SELECT count(*) FROM _tsmigrate.units WHERE state = 'done' AND phase = 1"); data != 1 || done >= total {
		t.Fatalf("killed with %d data units done (%d of %d units), want the one whose answer was held", data, done, total)
	}
	sum, _ := resume(t, srv, src, dst)
	d := sum.Databases[0]
	if d.Data == nil || d.Data.Skipped != done || d.Data.Units+d.Data.Skipped != total || d.Identical == nil || !*d.Identical {
		t.Fatalf("resumed: data %+v (killed with %d of %d done), identical %v", d.Data, done, total, d.Identical)
	}
	assertSumsEqual(t, srv, src, dst)
}

// SIGKILL of tsmigrate while the last query of a batch of small chunks is in flight
// (their indexes and done marks, COMMIT, and BEGIN and the next claim, sent together;
// the second unit's indexes follow the first one's done mark only in a batch): the
// server committed the whole batch, tsmigrate never heard it did. --resume counts
// those chunks done and copies every other unit once; the target equals the source.
func TestStreamKillWithCopyBatchInFlightThenResume(t *testing.T) {
	const chunksDone = "SELECT count(*) FROM _tsmigrate.units WHERE state = 'done' AND phase = 1 AND parent <> ''"
	srv, src, dst := killWithQueryInFlight(t, "';\nSET LOCAL search_path", chunksDone)
	g := connect(t, srv.SuperURI(dst))
	done := scalar[int](t, g, "SELECT count(*) FROM _tsmigrate.units WHERE state = 'done'")
	total := scalar[int](t, g, "SELECT count(*) FROM _tsmigrate.units")
	chunks := scalar[int](t, g, chunksDone)
	if chunks < 2 || done >= total {
		t.Fatalf("killed with %d chunks done (%d of %d units), want the batch whose answer was held", chunks, done, total)
	}
	t.Logf("killed with the %d chunks of a batch done (%d of %d units)", chunks, done, total)
	sum, _ := resume(t, srv, src, dst)
	d := sum.Databases[0]
	if d.Data == nil || d.Data.Skipped != done || d.Data.Units+d.Data.Skipped != total || d.Identical == nil || !*d.Identical {
		t.Fatalf("resumed: data %+v (killed with %d of %d done), identical %v", d.Data, done, total, d.Identical)
	}
	assertSumsEqual(t, srv, src, dst)
}

// SIGKILL of tsmigrate while a batch of the pre-data section is in flight (a hundred
// chunks' CREATE TABLE in one query): the server made those tables, tsmigrate never
// heard it did. --resume restores the section again, and the target equals the source.
func TestStreamKillWithPreDataBatchInFlightThenResume(t *testing.T) {
	srv, src, dst := killWithQueryInFlight(t, "CREATE TABLE _timescaledb_internal._hyper_",
		"SELECT count(*) FROM pg_tables WHERE schemaname = '_timescaledb_internal'")
	g := connect(t, srv.SuperURI(dst))
	if n := scalar[int](t, g, "SELECT count(*) FROM _tsmigrate.steps WHERE name = 'pre-data'"); n != 0 {
		t.Fatal("pre-data is recorded done after the kill")
	}
	sum, errOut := resume(t, srv, src, dst)
	d := sum.Databases[0]
	if d.Identical == nil || !*d.Identical {
		t.Fatalf("resumed: identical %v\n%s", d.Identical, errOut)
	}
	if !strings.Contains(errOut, "restoring the schema again") {
		t.Errorf("the resume did not say it restores pre-data again:\n%s", errOut)
	}
	assertSumsEqual(t, srv, src, dst)
}
