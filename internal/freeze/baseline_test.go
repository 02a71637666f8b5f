package freeze_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/freeze"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// deferredFreeze freezes src with a deferred proof and returns its encoded baseline,
// letting go of its locks as the process that froze would by ending.
func deferredFreeze(t *testing.T, src *dbconn.Config) []byte {
	t.Helper()
	res, err := freeze.Freeze(context.Background(), src, freeze.Options{DeferProof: true, ProofWindow: freeze.MinProofWindow})
	if err != nil {
		t.Fatal(err)
	}
	res.Pending.Release()
	data, err := res.Pending.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func restore(t *testing.T, src *dbconn.Config, data []byte) *freeze.PendingProof {
	t.Helper()
	p, err := freeze.RestoreProof(src, data)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// notProven checks that a restored baseline fails, naming why, both in Moved and in
// Finish (exit 1, ErrNotProven).
func notProven(t *testing.T, p *freeze.PendingProof, want string) {
	t.Helper()
	ctx := context.Background()
	moved, err := p.Moved(ctx)
	if err != nil || !strings.Contains(strings.Join(moved, "; "), want) {
		t.Errorf("moved %q (%v), want %q", moved, err, want)
	}
	_, err = p.Finish(ctx)
	if !errors.Is(err, freeze.ErrNotProven) || exit.Code(err) != exit.Failed || !strings.Contains(err.Error(), want) {
		t.Errorf("finish: %v (exit %d), want ErrNotProven naming %q", err, exit.Code(err), want)
	}
}

// A baseline encoded by one process and restored by another (a resumed migration)
// proves the same as the original: nothing moved, Finish passes from the first
// baseline; a write, a reset of the statistics (all of the database's, or one
// table's) since then fail it, saying so (PostgreSQL 15 and 17). A baseline of another database, of an
// unknown version or unreadable is refused.
func TestRestoredProof(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, testenv.PG15, false)
	data := deferredFreeze(t, f.src)
	p := restore(t, f.src, data)
	if moved, err := p.Moved(ctx); err != nil || len(moved) != 0 {
		t.Fatalf("nothing written, yet moved: %q %v", moved, err)
	}
	proof, err := p.Finish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !proof.Start.Equal(p.Baseline()) || proof.WindowSeconds < freeze.MinProofWindow.Seconds()-0.05 {
		t.Fatalf("proof %+v, baseline %s", proof, p.Baseline())
	}

	var fields map[string]any
	if err := json.Unmarshal(data, &fields); err != nil {
		t.Fatal(err)
	}
	fields["version"] = 2
	v2, _ := json.Marshal(fields)
	for _, tc := range []struct {
		name string
		src  *dbconn.Config
		data []byte
		want string
	}{
		{"other database", f.src.WithDatabase("postgres"), data, `of database "` + f.db + `", not "postgres"`},
		{"other version", f.src, v2, "version 2"},
		{"unreadable", f.src, []byte("{"), "unreadable"},
	} {
		if _, err := freeze.RestoreProof(tc.src, tc.data); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}

	for _, tc := range []struct {
		name string
		sql  []string
		want string
	}{
		{"a superuser's write", []string{"SET default_transaction_read_only = off", "INSERT INTO t VALUES (1)"}, "rows written moved"},
		{"statistics reset", []string{"SELECT pg_stat_reset()"}, "statistics were reset"},
		{"one table's counters reset", []string{"SELECT pg_stat_reset_single_table_counters('t'::regclass)"}, "statistics were reset"},
	} {
		for _, k := range kinds {
			t.Run(string(k)+"/"+tc.name, func(t *testing.T) {
				f := newFixture(t, k, false)
				data := deferredFreeze(t, f.src)
				testenv.MustExec(t, f.srv, f.db, tc.sql...)
				notProven(t, restore(t, f.src, data), tc.want)
			})
		}
	}
}

// A restart of the server after the baseline fails the proof, naming the restart,
// even though a clean shutdown keeps the counters (PostgreSQL 15+) and nothing wrote:
// nothing counts while the server is down. So does track_counts turned off (on its own
// server too: the setting is server-wide).
func TestRestoredProofAfterRestart(t *testing.T) {
	ctx := context.Background()
	srv := testenv.Need(t, testenv.PG15, testenv.Options{})
	db := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, db, "CREATE TABLE t (a int)", "INSERT INTO t VALUES (1)")
	src, err := dbconn.Parse("source", srv.URI(db))
	if err != nil {
		t.Fatal(err)
	}
	data := deferredFreeze(t, src)
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := srv.Restart(rctx); err != nil {
		t.Fatal(err)
	}
	p := restore(t, src, data)
	notProven(t, p, "the server restarted")
	moved, _ := p.Moved(ctx)
	if len(moved) != 1 {
		t.Errorf("after a clean restart, only the restart should differ: %q", moved)
	}

	if _, err := freeze.Unfreeze(ctx, src); err != nil {
		t.Fatal(err)
	}
	data = deferredFreeze(t, src)
	testenv.MustExec(t, srv, "postgres", "ALTER SYSTEM SET track_counts = off", "SELECT pg_reload_conf()")
	testenv.Eventually(t, 30*time.Second, func() error { // the postmaster rereads its configuration in its own time
		if err := srv.Exec(ctx, "postgres", "DO $$BEGIN IF current_setting('track_counts')::bool THEN RAISE 'on'; END IF; END$$"); err != nil {
			return fmt.Errorf("track_counts still on after the reload: %w", err)
		}
		return nil
	})
	notProven(t, restore(t, src, data), "track_counts was turned off")
}
