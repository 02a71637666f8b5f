package journal

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/testenv"
	"github.com/tsmigrate/tsmigrate/internal/version"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// newConn connects to a fresh database, closed when the test ends; uri connects more.
func newConn(t *testing.T) (conn *pgx.Conn, uri string) {
	t.Helper()
	srv := testenv.Shared(t, testenv.PG15)
	uri = srv.SuperURI(testenv.NewDB(t, srv, false))
	conn, err := pgx.Connect(context.Background(), uri)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn, uri
}

func TestJournalLifecycle(t *testing.T) {
	ctx := context.Background()
	conn, uri := newConn(t)

	if _, err := Read(ctx, conn); !errors.Is(err, ErrNoJournal) {
		t.Fatalf("read before open: %v", err)
	}
	run, err := Open(ctx, conn, "freeze-1")
	if err != nil || run.FreezeID != "freeze-1" || run.Planned {
		t.Fatalf("open: %+v %v", run, err)
	}
	// A second open under another freeze keeps the first record: the caller compares.
	if run, err = Open(ctx, conn, "freeze-2"); err != nil || run.FreezeID != "freeze-1" || run.Baseline != nil {
		t.Fatalf("reopen: %+v %v", run, err)
	}
	// The freeze's baseline is kept with the run, for a resume, and only for its freeze.
	if err := RecordBaseline(ctx, conn, "freeze-2", []byte(`{"version": 1}`)); err == nil {
		t.Fatal("recorded a baseline of another freeze")
	}
	if err := RecordBaseline(ctx, conn, "freeze-1", []byte(`{"version": 1, "rows_written": 9007199254740993}`)); err != nil {
		t.Fatal(err)
	}
	if run, err = Read(ctx, conn); err != nil || string(run.Baseline) != `{"version": 1, "rows_written": 9007199254740993}` {
		t.Fatalf("read the baseline back: %q %v", run.Baseline, err)
	}

	planned := 0
	// A unit's id is written into the SQL that claims it, quoted.
	const small = `small 'q' \b`
	mk := func() ([]Unit, error) {
		planned++
		return []Unit{
			{ID: small, Phase: PhaseData, Kind: KindTable, Schema: "public", Table: "s", Columns: []string{"a"}, EstBytes: 10, PageHi: -1},
			{ID: "large", Phase: PhaseData, Kind: KindTable, Schema: "public", Table: "l", Columns: []string{"a"}, EstBytes: 1000, PageHi: -1,
				TargetSchema: "other", TargetTable: "l2", Decompress: true},
		}, nil
	}
	if _, err := Plan(ctx, conn, mk); err != nil {
		t.Fatal(err)
	}
	units, err := Plan(ctx, conn, mk)
	if err != nil || planned != 1 || len(units) != 2 {
		t.Fatalf("plan twice: planned %d times, %d units, %v", planned, len(units), err)
	}

	// Largest first; a held unit is skipped by others; a rolled-back claim comes back.
	// Claims are sent as simple queries, as workers send them with other statements.
	claim := func(tx pgx.Tx, id string) (*Unit, error) {
		res, err := tx.Conn().PgConn().Exec(ctx, ClaimSQL(PhaseData, id)).ReadAll()
		if err != nil {
			return nil, err
		}
		us, err := Claimed(tx.Conn().TypeMap(), res[0])
		if err != nil || len(us) == 0 {
			return nil, err
		}
		return &us[0], nil
	}
	tx1, _ := conn.Begin(ctx)
	u, err := claim(tx1, "")
	if err != nil || u == nil || u.ID != "large" || u.TargetSchema != "other" || u.TargetTable != "l2" || !u.Decompress {
		t.Fatalf("first claim: %+v %v", u, err)
	}
	other, err := pgx.Connect(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(ctx)
	tx2, _ := other.Begin(ctx)
	if u2, err := claim(tx2, ""); err != nil || u2 == nil || u2.ID != small {
		t.Fatalf("second claim: %+v %v", u2, err)
	}
	if u3, err := claim(tx2, "large"); err != nil || u3 != nil {
		t.Fatalf("claim of a held unit: %+v %v", u3, err)
	}
	observer, err := pgx.Connect(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	defer observer.Close(ctx)
	if run, err := Read(ctx, observer); err != nil || run.Running != 2 || run.Done != 0 {
		t.Fatalf("read while both units are held: %+v %v", run, err)
	}
	if err := tx1.Conn().PgConn().Exec(ctx, DoneSQL("large", 5, 50)).Close(); err != nil {
		t.Fatal(err)
	}
	tx1.Commit(ctx)
	tx2.Rollback(ctx)
	if n, err := CountPending(ctx, conn); err != nil || n != 1 {
		t.Fatalf("pending after one done and one rolled back: %d %v", n, err)
	}
	if run, _ := Read(ctx, conn); run.Units != 2 || run.Done != 1 || run.Running != 0 || !run.Planned {
		t.Fatalf("read: %+v", run)
	}

	if ok, _ := StepDone(ctx, conn, "post-data"); ok {
		t.Fatal("step done before marked")
	}
	if err := MarkStep(ctx, conn, "post-data"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := StepDone(ctx, conn, "post-data"); !ok {
		t.Fatal("step not done after marked")
	}
	if err := Drop(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(ctx, conn); !errors.Is(err, ErrNoJournal) {
		t.Fatalf("read after drop: %v", err)
	}
}

// A batch claim takes a big unit alone, and small tables or chunks several at once,
// the largest first, skipping those another transaction holds; a chunk read
// decompressed goes alone, however small its heap; an indexes unit waits for its
// table's ranges as with a claim of one.
func TestClaimBatch(t *testing.T) {
	ctx := context.Background()
	conn, uri := newConn(t)
	if _, err := Open(ctx, conn, "f"); err != nil {
		t.Fatal(err)
	}
	unit := func(id string, kind Kind, bytes int64) Unit {
		return Unit{ID: id, Phase: PhaseData, Kind: kind, Schema: "public", Table: id, EstBytes: bytes, PageHi: -1}
	}
	units := []Unit{unit("big", KindTable, 5000), unit("range", KindRange, 4000), unit("indexes", KindIndexes, 9000)}
	units[1].Table, units[2].Table = "big2", "big2"
	for i := range 7 {
		units = append(units, unit(fmt.Sprintf("s%d", i), KindTable, int64(100-i)))
	}
	// A compressed chunk read decompressed: its heap is small, its rows need not be.
	units = append(units, unit("z", KindTable, 200))
	units[len(units)-1].Decompress = true
	if _, err := Plan(ctx, conn, func() ([]Unit, error) { return units, nil }); err != nil {
		t.Fatal(err)
	}
	claim := func(c *pgx.Conn) []string {
		t.Helper()
		res, err := c.PgConn().Exec(ctx, "BEGIN; "+ClaimBatchSQL(PhaseData, 1000, 3)).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		us, err := Claimed(c.TypeMap(), res[1])
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, u := range us {
			ids = append(ids, u.ID)
		}
		return ids
	}
	var conns []*pgx.Conn
	for range 6 {
		c, err := pgx.Connect(ctx, uri)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(ctx)
		conns = append(conns, c)
	}
	for i, want := range []string{"big", "range", "z", "s0 s1 s2", "s3 s4 s5"} {
		if got := strings.Join(claim(conns[i]), " "); got != want {
			t.Errorf("claim %d took %q, want %q", i+1, got, want)
		}
	}
	// Once its range is done, the indexes unit goes first, alone.
	if err := conns[1].PgConn().Exec(ctx, DoneSQL("range", 1, 1)+"; COMMIT").Close(); err != nil {
		t.Fatal(err)
	}
	if err := conns[4].PgConn().Exec(ctx, "ROLLBACK").Close(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(claim(conns[1]), " "); got != "indexes" {
		t.Errorf("claim after the range was done took %q, want the indexes unit", got)
	}
	if got := strings.Join(claim(conns[4]), " "); got != "s3 s4 s5" {
		t.Errorf("claim of what was handed back took %q, want s3 s4 s5", got)
	}
	if got := strings.Join(claim(conns[5]), " "); got != "s6" {
		t.Errorf("last claim took %q, want s6", got)
	}
}

// The journal records its format and the tsmigrate that wrote it; a journal of another
// format, or one from before formats were recorded, is refused by Read and Open, which
// leave it as it is.
func TestJournalFormat(t *testing.T) {
	ctx := context.Background()
	conn, _ := newConn(t)
	if _, err := Open(ctx, conn, "freeze-1"); err != nil {
		t.Fatal(err)
	}
	var format int
	var written string
	if err := conn.QueryRow(ctx, `SELECT format, tsmigrate_version FROM _tsmigrate.run`).Scan(&format, &written); err != nil ||
		format != Format || written != version.Get().String() || written == "" {
		t.Fatalf("recorded format %d, version %q (%v); want %d, %q", format, written, err, Format, version.Get())
	}

	// What the journal holds, to show that a refusal changed nothing.
	const state = `SELECT (SELECT row_to_json(r)::text FROM _tsmigrate.run r) || ' ' ||
	(SELECT string_agg(c.relname, ',' ORDER BY c.relname) FROM pg_class c WHERE c.relnamespace = '_tsmigrate'::regnamespace)`
	read := func() string {
		t.Helper()
		var s string
		if err := conn.QueryRow(ctx, state).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	refused := func(want FormatError, text string) {
		t.Helper()
		before := read()
		for name, call := range map[string]func() error{
			"read": func() error { _, err := Read(ctx, conn); return err },
			"open": func() error { _, err := Open(ctx, conn, "freeze-2"); return err },
		} {
			var fe *FormatError
			if err := call(); !errors.As(err, &fe) || *fe != want || !strings.Contains(err.Error(), text) {
				t.Errorf("%s of a journal of format %d: %v, want %+v saying %q", name, want.Format, err, want, text)
			}
		}
		if after := read(); after != before {
			t.Errorf("a refused journal changed:\n%s\n%s", before, after)
		}
	}

	// Format 1 (units without the table their rows go into on the target) is not this.
	if _, err := conn.Exec(ctx, `UPDATE _tsmigrate.run SET format = 1, tsmigrate_version = 'v0.1.0'`); err != nil {
		t.Fatal(err)
	}
	refused(FormatError{Format: 1, Version: "v0.1.0"}, "written by tsmigrate v0.1.0 (journal format 1)")
	if _, err := conn.Exec(ctx, `UPDATE _tsmigrate.run SET format = 99, tsmigrate_version = 'v9.9.9'`); err != nil {
		t.Fatal(err)
	}
	refused(FormatError{Format: 99, Version: "v9.9.9"}, "written by tsmigrate v9.9.9 (journal format 99)")

	// Journals from before: no format columns, and the first ones had no steps table.
	if _, err := conn.Exec(ctx, `ALTER TABLE _tsmigrate.run DROP COLUMN format, DROP COLUMN tsmigrate_version; DROP TABLE _tsmigrate.steps`); err != nil {
		t.Fatal(err)
	}
	refused(FormatError{}, "written by a tsmigrate from before journals recorded their format")
}
