package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

func liveEvent(stage string, lag int64) migrate.Event {
	return migrate.Event{Type: migrate.EventLive, Live: &migrate.LiveProgress{Stage: stage, LagBytes: lag, LagSeconds: 0.8,
		ApplyRowsPerSec: 18400, ETA: 2 * time.Second, RetainedBytes: 3250586, RowsApplied: 52000}}
}

func TestLiveLine(t *testing.T) {
	e := liveEvent("catch-up", 1258291)
	if got, want := liveLine("", e.Live), "live: catch-up  lag 1.2 MB / 0.8 s  applying 18 400 rows/s  ETA 2s  WAL held 3.1 MB"; got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	copying := &migrate.LiveProgress{Stage: "copy", LagBytes: 5 << 20, LagSeconds: 12.34, RetainedBytes: 1 << 20}
	if got, want := liveLine("app", copying), "live [app]: copy      lag 5.0 MB / 12.3 s  WAL held 1.0 MB"; got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1 000", 1234567: "1 234 567", -4500: "-4 500"} {
		if got := groupDigits(n); got != want {
			t.Errorf("groupDigits(%d) = %q, want %q", n, got, want)
		}
	}
}

// Plain lines: one when the stage changes, else one every plainEvery at most.
func TestLiveViewPlain(t *testing.T) {
	var buf bytes.Buffer
	v := newLiveView(progressPlain, &buf)
	v.event(liveEvent("copy", 100))
	v.event(liveEvent("copy", 200))
	v.event(liveEvent("catch-up", 300))
	v.print(func() { buf.WriteString("    a note\n") })
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "live: copy      lag 100 B") || !strings.HasPrefix(lines[1], "live: catch-up  lag 300 B") ||
		lines[2] != "    a note" || strings.Contains(buf.String(), "\x1b") {
		t.Errorf("plain output:\n%s", buf.String())
	}
}

// --progress json: the events, each a JSON line, and nothing else.
func TestLiveViewJSON(t *testing.T) {
	var buf bytes.Buffer
	v := newLiveView(progressJSON, &buf)
	v.event(liveEvent("copy", 100))
	v.event(liveEvent("catch-up", 300))
	sc := bufio.NewScanner(&buf)
	n := 0
	for sc.Scan() {
		var m struct {
			Type string         `json:"type"`
			Live map[string]any `json:"live"`
		}
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not a JSON line: %q: %v", sc.Text(), err)
		}
		if m.Type != "live" || m.Live["lag_bytes"] == nil || m.Live["stage"] == nil || m.Live["retained_bytes"] == nil {
			t.Errorf("line %q", sc.Text())
		}
		n++
	}
	if n != 2 {
		t.Errorf("%d lines for 2 events", n)
	}
}

// On a terminal the line is redrawn in place, under the other lines printed.
func TestLiveViewBars(t *testing.T) {
	var buf bytes.Buffer
	v := newLiveView(progressBars, &buf)
	v.event(liveEvent("copy", 100))
	v.event(liveEvent("copy", 200))
	v.print(func() { buf.WriteString("    a note\n") })
	want := "live: copy      lag 100 B / 0.8 s  applying 18 400 rows/s  ETA 2s  WAL held 3.1 MB\n" +
		"\x1b[1A\x1b[2K" + "live: copy      lag 200 B / 0.8 s  applying 18 400 rows/s  ETA 2s  WAL held 3.1 MB\n" +
		"\x1b[1A\x1b[2K" + "    a note\n" + "live: copy      lag 200 B / 0.8 s  applying 18 400 rows/s  ETA 2s  WAL held 3.1 MB\n"
	if buf.String() != want {
		t.Errorf("got  %q\nwant %q", buf.String(), want)
	}
}

// While the copy's bars run, the live line is one of them; they end without waiting
// for it.
func TestLiveViewInCopyBars(t *testing.T) {
	buf := &lockedBuffer{}
	v := newLiveView(progressBars, buf)
	b := newBarProgress(buf)
	v.copyBars(b)
	for _, e := range events()[:len(events())-1] {
		b.event(e)
		v.event(liveEvent("copy", 4096))
	}
	testenv.Eventually(t, 10*time.Second, func() error { // the bars drawn with the live line
		if !strings.Contains(buf.String(), "live: copy      lag 4.0 KB") {
			return errors.New("no live line among the bars yet")
		}
		return nil
	})
	b.event(events()[len(events())-1])
	v.copyBars(nil)
	ended := make(chan struct{})
	go func() { b.done(); close(ended) }()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the copy's bars did not end")
	}
	if out := buf.String(); !strings.Contains(out, "live: copy      lag 4.0 KB") || !strings.Contains(out, "2/2 units") {
		t.Errorf("bars output: %q", out)
	}
	v.event(liveEvent("catch-up", 100))
	if !strings.HasSuffix(buf.String(), "live: catch-up  lag 100 B / 0.8 s  applying 18 400 rows/s  ETA 2s  WAL held 3.1 MB\n") {
		t.Errorf("after the copy's bars, the live line is not drawn: %q", buf.String())
	}
}

