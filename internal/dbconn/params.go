package dbconn

import (
	"fmt"
	"sort"
	"strings"
)

// parseConnString turns a libpq connection URI or a key=value string into libpq
// keywords. It keeps what the user wrote (including keywords pgx does not know), so
// that the same settings can be handed to pg_dump and pg_restore.
func parseConnString(s string) (map[string]string, error) {
	if t := strings.TrimSpace(s); strings.HasPrefix(t, "postgres://") || strings.HasPrefix(t, "postgresql://") {
		return parseURI(t)
	}
	return parseKeywords(s) // not trimmed: a value may end in an escaped space
}

// parseURI reads a postgres:// or postgresql:// URI as libpq does
// (conninfo_uri_parse_options in fe-connect.c): the user info runs to the first '@'
// before any '/'; then hosts and ports up to '/' or '?'; the database up to '?';
// then query parameters, which win over what the other parts said (libpq stores
// them last). One difference, on purpose: when the user info holds several raw '@'
// (a password not percent-encoded) and one host follows, libpq ends the user info at
// the first '@' and takes the rest for the host's name, which no server has; here the
// password runs to the last '@' before the host. (With several hosts, libpq would
// reach one of the others: read as libpq.)
func parseURI(s string) (map[string]string, error) {
	p := map[string]string{}
	rest := s[strings.Index(s, "://")+3:]
	if at := strings.IndexAny(rest, "@/"); at >= 0 && rest[at] == '@' {
		hosts := rest[at+1:]
		if end := strings.IndexAny(hosts, "/?"); end >= 0 {
			hosts = hosts[:end]
		}
		if more := strings.LastIndexByte(hosts, '@'); more >= 0 && !strings.Contains(hosts, ",") {
			at += 1 + more
		}
		user, pass, hasPass := strings.Cut(rest[:at], ":")
		rest = rest[at+1:]
		if user != "" { // as libpq: the raw text, before decoding
			u, err := uriDecode(user)
			if err != nil {
				return nil, fmt.Errorf("user name: %w", err)
			}
			p["user"] = u
		}
		if hasPass && pass != "" {
			pw, err := uriDecode(pass)
			if err != nil {
				return nil, fmt.Errorf("password: %w", err)
			}
			p["password"] = pw
		}
	}
	// Hosts and ports, as two lists that line up (libpq's form: "h1,h2" and ",5433").
	var hosts, ports strings.Builder
	for {
		if strings.HasPrefix(rest, "[") {
			end := strings.IndexByte(rest, ']')
			if end < 0 {
				return nil, fmt.Errorf("unclosed [ in a host")
			}
			if end == 1 {
				return nil, fmt.Errorf("empty IPv6 address in []")
			}
			hosts.WriteString(rest[1:end])
			rest = rest[end+1:]
			if rest != "" && !strings.ContainsRune(":/?,", rune(rest[0])) {
				return nil, fmt.Errorf("unexpected %q after an IPv6 address in []", rest[0])
			}
		} else {
			end := strings.IndexAny(rest, ":/?,")
			if end < 0 {
				end = len(rest)
			}
			hosts.WriteString(rest[:end])
			rest = rest[end:]
		}
		if strings.HasPrefix(rest, ":") {
			rest = rest[1:]
			end := strings.IndexAny(rest, "/?,")
			if end < 0 {
				end = len(rest)
			}
			ports.WriteString(rest[:end])
			rest = rest[end:]
		}
		if !strings.HasPrefix(rest, ",") {
			break
		}
		rest = rest[1:]
		hosts.WriteByte(',')
		ports.WriteByte(',')
	}
	if hosts.Len() > 0 {
		h, err := uriDecode(hosts.String())
		if err != nil {
			return nil, fmt.Errorf("host: %w", err)
		}
		p["host"] = h
	}
	if ports.Len() > 0 {
		port, err := uriDecode(ports.String())
		if err != nil {
			return nil, fmt.Errorf("port: %w", err)
		}
		p["port"] = port
	}
	if strings.HasPrefix(rest, "/") {
		db, query, hasQuery := strings.Cut(rest[1:], "?")
		rest = ""
		if hasQuery {
			rest = "?" + query
		}
		if db != "" {
			name, err := uriDecode(db)
			if err != nil {
				return nil, fmt.Errorf("database name: %w", err)
			}
			p["dbname"] = name
		}
	}
	if strings.HasPrefix(rest, "?") {
		if err := parseURIQuery(rest[1:], p); err != nil {
			return nil, err
		}
	}
	if port, ok := p["port"]; ok {
		for _, c := range port {
			if c != ',' && (c < '0' || c > '9') {
				return nil, fmt.Errorf("invalid port %q", port)
			}
		}
	}
	return p, nil
}

