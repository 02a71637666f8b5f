package migrate_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/tsmigrate/tsmigrate/internal/cli"
	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// watchWriter keeps what is written to it and calls on once, when it first holds want.
type watchWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	on   func()
}

func (w *watchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if w.on != nil && strings.Contains(w.buf.String(), w.want) {
		w.on()
		w.on = nil
	}
	return len(p), nil
}

// The source's connections are cut mid-COPY, every one of them at once, the one that
// holds the exported snapshot included: the units are retried, the snapshot renewed
// under the freeze (whose proof then covers the whole copy), and the run ends with
// exit 0 and every table and chunk equal.
func TestStreamSurvivesCutSourceConnections(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src := bigSource(t, srv)
	dst := testenv.NewDB(t, srv, false)
	unfreezeAtCleanup(t, srv, src)
	proxy := testenv.StartProxy(t, srv)
	// Armed when the data phase starts, and only a COPY carries megabytes on one
	// connection: the cut falls in the middle of a COPY.
	stderr := &watchWriter{want: "==> copy", on: func() { proxy.CutAllAfter(2 << 20) }}
	var stdout bytes.Buffer
	code := cli.Run(context.Background(), []string{"migrate", "--engine", "stream", "--jobs", "2", "--yes", "--freeze-grace", "1s",
		"--progress", "plain", "--json", "--pg-bin", srv.ClientBin(),
		"--source", proxy.URI(t, srv.URI(src)), "--target", srv.URI(dst)}, strings.NewReader(""), &stdout, stderr)
	out, errOut := stdout.String(), stderr.buf.String()
	t.Logf("progress:\n%s", errOut)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	// The holder of the snapshot and the two workers' source connections at least.
	if proxy.Cuts() < 3 {
		t.Fatalf("%d connections cut, want every open one (3 or more)", proxy.Cuts())
	}
	var sum migrate.Summary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatal(err)
	}
	d := sum.Databases[0]
	if sum.Outcome != migrate.OutcomeMigrated || d.Data == nil || d.Data.Retries < 1 || d.Data.SnapshotRenewals < 1 || d.FreezeProof == nil {
		t.Fatalf("summary %+v, data %+v", sum, d.Data)
	}
	if d.Identical == nil || !*d.Identical {
		t.Fatalf("verify did not find the databases identical: %+v", d)
	}
	for _, tr := range d.Tables {
		if tr.Source != tr.Target || tr.SourceChunks != tr.TargetChunks {
			t.Errorf("%s %s: %d rows in %d chunks on the source, %d in %d on the target", tr.Kind, tr.Name, tr.Source, tr.SourceChunks, tr.Target, tr.TargetChunks)
		}
	}
	if !strings.Contains(errOut, "the source snapshot was lost") {
		t.Errorf("the progress lines do not tell of the renewed snapshot")
	}
	assertSumsEqual(t, srv, src, dst)
	if code, vout, verr := runCLI(t, "verify", "--source", srv.URI(src), "--target", srv.URI(dst), "--jobs", "2"); code != 0 {
		t.Fatalf("tsmigrate verify: exit %d\n%s\n%s", code, vout, verr)
	}
}
