package migrate_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/copy"
	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/freeze"
	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
	"github.com/tsmigrate/tsmigrate/internal/verify"
)

// proofSource is a small source with a plain table and a hypertable.
func proofSource(t *testing.T, srv *testenv.Server) string {
	t.Helper()
	src := testenv.NewDB(t, srv, true)
	testenv.MustExec(t, srv, src, "CREATE TABLE t (id int PRIMARY KEY, v text)",
		"INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 2000) g",
		"CREATE TABLE m (ts timestamptz NOT NULL, v int)", "SELECT create_hypertable('m', 'ts')",
		"INSERT INTO m SELECT '2025-01-01'::timestamptz + g * interval '1 hour', g FROM generate_series(1, 2000) g")
	return src
}

// The freeze's proof runs after the copy instead of before it: the freeze phase does
// not wait for a proof window, and the summary's proof covers the whole copy.
func TestStreamProofCoversCopy(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	ctx := context.Background()
	src := proofSource(t, srv)
	dst := testenv.NewDB(t, srv, false)
	unfreezeAtCleanup(t, srv, src)

	var notes []string
	sum, err := migrate.Run(ctx, migrate.Options{Engine: migrate.EngineStream,
		Source: cfg(t, "source", srv.URI(src)), Target: cfg(t, "target", srv.URI(dst)),
		Jobs: 2, PgBin: srv.ClientBin(), FreezeGrace: time.Second,
		OnEvent: func(e migrate.Event) {
			if e.Type == migrate.EventNote {
				notes = append(notes, e.Text)
			}
		},
	})
	if err != nil || sum.Outcome != migrate.OutcomeMigrated || !sum.Frozen() {
		t.Fatalf("migrate: %v\n%+v", err, sum)
	}
	d := sum.Databases[0]
	p := d.FreezeProof
	if p == nil || !p.CountersTracked || p.WindowSeconds < freeze.DefaultProofWindow.Seconds()-0.1 {
		t.Fatalf("freeze proof %+v", p)
	}
	var freezeTime, copyTime, dataTime time.Duration
	for _, ph := range d.Phases {
		switch ph.Phase {
		case migrate.PhaseCopy:
			copyTime = ph.Duration
		case migrate.PhaseSchemaDump, migrate.PhasePreData:
			dataTime += ph.Duration
		}
	}
	for _, ph := range sum.Phases {
		if ph.Phase == migrate.PhaseFreeze {
			freezeTime = ph.Duration
		}
	}
	if copyTime == 0 || p.WindowSeconds < (copyTime+dataTime).Seconds() {
		t.Errorf("proof window %.2f s does not cover the schema dump, pre-data and copy (%s)", p.WindowSeconds, copyTime+dataTime)
	}
	if freezeTime >= freeze.MinProofWindow {
		t.Errorf("the freeze phase took %s: it still waits for a proof window", freezeTime)
	}
	if !strings.Contains(strings.Join(notes, "\n"), "proof: no write to the source from the freeze until the end of the copy") {
		t.Errorf("no proof note among %q", notes)
	}
	js, err := json.Marshal(sum)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(js), `"freeze_proof":{"start":`) {
		t.Errorf("the JSON summary shows no freeze_proof: %s", js)
	}
}

// A session that turns read-only off and creates a table after the copy's snapshot (or,
// for the dump engine, once the dump started) fails the run before success: exit 1,
// naming the freeze proof; the source is unfrozen (also when --keep-frozen-on-failure
// asks to keep it frozen: the copy may miss the write, so no resume is offered), and
// nothing claims success.
func TestWriteAfterSnapshotFailsProof(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	for _, tc := range []struct {
		name       string
		engine     string
		keepFrozen bool
	}{
		{"stream", migrate.EngineStream, false},
		{"stream-keep-frozen", migrate.EngineStream, true},
		{"dump", migrate.EngineDump, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			src := proofSource(t, srv)
			dst := testenv.NewDB(t, srv, false)
			unfreezeAtCleanup(t, srv, src)
			var once sync.Once
			var writeErr error
			write := func() {
				once.Do(func() {
					// A write that the freeze's locks do not stop (an INSERT would wait for
					// them, see TestRogueWritersDuringCopy): an object created.
					writeErr = srv.Exec(ctx, src, "SET default_transaction_read_only = off", "CREATE TABLE late (a int)")
				})
			}
			opt := migrate.Options{Engine: tc.engine, KeepFrozenOnFailure: tc.keepFrozen,
				Source: cfg(t, "source", srv.URI(src)), Target: cfg(t, "target", srv.URI(dst)),
				Jobs: 2, PgBin: srv.ClientBin(), FreezeGrace: time.Second,
			}
			if tc.engine == migrate.EngineStream {
				// Planned comes after the copy exported its snapshot.
				opt.DataProgress = func(string) (func(copy.Event), func()) {
					return func(e copy.Event) {
						if e.Type == copy.Planned {
							write()
						}
					}, func() {}
				}
			} else {
				opt.OnEvent = func(e migrate.Event) {
					if e.Type == migrate.EventPhase && e.Phase == migrate.PhaseDump {
						write()
					}
				}
			}
			sum, err := migrate.Run(ctx, opt)
			if writeErr != nil {
				t.Fatalf("the late write: %v", writeErr)
			}
			if exit.Code(err) != exit.Failed || !errors.Is(err, freeze.ErrNotProven) || !strings.Contains(err.Error(), "freeze proof failed") ||
				!strings.Contains(err.Error(), "the catalog changed") {
				t.Fatalf("exit %d: %v", exit.Code(err), err)
			}
			if sum.Outcome != migrate.OutcomeFailed || sum.Frozen() || len(sum.CutOver) != 0 || len(sum.Resume) != 0 ||
				len(sum.ResetTarget) == 0 || sum.Databases[0].FreezeProof != nil {
				t.Fatalf("summary %+v", sum)
			}
			for _, ph := range sum.Phases {
				if ph.Phase == migrate.PhaseVerify || ph.Phase == migrate.PhaseRestore || ph.Phase == migrate.PhasePostData {
					t.Errorf("phase %s ran after the proof failed", ph.Phase)
				}
			}
			if !writable(t, srv, src) {
				t.Fatal("the source is still frozen after the failed run")
			}
		})
	}
}

