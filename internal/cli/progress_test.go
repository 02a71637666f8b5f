package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/copy"
)

// events is a small run: two units, one retried, both done.
func events() []copy.Event {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a := copy.UnitInfo{ID: "table public.a", Kind: "table", Relation: "public.a", EstBytes: 1000, EstRows: 100}
	b := copy.UnitInfo{ID: "table public.b", Kind: "table", Relation: "public.b", EstBytes: 3000, EstRows: 300}
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	return []copy.Event{
		{Type: copy.Planned, Time: at(0), Units: []copy.UnitInfo{a, b}, Skipped: 1},
		{Type: copy.Started, Time: at(0), Unit: &a, Attempt: 1},
		{Type: copy.Started, Time: at(0), Unit: &b, Attempt: 1},
		{Type: copy.Progress, Time: at(1), Unit: &b, Rows: 150, Bytes: 1500},
		{Type: copy.Retry, Time: at(2), Unit: &a, Attempt: 1, Err: "copy table public.a: source: unexpected EOF"},
		{Type: copy.Started, Time: at(3), Unit: &a, Attempt: 2},
		{Type: copy.Done, Time: at(4), Unit: &a, Rows: 100, Bytes: 1000},
		{Type: copy.Progress, Time: at(12), Unit: &b, Rows: 600, Bytes: 6000},
		{Type: copy.Done, Time: at(13), Unit: &b, Rows: 700, Bytes: 7000},
		{Type: copy.Finished, Time: at(13), Rows: 800, Bytes: 8000},
	}
}

// render feeds events() to a display of mode and returns what it wrote.
func render(t *testing.T, mode string) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	on, done, err := newProgress(mode, &buf)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events() {
		on(e)
	}
	done()
	return &buf
}

func TestProgressPlain(t *testing.T) {
	got := render(t, "plain").String()
	for _, want := range []string{
		"copy: 2 units to copy (1 done by an earlier run)\n",
		"copy: table public.a: attempt 1 failed, retrying: copy table public.a: source: unexpected EOF\n",
		"copy: 1/2 units, 700 rows, 6.8 KB, 583 B/s, 1 retries\n", // the 10 s status line, b still running
		"copy: done: 2/2 units, 800 rows, 7.8 KB, 615 B/s, 1 retries in 13s\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("plain output lacks %q:\n%s", want, got)
		}
	}
}

func TestProgressJSON(t *testing.T) {
	sc := bufio.NewScanner(render(t, "json"))
	var lines []map[string]any
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not a JSON line: %q: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	if len(lines) != len(events()) {
		t.Fatalf("%d lines for %d events", len(lines), len(events()))
	}
	last := lines[len(lines)-1]
	tot := last["totals"].(map[string]any)
	if last["type"] != "finished" || tot["done"] != 2.0 || tot["fraction"] != 1.0 || tot["retries"] != 1.0 {
		t.Errorf("last line %v", last)
	}
	mid := lines[7]["totals"].(map[string]any) // b at 600 of 300 estimated rows, a done
	if eta, ok := mid["eta_s"].(float64); !ok || eta <= 0 {
		t.Errorf("no ETA while running: %v", mid)
	}
}

func TestProgressBars(t *testing.T) {
	out := render(t, "bars").String()
	if !strings.Contains(out, "copy") || !strings.Contains(out, "2/2 units") {
		t.Errorf("bars output: %q", out)
	}
}

func TestProgressUnknownMode(t *testing.T) {
	if _, _, err := newProgress("fancy", &bytes.Buffer{}); err == nil {
		t.Fatal("want an error for an unknown mode")
	}
}
