package migrate_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
	"github.com/tsmigrate/tsmigrate/internal/verify"
)

// keyedSource: a plain table large enough that reading it whole at the cut-over
// would show, and one with a key of two columns.
var keyedSource = []string{
	`CREATE TABLE big (id int PRIMARY KEY, v text)`,
	`INSERT INTO big SELECT g, 'v' || g FROM generate_series(1, 200000) g`,
	`CREATE TABLE pair (a int, b int, v text, PRIMARY KEY (a, b))`,
	`INSERT INTO pair SELECT g / 10, g % 10, 'p' || g FROM generate_series(1, 1000) g`,
}

// keyedChanges are made on the source once the live run caught up: 100 updates, an
// update that changes the key (its old and new key are both compared), a delete, an
// insert, and a key of two columns changed.
var keyedChanges = []string{
	`UPDATE big SET v = 'changed' || id WHERE id BETWEEN 1 AND 100`,
	`UPDATE big SET id = 300001 WHERE id = 150000`,
	`DELETE FROM big WHERE id = 150001`,
	`INSERT INTO big VALUES (300002, 'new')`,
	`UPDATE pair SET b = 99 WHERE a = 3 AND b = 4`,
}

// keyedRun runs migrate --live --cutover prompt from a new source holding
// keyedSource; at the prompt, it makes keyedChanges on the source, waits until the
// target applied them, then runs corrupt on the target. It returns the summary, the
// unit of big in the cut-over's verify, big's scans on the source (now, and as the
// prompt returned), and the run's error.
func keyedRun(t *testing.T, corrupt string) (*migrate.Summary, *verify.Unit, func() [2]int64, [2]int64, error) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src, dst := testenv.NewDB(t, srv, true), testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, src, keyedSource...)
	unfreezeAtCleanup(t, srv, src)
	liveSlotsAtCleanup(t, srv, src)
	// readScans reads big's scans on the source: seq_scan, idx_scan (in a session of
	// its own: the freeze ends the others).
	readScans := func(ctx context.Context) (s [2]int64, err error) {
		c, err := pgx.Connect(ctx, srv.SuperURI(src))
		if err != nil {
			return s, err
		}
		defer c.Close(ctx)
		err = c.QueryRow(ctx, `SELECT seq_scan, coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relid = 'big'::regclass`).Scan(&s[0], &s[1])
		return s, err
	}
	scans := func() [2]int64 {
		s, err := readScans(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	var before [2]int64
	var scanErr error
	confirm := func(ctx context.Context) error {
		c, err := pgx.Connect(ctx, srv.SuperURI(src))
		if err != nil {
			return err
		}
		for _, q := range keyedChanges {
			if _, err := c.Exec(ctx, q); err != nil {
				c.Close(ctx)
				return fmt.Errorf("%s: %w", q, err)
			}
		}
		c.Close(ctx)
		tc, err := pgx.Connect(ctx, srv.SuperURI(dst))
		if err != nil {
			return err
		}
		defer tc.Close(ctx)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for applied := false; !applied; {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-tick.C:
			}
			if err := tc.QueryRow(ctx, `SELECT EXISTS (SELECT FROM big WHERE id = 300002) AND EXISTS (SELECT FROM pair WHERE b = 99)`).Scan(&applied); err != nil {
				return err
			}
		}
		if _, err := tc.Exec(ctx, corrupt); err != nil {
			return err
		}
		// The baseline of big's scans on the source, read here: the copy, its verify
		// and the changes above are done.
		before, scanErr = readScans(ctx)
		return scanErr
	}
	sum, err := migrate.Run(context.Background(), migrate.Options{Engine: migrate.EngineStream, Live: true, Cutover: migrate.CutoverPrompt,
		Source: cfg(t, "source", srv.SuperURI(src)), Target: cfg(t, "target", srv.SuperURI(dst)), Jobs: 2, PgBin: srv.ClientBin(),
		FreezeGrace: time.Second, ConfirmCutover: confirm})
	if scanErr != nil {
		t.Fatal(scanErr)
	}
	for _, p := range sum.Phases {
		t.Logf("phase %-16s %s", p.Phase, p.Duration)
	}
	var unit *verify.Unit
	if len(sum.Databases) == 1 {
		if rep, ok := sum.Databases[0].Verify.(*verify.Report); ok {
			for i, u := range rep.Units {
				t.Logf("cut-over verify: %s: key rows %d, source %d rows, target %d rows, %s", u.Name(), u.KeyRows, u.Source.Rows, u.Target.Rows, u.Problem)
				if u.Table == "public.big" {
					unit = &rep.Units[i]
				}
			}
		}
	}
	if unit == nil {
		t.Fatalf("the cut-over's verify did not compare big: %v, summary %+v", err, sum)
	}
	return sum, unit, scans, before, err
}

// TestLiveCutoverVerifiesChangedRows: the cut-over's verify compares, of a plain
// table with a primary key, only the rows changes were applied to (their keys, old and
// new), through its index: the source's big table is not scanned whole while frozen.
// A target row the changes did not touch is not compared then (the verify after the
// copy compared it).
func TestLiveCutoverVerifiesChangedRows(t *testing.T) {
	sum, u, scans, before, err := keyedRun(t, `UPDATE big SET v = 'not compared at the cut-over' WHERE id = 100000`)
	if err != nil || sum.Outcome != migrate.OutcomeMigrated {
		t.Fatalf("migrate --live: %v, summary %+v", err, sum)
	}
	// 100 updated, 150000 -> 300001 (both keys), 150001 deleted, 300002 inserted.
	if !u.Identical || u.KeyRows != 104 || u.Source.Rows != 102 || u.Target.Rows != 102 {
		t.Errorf("big at the cut-over: %+v; want 104 keys, 102 rows on each side", *u)
	}
	rep := sum.Databases[0].Verify.(*verify.Report)
	for _, x := range rep.Units {
		if x.Table == "public.pair" && (x.KeyRows != 2 || x.Source.Rows != 1 || !x.Identical) {
			t.Errorf("pair at the cut-over: %+v; want 2 keys, 1 row", x)
		}
	}
	testenv.Eventually(t, time.Minute, func() error {
		if s := scans(); s[1] <= before[1] {
			return fmt.Errorf("big's index scans on the source: %d, %d before the cut-over", s[1], before[1])
		}
		return nil
	})
	if s := scans(); s[0] != before[0] {
		t.Errorf("big was scanned whole on the source at the cut-over: seq_scan %d, %d before", s[0], before[0])
	}
}

// TestLiveCutoverFindsChangedRowCorrupt: a target row among those changes were
// applied to, altered on the target after its change was applied, is found by the
// cut-over's verify: the run fails, naming the row.
func TestLiveCutoverFindsChangedRowCorrupt(t *testing.T) {
	sum, u, _, _, err := keyedRun(t, `UPDATE big SET v = 'corrupt' WHERE id = 50`)
	if err == nil || exit.Code(err) != exit.Failed || sum.Outcome == migrate.OutcomeMigrated {
		t.Fatalf("migrate --live with a corrupt row: %v (exit %d), outcome %s", err, exit.Code(err), sum.Outcome)
	}
	if id := sum.Databases[0].Identical; id == nil || *id {
		t.Errorf("identical: %v", id)
	}
	if u.Identical || u.KeyRows != 104 || len(u.Rows) != 1 || u.Rows[0].Target == nil || *u.Rows[0].Target[1] != "corrupt" {
		t.Errorf("big at the cut-over: %+v; want the row of id 50 shown", *u)
	}
	t.Logf("error: %v", err)
}
