package dbconn

import (
	"crypto/tls"
	"fmt"
	"maps"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
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

// FuzzParseLikePgx: a connection string that both tsmigrate and pgx (whose URI parser
// follows libpq's, see pgconn/parse_url.go) accept reaches the same servers, as the
// same user, database and password, with the same TLS mode: tsmigrate reads what the
// user wrote as psql would. The one difference tsmigrate makes on purpose: in a URI
// whose user info holds several raw '@' before one host, libpq ends the password at
// the first and takes the rest for the host's name (which no server has); tsmigrate
// ends it at the last.
// The seed corpus runs in every `go test`:
//
//	go test -fuzz FuzzParseLikePgx -fuzztime 60s ./internal/dbconn
func FuzzParseLikePgx(f *testing.F) {
	for _, k := range []string{"PGHOST", "PGHOSTADDR", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD",
		"PGSSLMODE", "PGSERVICE", "PGSERVICEFILE", "PGAPPNAME", "PGCONNECT_TIMEOUT", "PGOPTIONS",
		"PGSSLCERT", "PGSSLKEY", "PGSSLROOTCERT", "PGSSLPASSWORD", "PGSSLSNI", "PGTARGETSESSIONATTRS"} {
		f.Setenv(k, "")
	}
	f.Setenv("PGPASSFILE", "/nonexistent")
	for _, s := range []string{
		"postgres://h/db?host=other",
		"postgres://u@h/db?user=v",
		"postgres://h1:1,h2:2/db?port=9",
		"postgresql://u:p%40ss@h/db?password=q",
		"postgres://h/db?dbname=other&sslmode=disable",
		"postgres://u:pw@h:5432/db?sslmode=require",
		"postgres://u:p?w@h/db",
		"postgres://u:pw@h?application_name=a@b",
		"postgres://h?password=a@b",
		"postgres://u:@h/db",
		"postgres://@h/db",
		"postgres://h1,h2:5433,[::1]:7/db",
		"postgres://%2Ftmp:5433/db",
		"postgres:///db?host=/tmp&port=5434",
		"postgres://h/db?ssl=true",
		"postgres://h/db?ssl=true&sslmode=disable",
		"postgres://h/db?sslmode=disable&ssl=true",
		"postgres://u%20x@h/d%20b",
		"postgres://h/?user=a%2Bb",
		"postgres://h:/db",
		"postgres://[::1]/db?port=1,2",
		"postgresql://",
		"host=h port=5432 user=u password='a b\\'c' dbname=d sslmode=disable",
		"host=h1,h2 port=1,2 dbname=d",
		"host = h   dbname\t=\td",
		"password=a\\ b host=h",
		"service=",
	} {
		f.Add(s)
	}
	defaultUser, err := pgx.ParseConfig("")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ours, err := Parse("source", s)
		if err != nil {
			return
		}
		if t := strings.TrimSpace(s); strings.HasPrefix(t, "postgres://") || strings.HasPrefix(t, "postgresql://") {
			s = t // tsmigrate trims a URI, pasted with a newline, say
		}
		ref, err := pgx.ParseConfig(s)
		if err != nil || oneHostWithAt(ref) {
			return
		}
		if ref.User == "" { // libpq takes an empty user for the default; pgx keeps it from a URI
			ref.User = defaultUser.User
		}
		got, want := reachedAs(ours.pgx), reachedAs(ref)
		if got != want {
			t.Fatalf("%q:\ntsmigrate reads %s\npgx (libpq) reads %s", s, got, want)
		}
	})
}

// reachedAs says where, as whom and how a config connects, for comparison.
func reachedAs(c *pgx.ConnConfig) string {
	tlsMode := func(tc *tls.Config) string {
		switch {
		case tc == nil:
			return "plain"
		case tc.InsecureSkipVerify && tc.VerifyPeerCertificate == nil:
			return "tls"
		default:
			return "tls-verified"
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "user=%q database=%q password=%q hosts=[%s:%d %s", c.User, c.Database, c.Password, c.Host, c.Port, tlsMode(c.TLSConfig))
	for _, fb := range c.Fallbacks {
		fmt.Fprintf(&b, ", %s:%d %s", fb.Host, fb.Port, tlsMode(fb.TLSConfig))
	}
	b.WriteString("]")
	return b.String()
}

// oneHostWithAt: pgx (libpq) reads a single host whose name holds an '@'.
func oneHostWithAt(c *pgx.ConnConfig) bool {
	for _, fb := range c.Fallbacks {
		if fb.Host != c.Host {
			return false
		}
	}
	return strings.Contains(c.Host, "@")
}
