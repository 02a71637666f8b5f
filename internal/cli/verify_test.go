package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// verifyFixture builds the same database on both sides, deterministically: a hypertable
// with five daily chunks and a primary key, a hypertable without a key on timestamp
// without time zone, and plain tables with serial keys, empty strings and NULLs, numeric scale,
// jsonb, arrays, bytea, intervals, and a table without a key holding duplicate rows.
var verifyFixture = []string{
	`CREATE TABLE devices (id serial PRIMARY KEY, name text NOT NULL, label text, price numeric(10,2),
		attrs jsonb, tags text[], blob bytea, created date DEFAULT '2024-01-01', span interval)`,
	`INSERT INTO devices (name, label, price, attrs, tags, blob, span)
		SELECT 'dev' || i, CASE WHEN i % 5 = 0 THEN '' WHEN i % 7 = 0 THEN NULL ELSE 'L' || i END, i * 1.5,
			jsonb_build_object('i', i, 'f', i / 3.0), ARRAY['a' || i, 'b,' || i], decode(md5(i::text), 'hex'),
			make_interval(hours => i)
		FROM generate_series(1, 200) i`,
	`CREATE INDEX devices_name_idx ON devices (name)`,
	`CREATE TABLE metrics (ts timestamptz NOT NULL, device int NOT NULL, value float8, temp float4,
		PRIMARY KEY (ts, device))`,
	`SELECT create_hypertable('metrics', 'ts', chunk_time_interval => interval '1 day')`,
	`CREATE INDEX metrics_device_idx ON metrics (device, ts)`,
	`INSERT INTO metrics SELECT '2024-01-01 00:00:00+00'::timestamptz + i * interval '10 minutes', d,
			sin(i * d) / 3, (i % 100) / 7.0
		FROM generate_series(0, 6 * 24 * 5 - 1) i, generate_series(1, 10) d`,
	`CREATE TABLE events (ts timestamp NOT NULL, kind text, payload json)`,
	`SELECT create_hypertable('events', 'ts', chunk_time_interval => interval '2 days')`,
	`INSERT INTO events SELECT '2024-01-01'::timestamp + i * interval '1 hour', 'k' || (i % 3),
			json_build_object('n', i)
		FROM generate_series(0, 24 * 6) i`,
	`CREATE TABLE notes (id bigserial PRIMARY KEY, body text, n numeric)`,
	`INSERT INTO notes (body, n) VALUES ('a', 1.50), ('', 2), (NULL, 'NaN'), ('tab	and "quotes"', -0.0), ('x', 1e-20)`,
	`CREATE TABLE nokey (a int, b text)`,
	`INSERT INTO nokey SELECT i % 10, 'x' FROM generate_series(1, 100) i`,
}