// parseURIQuery stores a URI's query parameters in p, over what p holds: key=value
// pairs separated by '&', each with exactly one raw '=', the last of a key winning.
// The values are not echoed in errors: one may be a password.
func parseURIQuery(q string, p map[string]string) error {
	for q != "" {
		kv, more, _ := strings.Cut(q, "&")
		q = more
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("a query parameter has no value (expected ?key=value&...)")
		}
		if strings.Contains(v, "=") {
			return fmt.Errorf("a query parameter's value holds a raw \"=\" (write it %%3D)")
		}
		key, err := uriDecode(k)
		if err != nil || !validKeyword(key) {
			return fmt.Errorf("a query parameter name is not a connection keyword")
		}
		val, err := uriDecode(v)
		if err != nil {
			return fmt.Errorf("query parameter %s: %w", key, err)
		}
		if key == "ssl" && val == "true" { // JDBC-style spelling libpq also accepts
			key, val = "sslmode", "require"
		}
		p[key] = val
	}
	return nil
}

// uriDecode decodes a part of a URI as libpq's conninfo_uri_decode: %XX only (a '+'
// stays a '+'), no %00, spaces around the part skipped and none inside. Errors do not
// quote the part: it may be a password.
func uriDecode(s string) (string, error) {
	s = strings.Trim(s, " ")
	if strings.Contains(s, " ") {
		return "", fmt.Errorf("a space inside (write it %%20)")
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
			return "", fmt.Errorf("bad percent-encoding")
		}
		c := unhex(s[i+1])<<4 | unhex(s[i+2])
		if c == 0 {
			return "", fmt.Errorf("%%00 is not allowed")
		}
		b.WriteByte(c)
		i += 2
	}
	return b.String(), nil
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

// parseKeywords parses libpq's "key = value key2='quoted \' value'" form.
func parseKeywords(s string) (map[string]string, error) {
	p := map[string]string{}
	i := 0
	skip := func() {
		for i < len(s) && isSpace(s[i]) {
			i++
		}
	}
	for {
		skip()
		if i >= len(s) {
			return p, nil
		}
		start := i
		for i < len(s) && s[i] != '=' && !isSpace(s[i]) {
			i++
		}
		key := s[start:i]
		skip()
		if i >= len(s) || s[i] != '=' {
			// The text is not echoed: it may be a pasted password.
			return nil, fmt.Errorf("not a postgres:// URI and not key=value pairs (a word without \"=\")")
		}
		i++
		skip()
		var val strings.Builder
		if i < len(s) && s[i] == '\'' {
			i++
			closed := false
			for i < len(s) {
				c := s[i]
				if c == '\\' && i+1 < len(s) {
					val.WriteByte(s[i+1])
					i += 2
					continue
				}
				if c == '\'' {
					closed = true
					i++
					break
				}
				val.WriteByte(c)
				i++
			}
			if !closed {
				return nil, fmt.Errorf("unterminated quoted value for %q", key)
			}
		} else {
			for i < len(s) && !isSpace(s[i]) {
				if s[i] == '\\' {
					i++
					if i == len(s) { // as libpq: a backslash at the end escapes nothing
						break
					}
				}
				val.WriteByte(s[i])
				i++
			}
		}
		if key == "" {
			return nil, fmt.Errorf("empty keyword in connection string")
		}
		if !validKeyword(key) {
			return nil, fmt.Errorf("a keyword holds characters no connection keyword has")
		}
		p[key] = val.String()
	}
}

// validKeyword: libpq's keywords are lower-case words with underscores; the check keeps
// stray text (perhaps a pasted password) from becoming a run-time parameter of pgx.
func validKeyword(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9')) {
			return false
		}
	}
	return true
}

// isSpace is C's isspace in the C locale, which libpq uses between keywords and values.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

// formatKeywords renders keywords as a key='value' string that libpq and pgx accept,
// in a stable order.
func formatKeywords(p map[string]string) string {
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(k)
		b.WriteString("='")
		v := strings.ReplaceAll(p[k], `\`, `\\`)
		b.WriteString(strings.ReplaceAll(v, `'`, `\'`))
		b.WriteByte('\'')
	}
	return b.String()
}

// NoTimeouts turns off, for the session, every timeout that a database's or a role's
// settings may give it: statement_timeout, lock_timeout,
// idle_in_transaction_session_timeout, idle_session_timeout (PostgreSQL 14 and later),
// and transaction_timeout where the server has it (PostgreSQL 17 and later).
// tsmigrate's own sessions run long statements, hold transactions open on purpose and
// wait, some of them, while others work; and a migration gives the target database the
// source database's settings: Config.Connect runs it on every session. One statement.
// Checked on PostgreSQL 15 and 17.
const NoTimeouts = `SELECT set_config('statement_timeout', '0', false), set_config('lock_timeout', '0', false),
	set_config('idle_in_transaction_session_timeout', '0', false),
	(SELECT count(set_config(name, '0', false)) FROM pg_settings WHERE name IN ('idle_session_timeout', 'transaction_timeout'))`
