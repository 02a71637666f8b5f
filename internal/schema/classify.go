// Package schema runs pg_dump and pg_restore for a whole-database migration: the restore
// order that keeps TimescaleDB's data (pre_restore, the catalog alone, the rest in
// parallel, post_restore), TOC listing and filtering, the schema sections the stream
// engine reuses, and the classification of every line those programs print.
package schema

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
)

// Severity of a message.
const (
	SevError   = "error"
	SevWarning = "warning"
	SevNotice  = "notice"
	SevUnknown = "unknown" // a line that belongs to no message tsmigrate recognises
)

// Message is one thing pg_dump or pg_restore said, with the lines that belong to it.
type Message struct {
	Program  string   `json:"program"`
	Severity string   `json:"severity"`
	Text     string   `json:"text"`             // the first line without prefixes
	Lines    []string `json:"lines"`            // every line as printed, context included
	Object   string   `json:"object,omitempty"` // e.g. "TABLE public.devices"
	TOCID    int      `json:"toc_id,omitempty"`
	Harmless bool     `json:"harmless"`
	Rule     string   `json:"rule,omitempty"`   // the harmless rule that matched
	Reason   string   `json:"reason,omitempty"` // why it is harmless
	Hint     string   `json:"hint,omitempty"`   // what to do, when it is not
}

// Detail is the message's continuation lines (DETAIL, Command was, ...), prefixes removed.
func (m Message) detail() []string {
	var out []string
	for _, s := range m.Lines {
		l := parseLine(s)
		if l.body == "" || l.body == m.Text || l.body == "while PROCESSING TOC:" || strings.HasPrefix(l.body, "from TOC entry ") {
			continue
		}
		out = append(out, l.body)
	}
	return out
}

// Summary is one line for a person: the object and the message.
func (m Message) Summary() string {
	s := m.Text
	if d := m.detail(); strings.HasSuffix(s, ":") && len(d) > 0 {
		s += " " + d[0]
	}
	if m.Object != "" {
		s = m.Object + ": " + s
	}
	return m.Program + ": " + s
}

// Result is what a program printed, classified.
type Result struct {
	Messages []Message `json:"messages"`
	// Progress counts the informational lines of -v (progress, not messages).
	Progress int `json:"progress_lines"`
	// ErrorsIgnored is pg_restore's own count ("errors ignored on restore: N"), -1 if absent.
	ErrorsIgnored int `json:"errors_ignored"`
}

// Errors are the messages that are not known to be harmless.
func (r Result) Errors() []Message {
	var out []Message
	for _, m := range r.Messages {
		if !m.Harmless {
			out = append(out, m)
		}
	}
	return out
}

// HarmlessCount is the number of known harmless messages.
func (r Result) HarmlessCount() int { return len(r.Messages) - len(r.Errors()) }

// Classifier takes the lines of one run of pg_dump or pg_restore, each with the
// process that wrote it (pgtools.Cmd.Line), and groups and classifies them. A message
// is grouped with the lines of its own process: the workers of pg_dump -j and
// pg_restore -j print at the same time, and a worker prints the context of its error
// ("while PROCESSING TOC:", "from TOC entry ...") and the error as separate messages,
// between which another process's may come. It is safe for use from several
// goroutines.
type Classifier struct {
	mu        sync.Mutex
	toc       *TOC
	names     []string
	writers   map[int]*writer
	order     []int // the writers, in the order they first printed
	res       Result
	onMessage func(Message)
}

// writer is where one process's output stands.
type writer struct {
	cur     *Message
	context []string // "while PROCESSING TOC:" / "from TOC entry" lines waiting for their message
	ref     *TOCRef
	// info is the last line when it is a prefixed line without a level (progress or
	// context), which the rest of a name with a line break (names) may continue.
	info string
}

// NewClassifier makes a classifier; toc (may be nil) names the objects of pg_restore's
// messages by TOC ID. onMessage (may be nil) gets each message once it is complete.
func NewClassifier(toc *TOC, onMessage func(Message)) *Classifier {
	return &Classifier{toc: toc, onMessage: onMessage, writers: map[int]*writer{}, res: Result{ErrorsIgnored: -1}}
}

// Line takes one line of stderr, as the process pid wrote it.
func (c *Classifier) Line(pid int, s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.writers[pid]
	if w == nil {
		w = &writer{}
		c.writers[pid] = w
		c.order = append(c.order, pid)
	}
	c.line(w, strings.TrimRight(s, "\r\n"))
}

