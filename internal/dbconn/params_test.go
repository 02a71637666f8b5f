package dbconn

import (
	"maps"
	"strings"
	"testing"
)

func TestParseConnString(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want map[string]string
	}{
		{"full URI", "postgres://u:p@h:5432/db?sslmode=require",
			map[string]string{"user": "u", "password": "p", "host": "h", "port": "5432", "dbname": "db", "sslmode": "require"}},
		{"postgresql scheme, nothing else", "postgresql://", map[string]string{}},
		{"percent-encoded password", "postgres://u:p%40ss%2Fw%3A@h/db",
			map[string]string{"user": "u", "password": "p@ss/w:", "host": "h", "dbname": "db"}},
		{"raw @ in password", "postgres://u:p@ss@h/db",
			map[string]string{"user": "u", "password": "p@ss", "host": "h", "dbname": "db"}},
		{"plus stays plus", "postgres://h/db?password=a+b&application_name=x%20y",
			map[string]string{"host": "h", "dbname": "db", "password": "a+b", "application_name": "x y"}},
		{"empty password", "postgres://u:@h", map[string]string{"user": "u", "host": "h"}},
		{"IPv6 with port", "postgres://[::1]:5433/db", map[string]string{"host": "::1", "port": "5433", "dbname": "db"}},
		{"IPv6 without port", "postgres://[2001:db8::1]/db", map[string]string{"host": "2001:db8::1", "dbname": "db"}},
		{"multiple hosts", "postgres://h1:5432,h2:5433/db",
			map[string]string{"host": "h1,h2", "port": "5432,5433", "dbname": "db"}},
		{"multiple hosts, IPv6", "postgres://[::1]:1,[fe80::2]:2/db",
			map[string]string{"host": "::1,fe80::2", "port": "1,2", "dbname": "db"}},
		{"socket dir in query", "postgres:///db?host=/tmp", map[string]string{"host": "/tmp", "dbname": "db"}},
		{"socket dir percent-encoded", "postgres://%2Fvar%2Frun%2Fpostgresql/db",
			map[string]string{"host": "/var/run/postgresql", "dbname": "db"}},
		{"database with a space", "postgres://h/my%20db", map[string]string{"host": "h", "dbname": "my db"}},
		{"options with =", "postgres://h?options=-c%20search_path%3Dx",
			map[string]string{"host": "h", "options": "-c search_path=x"}},
		{"JDBC ssl=true", "postgres://u@h?ssl=true", map[string]string{"user": "u", "host": "h", "sslmode": "require"}},
		{"surrounding spaces", "  postgres://h/db \n", map[string]string{"host": "h", "dbname": "db"}},
		// Query parameters win over the URI's other parts, as in libpq (and pgx).
		{"host in query wins", "postgres://h/db?host=other", map[string]string{"host": "other", "dbname": "db"}},
		{"user in query wins", "postgres://u@h/db?user=v", map[string]string{"user": "v", "host": "h", "dbname": "db"}},
		{"port in query wins", "postgres://h1:1,h2:2/db?port=9", map[string]string{"host": "h1,h2", "port": "9", "dbname": "db"}},
		{"password in query wins", "postgresql://u:p%40ss@h/db?password=q",
			map[string]string{"user": "u", "password": "q", "host": "h", "dbname": "db"}},
		{"dbname in query wins", "postgres://h/db?dbname=other", map[string]string{"host": "h", "dbname": "other"}},
		// libpq looks for the user info up to the first '/' only, past a '?'.
		{"question mark in password", "postgres://u:p?w@h/db", map[string]string{"user": "u", "password": "p?w", "host": "h", "dbname": "db"}},
		{"hosts without ports", "postgres://h1,h2/db", map[string]string{"host": "h1,h2", "port": ",", "dbname": "db"}},
		{"spaces around a value", "postgres://h/db?application_name=%20a%20", map[string]string{"host": "h", "dbname": "db", "application_name": " a "}},

		{"key=value", "host=h port=5432 user=u password=p dbname=d",
			map[string]string{"host": "h", "port": "5432", "user": "u", "password": "p", "dbname": "d"}},
		{"spaces around =", "host = h   dbname\t=\td", map[string]string{"host": "h", "dbname": "d"}},
		{"quoted with escapes", `password='a b\'c\\d' user=u`, map[string]string{"password": `a b'c\d`, "user": "u"}},
		{"quoted empty", "password='' host=h", map[string]string{"password": "", "host": "h"}},
		{"unquoted backslash", `password=a\ b host=h`, map[string]string{"password": "a b", "host": "h"}},
		{"IPv6 hostaddr", "hostaddr=::1 port=5432", map[string]string{"hostaddr": "::1", "port": "5432"}},
		{"multiple hosts key=value", "host=h1,h2 port=5432,5433", map[string]string{"host": "h1,h2", "port": "5432,5433"}},
		{"empty string", "", map[string]string{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseConnString(c.in)
			if err != nil {
				t.Fatalf("error: %v", err)
			}
			if !maps.Equal(got, c.want) {
				t.Errorf("got %v, want %v", got, c.want)
			}
			// What we hand to pgx and to child processes parses back the same.
			again, err := parseConnString(formatKeywords(got))
			if err != nil || !maps.Equal(again, got) {
				t.Errorf("round trip through %q: %v, %v", formatKeywords(got), again, err)
			}
		})
	}
}

