package migrate_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// walsenderPort is the client port the source sees the walsender of database db's
// slot come from (0: none streams now).
func walsenderPort(t *testing.T, sc *pgx.Conn, db string) int {
	t.Helper()
	var port int
	err := sc.QueryRow(context.Background(), `SELECT coalesce(max(a.client_port), 0) FROM pg_replication_slots s
JOIN pg_stat_activity a ON a.pid = s.active_pid WHERE s.database = $1`, db).Scan(&port)
	if err != nil {
		t.Error(err)
	}
	return port
}

// assertSourceBack checks what a live run that stopped before its cut-over leaves on
// the source: no slot, no publication, the replica identity it set (nokey's) back,
// and the source writable.
func assertSourceBack(t *testing.T, srv *testenv.Server, src string) {
	t.Helper()
	sc := connect(t, srv.SuperURI(src))
	if n := scalar[int64](t, sc, `SELECT count(*) FROM pg_replication_slots WHERE database = current_database()`); n != 0 {
		t.Errorf("%d replication slots left on the source", n)
	}
	if pubs := scalar[string](t, sc, `SELECT coalesce(string_agg(pubname, ', '), '') FROM pg_publication WHERE pubname LIKE 'tsmigrate%'`); pubs != "" {
		t.Errorf("publications left on the source: %s", pubs)
	}
	if ri := scalar[string](t, sc, `SELECT relreplident::text FROM pg_class WHERE oid = 'nokey'::regclass`); ri != "d" {
		t.Errorf("nokey's replica identity is %q after the run, want d (default) as before", ri)
	}
	if !writable(t, srv, src) {
		t.Error("the source is frozen after a live run that stopped before its cut-over")
	}
}

// TestLiveReplicationConnectionCut: the source reached through a proxy that cuts the
// replication connection before the catch-up (once the receiver streams), and every
// connection to the source at the start of the catch-up, while a writer writes: the receiver connects again each time,
// the run cuts over, every write the source acknowledged is on the target once, verify
// finds both sides identical, nothing is left on the source.
func TestLiveReplicationConnectionCut(t *testing.T) {
	srv, src, dst, w, stopWriter := liveWithWriter(t)
	ctx := context.Background()
	proxy := testenv.StartProxy(t, srv)
	sc := connect(t, srv.SuperURI(src))

	// The events are told one at a time, while the run waits: the cuts are made there.
	var cuts []string
	cutCopy, cutCatchUp := false, false
	sum, err := migrate.Run(ctx, migrate.Options{Engine: migrate.EngineStream, Live: true, ReplicaIdentityFull: true,
		Source: cfg(t, "source", proxy.URI(t, srv.SuperURI(src))), Target: cfg(t, "target", srv.SuperURI(dst)),
		Jobs: 2, PgBin: srv.ClientBin(), FreezeGrace: time.Second,
		OnEvent: func(e migrate.Event) {
			switch {
			case e.Type == migrate.EventLive && e.Live.Stage == "catch-up":
				if !cutCatchUp {
					cutCatchUp = true
					cuts = append(cuts, fmt.Sprintf("%d source connections cut at the catch-up", proxy.CutAll()))
				}
			case !cutCopy && !cutCatchUp:
				// Before the catch-up, as soon as the receiver streams: its replication
				// connection alone.
				if port := walsenderPort(t, sc, src); port != 0 && proxy.CutPort(port) {
					cutCopy = true
					cuts = append(cuts, fmt.Sprintf("replication connection cut at %s %s", e.Type, e.Phase))
				}
			}
			if e.Type == migrate.EventNote && strings.Contains(e.Text, "lost") {
				t.Logf("note: %s", e.Text)
			}
		},
	})
	stopWriter()
	t.Logf("cuts: %s; live %+v; writer: %d inserts, %d read-only refusals", strings.Join(cuts, "; "), sum.Live, len(w.inserted), w.readOnly)
	if err != nil {
		t.Fatalf("migrate --live: %v\n%+v", err, sum)
	}
	if sum.Outcome != migrate.OutcomeMigrated || sum.Live == nil || sum.Live.Reconnects < 2 || proxy.Cuts() < 2 {
		t.Fatalf("outcome %s, live %+v, %d cuts: want migrated after 2 reconnections", sum.Outcome, sum.Live, proxy.Cuts())
	}
	w.check(t, connect(t, srv.SuperURI(dst)))
	assertLiveDone(t, srv, src, dst)
}