func (c *Classifier) line(w *writer, raw string) {
	if strings.TrimSpace(raw) == "" {
		return
	}
	l := parseLine(raw)
	if w.info != "" && l.program == "" && l.level == "" && w.cur == nil && continuesName(w.info, raw, c.names) {
		// The rest of a name with a line break, which cut the progress or context line
		// naming it ("dumping contents of table "a", "from TOC entry 12; ... TABLE a").
		if n := len(w.context); n > 0 && w.context[n-1] == w.info {
			w.context[n-1] += "\n" + raw
		}
		w.info += "\n" + raw
		return
	}
	w.info = ""
	if l.program != "" && l.level == "" {
		w.info = raw
	}
	switch {
	case l.program != "" && l.level == "" && (l.body == "while PROCESSING TOC:" || l.body == "while INITIALIZING:" || l.body == "while FINALIZING:"):
		c.flush(w)
		w.context = append(w.context, raw)
	case l.program != "" && l.level == "" && strings.HasPrefix(l.body, "from TOC entry "):
		c.flush(w)
		w.context = append(w.context, raw)
		if ref, ok := parseFromTOC(l.body); ok {
			w.ref = &ref
		}
	case l.level == "error" || l.level == "warning" || l.level == "fatal":
		sev := l.level
		if sev == "fatal" {
			sev = SevError
		}
		if sev == SevWarning && strings.HasPrefix(l.body, "errors ignored on restore: ") {
			c.flush(w)
			n, _ := atoi(strings.TrimPrefix(l.body, "errors ignored on restore: "))
			c.res.ErrorsIgnored = n
			c.res.Progress++
			return
		}
		c.start(w, l.program, sev, l.body, raw)
	case l.program != "" && l.level == "" && serverHead.MatchString(l.body):
		sev := strings.ToLower(serverHead.FindStringSubmatch(l.body)[1])
		switch sev {
		case "error", "fatal", "panic":
			sev = SevError
		case "warning":
			sev = SevWarning
		default:
			sev = SevNotice
		}
		c.start(w, l.program, sev, l.body, raw)
	case l.level == "detail" || l.level == "hint" || serverCont.MatchString(l.body):
		c.continueWith(w, l, raw)
	case l.program != "" && l.level == "":
		if w.cur != nil && oldStyleCircularFollower(w.cur, l.body) {
			w.cur.Lines = append(w.cur.Lines, raw)
			return
		}
		if looksLikeError(l.body) {
			// A progress line does not carry an error; one that seems to is shown.
			c.start(w, l.program, SevUnknown, l.body, raw)
			return
		}
		c.flush(w)
		c.res.Progress++
	default: // an unprefixed line: the rest of a multi-line message (a query, a DETAIL)
		c.continueWith(w, l, raw)
	}
}

func looksLikeError(s string) bool {
	return strings.Contains(s, "ERROR:") || strings.Contains(s, "error:") || strings.Contains(s, "FATAL:") || strings.Contains(s, "PANIC:")
}

func (c *Classifier) start(w *writer, program, sev, text, raw string) {
	c.flush(w)
	m := &Message{Program: program, Severity: sev, Text: text}
	m.Lines = append(append(m.Lines, w.context...), raw)
	if w.ref != nil {
		m.TOCID = w.ref.ID
		m.Object = strings.TrimSpace(w.ref.Desc + " " + w.ref.Tag)
		if e, ok := c.toc.Entry(w.ref.ID); ok {
			m.Object = e.Object()
		}
	}
	w.context, w.ref = nil, nil
	w.cur = m
}

func (c *Classifier) continueWith(w *writer, l line, raw string) {
	if w.cur == nil {
		// Nothing to continue: a line tsmigrate does not recognise is not ignored.
		c.start(w, l.program, SevUnknown, l.body, raw)
		return
	}
	w.cur.Lines = append(w.cur.Lines, raw)
}

func (c *Classifier) flush(w *writer) {
	if w.cur == nil {
		return
	}
	m := *w.cur
	w.cur = nil
	classify(&m)
	c.res.Messages = append(c.res.Messages, m)
	if c.onMessage != nil {
		c.onMessage(m)
	}
}

// Finish ends the run's lines and returns the classified result.
func (c *Classifier) Finish() Result {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, pid := range c.order {
		w := c.writers[pid]
		c.flush(w)
		if len(w.context) > 0 {
			// Context that no message followed: shown, not dropped.
			c.res.Messages = append(c.res.Messages, Message{Severity: SevUnknown, Text: strings.Join(w.context, " "), Lines: w.context,
				Hint: "pg_restore named an object but printed no message for it; look at the target"})
			w.context = nil
		}
	}
	return c.res
}

// Check turns a run's exit status and classified output into the run's verdict: an
// error naming every message that is not known harmless. The exit status alone is
// trusted neither way: 0 with an error printed fails, and non-zero with only harmless
// messages passes only when pg_restore's own error count matches them.
func Check(program string, runErr error, res Result) error {
	if errors.Is(runErr, context.Canceled) || errors.Is(runErr, context.DeadlineExceeded) {
		return runErr
	}
	errs := res.Errors()
	if len(errs) > 0 {
		return &MessageError{Program: program, Messages: errs}
	}
	if runErr == nil {
		return nil
	}
	harmlessErrors := 0
	for _, m := range res.Messages {
		if m.Severity == SevError {
			harmlessErrors++
		}
	}
	if program == "pg_restore" && res.ErrorsIgnored > 0 && harmlessErrors > 0 {
		// pg_restore exits 1 when it ignored errors, even harmless ones. Parallel workers
		// are counted twice, so the count is at least, not exactly, the messages seen.
		return nil
	}
	return fmt.Errorf("%w, and printed no error tsmigrate could read", runErr)
}

// MessageError is a run that printed messages not known to be harmless.
type MessageError struct {
	Program  string
	Messages []Message
}

func (e *MessageError) Error() string {
	m := e.Messages[0]
	s := m.Summary()
	if len(e.Messages) > 1 {
		s += fmt.Sprintf(" (and %d more)", len(e.Messages)-1)
	}
	return s
}
