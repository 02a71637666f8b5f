package schema

import (
	"fmt"
	"strings"
)

// Cutting pg_restore's plain script into statements, as psql does (psqlscan.l,
// PostgreSQL 14-18): a semicolon ends a statement unless it is in a string ('...', with
// '' inside; E'...', with backslash escapes too), a quoted identifier ("...", with ""
// inside), a dollar-quoted string ($tag$...$tag$, the tag an identifier without $, or
// empty), a -- comment (to the line's end) or a /* */ comment (nested), in
// parentheses (a rule's actions), or in the BEGIN ATOMIC ... END body of a CREATE [OR
// REPLACE] FUNCTION or PROCEDURE (psql's heuristic: BEGIN, and CASE within it, open
// what END closes). A $ right after an identifier's character belongs to the
// identifier; $1 is a parameter. The statements are sent as written: the cut only says
// where each one ends, and the server's count of what it ran checks it (see
// batcher.run).

// scriptStatement is one statement of a script: its text as written, from the end of
// the one before (comments and blank lines before it included) to its semicolon.
type scriptStatement struct {
	text string
	// head is the statement's first line without the comments and blanks before it.
	head string
}

// scriptPart is an entry of pg_restore's script: its comment ("-- Name: ...") and its
// statements; a script's first statements, and pg_restore's SET statements between
// entries, are entries with no comment.
type scriptPart struct {
	comment    string
	statements []scriptStatement
}

// cutScript cuts pg_restore's plain script into its entries and their statements, or
// says why it cannot: what SQL cannot carry (a psql meta-command other than \restrict
// and \unrestrict, a COPY's data, text in an encoding other than UTF8) or a statement
// without its semicolon at the end.
// pg_restore writes the SET statements an entry needs (default_tablespace, ...) before
// that entry's comment: they are an entry of their own, apart from the entry before.
func cutScript(script string) ([]scriptPart, string) {
	var out []scriptPart
	cur := scriptPart{}
	start := 0 // where the statement being read begins
	blank := true
	i := 0
	flush := func() {
		// SET statements at the end of an entry are the next one's (see above).
		k := len(cur.statements)
		for k > 0 && setsSession(cur.statements[k-1].head) {
			k--
		}
		if cur.comment != "" && k < len(cur.statements) {
			sets := scriptPart{statements: cur.statements[k:]}
			cur.statements = cur.statements[:k]
			if len(cur.statements) > 0 {
				out = append(out, cur)
			}
			out = append(out, sets)
		} else if len(cur.statements) > 0 || cur.comment != "" {
			out = append(out, cur)
		}
		cur = scriptPart{}
	}
	var st statementState
	for i < len(script) {
		c := script[i]
		atLine := i == 0 || script[i-1] == '\n'
		switch {
		case blank && atLine && strings.HasPrefix(script[i:], "--\n-- Name: "):
			// An entry's comment: "--", "-- Name: ...; Type: ...; ...", "--".
			flush()
			line := script[i+3:]
			if j := strings.IndexByte(line, '\n'); j >= 0 {
				line = line[:j]
			}
			cur.comment = line
			i = min(i+3+len(line)+1, len(script))
			if strings.HasPrefix(script[i:], "--\n") {
				i += 3
			}
			start = i
			continue
		case blank && atLine && c == '\\':
			line := script[i:]
			if j := strings.IndexByte(line, '\n'); j >= 0 {
				line = line[:j]
			}
			if !strings.HasPrefix(line, `\restrict `) && !strings.HasPrefix(line, `\unrestrict `) {
				return nil, "pg_restore's script holds a psql meta-command: " + line
			}
			i += len(line)
			start = i
			continue
		case c == '-' && strings.HasPrefix(script[i:], "--"):
			j := strings.IndexByte(script[i:], '\n')
			if j < 0 {
				j = len(script) - i
			}
			i += j
			continue
		case c == '/' && strings.HasPrefix(script[i:], "/*"):
			i = skipBlockComment(script, i)
			continue
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f':
			i++
			continue
		}
		blank = false
		switch {
		case c == ';' && st.parens == 0 && st.begins == 0:
			text := script[start : i+1]
			head := firstCodeLine(text)
			if isCopyFromStdin(head) {
				return nil, "pg_restore's script holds a COPY's data"
			}
			if enc, ok := strings.CutPrefix(head, "SET client_encoding = '"); ok && !strings.EqualFold(enc, "UTF8';") {
				// A query's text reaches the server in the connection's encoding,
				// UTF8 (pgx's), before its SET could change it.
				return nil, "pg_restore's script is in the encoding " + strings.TrimSuffix(enc, "';") + ", not UTF8"
			}
			cur.statements = append(cur.statements, scriptStatement{text: text, head: head})
			i++
			start, blank, st = i, true, statementState{}
		case c == '(':
			st.parens++
			i++
		case c == ')':
			st.parens = max(st.parens-1, 0)
			i++
		case c == '\'':
			i = skipQuoted(script, i, '\'', false)
		case c == '"':
			i = skipQuoted(script, i, '"', false)
		case c == '$' && (i == 0 || !identChar(script[i-1])):
			i = skipDollar(script, i)
		case identStart(c):
			j := i + 1
			for j < len(script) && identChar(script[j]) {
				j++
			}
			word := script[i:j]
			if (word == "E" || word == "e") && j < len(script) && script[j] == '\'' {
				i = skipQuoted(script, j, '\'', true)
				continue
			}
			st.word(word)
			i = j
		default:
			i++
		}
	}
	if !blank {
		return nil, "pg_restore's script ends in a statement without its semicolon"
	}
	flush()
	return out, ""
}