// The writers the freeze proof missed (issue 10, I.3), started once the source is
// being read (after the copy's snapshot; once the dump started), each in a session
// that turned read-only off: a procedure updating rows and committing in a loop, and
// "UPDATE ...; BEGIN; SELECT 1" left idle in its transaction, whose counts neither
// flushes. With --no-verify and either engine, the run either fails its proof or is
// MIGRATED with a target equal to the source, as verify finds it once the writers are
// gone: no write reaches the source after what was copied of it.
func TestRogueWritersDuringCopy(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	for _, engine := range []string{migrate.EngineStream, migrate.EngineDump} {
		t.Run(engine, func(t *testing.T) {
			ctx := context.Background()
			src := proofSource(t, srv)
			testenv.MustExec(t, srv, src, "CREATE TABLE counter (n int)", "INSERT INTO counter VALUES (0)",
				`CREATE PROCEDURE bump() LANGUAGE plpgsql AS $$
				BEGIN
					FOR i IN 1..600 LOOP
						UPDATE counter SET n = n + 1;
						COMMIT;
						PERFORM pg_sleep(0.05);
					END LOOP;
				END$$`)
			dst := testenv.NewDB(t, srv, false)
			unfreezeAtCleanup(t, srv, src)
			var once sync.Once
			done := make(chan error, 2)
			rogue := func(statements ...string) {
				c, err := pgx.Connect(ctx, srv.SuperURI(src))
				if err != nil {
					done <- err
					return
				}
				t.Cleanup(func() { c.Close(context.Background()) })
				go func() {
					for _, q := range append([]string{"SET default_transaction_read_only = off"}, statements...) {
						if _, err := c.Exec(ctx, q); err != nil {
							done <- err
							return
						}
					}
					done <- nil
				}()
			}
			start := func() {
				once.Do(func() {
					rogue("CALL bump()")
					rogue("UPDATE t SET v = 'late' WHERE id = 1", "BEGIN", "SELECT 1")
				})
			}
			opt := migrate.Options{Engine: engine, NoVerify: true,
				Source: cfg(t, "source", srv.URI(src)), Target: cfg(t, "target", srv.URI(dst)),
				Jobs: 2, PgBin: srv.ClientBin(), FreezeGrace: time.Second}
			if engine == migrate.EngineStream {
				opt.DataProgress = func(string) (func(copy.Event), func()) {
					return func(e copy.Event) {
						if e.Type == copy.Planned {
							start()
						}
					}, func() {}
				}
			} else {
				opt.OnEvent = func(e migrate.Event) {
					if e.Type == migrate.EventPhase && e.Phase == migrate.PhaseDump {
						start()
					}
				}
			}
			sum, err := migrate.Run(ctx, opt)
			if err != nil {
				if !errors.Is(err, freeze.ErrNotProven) {
					t.Fatalf("exit %d: %v", exit.Code(err), err)
				}
				t.Logf("the proof failed: %v", err)
				return
			}
			if sum.Outcome != migrate.OutcomeMigrated {
				t.Fatalf("summary %+v", sum)
			}
			for range 2 {
				select {
				case err := <-done:
					t.Logf("a writer ended: %v", err)
				case <-time.After(45 * time.Second):
					t.Fatal("a writer still runs 45 s after the run")
				}
			}
			rep, err := verify.Run(ctx, verify.Options{Source: cfg(t, "source", srv.URI(src)), Target: cfg(t, "target", srv.URI(dst))})
			if err != nil {
				t.Fatal(err)
			}
			if !rep.Identical {
				for _, u := range rep.Units {
					if !u.Identical {
						t.Errorf("%s: %s", u.Name(), u.Problem)
					}
				}
				t.Fatalf("MIGRATED, yet the target differs from the source: %v", rep.Schema)
			}
			if n := sum.Databases[0].FreezeProof.TablesLocked; n < 3 {
				t.Errorf("%d tables locked", n)
			}
		})
	}
}
