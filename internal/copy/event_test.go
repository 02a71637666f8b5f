package copy

import (
	"testing"
	"time"
)

func TestTrackerLateProgress(t *testing.T) {
	t0 := time.Now()
	a := UnitInfo{ID: "a", EstBytes: 100, EstRows: 10}
	b := UnitInfo{ID: "b", EstBytes: 300, EstRows: 30}
	tr := NewTracker()
	for _, e := range []Event{
		{Type: Planned, Time: t0, Units: []UnitInfo{a, b}},
		{Type: Started, Time: t0, Unit: &a},
		{Type: Started, Time: t0, Unit: &b},
		{Type: Done, Time: t0.Add(time.Second), Unit: &a, Rows: 10, Bytes: 1000},
		{Type: Progress, Time: t0.Add(time.Second), Unit: &a, Rows: 9, Bytes: 900}, // sent before Done, delivered after
		{Type: Progress, Time: t0.Add(time.Second), Unit: &b, Rows: 15, Bytes: 1500},
	} {
		tr.Observe(e)
	}
	s := tr.Totals(t0.Add(2 * time.Second))
	if s.Units != 2 || s.Done != 1 || s.Running != 1 || s.Rows != 25 || s.Bytes != 2500 {
		t.Fatalf("totals %+v", s)
	}
	// a (weight 100) done, b (weight 300) half: 250 of 400; 2 s for 0.625 leaves 1.2 s.
	if s.Fraction != 0.625 || s.ETA != 1200*time.Millisecond || s.BytesPerSec != 1250 {
		t.Fatalf("fraction %v, ETA %v, rate %v", s.Fraction, s.ETA, s.BytesPerSec)
	}
}
