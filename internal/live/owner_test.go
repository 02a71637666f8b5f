package live

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// triggerFixture: a plain table and a hypertable whose triggers change the row (a
// counter of firings) and write another table: on the source they fired once, and
// their effects are in the stream.
var triggerFixture = []string{
	`CREATE TABLE acct (id int PRIMARY KEY, v int, n int NOT NULL DEFAULT 0)`,
	`CREATE TABLE audit (id int, what text)`,
	`CREATE TABLE hm (ts timestamptz NOT NULL, v int, n int NOT NULL DEFAULT 0, PRIMARY KEY (ts))`,
	`SELECT create_hypertable('hm', 'ts', chunk_time_interval => interval '1 day')`,
	`INSERT INTO hm SELECT '2024-01-01'::timestamptz + g * interval '1 hour', g FROM generate_series(1, 30) g`,
	`CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.n := NEW.n + 1; RETURN NEW; END$$`,
	`CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN INSERT INTO audit VALUES (NEW.id, TG_OP); RETURN NULL; END$$`,
	`CREATE TRIGGER acct_bump BEFORE INSERT OR UPDATE ON acct FOR EACH ROW EXECUTE FUNCTION bump()`,
	`CREATE TRIGGER acct_note AFTER INSERT OR UPDATE ON acct FOR EACH ROW EXECUTE FUNCTION note()`,
}

// hypertableTrigger: a trigger on the hypertable of triggerFixture.
const hypertableTrigger = `CREATE TRIGGER hm_bump BEFORE INSERT OR UPDATE ON hm FOR EACH ROW EXECUTE FUNCTION bump()`

// TestApplyAsOwnerFiresNoTrigger: applied as the target database's owner, no
// superuser (a managed service's admin), where session_replication_role = replica is
// refused, the target's triggers of a plain table do not fire again for rows whose
// effects the source's triggers already put in the stream, and fire again afterwards
// for the applications; a hypertable with a trigger, which TimescaleDB does not let
// disable, stops the apply, naming it.
func TestApplyAsOwnerFiresNoTrigger(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	t.Run("plain tables", func(t *testing.T) {
		ap, sc, oc := applyAsOwner(t, srv)
		if err := ap.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		for _, table := range []string{"acct", "audit", "hm"} {
			if want, got := tableText(t, sc, table), tableText(t, oc, table); got != want {
				t.Errorf("%s differs:\nsource %s\ntarget %s", table, want, got)
			}
		}
		var n int
		if err := oc.QueryRow(context.Background(), `INSERT INTO acct VALUES (100, 1) RETURNING n`).Scan(&n); err != nil || n != 1 {
			t.Errorf("a new row of acct on the target: n = %d (%v), want its trigger to fire once", n, err)
		}
		if c := tableText(t, oc, "audit"); !strings.Contains(c, "(100,INSERT)") {
			t.Errorf("acct's AFTER trigger did not fire for the application's row: %s", c)
		}
	})
	t.Run("hypertable with a trigger", func(t *testing.T) {
		ap, _, _ := applyAsOwner(t, srv, hypertableTrigger)
		err := ap.Run(context.Background())
		var se *StopError
		if !errors.As(err, &se) || !containsWord(se.What, "public.hm") || !containsWord(se.What, "hm_bump") {
			t.Fatalf("Applier.Run: %v, want a StopError naming public.hm and hm_bump", err)
		}
		t.Logf("%v; hint: %s", se, se.Hint)
	})
}

// applyAsOwner makes a source on srv with triggerFixture and extra, a target database
// with the same owned by a role that is no superuser, changes on the source (each
// table, new chunks of hm) received into the target and an end marker, and returns
// the applier (as the owner, not run yet) and connections to the source and (as the
// owner) the target.
func applyAsOwner(t *testing.T, srv *testenv.Server, extra ...string) (*Applier, *pgx.Conn, *pgx.Conn) {
	t.Helper()
	ctx := context.Background()
	src := testenv.NewDB(t, srv, true)
	_, ownerURI := testenv.NewOwnerDB(t, srv)
	fixture := append(append([]string{}, triggerFixture...), extra...)
	testenv.MustExec(t, srv, src, fixture...)
	oc := testenv.Connect(t, ownerURI)
	for _, q := range fixture {
		if _, err := oc.Exec(ctx, q); err != nil {
			t.Fatalf("target, as its owner: %s: %v", q, err)
		}
	}
	source, target := mustParse(t, "source", srv.SuperURI(src)), mustParse(t, "target", ownerURI)
	s := startOn(t, source, target, Options{Names: NewNames(), ReplicaIdentityFull: true})
	s.Close(ctx)
	runReceiver(t, &Receiver{Source: source, Target: target})
	testenv.MustExec(t, srv, src,
		`INSERT INTO acct SELECT g, g FROM generate_series(1, 5) g`,
		`UPDATE acct SET v = v * 10 WHERE id <= 2`,
		`INSERT INTO hm SELECT '2024-01-01'::timestamptz + g * interval '1 hour', -g FROM generate_series(31, 80) g`,
		`UPDATE hm SET v = 0 WHERE ts < '2024-01-01 05:00'`)
	if _, err := EmitEndMarker(ctx, source, s.Slot); err != nil {
		t.Fatal(err)
	}
	ap := &Applier{Target: target, End: s.Slot}
	// A target where the owner may set the role would not test the path without it.
	var may bool
	if err := oc.QueryRow(ctx, `SELECT has_parameter_privilege('session_replication_role', 'SET')`).Scan(&may); err != nil || may {
		t.Fatalf("the target's owner may set session_replication_role (%v): this test needs a target where it may not", err)
	}
	return ap, dbConn(t, srv, src), oc
}

// tableText is a table's rows as one text, in order.
func tableText(t *testing.T, conn *pgx.Conn, table string) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(context.Background(), `SELECT coalesce(string_agg(x::text, ' ' ORDER BY x::text), '') FROM `+table+` x`).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}