// TestLiveDDLRefusesCutOver: DDL on the source during the catch-up stops the run,
// naming the change, exit 1 (exit.Failed): a column added to a table the writer keeps
// updating stops it before it freezes the source; a table created that nothing writes
// to is not in the stream, and the verify of the cut-over finds it. Either way the
// slot and the publication are gone from the source and the replica identities set
// back; the source is writable again (the failed cut-over unfreezes it).
func TestLiveDDLRefusesCutOver(t *testing.T) {
	for _, c := range []struct {
		name, ddl string
		names     []string
		mayFreeze bool
	}{
		{"column added to a table written to", `ALTER TABLE docs ADD COLUMN extra int`, []string{"docs", "extra", "DDL"}, false},
		{"table created, nothing written to it", `CREATE TABLE later (id int PRIMARY KEY)`, []string{"later"}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv, src, dst, _, stopWriter := liveWithWriter(t)
			ctx := context.Background()
			var froze bool
			var once sync.Once
			var ddlErr error
			sum, err := migrate.Run(ctx, migrate.Options{Engine: migrate.EngineStream, Live: true, ReplicaIdentityFull: true,
				Source: cfg(t, "source", srv.SuperURI(src)), Target: cfg(t, "target", srv.SuperURI(dst)),
				Jobs: 2, PgBin: srv.ClientBin(), FreezeGrace: time.Second,
				OnEvent: func(e migrate.Event) {
					switch {
					case e.Type == migrate.EventPhase && e.Phase == migrate.PhaseFreeze:
						froze = true
					case e.Type == migrate.EventLive && e.Live.Stage == "catch-up":
						once.Do(func() { ddlErr = srv.Exec(context.Background(), src, c.ddl) })
					}
				},
			})
			stopWriter()
			if ddlErr != nil {
				t.Fatal(ddlErr)
			}
			if err == nil {
				t.Fatalf("migrate --live went through DDL on the source: %+v", sum)
			}
			t.Logf("exit %d (froze: %v): %v", exit.Code(err), froze, err)
			msg := err.Error() + " " + schemaDiffs(sum)
			for _, n := range c.names {
				if !strings.Contains(msg, n) {
					t.Errorf("the run's error does not name %q: %s", n, msg)
				}
			}
			if exit.Code(err) != exit.Failed {
				t.Errorf("exit %d, want %d", exit.Code(err), exit.Failed)
			}
			if froze && !c.mayFreeze {
				t.Error("the run froze the source before it stopped")
			}
			assertSourceBack(t, srv, src)
		})
	}
}