// verifyPair makes a source and a target database holding the fixture, then runs the
// statements of change on the target.
func verifyPair(t *testing.T, srv *testenv.Server, change ...string) (src, dst string) {
	t.Helper()
	src = testenv.NewDB(t, srv, true)
	dst = testenv.NewDB(t, srv, true)
	testenv.MustExec(t, srv, src, verifyFixture...)
	testenv.MustExec(t, srv, dst, verifyFixture...)
	if len(change) > 0 {
		testenv.MustExec(t, srv, dst, change...)
	}
	return src, dst
}

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Run(context.Background(), args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestVerifyCommand(t *testing.T) {
	srv := testenv.Need(t, testenv.PG17TS, testenv.Options{})
	verifyArgs := func(src, dst string, extra ...string) []string {
		return append([]string{"verify", "--source", srv.URI(src), "--target", srv.URI(dst), "--jobs", "3"}, extra...)
	}

	t.Run("identical", func(t *testing.T) {
		src, dst := verifyPair(t, srv)
		code, out, errOut := runCLI(t, verifyArgs(src, dst)...)
		if code != 0 {
			t.Fatalf("exit %d, want 0\n%s%s", code, out, errOut)
		}
		// 3 plain tables, 5 chunks of metrics, 4 of events
		if !strings.Contains(out, "12 units checked, 7650 rows on the source, 7650 on the target") ||
			!strings.Contains(out, "verdict: IDENTICAL") {
			t.Errorf("output:\n%s", out)
		}
		if strings.Contains(out+errOut, testenv.SuperPassword) {
			t.Error("the password leaked into the output")
		}
	})

	// Each case makes one change to the target and expects exit 1, these lines, and
	// that one difference alone: a verify that flags more than what changed fails.
	cases := []struct {
		name   string
		change []string
		args   []string
		want   []string
	}{
		{
			name: "float changed by 1e-6 in one row of one chunk",
			change: []string{`UPDATE metrics SET value = value + 1e-6
				WHERE ts = '2024-01-03 12:00:00+00' AND device = 3`},
			args: []string{"--show-rows", "3"},
			want: []string{
				`DIFF hypertable public.metrics chunk _timescaledb_internal._hyper_\d+_\d+_chunk \[2024-01-03 00:00:00\+00, 2024-01-04 00:00:00\+00\): same row count, different values`,
				`row ts=2024-01-03 12:00:00\+00, device=3: value: source '-?0\.[0-9]+', target '-?0\.[0-9]+'`,
			},
		},
		{
			name:   "row deleted",
			change: []string{`DELETE FROM notes WHERE body = 'x'`},
			args:   []string{"--show-rows", "3"},
			want: []string{
				`DIFF table public.notes: rows differ: source 5, target 4`,
				`row id=5: only on the source: \(id='5', body='x', n='0.00000000000000000001'\)`,
			},
		},
		{
			name:   "row added",
			change: []string{`INSERT INTO metrics VALUES ('2024-01-02 00:00:01+00', 1, 0.5, 1)`},
			args:   []string{"--show-rows", "3"},
			want: []string{
				`DIFF hypertable public.metrics chunk \S+ \[2024-01-02 00:00:00\+00, 2024-01-03 00:00:00\+00\): rows differ: source 1440, target 1441`,
				`row ts=2024-01-02 00:00:01\+00, device=1: only on the target: \(ts='2024-01-02 00:00:01\+00', device='1', value='0.5', temp='1'\)`,
			},
		},
		{
			name:   "empty string turned into NULL",
			change: []string{`UPDATE devices SET label = NULL WHERE id = 10`},
			args:   []string{"--show-rows", "3"},
			want: []string{
				`DIFF table public.devices: same row count, different values`,
				`row id=10: label: source '', target NULL`,
			},
		},
		{
			name:   "numeric 1.50 turned into 1.5",
			change: []string{`UPDATE notes SET n = 1.5 WHERE n = 1.50`},
			args:   []string{"--show-rows", "3"},
			want: []string{
				`DIFF table public.notes: same row count, different values`,
				`row id=1: n: source '1.50', target '1.5'`,
			},
		},
		{
			name:   "row without a key changed",
			change: []string{`UPDATE nokey SET b = 'y' WHERE ctid = (SELECT min(ctid) FROM nokey WHERE a = 4)`},
			args:   []string{"--show-rows", "3"},
			want: []string{
				`DIFF table public.nokey: same row count, different values`,
				`only on the source: \(a='4', b='x'\)`,
				`only on the target: \(a='4', b='y'\)`,
			},
		},
		{
			name:   "column default changed",
			change: []string{`ALTER TABLE devices ALTER COLUMN created SET DEFAULT '2024-01-02'`},
			want: []string{
				`DIFF schema: column public.devices.created: default differs: source '2024-01-01'::date, target '2024-01-02'::date`,
				`12 units checked, .*: DIFFERENT: 0 data units, 1 schema difference`,
			},
		},
		{
			name:   "index missing",
			change: []string{`DROP INDEX devices_name_idx`},
			want:   []string{`DIFF schema: index public.devices_name_idx: missing on the target`},
		},
		{
			name:   "sequence behind",
			change: []string{`SELECT setval('notes_id_seq', 3)`},
			want:   []string{`DIFF schema: sequence public.notes_id_seq: behind on the target: last_value source 5, target 3`},
		},
		{
			name:   "hypertable chunk interval changed",
			change: []string{`SELECT set_chunk_time_interval('events', interval '1 day')`},
			want:   []string{`DIFF schema: hypertable public.events dimension 1: chunk interval differs: source 2 days, target 1 day`},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src, dst := verifyPair(t, srv, c.change...)
			code, out, errOut := runCLI(t, verifyArgs(src, dst, c.args...)...)
			if code != 1 {
				t.Fatalf("exit %d, want 1\n%s%s", code, out, errOut)
			}
			for _, w := range c.want {
				if !regexp.MustCompile(w).MatchString(out) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if n := strings.Count(out, "  DIFF "); n != 1 {
				t.Errorf("%d differences reported, want 1:\n%s", n, out)
			}
			if !strings.Contains(out, "verdict: DIFFERENT") || !strings.Contains(errOut, "target differs from the source") {
				t.Errorf("no verdict:\n%s%s", out, errOut)
			}
		})
	}

	// The target made as users migrate today (pg_dump, timescaledb_pre_restore,
	// pg_restore, timescaledb_post_restore): the chunks, sequences and schema come back
	// through the dump, not from running the same statements again.
	t.Run("identical after pg_dump and pg_restore", func(t *testing.T) {
		src := testenv.NewDB(t, srv, true)
		dst := testenv.NewDB(t, srv, true)
		testenv.MustExec(t, srv, src, verifyFixture...)
		testenv.MustExec(t, srv, dst, `SELECT timescaledb_pre_restore()`)
		dump := filepath.Join(t.TempDir(), "src.dump")
		env := append(os.Environ(), "PGPASSWORD="+testenv.SuperPassword)
		for _, args := range [][]string{
			{"pg_dump", "-Fc", "-f", dump, "--dbname", srv.URI(src)},
			{"pg_restore", "--exit-on-error", "--no-owner", "--dbname", srv.URI(dst), dump},
		} {
			cmd := exec.Command(filepath.Join(srv.ClientBin(), args[0]), args[1:]...)
			cmd.Env = env
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", args[0], err, out)
			}
		}
		testenv.MustExec(t, srv, dst, `SELECT timescaledb_post_restore()`)
		code, out, errOut := runCLI(t, verifyArgs(src, dst)...)
		if code != 0 || !strings.Contains(out, "12 units checked, 7650 rows on the source, 7650 on the target") {
			t.Fatalf("exit %d, want 0 and every unit checked\n%s%s", code, out, errOut)
		}
	})

	t.Run("settings and physical order do not matter", func(t *testing.T) {
		src, dst := verifyPair(t, srv)
		// Set for the user verify logs in as, in each database: a database's own
		// settings are compared (as part of its schema), a role's only with --privileges.
		testenv.MustExec(t, srv, "postgres",
			`ALTER ROLE postgres IN DATABASE `+src+` SET timezone = 'UTC'`,
			`ALTER ROLE postgres IN DATABASE `+dst+` SET timezone = 'Asia/Kolkata'`,
			`ALTER ROLE postgres IN DATABASE `+dst+` SET datestyle = 'SQL, DMY'`,
			`ALTER ROLE postgres IN DATABASE `+dst+` SET intervalstyle = 'sql_standard'`,
			`ALTER ROLE postgres IN DATABASE `+dst+` SET extra_float_digits = -3`,
			`ALTER ROLE postgres IN DATABASE `+dst+` SET bytea_output = 'escape'`)
		testenv.MustExec(t, srv, dst,
			// rewrite rows in another order: delete and re-insert, then compact
			`CREATE TEMP TABLE n AS SELECT * FROM notes`,
			`DELETE FROM notes`,
			`INSERT INTO notes SELECT * FROM n ORDER BY id DESC`,
			`VACUUM FULL notes`,
			`CLUSTER devices USING devices_name_idx`,
			`CLUSTER metrics USING metrics_device_idx`)
		code, out, errOut := runCLI(t, verifyArgs(src, dst)...)
		if code != 0 {
			t.Fatalf("exit %d, want 0\n%s%s", code, out, errOut)
		}
	})

	t.Run("several databases and json", func(t *testing.T) {
		src, dst := verifyPair(t, srv)
		src2, dst2 := verifyPair(t, srv, `DELETE FROM nokey WHERE a = 1`)
		code, out, errOut := runCLI(t, "verify", "--source", srv.URI("postgres"), "--target", srv.URI("postgres"),
			"--database", src+":"+dst, "--database", src2+":"+dst2, "--json")
		if code != 1 {
			t.Fatalf("exit %d, want 1\n%s%s", code, out, errOut)
		}
		var rep struct {
			Identical bool
			Databases []struct {
				SourceDatabase string `json:"source_database"`
				Identical      bool
				Units          []struct {
					Table     string
					Identical bool
				}
			}
		}
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		if rep.Identical || len(rep.Databases) != 2 || !rep.Databases[0].Identical || rep.Databases[1].Identical ||
			rep.Databases[1].SourceDatabase != src2 || len(rep.Databases[0].Units) != 12 {
			t.Errorf("report: %+v", rep)
		}
	})

	t.Run("bad input and unreachable server", func(t *testing.T) {
		code, _, errOut := runCLI(t, "verify", "--source", srv.URI("postgres"), "--target", srv.URI("postgres"), "--database", ":x")
		if code != 2 || !strings.Contains(errOut, `invalid --database ":x"`) {
			t.Errorf("exit %d: %s", code, errOut)
		}
		code, _, errOut = runCLI(t, "verify", "--source", srv.URI("postgres"), "--target", srv.URI("nosuchdb"))
		if code != 2 || !strings.Contains(errOut, "target: cannot connect") || strings.Contains(errOut, testenv.SuperPassword) {
			t.Errorf("exit %d: %s", code, errOut)
		}
	})
}
