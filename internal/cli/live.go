package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"

	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/preflight"
)

// liveView draws a live run's progress (migrate.EventLive) on w, as --progress says:
//   - bars (a terminal): one line per database, redrawn in place at the bottom, under
//     the other lines the run prints; while the copy's bars run, among them; while the
//     cut-over question waits for an answer, above it, the cursor left where the
//     answer is typed;
//   - plain: a line when the stage changes and every plainEvery;
//   - json: each event as a JSON line, and nothing else.
type liveView struct {
	mode string
	w    io.Writer
	enc  *json.Encoder

	mu    sync.Mutex
	dbs   []string // in the order of their first event
	last  map[string]*migrate.LiveProgress
	line  map[string]string
	drawn int // bars: lines of ours at the bottom of the screen
	// question: the cut-over's question, shown under the lines (bars) until answered;
	// asked: it is on the screen, the cursor at its end.
	question string
	asked    bool
	// bars: the copy's bars while they run; barLines the lines of ours among them,
	// whose text their decorators read from barText (never under mu: mpb's render
	// goroutine calls them, and mu is held while bars are added and aborted).
	bars     *barProgress
	barLines map[string]*mpb.Bar
	barText  map[string]*atomic.Pointer[string]
	// plain: when each database's line was printed last, and at which stage.
	printed map[string]time.Time
	stage   map[string]string
}

// newLiveView draws on w in mode (a --progress mode).
func newLiveView(mode string, w io.Writer) *liveView {
	return &liveView{mode: progressMode(mode, w), w: w, enc: json.NewEncoder(w),
		last: map[string]*migrate.LiveProgress{}, line: map[string]string{},
		barLines: map[string]*mpb.Bar{}, barText: map[string]*atomic.Pointer[string]{}, printed: map[string]time.Time{}, stage: map[string]string{}}
}

// liveLine is a database's line: the stage, the lag in bytes and seconds, the apply
// rate, the ETA to catch up and the WAL the slot holds back on the source.
func liveLine(db string, p *migrate.LiveProgress) string {
	var b strings.Builder
	b.WriteString("live")
	if db != "" {
		b.WriteString(" [" + db + "]")
	}
	fmt.Fprintf(&b, ": %-8s  lag %s / %.1f s", p.Stage, preflight.HumanBytes(p.LagBytes), p.LagSeconds)
	if p.Stage != "copy" || p.RowsApplied > 0 {
		fmt.Fprintf(&b, "  applying %s rows/s", groupDigits(int64(p.ApplyRowsPerSec+0.5)))
	}
	if eta := p.ETA.Round(time.Second); eta > 0 {
		b.WriteString("  ETA " + eta.String())
	}
	fmt.Fprintf(&b, "  WAL held %s", preflight.HumanBytes(p.RetainedBytes))
	return b.String()
}

// groupDigits writes n with its thousands apart: 18 400.
func groupDigits(n int64) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + groupDigits(-n)
	}
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(' ')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// event takes a migrate event of type EventLive.
func (v *liveView) event(e migrate.Event) {
	if v == nil || e.Live == nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.mode == progressJSON {
		v.enc.Encode(e)
		return
	}
	db := e.Database
	if _, ok := v.last[db]; !ok {
		v.dbs = append(v.dbs, db)
	}
	p := *e.Live
	v.last[db] = &p
	s := liveLine(db, &p)
	v.line[db] = s
	if v.mode == progressPlain {
		if p.Stage != v.stage[db] || time.Since(v.printed[db]) >= plainEvery {
			v.stage[db], v.printed[db] = p.Stage, time.Now()
			fmt.Fprintln(v.w, v.line[db])
		}
		return
	}
	if v.bars != nil {
		text := v.barText[db]
		if text == nil {
			text = &atomic.Pointer[string]{}
			v.barText[db] = text
		}
		text.Store(&s)
		if v.barLines[db] == nil {
			v.barLines[db] = v.bars.p.New(0, mpb.NopStyle(), mpb.BarPriority(-2),
				mpb.PrependDecorators(decor.Any(func(decor.Statistics) string { return *text.Load() })))
		}
		return
	}
	v.redraw()
}

