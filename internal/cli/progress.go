package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/tsmigrate/tsmigrate/internal/copy"
	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/preflight"
)

// Progress modes of --progress.
const (
	progressAuto  = "auto"  // bars on a terminal, plain lines otherwise
	progressBars  = "bars"  // bars, whatever w is
	progressPlain = "plain" // a line every plainEvery, and on retries and failures
	progressJSON  = "json"  // every event as a JSON line, with the run's totals
)

// plainEvery is how often plain mode prints a status line.
const plainEvery = 10 * time.Second

// progressModes is the help text of --progress.
const progressModes = "progress display: auto (bars on a terminal, plain lines otherwise), bars, plain, json (one JSON object per line); with --live also the lag, apply rate, ETA and WAL held on the source (in json, the live events)"

// newProgress renders the data phase's events on w as mode says. Pass on as
// copy.Options.OnEvent and call done when the run returns, before printing anything
// else on w.
func newProgress(mode string, w io.Writer) (on func(copy.Event), done func(), err error) {
	switch mode = progressMode(mode, w); mode {
	case progressBars:
		b := newBarProgress(w)
		return b.event, b.done, nil
	case progressPlain:
		p := &plainProgress{w: w, t: copy.NewTracker()}
		return p.event, func() {}, nil
	case progressJSON:
		j := &jsonProgress{enc: json.NewEncoder(w), t: copy.NewTracker()}
		return j.event, func() {}, nil
	}
	return nil, nil, exit.Usagef("use auto, bars, plain or json", "unknown --progress mode %q", mode)
}

// progressMode is the mode that draws on w: auto is bars on a terminal, plain
// otherwise.
func progressMode(mode string, w io.Writer) string {
	if mode == progressAuto || mode == "" {
		mode = progressPlain
		if isTerminal(w) {
			mode = progressBars
		}
	}
	return mode
}

// progressLine is one line of totals: units, rows, bytes, throughput, ETA.
func progressLine(s copy.Totals) string {
	line := fmt.Sprintf("%d/%d units, %s rows, %s, %s/s", s.Done, s.Units, humanCount(s.Rows), preflight.HumanBytes(s.Bytes),
		preflight.HumanBytes(int64(s.BytesPerSec)))
	if s.Retries > 0 {
		line += fmt.Sprintf(", %d retries", s.Retries)
	}
	if eta := s.ETA.Round(time.Second); eta > 0 {
		line += ", ETA " + eta.String()
	}
	return line
}

func humanCount(n int64) string {
	switch {
	case n >= 10_000_000:
		return fmt.Sprintf("%.0fM", float64(n)/1e6)
	case n >= 1_000_000:
		return fmt.Sprintf("%.1fM", float64(n)/1e6)
	case n >= 10_000:
		return fmt.Sprintf("%.0fk", float64(n)/1e3)
	}
	return fmt.Sprint(n)
}

// plainProgress prints a status line every plainEvery, and a line for each retry,
// failure, and the end.
type plainProgress struct {
	w    io.Writer
	t    *copy.Tracker
	last time.Time
}

func (p *plainProgress) event(e copy.Event) {
	p.t.Observe(e)
	switch e.Type {
	case copy.Planned:
		fmt.Fprintf(p.w, "copy: %d units to copy", len(e.Units))
		if e.Skipped > 0 {
			fmt.Fprintf(p.w, " (%d done by an earlier run)", e.Skipped)
		}
		fmt.Fprintln(p.w)
		p.last = e.Time
	case copy.Retry:
		fmt.Fprintf(p.w, "copy: %s: attempt %d failed, retrying: %s\n", copyUnitName(e.Unit), e.Attempt, e.Err)
	case copy.Failed:
		fmt.Fprintf(p.w, "copy: %s failed: %s\n", copyUnitName(e.Unit), e.Err)
	case copy.SnapshotRenewed:
		fmt.Fprintln(p.w, "copy: "+renewedLine(e))
	case copy.Stalled:
		fmt.Fprintln(p.w, "copy: "+stalledLine(e))
	case copy.JobsChosen:
		fmt.Fprintln(p.w, "copy: "+jobsLine(e))
	case copy.Finished:
		fmt.Fprintf(p.w, "copy: done: %s in %s\n", progressLine(p.t.Totals(e.Time)), p.t.Totals(e.Time).Elapsed.Round(100*time.Millisecond))
	default:
		if e.Time.Sub(p.last) >= plainEvery {
			p.last = e.Time
			fmt.Fprintf(p.w, "copy: %s\n", progressLine(p.t.Totals(e.Time)))
		}
	}
}

func copyUnitName(u *copy.UnitInfo) string {
	if u == nil {
		return "extension configuration tables"
	}
	return u.ID
}

// jsonProgress writes each event as a JSON line, with the totals so far.
type jsonProgress struct {
	enc *json.Encoder
	t   *copy.Tracker
}

type jsonTotals struct {
	Units       int     `json:"units"`
	Done        int     `json:"done"`
	Running     int     `json:"running"`
	Skipped     int     `json:"skipped"`
	Retries     int     `json:"retries"`
	Rows        int64   `json:"rows"`
	Bytes       int64   `json:"bytes"`
	Fraction    float64 `json:"fraction"`
	ElapsedSec  float64 `json:"elapsed_s"`
	BytesPerSec float64 `json:"bytes_per_s"`
	RowsPerSec  float64 `json:"rows_per_s"`
	ETASec      float64 `json:"eta_s,omitempty"`
}

