package migrate_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
	"github.com/tsmigrate/tsmigrate/internal/verify"
)

// settingsSQL lists a database's settings as pg_db_role_setting stores them, with the
// role they are for ("" for all), and its comment last.
const settingsSQL = `SELECT coalesce(r.rolname, '') || ' ' || c.cfg
FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase AND d.datname = current_database()
LEFT JOIN pg_roles r ON r.oid = s.setrole CROSS JOIN LATERAL unnest(s.setconfig) AS c(cfg)
UNION ALL SELECT 'comment ' || coalesce(shobj_description(d.oid, 'pg_database'), '(none)') FROM pg_database d WHERE d.datname = current_database()
ORDER BY 1`

func settingsOf(t *testing.T, srv *testenv.Server, db string) []string {
	t.Helper()
	c := connect(t, srv.SuperURI(db))
	rows, _ := c.Query(context.Background(), settingsSQL)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// The source database's own settings (a search_path with quoted elements among them),
// a role's settings in it and its comment reach the target database with either engine,
// which pg_dump alone leaves out; the freeze's settings do not: the target is writable.
// Verify compares them.
func TestDatabaseSettingsCarried(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	role := testenv.NewRole(t, srv, "tsm_settings")
	for _, engine := range []string{migrate.EngineStream, migrate.EngineDump} {
		t.Run(engine, func(t *testing.T) {
			ctx := context.Background()
			src := testenv.NewDB(t, srv, true)
			dst := testenv.NewDB(t, srv, false)
			testenv.MustExec(t, srv, src, `CREATE SCHEMA "Odd, Schema"`,
				`CREATE TABLE "Odd, Schema".t (id int)`, `INSERT INTO "Odd, Schema".t VALUES (1)`,
				fmt.Sprintf(`ALTER DATABASE %s SET search_path = "$user", public, "Odd, Schema", "we""ird"`, src),
				fmt.Sprintf(`ALTER DATABASE %s SET work_mem = '8MB'`, src),
				fmt.Sprintf(`ALTER ROLE %s IN DATABASE %s SET statement_timeout = '7s'`, role, src),
				// a read-only role stays one: only the database's own setting is the freeze's
				fmt.Sprintf(`ALTER ROLE %s IN DATABASE %s SET default_transaction_read_only = on`, role, src),
				// and the migration's own user may be read-only by default: tsmigrate's
				// sessions that write say so
				fmt.Sprintf(`ALTER ROLE postgres IN DATABASE %s SET default_transaction_read_only = on`, src),
				fmt.Sprintf(`COMMENT ON DATABASE %s IS E'the app''s data \\ C:\\dir'`, src),
				fmt.Sprintf(`ALTER DATABASE %s SET app.note = E'a\\b''c'`, src),
				// timeouts that tsmigrate's own sessions (the freeze's, the copy's, verify's
				// snapshot held idle in its transaction...) must not be cut short by, on
				// either side: the target has them from the start too
				fmt.Sprintf(`ALTER DATABASE %s SET idle_in_transaction_session_timeout = '1ms'`, src),
				fmt.Sprintf(`ALTER DATABASE %s SET transaction_timeout = '1s'`, src),
				fmt.Sprintf(`REVOKE CONNECT, TEMPORARY ON DATABASE %s FROM PUBLIC`, src),
				fmt.Sprintf(`GRANT CONNECT ON DATABASE %s TO %s`, src, role))
			// The target's sessions read E'' literals whatever this says.
			testenv.MustExec(t, srv, "postgres", fmt.Sprintf(`ALTER DATABASE %s SET standard_conforming_strings = off`, dst),
				fmt.Sprintf(`ALTER DATABASE %s SET idle_in_transaction_session_timeout = '1ms'`, dst),
				fmt.Sprintf(`ALTER DATABASE %s SET transaction_timeout = '1s'`, dst))
			unfreezeAtCleanup(t, srv, src)
			want := settingsOf(t, srv, src)

			// Both servers a little away: each waits 5 ms at least for a session's next
			// statement, longer than idle_in_transaction_session_timeout, which then ends
			// every session that holds a transaction and keeps the timeout (the freeze's
			// was ended so under load, when the source's timeout was 20 ms).
			proxy := testenv.StartProxy(t, srv)
			proxy.Latency(5 * time.Millisecond)
			sum, err := migrate.Run(ctx, migrate.Options{Engine: engine,
				Source: cfg(t, "source", proxy.URI(t, srv.URI(src))), Target: cfg(t, "target", proxy.URI(t, srv.URI(dst))),
				Jobs: 2, PgBin: srv.ClientBin(), FreezeGrace: time.Second})
			if err != nil {
				t.Fatalf("migrate: %v\n%+v", err, sum)
			}
			d := sum.Databases[0]
			if d.Identical == nil || !*d.Identical || strings.Contains(strings.Join(sum.Warnings, "\n"), "refused") {
				t.Fatalf("identical %v, warnings %q", d.Identical, sum.Warnings)
			}
			carried := []string{"search_path", "work_mem", "app.note", "idle_in_transaction_session_timeout", "transaction_timeout",
				"default_transaction_read_only of role postgres",
				"statement_timeout of role " + role, "default_transaction_read_only of role " + role,
				"revoke of CONNECT from PUBLIC", "revoke of TEMPORARY from PUBLIC", "grant of CONNECT to " + role, "comment"}
			if !slices.Equal(d.DatabaseSettings, carried) {
				t.Errorf("summary's database settings %q, want %q", d.DatabaseSettings, carried)
			}
			// The source holds the freeze's settings now; the target must not.
			got := slices.DeleteFunc(settingsOf(t, srv, dst), func(s string) bool { return strings.Contains(s, "standard_conforming_strings") })
			if !slices.Equal(got, want) {
				t.Fatalf("target database settings:\n%s\nwant the source's before the freeze:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			c := connect(t, srv.SuperURI(dst))
			if sp := scalar[string](t, c, "SHOW search_path"); sp != `"$user", public, "Odd, Schema", "we""ird"` {
				t.Errorf("a new session on the target has search_path %s", sp)
			}
			if n := scalar[int64](t, c, "SELECT count(*) FROM t"); n != 1 {
				t.Errorf("unqualified t has %d rows on the target", n)
			}
			if acl := scalar[string](t, c, `SELECT string_agg(coalesce(r.rolname::text, 'PUBLIC') || '=' || a.privilege_type, ', ' ORDER BY 1)
				FROM pg_database d CROSS JOIN LATERAL aclexplode(d.datacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee
				WHERE d.datname = current_database() AND a.grantee <> d.datdba`); acl != role+"=CONNECT" {
				t.Errorf("the target database's privileges besides its owner's: %s, want %s=CONNECT only", acl, role)
			}
			if slices.Contains(got, " default_transaction_read_only=on") {
				t.Error("the target database is read-only: the freeze's setting was carried")
			}
		})
	}
}

// A target user that owns the target database but is no superuser: the settings it
// may not give (one reserved to superusers, another role's) are warnings naming them
// and the statement to use, not their values; the rest is carried and the run succeeds.
func TestDatabaseSettingsRefused(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	ctx := context.Background()
	owner := fmt.Sprintf("tsm_owner_%d", os.Getpid())
	other := fmt.Sprintf("tsm_other_%d", os.Getpid())
	testenv.MustExec(t, srv, "postgres", fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD 'pw-owner'", owner), "CREATE ROLE "+other)
	t.Cleanup(func() {
		srv.Exec(context.Background(), "postgres", "DROP ROLE IF EXISTS "+other, "DROP ROLE IF EXISTS "+owner)
	})
	src := testenv.NewDB(t, srv, false)
	dst := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, "postgres", fmt.Sprintf("ALTER DATABASE %s OWNER TO %s", dst, owner))
	t.Cleanup(func() { srv.Exec(context.Background(), "postgres", "DROP DATABASE IF EXISTS "+dst+" WITH (FORCE)") })
	testenv.MustExec(t, srv, src, "CREATE TABLE t (id int)", "INSERT INTO t VALUES (1), (2)",
		fmt.Sprintf(`ALTER DATABASE %s SET log_min_duration_statement = '123s'`, src),
		fmt.Sprintf(`ALTER DATABASE %s SET work_mem = '8MB'`, src),
		fmt.Sprintf(`ALTER ROLE %s IN DATABASE %s SET work_mem = '3MB'`, other, src))
	unfreezeAtCleanup(t, srv, src)
	sum := migrateInto(t, srv, src, dst, owner, "pw-owner")
	d := sum.Databases[0]
	if !slices.Equal(d.DatabaseSettings, []string{"work_mem"}) {
		t.Errorf("carried %q, want only work_mem", d.DatabaseSettings)
	}
	all := strings.Join(sum.Warnings, "\n")
	for _, want := range []string{
		"the target refused the source database's log_min_duration_statement: permission denied to set parameter \"log_min_duration_statement\"",
		"give it with ALTER DATABASE ... SET as a role allowed to",
		"the target refused the source database's work_mem of role " + other + ": permission denied",
		"give it with ALTER ROLE ... IN DATABASE ... SET as a role allowed to",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("warnings lack %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, "123s") || strings.Contains(all, "3MB") {
		t.Errorf("a warning shows a setting's value:\n%s", all)
	}
	// The run's verify leaves out what the warnings named; verify alone shows it.
	if d.Identical == nil || !*d.Identical {
		t.Errorf("identical %v after the run", d.Identical)
	}
	rep, err := verify.Run(ctx, verify.Options{Source: cfg(t, "source", srv.URI(src)), Target: cfg(t, "target", srv.URI(dst))})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Schema) != 1 || rep.Schema[0].String() != "database: setting log_min_duration_statement differs: source 123s, target (none)" {
		t.Errorf("verify alone: %v", rep.Schema)
	}
}

// A target user that neither owns the target database nor is a superuser, allowed to
// create schemas and tables in it: its GRANT and REVOKE on the database change nothing (the server
// only warns), which the run finds by reading the target back, and says.
func TestDatabasePrivilegesNotHeld(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	user := fmt.Sprintf("tsm_user_%d", os.Getpid())
	app := fmt.Sprintf("tsm_app_%d", os.Getpid())
	testenv.MustExec(t, srv, "postgres", fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD 'pw-user'", user), "CREATE ROLE "+app)
	t.Cleanup(func() {
		srv.Exec(context.Background(), "postgres", "DROP OWNED BY "+user, "DROP ROLE IF EXISTS "+app, "DROP ROLE IF EXISTS "+user)
	})
	src := testenv.NewDB(t, srv, false)
	dst := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, "postgres", fmt.Sprintf("GRANT CREATE ON DATABASE %s TO %s", dst, user),
		fmt.Sprintf(`REVOKE CONNECT ON DATABASE %s FROM PUBLIC`, src),
		fmt.Sprintf(`GRANT CONNECT ON DATABASE %s TO %s`, src, app))
	testenv.MustExec(t, srv, dst, "GRANT CREATE ON SCHEMA public TO "+user)
	testenv.MustExec(t, srv, src, "CREATE SCHEMA data", "CREATE TABLE data.t (id int)", "INSERT INTO data.t VALUES (1), (2)")
	unfreezeAtCleanup(t, srv, src)
	sum := migrateInto(t, srv, src, dst, user, "pw-user")
	if got := sum.Databases[0].DatabaseSettings; len(got) != 0 {
		t.Errorf("the summary says the target was given %q", got)
	}
	all := strings.Join(sum.Warnings, "\n")
	for _, what := range []string{"revoke of CONNECT from PUBLIC", "grant of CONNECT to " + app} {
		want := "the target accepted the source database's " + what + " but does not hold it afterwards"
		if !strings.Contains(all, want) {
			t.Errorf("warnings lack %q:\n%s", want, all)
		}
	}
	if n := scalar[int64](t, connect(t, srv.SuperURI(dst)), "SELECT count(*) FROM data.t"); n != 2 {
		t.Fatalf("the target has %d rows", n)
	}
}

// migrateInto runs the stream engine from src into dst, logged into the target as
// user, and fails the test if the run fails.
func migrateInto(t *testing.T, srv *testenv.Server, src, dst, user, password string) *migrate.Summary {
	t.Helper()
	u, err := url.Parse(srv.URI(dst))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(user, password)
	sum, err := migrate.Run(context.Background(), migrate.Options{Engine: migrate.EngineStream,
		Source: cfg(t, "source", srv.URI(src)), Target: cfg(t, "target", u.String()),
		Jobs: 2, PgBin: srv.ClientBin(), FreezeGrace: time.Second})
	if err != nil {
		t.Fatalf("migrate: %v\n%+v", err, sum)
	}
	return sum
}