// The cut-over question: y or yes cuts over; anything else or the end of the input
// aborts; only the answer's line is read.
func TestConfirmCutover(t *testing.T) {
	for _, c := range []struct {
		input, err string
	}{
		{"y\n", ""}, {"YES\nmore input", ""}, {" yes \n", ""},
		{"n\n", `the answer was "n", not y or yes`},
		{"\n", `the answer was ""`},
		{"", "no answer: EOF"},
		{"maybe", `the answer was "maybe"`},
	} {
		var errb bytes.Buffer
		in := strings.NewReader(c.input)
		a := &app{stdin: in, stderr: &errb, stdout: &bytes.Buffer{}}
		v := newLiveView(progressPlain, &errb)
		v.event(liveEvent("catch-up", 1258291))
		err := a.confirmCutover(context.Background(), v, "app@db.example:5432/app")
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%q: %v", c.input, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%q: %v, want %q", c.input, err, c.err)
		}
		if q := "lag is 1.2 MB / 0.8 s; cut over now? this freezes writes on app@db.example:5432/app [y/N]\n"; !strings.Contains(errb.String(), q) {
			t.Errorf("%q: asked %q, want %q", c.input, errb.String(), q)
		}
		if c.input == "YES\nmore input" && in.Len() != len("more input") {
			t.Errorf("read past the answer's line: %d bytes left", in.Len())
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	blocked := &blockingReader{}
	a := &app{stdin: blocked, stderr: &bytes.Buffer{}}
	if err := a.confirmCutover(ctx, newLiveView(progressPlain, a.stderr), "s"); err != context.Canceled {
		t.Errorf("ctx cancelled while waiting: %v", err)
	}
}

// lockedBuffer is a buffer that mpb's goroutine writes while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// blockingReader never returns.
type blockingReader struct{}

func (blockingReader) Read([]byte) (int, error) { select {} }

// The question shows under the live line; a redraw while it waits leaves the cursor
// where the answer is typed.
func TestLiveViewQuestion(t *testing.T) {
	var buf bytes.Buffer
	v := newLiveView(progressBars, &buf)
	v.event(liveEvent("catch-up", 100))
	a := &app{stdin: strings.NewReader("y\n"), stderr: &buf}
	hold := make(chan struct{})
	a.stdin = &gatedReader{gate: hold, r: strings.NewReader("y\n")}
	done := make(chan error, 1)
	go func() { done <- a.confirmCutover(context.Background(), v, "src") }()
	testenv.Eventually(t, 10*time.Second, func() error {
		if !strings.Contains(safeString(v, &buf), "[y/N] ") {
			return errors.New("not asked")
		}
		return nil
	})
	v.event(liveEvent("catch-up", 200))
	close(hold)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	line := func(lag string) string {
		return "live: catch-up  lag " + lag + " / 0.8 s  applying 18 400 rows/s  ETA 2s  WAL held 3.1 MB"
	}
	want := line("100 B") + "\n" + "\x1b[1A\x1b[2K" + line("100 B") + "\n" + "lag is 100 B / 0.8 s; cut over now? this freezes writes on src [y/N] " +
		"\x1b7\r\x1b[1A\x1b[2K" + line("200 B") + "\n\x1b8"
	if got := safeString(v, &buf); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	v.event(liveEvent("cut-over", 0))
	if got := safeString(v, &buf); !strings.HasSuffix(got, "\x1b8"+strings.Replace(line("0 B"), "catch-up", "cut-over", 1)+"\n") {
		t.Errorf("after the answer, the line is not drawn afresh under the question: %q", got)
	}
}

// gatedReader reads from r once gate is closed.
type gatedReader struct {
	gate chan struct{}
	r    io.Reader
}

func (g *gatedReader) Read(p []byte) (int, error) {
	<-g.gate
	return g.r.Read(p)
}

// safeString reads buf under v's lock, which guards the writes to it.
func safeString(v *liveView, buf *bytes.Buffer) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return buf.String()
}