// redraw puts our lines at the bottom of the screen again (mu held).
func (v *liveView) redraw() {
	var b strings.Builder
	if v.asked && v.drawn > 0 {
		// Above the question, the cursor where the answer is being typed.
		fmt.Fprintf(&b, "\x1b7\r\x1b[%dA", v.drawn)
		for _, db := range v.dbs {
			b.WriteString("\x1b[2K" + v.fit(v.line[db]) + "\n")
		}
		b.WriteString("\x1b8")
		io.WriteString(v.w, b.String())
		return
	}
	v.erase()
	for _, db := range v.dbs {
		b.WriteString(v.fit(v.line[db]) + "\n")
	}
	b.WriteString(v.question)
	io.WriteString(v.w, b.String())
	v.drawn, v.asked = len(v.dbs), v.question != ""
}

// erase removes our lines (and the question) from the bottom of the screen (mu held).
func (v *liveView) erase() {
	s := strings.Repeat("\x1b[1A\x1b[2K", v.drawn)
	if v.asked {
		s = "\r\x1b[2K" + s
	}
	io.WriteString(v.w, s)
	v.drawn, v.asked = 0, false
}

// fit cuts a line to the terminal's width: a line that wraps would not be redrawn in
// place.
func (v *liveView) fit(s string) string {
	f, ok := v.w.(*os.File)
	if !ok {
		return s
	}
	cols, _, err := term.GetSize(int(f.Fd()))
	if err != nil || cols < 20 || len([]rune(s)) < cols {
		return s
	}
	return string([]rune(s)[:cols-1])
}

// print runs write, which prints lines of the run's on w, with our lines kept at the
// bottom (bars, outside the copy's bars).
func (v *liveView) print(write func()) {
	if v == nil {
		write()
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.mode != progressBars || v.bars != nil || (v.drawn == 0 && !v.asked) {
		write()
		return
	}
	v.erase()
	write()
	v.redraw()
}

// copyBars hands our lines to the copy's bars while they run (b), and takes them back
// (nil) before those end.
func (v *liveView) copyBars(b *barProgress) {
	if v == nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if b == nil {
		for db, bar := range v.barLines {
			bar.Abort(true)
			delete(v.barLines, db)
		}
	} else {
		v.erase()
	}
	v.bars = b
}

// lag says where the lag stands for the cut-over's question.
func (v *liveView) lag() string {
	var parts []string
	for _, db := range v.dbs {
		p := v.last[db]
		s := fmt.Sprintf("%s / %.1f s", preflight.HumanBytes(p.LagBytes), p.LagSeconds)
		if db != "" {
			s = db + " " + s
		}
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		return "small"
	}
	return strings.Join(parts, ", ")
}

// confirmCutover asks on stdin (a terminal or not: a pipe answers too) whether to cut
// over now, which freezes source. y or yes cuts over; anything else, the end of the
// input or ctx ending aborts the live run. --yes does not answer it: --cutover prompt
// asks for a person's word.
func (a *app) confirmCutover(ctx context.Context, v *liveView, source string) error {
	if v == nil {
		v = newLiveView(progressPlain, a.stderr)
	}
	v.mu.Lock()
	q := fmt.Sprintf("lag is %s; cut over now? this freezes writes on %s [y/N] ", v.lag(), source)
	if v.mode == progressBars {
		v.erase() // then drawn whole, the question under the lines
		v.question = q
		v.redraw()
	} else {
		fmt.Fprintln(a.stderr, strings.TrimSuffix(q, " "))
	}
	v.mu.Unlock()
	defer func() {
		v.mu.Lock()
		// The answer's Enter moved the cursor under the question, which stays.
		v.question, v.asked, v.drawn = "", false, 0
		v.mu.Unlock()
	}()
	type answered struct {
		s   string
		err error
	}
	answer := make(chan answered, 1)
	go func() {
		s, err := readLine(a.stdin)
		answer <- answered{s, err}
	}()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case r := <-answer:
		s := strings.TrimSpace(r.s)
		switch {
		case strings.EqualFold(s, "y") || strings.EqualFold(s, "yes"):
			return nil
		case r.err != nil:
			return fmt.Errorf("no answer: %w", r.err)
		}
		return fmt.Errorf("the answer was %q, not y or yes", s)
	}
}