// TestLiveAbortPutsSourceBack: a live run stopped before its cut-over, by an interrupt
// during the catch-up or by a "no" at the cut-over prompt, leaves nothing on the
// source: no slot, no publication, the replica identities set back, writable.
func TestLiveAbortPutsSourceBack(t *testing.T) {
	for _, how := range []string{"interrupt", "prompt"} {
		t.Run(how, func(t *testing.T) {
			srv, src, dst, _, stopWriter := liveWithWriter(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var once sync.Once
			opt := migrate.Options{Engine: migrate.EngineStream, Live: true, ReplicaIdentityFull: true,
				Source: cfg(t, "source", srv.SuperURI(src)), Target: cfg(t, "target", srv.SuperURI(dst)),
				Jobs: 2, PgBin: srv.ClientBin(), FreezeGrace: time.Second,
				OnEvent: func(e migrate.Event) {
					if how == "interrupt" && e.Type == migrate.EventLive && e.Live.Stage == "catch-up" {
						once.Do(cancel)
					}
				}}
			refused := errors.New("not now")
			if how == "prompt" {
				opt.Cutover = migrate.CutoverPrompt
				opt.ConfirmCutover = func(context.Context) error { return refused }
			}
			sum, err := migrate.Run(ctx, opt)
			stopWriter()
			t.Logf("exit %d: %v", exit.Code(err), err)
			if err == nil || sum.Outcome == migrate.OutcomeMigrated {
				t.Fatalf("the run went through: %+v", sum)
			}
			if how == "prompt" && !errors.Is(err, refused) && !strings.Contains(err.Error(), refused.Error()) {
				t.Errorf("the run's error %v does not carry the prompt's answer", err)
			}
			assertSourceBack(t, srv, src)
		})
	}
}

// liveTrigger: a trigger on the table the writer updates, which counts its firings in
// the row: on the target it must not fire again for the rows applied.
var liveTrigger = []string{
	`ALTER TABLE docs ADD COLUMN n int NOT NULL DEFAULT 0`,
	`CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.n := NEW.n + 1; RETURN NEW; END$$`,
	`CREATE TRIGGER docs_bump BEFORE UPDATE ON docs FOR EACH ROW EXECUTE FUNCTION bump()`,
}

// TestLiveManagedTargets: migrate --live into a managed-like target as its admin,
// tsdbadmin, no superuser, who may not SET session_replication_role (the applier's
// path without replica role), cloud-like and bare owner: while a writer writes (and a
// trigger of the source counts its updates), every acknowledged write is on the
// target once, the trigger did not fire again there, verify finds both sides
// identical, nothing is left on the source.
func TestLiveManagedTargets(t *testing.T) {
	for _, flavour := range []testenv.Flavour{testenv.CloudLike, testenv.BareOwner} {
		t.Run(string(flavour), func(t *testing.T) {
			tgt := testenv.Need(t, testenv.PG17TS, testenv.Options{Flavour: flavour})
			srv, src, _, w, stopWriter := liveWithWriter(t)
			testenv.MustExec(t, srv, src, liveTrigger...)
			ctx := context.Background()
			tc := connect(t, tgt.URI(testenv.ManagedDB))
			if scalar[bool](t, tc, `SELECT has_parameter_privilege('session_replication_role', 'SET')`) {
				t.Fatal("tsdbadmin may set session_replication_role: this test needs a target where it may not")
			}
			sum, err := migrate.Run(ctx, migrate.Options{Engine: migrate.EngineStream, Live: true, ReplicaIdentityFull: true,
				Source: cfg(t, "source", srv.SuperURI(src)), Target: cfg(t, "target", tgt.URI(testenv.ManagedDB)),
				Jobs: 2, PgBin: srv.ClientBin(), FreezeGrace: time.Second,
				OnEvent: func(e migrate.Event) {
					if e.Type == migrate.EventWarning {
						t.Logf("warning: %s", e.Text)
					}
				}})
			stopWriter()
			if err != nil {
				t.Fatalf("migrate --live: %v; schema differences: %s\n%+v", err, schemaDiffs(sum), sum)
			}
			d := sum.Databases[0]
			t.Logf("restore path %s; downtime %s; live %+v; writer: %d inserts, %d read-only refusals", d.RestorePath, sum.Downtime, sum.Live, len(w.inserted), w.readOnly)
			if sum.Outcome != migrate.OutcomeMigrated || d.Identical == nil || !*d.Identical || sum.Live == nil || sum.Live.RowsApplied == 0 {
				t.Fatalf("outcome %s, identical %v, live %+v", sum.Outcome, d.Identical, sum.Live)
			}
			w.check(t, tc)
			sc := connect(t, srv.SuperURI(src))
			if want, got := scalar[string](t, sc, `SELECT string_agg(id || ':' || n, ',' ORDER BY id) FROM docs`),
				scalar[string](t, tc, `SELECT string_agg(id || ':' || n, ',' ORDER BY id) FROM docs`); got != want {
				t.Errorf("docs' trigger counts differ:\nsource %s\ntarget %s", want, got)
			}
			for _, q := range []string{`SELECT count(*) FROM pg_replication_slots WHERE database = current_database()`, `SELECT count(*) FROM pg_publication WHERE pubname LIKE 'tsmigrate%'`} {
				if n := scalar[int64](t, sc, q); n != 0 {
					t.Errorf("%s: %d on the source", q, n)
				}
			}
		})
	}
}

// TestLivePlainPostgres: migrate --live from PostgreSQL 15 without TimescaleDB (the
// writer's table m a plain table) into PostgreSQL 15: every acknowledged write on the
// target once, verify identical, nothing left on the source.
func TestLivePlainPostgres(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG15)
	ctx := context.Background()
	src, dst := testenv.NewDB(t, srv, false), testenv.NewDB(t, srv, false)
	var fixture []string
	for _, q := range liveSource {
		if !strings.Contains(q, "create_hypertable") {
			fixture = append(fixture, q)
		}
	}
	testenv.MustExec(t, srv, src, fixture...)
	testenv.MustExec(t, srv, "postgres", "ALTER DATABASE "+src+" SET logical_decoding_work_mem = '64kB'")
	unfreezeAtCleanup(t, srv, src)
	liveSlotsAtCleanup(t, srv, src)
	w := &writer{titles: map[int]string{}, nokey: map[int]string{}, stop: make(chan struct{}), done: make(chan struct{})}
	go w.run(t, srv.SuperURI(src))
	stopWriter := sync.OnceFunc(func() { close(w.stop); <-w.done })
	t.Cleanup(stopWriter)

	sum, err := migrate.Run(ctx, migrate.Options{Engine: migrate.EngineStream, Live: true, ReplicaIdentityFull: true,
		Source: cfg(t, "source", srv.SuperURI(src)), Target: cfg(t, "target", srv.SuperURI(dst)),
		Jobs: 2, PgBin: srv.ClientBin(), FreezeGrace: time.Second})
	time.Sleep(300 * time.Millisecond) // the writer meets the frozen source
	stopWriter()
	if err != nil {
		t.Fatalf("migrate --live: %v; schema differences: %s\n%+v", err, schemaDiffs(sum), sum)
	}
	t.Logf("downtime %s; live %+v; writer: %d inserts, %d read-only refusals, big %v", sum.Downtime, sum.Live, len(w.inserted), w.readOnly, w.big)
	for _, p := range sum.Phases {
		t.Logf("phase %-16s %s", p.Phase, p.Duration)
	}
	if sum.Outcome != migrate.OutcomeMigrated || sum.Live == nil || sum.Live.RowsApplied == 0 || !w.big {
		t.Fatalf("outcome %s, live %+v, big transaction %v", sum.Outcome, sum.Live, w.big)
	}
	tc := connect(t, srv.SuperURI(dst))
	w.check(t, tc)
	assertLiveDone(t, srv, src, dst)
}
