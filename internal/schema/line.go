package schema

import (
	"regexp"
	"strings"
)

// A line as pg_dump or pg_restore printed it, taken apart.
type line struct {
	program string // "pg_dump", "pg_restore", or "" for an unprefixed line
	level   string // "error", "warning", "detail", "hint", "fatal", or "" (info)
	body    string // the text after the prefixes
}

var programs = []string{"pg_restore", "pg_dump"}

// levels are the frontend logger's words (PostgreSQL 12+; "fatal" until 14).
var levels = []string{"error", "warning", "detail", "hint", "fatal"}

// serverHead matches a server notice relayed by pg_dump (-v): "NOTICE:  text".
var serverHead = regexp.MustCompile(`^(NOTICE|WARNING|INFO|LOG|DEBUG|ERROR|FATAL|PANIC):\s+`)

// serverCont are the lines that continue a server message or a failed query.
var serverCont = regexp.MustCompile(`^(DETAIL|HINT|CONTEXT|QUERY|LINE \d+|STATEMENT|Command was|Query was):`)

// parseLine splits the program prefix and the logger level off a line.
func parseLine(s string) line {
	var l line
	for _, p := range programs {
		if strings.HasPrefix(s, p+":") {
			l.program = p
			s = strings.TrimLeft(s[len(p)+1:], " ")
			break
		}
	}
	if l.program == "" && !startsWithLevel(s) {
		l.body = s
		return l
	}
	for _, lv := range levels {
		if strings.HasPrefix(s, lv+": ") || s == lv+":" {
			l.level = lv
			s = strings.TrimLeft(s[len(lv)+1:], " ")
			break
		}
	}
	l.body = s
	return l
}

func startsWithLevel(s string) bool {
	for _, lv := range levels {
		if strings.HasPrefix(s, lv+": ") {
			return true
		}
	}
	return false
}

// TOCRef is what a "from TOC entry" line says about the object being restored.
type TOCRef struct {
	ID    int
	Desc  string
	Tag   string
	Owner string
}

var fromTOC = regexp.MustCompile(`^from TOC entry (\d+); (\d+) (\d+) (.*)$`)

// parseFromTOC reads "from TOC entry 303; 1259 17248 TABLE devices postgres". The
// schema is not in it (the TOC listing has it, by ID).
func parseFromTOC(body string) (TOCRef, bool) {
	m := fromTOC.FindStringSubmatch(body)
	if m == nil {
		return TOCRef{}, false
	}
	id, ok := atoi(m[1])
	if !ok {
		return TOCRef{}, false
	}
	desc, rest := splitDesc(m[4])
	tag, owner := rest, ""
	if i := strings.LastIndexByte(rest, ' '); i >= 0 {
		tag, owner = rest[:i], rest[i+1:]
	}
	return TOCRef{ID: id, Desc: desc, Tag: strings.TrimSpace(tag), Owner: owner}, true
}

func atoi(s string) (int, bool) {
	if s == "" || len(s) > 9 {
		return 0, false
	}
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}
