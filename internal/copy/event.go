package copy

import (
	"time"
)

// EventType says what happened.
type EventType string

const (
	// Planned: the units of the run are known. Units lists those still to copy;
	// Skipped counts those done by an earlier run.
	Planned EventType = "planned"
	// Started, Progress, Done, Retry: one unit. Rows and Bytes are what passed so far.
	Started  EventType = "started"
	Progress EventType = "progress"
	Done     EventType = "done"
	Retry    EventType = "retry"
	// Failed: a unit failed for good; Err says why. The run stops.
	Failed EventType = "failed"
	// TableDone: every unit of a table is done (of a hypertable: every chunk), so
	// its indexes and constraints may be built. Relation names it. Sent only for
	// tables whose units this process saw pending when it started.
	TableDone EventType = "table-done"
	// SnapshotRenewed: the run's snapshot was gone and a new one was exported
	// (Options.RenewSnapshot); Attempt counts the renewals, Err says why the old one
	// could not be imported. It counts as a retry.
	SnapshotRenewed EventType = "snapshot-renewed"
	// Stalled: no byte moved for Quiet while Units were copying rows (not building
	// indexes): a connection may be stalled (a network that stopped passing packets),
	// or a server very slow. Sent again at every further multiple of
	// Options.StallAfter while it lasts; the first Progress that moves bytes ends it.
	Stalled EventType = "stalled"
	// JobsChosen: the run chose how many units it copies at once (Options.Jobs 0):
	// Jobs, and Why in words.
	JobsChosen EventType = "jobs-chosen"
	// Finished: the data phase ended well.
	Finished EventType = "finished"
)

// UnitInfo describes a unit in events.
type UnitInfo struct {
	ID       string `json:"id"`
	Kind     string `json:"kind"`
	Relation string `json:"relation,omitempty"`
	EstBytes int64  `json:"est_bytes"`
	EstRows  int64  `json:"est_rows"`
}

// Event is one thing that happened in a run. OnEvent receives events one at a time.
type Event struct {
	Type    EventType  `json:"type"`
	Time    time.Time  `json:"time"`
	Unit    *UnitInfo  `json:"unit,omitempty"`
	Units   []UnitInfo `json:"units,omitempty"`
	Skipped int        `json:"skipped,omitempty"`
	// Relation of a TableDone event.
	Relation string `json:"relation,omitempty"`
	Rows     int64  `json:"rows,omitempty"`
	Bytes    int64  `json:"bytes,omitempty"`
	Attempt  int    `json:"attempt,omitempty"`
	Err      string `json:"error,omitempty"`
	// Quiet: how long no byte moved (Stalled).
	Quiet time.Duration `json:"quiet_ns,omitempty"`
	// Jobs and Why of a JobsChosen event.
	Jobs int    `json:"jobs,omitempty"`
	Why  string `json:"why,omitempty"`
}

// Tracker folds events into totals, throughput and an ETA. It is not safe for
// concurrent use; feed it from OnEvent. Its cost per event does not grow with the
// number of units, only with the number running.
type Tracker struct {
	start            time.Time
	done             map[string]bool     // every unit seen: true once done
	running          map[string]*tracked // units being copied
	total, doneUnits int
	skipped          int
	weight           float64 // sum of unit weights
	doneWeight       float64 // weights of finished units
	rows, bytes      int64   // of finished units
	retries          int
}

type tracked struct {
	info        UnitInfo
	rows, bytes int64
}

// Totals is the state of a run as the events told it.
type Totals struct {
	Units, Done, Running, Skipped int
	Retries                       int
	Rows, Bytes                   int64   // copied so far, running units included
	Fraction                      float64 // 0..1, weighted by the units' estimated sizes
	Elapsed                       time.Duration
	BytesPerSec, RowsPerSec       float64
	ETA                           time.Duration // 0 when unknown
}

// NewTracker is an empty tracker.
func NewTracker() *Tracker {
	return &Tracker{done: map[string]bool{}, running: map[string]*tracked{}}
}

func weight(u UnitInfo) float64 {
	if u.EstBytes > 0 {
		return float64(u.EstBytes)
	}
	return 8192
}

// Observe takes one event.
func (t *Tracker) Observe(e Event) {
	switch e.Type {
	case Planned:
		t.start = e.Time
		t.skipped = e.Skipped
		for _, u := range e.Units {
			t.know(u)
		}
	case Started, Progress, Retry:
		if e.Unit == nil || t.done[e.Unit.ID] { // a Progress event may trail its unit's Done
			break
		}
		t.know(*e.Unit)
		u := t.running[e.Unit.ID]
		if u == nil {
			u = &tracked{info: *e.Unit}
			t.running[e.Unit.ID] = u
		}
		u.rows, u.bytes = e.Rows, e.Bytes
		if e.Type == Retry {
			t.retries++
			delete(t.running, e.Unit.ID)
		}
	case SnapshotRenewed:
		t.retries++
	case Done:
		if e.Unit == nil || t.done[e.Unit.ID] {
			break
		}
		t.know(*e.Unit)
		delete(t.running, e.Unit.ID)
		t.done[e.Unit.ID] = true
		t.doneUnits++
		t.doneWeight += weight(*e.Unit)
		t.rows += e.Rows
		t.bytes += e.Bytes
	}
}

// know counts a unit in the totals once (including one planned by another process
// after this one started).
func (t *Tracker) know(u UnitInfo) {
	if _, seen := t.done[u.ID]; seen {
		return
	}
	t.done[u.ID] = false
	t.total++
	t.weight += weight(u)
}

// Totals computes the totals at now.
func (t *Tracker) Totals(now time.Time) Totals {
	s := Totals{Units: t.total, Done: t.doneUnits, Skipped: t.skipped, Retries: t.retries, Rows: t.rows, Bytes: t.bytes}
	w := t.doneWeight
	for _, u := range t.running {
		s.Running++
		s.Rows += u.rows
		s.Bytes += u.bytes
		if u.info.EstRows > 0 {
			f := float64(u.rows) / float64(u.info.EstRows)
			if f > 0.99 {
				f = 0.99
			}
			w += f * weight(u.info)
		}
	}
	switch {
	case t.total == 0 || t.doneUnits == t.total:
		s.Fraction = 1
	case t.weight > 0:
		s.Fraction = w / t.weight
	}
	if !t.start.IsZero() {
		s.Elapsed = now.Sub(t.start)
	}
	if secs := s.Elapsed.Seconds(); secs > 0 {
		s.BytesPerSec = float64(s.Bytes) / secs
		s.RowsPerSec = float64(s.Rows) / secs
		if s.Fraction > 0 && s.Fraction < 1 {
			s.ETA = time.Duration(float64(s.Elapsed) * (1 - s.Fraction) / s.Fraction)
		}
	}
	return s
}
