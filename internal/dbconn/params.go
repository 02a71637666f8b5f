package dbconn

import (
	"fmt"
	"net/url"
	"sort"
	"strings"
)

// parseConnString turns a libpq connection URI or a key=value string into libpq
// keywords. It keeps what the user wrote (including keywords pgx does not know), so
// that the same settings can be handed to pg_dump and pg_restore.
func parseConnString(s string) (map[string]string, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") {
		return parseURI(s)
	}
	return parseKeywords(s)
}

func parseURI(s string) (map[string]string, error) {
	p := map[string]string{}
	rest := s[strings.Index(s, "://")+3:]
	if i := strings.IndexByte(rest, '?'); i >= 0 {
		q := rest[i+1:]
		rest = rest[:i]
		for _, kv := range strings.Split(q, "&") {
			if kv == "" {
				continue
			}
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return nil, fmt.Errorf("a query parameter has no value (expected ?key=value&...)")
			}
			// libpq decodes %XX only: a '+' stays a '+' (QueryUnescape would make it a space).
			key, err1 := url.PathUnescape(k)
			val, err2 := url.PathUnescape(v)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("bad percent-encoding in query parameter %q", Redact(k))
			}
			k, v = key, val
			if !validKeyword(k) {
				return nil, fmt.Errorf("a query parameter name is not a connection keyword")
			}
			if k == "ssl" && v == "true" { // JDBC-style spelling libpq also accepts
				k, v = "sslmode", "require"
			}
			p[k] = v
		}
	}
	netloc := rest
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		netloc = rest[:i]
		db, err := url.PathUnescape(rest[i+1:])
		if err != nil {
			return nil, fmt.Errorf("bad percent-encoding in database name")
		}
		if db != "" {
			p["dbname"] = db
		}
	}
	if i := strings.LastIndexByte(netloc, '@'); i >= 0 {
		userinfo := netloc[:i]
		netloc = netloc[i+1:]
		user, pass, hasPass := strings.Cut(userinfo, ":")
		u, err := url.PathUnescape(user)
		if err != nil {
			return nil, fmt.Errorf("bad percent-encoding in user name")
		}
		if u != "" {
			p["user"] = u
		}
		if hasPass {
			pw, err := url.PathUnescape(pass)
			if err != nil {
				return nil, fmt.Errorf("bad percent-encoding in password")
			}
			p["password"] = pw
		}
	}
	if netloc != "" {
		var hosts, ports []string
		anyPort := false
		for _, hp := range strings.Split(netloc, ",") {
			host, port := hp, ""
			if strings.HasPrefix(hp, "[") {
				end := strings.IndexByte(hp, ']')
				if end < 0 {
					return nil, fmt.Errorf("unclosed [ in host %q", hp)
				}
				host = hp[1:end]
				if r := hp[end+1:]; r != "" {
					if !strings.HasPrefix(r, ":") {
						return nil, fmt.Errorf("unexpected %q after host %q", r, host)
					}
					port = r[1:]
				}
			} else if i := strings.LastIndexByte(hp, ':'); i >= 0 {
				host, port = hp[:i], hp[i+1:]
			}
			h, err := url.PathUnescape(host)
			if err != nil {
				return nil, fmt.Errorf("bad percent-encoding in host %q", host)
			}
			if port != "" {
				anyPort = true
				for _, c := range port {
					if c < '0' || c > '9' {
						return nil, fmt.Errorf("invalid port %q", port)
					}
				}
			}
			hosts = append(hosts, h)
			ports = append(ports, port)
		}
		if strings.Join(hosts, "") != "" {
			p["host"] = strings.Join(hosts, ",")
		}
		if anyPort {
			p["port"] = strings.Join(ports, ",")
		}
	}
	return p, nil
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
				if s[i] == '\\' && i+1 < len(s) {
					i++
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
// idle_in_transaction_session_timeout, and transaction_timeout where the server has it
// (PostgreSQL 17 and later). tsmigrate's own sessions run long statements and hold
// transactions open on purpose, and a migration gives the target database the source
// database's settings. One statement. Checked on PostgreSQL 15 and 17.
const NoTimeouts = `SELECT set_config('statement_timeout', '0', false), set_config('lock_timeout', '0', false),
	set_config('idle_in_transaction_session_timeout', '0', false),
	(SELECT set_config(name, '0', false) FROM pg_settings WHERE name = 'transaction_timeout')`