// statementState is what psql follows of a statement to know whether a semicolon ends
// it: parentheses, and BEGIN ... END in a routine's body.
type statementState struct {
	parens, begins int
	words          int     // identifiers (keywords included) so far
	first          [4]byte // the first letters of the first four, where one of create, or, replace, function, procedure
}

// word takes an identifier or keyword of the statement (psqlscan.l's heuristic).
func (s *statementState) word(w string) {
	lw := strings.ToLower(w)
	if s.words < len(s.first) {
		switch lw {
		case "create", "function", "procedure", "or", "replace":
			s.first[s.words] = lw[0]
		}
	}
	s.words++
	f := s.first
	routine := f[0] == 'c' && (f[1] == 'f' || f[1] == 'p' || f[1] == 'o' && f[2] == 'r' && (f[3] == 'f' || f[3] == 'p'))
	if !routine || s.parens != 0 {
		return
	}
	switch lw {
	case "begin":
		s.begins++
	case "case":
		if s.begins > 0 {
			s.begins++
		}
	case "end":
		if s.begins > 0 {
			s.begins--
		}
	}
}

// identStart says whether an identifier or keyword may start with c.
func identStart(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

// identChar says whether c may be part of an identifier (ASCII, or a byte of a
// multi-byte character, which PostgreSQL's lexer takes as such).
func identChar(c byte) bool {
	return c == '_' || c == '$' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80
}

// skipQuoted returns where the string or quoted identifier opened at i (by q) ends: a
// doubled q stays inside, and with escapes a backslash escapes the next byte. An
// unclosed one runs to the end.
func skipQuoted(s string, i int, q byte, escapes bool) int {
	for i++; i < len(s); i++ {
		switch {
		case escapes && s[i] == '\\':
			i++
		case s[i] == q && i+1 < len(s) && s[i+1] == q:
			i++
		case s[i] == q:
			return i + 1
		}
	}
	return len(s)
}

// skipDollar returns where the dollar-quoted string opened at i ends, or i+1 when the
// $ opens none (a parameter such as $1, or a lone $).
func skipDollar(s string, i int) int {
	j := i + 1
	for j < len(s) && s[j] != '$' {
		c := s[j]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80 || j > i+1 && c >= '0' && c <= '9') {
			return i + 1
		}
		j++
	}
	if j >= len(s) {
		return i + 1
	}
	tag := s[i : j+1]
	end := strings.Index(s[j+1:], tag)
	if end < 0 {
		return len(s)
	}
	return j + 1 + end + len(tag)
}

// skipBlockComment returns where the /* comment opened at i ends (they nest).
func skipBlockComment(s string, i int) int {
	depth := 0
	for i < len(s) {
		switch {
		case strings.HasPrefix(s[i:], "/*"):
			depth++
			i += 2
		case strings.HasPrefix(s[i:], "*/"):
			depth--
			i += 2
			if depth == 0 {
				return i
			}
		default:
			i++
		}
	}
	return len(s)
}

// firstCodeLine is the first line of a statement's text that is not blank or a comment.
func firstCodeLine(text string) string {
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "--") {
			return l
		}
	}
	return ""
}

// setsSession says whether a statement (by its first line) is one of the settings
// pg_restore writes between entries.
func setsSession(head string) bool {
	return strings.HasPrefix(head, "SET ") || strings.HasPrefix(head, "SELECT pg_catalog.set_config(")
}

// isCopyFromStdin says whether a statement reads rows from the script (a data entry).
func isCopyFromStdin(head string) bool {
	return strings.HasPrefix(head, "COPY ") && strings.HasSuffix(head, "FROM stdin;")
}

// String shows an entry for a test's failure.
func (e scriptPart) String() string {
	return fmt.Sprintf("%q: %d statements", e.comment, len(e.statements))
}
