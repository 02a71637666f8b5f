package live

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// TestStartReceiveDrop: the slot's snapshot sees the rows from before it, the changes
// after it arrive in the target's spool (those of a chunk created after the start too),
// the slot is told so (its WAL is not held back), and Drop leaves nothing behind.
func TestStartReceiveDrop(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	ctx := context.Background()
	src, dst := testenv.NewDB(t, srv, true), testenv.NewDB(t, srv, true)
	testenv.MustExec(t, srv, src,
		`CREATE TABLE m (ts timestamptz NOT NULL, v int, PRIMARY KEY (ts))`,
		`SELECT create_hypertable('m', 'ts', chunk_time_interval => interval '1 day')`,
		`INSERT INTO m SELECT '2024-01-01'::timestamptz + g * interval '1 hour', g FROM generate_series(1, 30) g`,
		`CREATE TABLE p (id int PRIMARY KEY, t text)`,
		`INSERT INTO p SELECT g, 'x' FROM generate_series(1, 10) g`,
		`CREATE TABLE nokey (a int, b text)`)
	source, target := mustParse(t, "source", srv.SuperURI(src)), mustParse(t, "target", srv.SuperURI(dst))
	names := NewNames()

	_, err := Start(ctx, source, Options{Names: names})
	var missing *MissingIdentityError
	if !errors.As(err, &missing) || len(missing.Tables) != 1 || missing.Tables[0].Table.Name != "nokey" {
		t.Fatalf("Start without --replica-identity-full: %v, want a MissingIdentityError naming nokey", err)
	}
	sc := dbConn(t, srv, src)
	if n := queryInt(t, sc, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, names.Slot) +
		queryInt(t, sc, `SELECT count(*) FROM pg_publication WHERE pubname = $1`, names.Publication); n != 0 {
		t.Fatalf("a refused Start left %d slot/publication", n)
	}

	s, err := Start(ctx, source, Options{Names: names, ReplicaIdentityFull: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	if err := Init(ctx, target, s); err != nil {
		t.Fatal(err)
	}
	// Written after the slot: not in its snapshot, in its stream.
	testenv.MustExec(t, srv, src,
		`INSERT INTO m VALUES ('2024-03-01', 1)`, // a new chunk
		`UPDATE p SET t = 'y' WHERE id = 1`, `DELETE FROM p WHERE id = 2`,
		`INSERT INTO nokey VALUES (1, 'a')`, `UPDATE nokey SET b = 'b'`)
	var inSnap int64
	if err := s.holder.QueryRow(ctx, `SELECT count(*) FROM m`).Scan(&inSnap); err != nil || inSnap != 30 {
		t.Fatalf("the slot's snapshot sees %d rows of m (%v), want 30", inSnap, err)
	}

	r := &Receiver{Source: source, Target: target, OnRetry: func(n int, err error) { t.Logf("retry %d: %v", n, err) }}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	tc := dbConn(t, srv, dst)
	testenv.Eventually(t, time.Minute, func() error {
		select {
		case err := <-done:
			t.Fatalf("the receiver stopped: %v", err)
		default:
		}
		if queryInt(t, tc, `SELECT count(*) FROM _tsmigrate.live_changes WHERE get_byte(data, 0) = ascii('C')`) < 5 {
			return fmt.Errorf("5 transactions not received: %+v; %d rows", r.Status(), queryInt(t, tc, `SELECT count(*) FROM _tsmigrate.live_changes`))
		}
		return nil
	})
	// The slot is told what the target keeps.
	testenv.Eventually(t, time.Minute, func() error {
		st, err := ReadState(ctx, tc)
		if err != nil {
			t.Fatal(err)
		}
		var confirmed string
		if err := sc.QueryRow(ctx, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, names.Slot).Scan(&confirmed); err != nil {
			t.Fatal(err)
		}
		c, _ := parseLSN(confirmed)
		if st.ReceivedSeq > 0 && c >= st.ReceivedLSN && c > s.StartLSN {
			return nil
		}
		return fmt.Errorf("slot confirmed %s, target received %s", confirmed, st.ReceivedLSN)
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s.Close(ctx)
	if err := Drop(ctx, source, names, s.Identity); err != nil {
		t.Fatal(err)
	}
	if n := queryInt(t, sc, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, names.Slot) +
		queryInt(t, sc, `SELECT count(*) FROM pg_publication WHERE pubname = $1`, names.Publication); n != 0 {
		t.Fatalf("Drop left %d slot/publication", n)
	}
	if n := queryInt(t, sc, `SELECT count(*) FROM pg_class WHERE relname IN ('nokey', 'bgw_policy_chunk_stats') AND relreplident <> 'd'`); n != 0 {
		t.Fatalf("Drop left %d replica identities changed", n)
	}
}

// A source without TimescaleDB: its plain tables are published, and those without a
// replica identity are named.
func TestReadPlanWithoutTimescaleDB(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	src := testenv.NewDB(t, srv, false)
	testenv.MustExec(t, srv, src, `CREATE TABLE p (id int PRIMARY KEY)`, `CREATE TABLE nokey (a int)`)
	p, err := ReadPlan(context.Background(), dbConn(t, srv, src))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(p.Tables) != "[public.nokey public.p]" || len(p.Missing) != 1 || p.Missing[0].Table.Name != "nokey" || p.Timescale {
		t.Errorf("plan: tables %v, missing %+v, timescale %v; want tables public.nokey and public.p, nokey missing", p.Tables, p.Missing, p.Timescale)
	}
}