func (j *jsonProgress) event(e copy.Event) {
	j.t.Observe(e)
	s := j.t.Totals(e.Time)
	j.enc.Encode(struct {
		copy.Event
		Totals jsonTotals `json:"totals"`
	}{e, jsonTotals{Units: s.Units, Done: s.Done, Running: s.Running, Skipped: s.Skipped, Retries: s.Retries,
		Rows: s.Rows, Bytes: s.Bytes, Fraction: s.Fraction, ElapsedSec: s.Elapsed.Seconds(),
		BytesPerSec: s.BytesPerSec, RowsPerSec: s.RowsPerSec, ETASec: s.ETA.Seconds()}})
}

// barProgress draws a bar for the whole run and one per running unit.
type barProgress struct {
	p     *mpb.Progress
	mu    sync.Mutex // guards t, read by the render goroutine
	t     *copy.Tracker
	total *mpb.Bar
	units map[string]*unitBar
}

type unitBar struct {
	bar   *mpb.Bar
	total int64
}

const barScale = 1000 // the total bar counts thousandths of the weighted work

func newBarProgress(w io.Writer) *barProgress {
	b := &barProgress{t: copy.NewTracker(), units: map[string]*unitBar{}}
	b.p = mpb.New(mpb.WithOutput(w), mpb.WithAutoRefresh(), mpb.WithWidth(160), mpb.WithRefreshRate(200*time.Millisecond))
	b.total = b.p.AddBar(barScale, mpb.BarWidth(30),
		mpb.BarPriority(-1),
		mpb.PrependDecorators(decor.Name("copy ", decor.WC{W: 30, C: decor.DindentRight}), decor.Percentage(decor.WC{W: 5})),
		mpb.AppendDecorators(decor.Any(func(decor.Statistics) string {
			b.mu.Lock()
			defer b.mu.Unlock()
			return progressLine(b.t.Totals(time.Now()))
		})))
	return b
}

func (b *barProgress) event(e copy.Event) {
	b.mu.Lock()
	b.t.Observe(e)
	frac := b.t.Totals(time.Now()).Fraction
	b.mu.Unlock()
	if e.Type != copy.Finished {
		b.total.SetCurrent(min(int64(frac*barScale), barScale-1))
	}
	switch e.Type {
	case copy.Started:
		total := max(e.Unit.EstRows, 1)
		b.units[e.Unit.ID] = &unitBar{total: total, bar: b.p.AddBar(total, mpb.BarWidth(30), mpb.BarRemoveOnComplete(),
			mpb.PrependDecorators(decor.Name(shortenLeft(e.Unit.ID, 30), decor.WC{W: 30, C: decor.DindentRight}),
				decor.Percentage(decor.WC{W: 5})),
			mpb.AppendDecorators(decor.CountersNoUnit("%d / %d rows")))}
	case copy.Progress:
		if u := b.units[e.Unit.ID]; u != nil {
			if e.Rows >= u.total {
				// the row estimate was short: keep the bar running rather than complete it
				u.total = e.Rows + e.Rows/10 + 1
				u.bar.SetTotal(u.total, false)
			}
			u.bar.SetCurrent(e.Rows)
		}
	case copy.Done:
		if u := b.units[e.Unit.ID]; u != nil {
			u.bar.SetTotal(-1, true)
			delete(b.units, e.Unit.ID)
		}
	case copy.Retry, copy.Failed:
		if e.Unit != nil {
			if u := b.units[e.Unit.ID]; u != nil {
				u.bar.Abort(true)
				delete(b.units, e.Unit.ID)
			}
		}
		b.p.Write([]byte(fmt.Sprintf("%s: %s (attempt %d)\n", copyUnitName(e.Unit), e.Err, e.Attempt)))
	case copy.SnapshotRenewed:
		b.p.Write([]byte(renewedLine(e) + "\n"))
	case copy.Stalled:
		b.p.Write([]byte(stalledLine(e) + "\n"))
	case copy.JobsChosen:
		b.p.Write([]byte(jobsLine(e) + "\n"))
	case copy.Finished:
		b.total.SetTotal(-1, true)
	}
}

// jobsLine tells of a JobsChosen event.
func jobsLine(e copy.Event) string {
	return fmt.Sprintf("%d units at once (--jobs auto): %s", e.Jobs, e.Why)
}

// stalledLine tells of a Stalled event.
func stalledLine(e copy.Event) string {
	names := make([]string, 0, 3)
	for i, u := range e.Units {
		if i == 3 {
			names = append(names, fmt.Sprintf("%d more", len(e.Units)-3))
			break
		}
		names = append(names, u.ID)
	}
	return fmt.Sprintf("no byte moved for %s while copying %s: a connection may be stalled, or a server slow (a dead connection is noticed within about %s by TCP keepalives, and its unit retried)",
		e.Quiet.Round(time.Second), strings.Join(names, ", "),
		dbconn.DefaultKeepalivesIdle+time.Duration(dbconn.DefaultKeepalivesCount)*dbconn.DefaultKeepalivesInterval)
}

// renewedLine tells of a SnapshotRenewed event.
func renewedLine(e copy.Event) string {
	return fmt.Sprintf("the source snapshot was lost (%s); took a new one under the freeze (renewal %d)", e.Err, e.Attempt)
}

func shortenLeft(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return "…" + string(r[len(r)-n+1:])
}

// done ends the display: bars still running (a failed run) are dropped.
func (b *barProgress) done() {
	for id, u := range b.units {
		u.bar.Abort(true)
		delete(b.units, id)
	}
	if !b.total.Completed() {
		b.total.Abort(false)
	}
	b.p.Wait()
}
