package main

import (
	"math"
	"strings"
	"testing"
	"time"
)

// The catch-up rate counts every row the writer wrote up to the hypertable rows the
// target holds, from the last sample before applying began to the first at which the
// target was caught up.
func TestCatchUpRate(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	// The writer: a transaction every 20 ms of 6 inserts among 10 rows, for 10 s.
	w := &writerStats{}
	for i := 1; i <= 500; i++ {
		w.ledger = append(w.ledger, ledgerEntry{at: t0.Add(time.Duration(i) * 20 * time.Millisecond), inserts: int64(6 * i), rows: int64(10 * i)})
	}
	// The target, sampled every half second: none of the writer's rows until 4 s (the
	// copy), then 600 inserts a second until it has all 3 000 at 9 s.
	s := &sampler{}
	for i := 0; i <= 20; i++ {
		at := t0.Add(time.Duration(i) * 500 * time.Millisecond)
		applied := int64(0)
		if at.After(t0.Add(4 * time.Second)) {
			applied = min(3000, int64(at.Sub(t0.Add(4*time.Second)).Seconds()*600))
		}
		// The newest row the target holds was written when the writer had written that many.
		newest := t0
		if applied > 0 {
			newest = t0.Add(time.Duration(applied/6) * 20 * time.Millisecond)
		}
		s.samples = append(s.samples, liveSample{at: at, applied: applied, newest: newest})
	}
	var f liveFigures
	s.figures(&f, w, t0, time.Time{}, t0.Add(4*time.Second))
	if math.Abs(f.CatchUpRate-1000) > 1 {
		t.Errorf("catch-up rate %.1f rows/s, want 1000 (600 inserts a second, 6 of every 10 rows)", f.CatchUpRate)
	}
	if got := w.rowsAtInserts(3000); got != 5000 {
		t.Errorf("rows at 3000 inserts: %d, want 5000", got)
	}
	if got := w.rowsAtInserts(1_000_000); got != 5000 {
		t.Errorf("rows past the last insert: %d, want all 5000", got)
	}
}

func TestCheckLiveFlags(t *testing.T) {
	for _, c := range []struct {
		chunks, rounds, rate int
		link, want           string
	}{
		{0, 1, 500, "", ""},
		{10, 1, 500, "", "-chunks"},
		{0, 1, 500, "10ms,200", "-link"},
		{0, 3, 500, "", "once"},
		{0, 1, 0, "", "-writer-rate 0"},
	} {
		err := checkLiveFlags(c.chunks, c.link, c.rounds, c.rate)
		if (err == nil) != (c.want == "") || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("checkLiveFlags(%d, %q, %d, %d) = %v, want %q", c.chunks, c.link, c.rounds, c.rate, err, c.want)
		}
	}
}
