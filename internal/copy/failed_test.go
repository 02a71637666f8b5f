package copy

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/journal"
)

// A unit whose copy failed is handed back (rolled back) before its failure is counted,
// and another worker may claim it in between. That worker's running entry (which its
// progress events report) stays, and whether to try again counts the failed try, not
// the other worker's: before, the failure forgot the other worker's entry and read its
// attempt as its own, giving up a try early (here: no retry where one was due).
func TestFailedUnitLeavesAnotherWorkersClaim(t *testing.T) {
	var events []Event
	r := &run{opts: Options{MaxRetries: 1, RetryBackoff: time.Millisecond, OnEvent: func(e Event) { events = append(events, e) }},
		live: map[string]*live{}, attempts: map[string]int{}, remaining: map[string]int{}}
	u := &journal.Unit{ID: "u1", Phase: journal.PhaseData, Kind: journal.KindTable, Schema: "public", Table: "t"}
	first := r.begin(u)
	second := r.begin(u) // the other worker, once the first handed the unit back
	if err := r.failed(context.Background(), first, io.ErrUnexpectedEOF); err != nil {
		t.Fatalf("the first try's failure: %v; want a retry (1 try of 1 + MaxRetries 1)", err)
	}
	if r.live["u1"] != second {
		t.Fatal("the other worker's running entry was forgotten")
	}
	var retry *Event
	for i := range events {
		if events[i].Type == Retry {
			retry = &events[i]
		}
	}
	if retry == nil || retry.Attempt != 1 {
		t.Fatalf("events %+v; want a Retry of attempt 1", events)
	}
}