func TestParseConnStringErrors(t *testing.T) {
	const pw = "Hunter2-secret"
	cases := []struct{ name, in string }{
		{"bad port", "postgres://u:" + pw + "@h:54x2/db"},
		{"unclosed IPv6", "postgres://u:" + pw + "@[::1/db"},
		{"text after IPv6", "postgres://u:" + pw + "@[::1]x/db"},
		{"query without value", "postgres://u:" + pw + "@h/db?sslmode"},
		{"bad percent-encoding in password", "postgres://u:" + pw + "%zz@h/db"},
		{"bad percent-encoding in query", "postgres://h/db?password=" + pw + "%g"},
		{"space in a URI's password", "postgres://u:" + pw + " x@h/db"},
		{"empty query parameter", "postgres://h/db?password=" + pw + "&&sslmode=disable"},
		{"second = in a query parameter", "postgres://h/db?password=" + pw + "=x"},
		{"%00 in a password", "postgres://u:" + pw + "%00@h/db"},
		{"a bare word", "host=h " + pw},
		{"unterminated quote", "host=h password='" + pw},
		{"empty keyword", "=" + pw},
		{"a pasted password", pw},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("source", c.in)
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if strings.Contains(msg, pw) || strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "source: invalid connection string") {
				t.Errorf("message %q: want one line naming the role, without the password", msg)
			}
		})
	}
}

func TestParseResolves(t *testing.T) {
	t.Setenv("PGPASSWORD", "")
	t.Setenv("PGPASSFILE", "/nonexistent")
	cases := []struct {
		in               string
		user, db, host   string
		port             uint16
		str              string
		local, hasPasswd bool
	}{
		{"postgres://app:pw@db.example:6543/shop?sslmode=require", "app", "shop", "db.example", 6543, "app@db.example:6543/shop", false, true},
		{"postgres://app@[::1]:5433/shop", "app", "shop", "::1", 5433, "app@[::1]:5433/shop", true, false},
		{"host=/tmp port=5555 user=x dbname=y", "x", "y", "/tmp", 5555, "x@/tmp:5555/y", true, false},
		{"postgres://a@h1:5001,h2:5002/d", "a", "d", "h1", 5001, "a@h1:5001/d", false, false},
	}
	for _, c := range cases {
		cfg, err := Parse("target", c.in)
		if err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		host, port := cfg.Host()
		if cfg.User() != c.user || cfg.Database() != c.db || host != c.host || port != c.port ||
			cfg.String() != c.str || cfg.IsLocal() != c.local || cfg.HasPassword() != c.hasPasswd {
			t.Errorf("%s: user %s db %s host %s port %d string %s local %v password %v", c.in,
				cfg.User(), cfg.Database(), host, port, cfg.String(), cfg.IsLocal(), cfg.HasPassword())
		}
	}
}

func TestRedact(t *testing.T) {
	cases := map[string]string{
		"postgres://u:pa55@h/db":          "postgres://u:xxxxx@h/db",
		"postgres://u:p@ss@h/db":          "postgres://u:xxxxx@h/db",
		"host=h password='a b' user=u":    "host=h password=xxxxx user=u",
		"host=h PASSWORD = secret user=u": "host=h PASSWORD = xxxxx user=u",
		"see postgres://u@h/db":           "see postgres://u@h/db",
	}
	for in, want := range cases {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}
