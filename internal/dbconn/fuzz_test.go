package dbconn

import (
	"maps"
	"strings"
	"testing"
)

// FuzzParse: parsing never panics; whatever parses has its password hidden by Redact
// (which is what every message passes through), in the input itself, in the config's
// String and in errors; and keywords survive the trip through
// the key=value form that pgx and child processes get.
//
//	go test -fuzz FuzzParse -fuzztime 60s ./internal/dbconn
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"postgres://u:p@h:5432/db?sslmode=require",
		"postgresql://u:p%40ss@[::1]:5433,h2:5434/d%20b?application_name=a+b&password=q",
		"postgres://u:p@ss@h/db",
		"postgres:///db?host=/tmp&ssl=true",
		"host=h port=5432 user=u password='a b\\'c' dbname=d",
		"host = h password = x\\ y",
		"password=",
		"",
		"host=h password='unterminated",
		"postgres://[::1/db",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, perr := parseConnString(s)
		cfg, err := Parse("source", s)
		if perr != nil {
			if err == nil {
				t.Fatalf("parseConnString failed (%v) but Parse did not", perr)
			}
			return
		}
		pw := p["password"]
		if err != nil {
			if pw != "" && shows(err.Error(), pw) {
				t.Fatalf("error %q shows the password %q", err, pw)
			}
			return
		}
		if pw != "" {
			if shows(s, pw) {
				t.Fatalf("Redact(%q) = %q shows the password %q", s, Redact(s), pw)
			}
			if shows(cfg.String(), pw) {
				t.Fatalf("String() = %q shows the password %q", Redact(cfg.String()), pw)
			}
		}
		again, err := parseConnString(formatKeywords(p))
		if err != nil || !maps.Equal(again, p) {
			t.Fatalf("round trip of %v through %q: %v, %v", p, formatKeywords(p), again, err)
		}
	})
}

// shows says whether pw is still visible in text after Redact, outside the masks
// themselves (a password of x's alone is inside every mask, so it is not looked for).
func shows(text, pw string) bool {
	if strings.Trim(pw, "x") == "" {
		return false
	}
	for _, part := range strings.Split(Redact(text), "xxxxx") {
		if strings.Contains(part, pw) {
			return true
		}
	}
	return false
}
