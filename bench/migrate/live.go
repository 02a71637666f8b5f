package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// -live: the ways of migrating while an application writes (issue 15). Ways:
//   - "live": tsmigrate migrate --live --cutover auto --json; its summary gives the
//     downtime (from the freeze to "point the applications at the target") and the
//     live figures (peak WAL retained by the slot, peak lag, apply rate);
//   - "pgcopydb": pgcopydb 0.17 clone --follow, cut over as its documentation says:
//     once it applies changes and the lag is small, the source is made read-only
//     (the database's default_transaction_read_only, the writer's sessions ended),
//     then `pgcopydb stream sentinel set endpos --current`; its downtime is from that
//     freeze to the target holding every change (the time to pgcopydb's exit, which
//     sets the sequences last, is given too).
//
// For every way the bench also measures, the same way: the WAL the way's replication
// slot held on the source (sampled five times a second: the current position minus
// the slot's restart_lsn) and how far its confirmed position was behind; how stale
// the target was (the age of the newest of the writer's hypertable rows on the
// target, while the writer wrote); the rate at which the target caught up (the
// writer's rows it gained, of every kind, from the last sample before the way began
// to apply changes to the first at which its newest writer row was under a second
// old, over the time between); and whether the target holds every row the source
// does, table by table.

// liveFigures are one live way's measures.
type liveFigures struct {
	Way      string  `json:"way"`
	Scale    float64 `json:"scale"`
	WallS    float64 `json:"wall_s"`
	Failed   string  `json:"failed,omitempty"`
	Downtime float64 `json:"downtime_s"`      // the tool's (tsmigrate) or measured (pgcopydb)
	DownHow  string  `json:"downtime_source"` // "summary downtime_ms", "measured"
	// DowntimeToExit: pgcopydb's, from the freeze to its exit (it sets sequences last).
	DowntimeToExit float64 `json:"downtime_to_exit_s,omitempty"`
	// What the writer saw from the freeze: from its last acknowledged write before it
	// was refused (or failed) to the end of the way (the process's exit).
	WriterGap float64 `json:"writer_gap_s"`
	// The tool's own figures (tsmigrate's summary; pgcopydb's sentinel for lag bytes).
	PeakRetained    int64   `json:"peak_retained_bytes"`
	PeakLagBytes    int64   `json:"peak_lag_bytes"`
	PeakLagSeconds  float64 `json:"peak_lag_s"`
	ApplyRowsPerSec float64 `json:"apply_rows_per_s"`
	RowsApplied     int64   `json:"rows_applied,omitempty"`
	Transactions    int64   `json:"transactions,omitempty"`
	Reconnects      int64   `json:"reconnects,omitempty"`
	// The bench's own measures, the same for every way.
	SlotPeakRetained int64            `json:"slot_peak_retained_bytes"`
	SlotPeakBehind   int64            `json:"slot_peak_confirmed_behind_bytes"`
	TargetPeakStale  float64          `json:"target_peak_stale_s"`
	CatchUpRate      float64          `json:"catch_up_rows_per_s"`
	CatchUpRows      int64            `json:"catch_up_rows"`
	CatchUpSeconds   float64          `json:"catch_up_s"`
	Writer           writerStats      `json:"writer"`
	WriterRate       int              `json:"writer_rate"`
	Source           map[string]int64 `json:"source_rows"`
	Target           map[string]int64 `json:"target_rows"`
	Equal            bool             `json:"target_equals_source"`
	Load             [2]string        `json:"load"`
	Phases           string           `json:"phases,omitempty"`
	// Timeline: every sample, [seconds since the way started, WAL the slot held,
	// bytes its confirmed position was behind, the writer's rows the target holds
	// (-1: not readable), seconds since the newest of them was written].
	Timeline [][5]float64 `json:"timeline"`
	// ApplyingAt and FrozenAt: seconds since the way started when it began to apply
	// changes (its copy and post-data done) and when the source was frozen.
	ApplyingAt float64 `json:"applying_at_s,omitempty"`
	FrozenAt   float64 `json:"frozen_at_s,omitempty"`
}

// liveSample is one look at both servers during a live way.
type liveSample struct {
	at       time.Time
	retained int64 // WAL the way's slot holds on the source
	behind   int64 // the slot's confirmed position behind the source's
	applied  int64 // the writer's hypertable rows on the target (-1: not readable yet)
	newest   time.Time
}

// Source queries of the sampler, PostgreSQL 17. A way's slot is told by its name.
const (
	sqlSlotWAL = `SELECT coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)), 0)::bigint,
       coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)), 0)::bigint
FROM pg_replication_slots WHERE database = 'bench' AND slot_name LIKE $1`
	sqlWriterApplied = `SELECT count(*), coalesce(max(time), 'epoch') FROM metrics WHERE device_id >= $1 AND device_id < $1 + 1000`
	sqlEndWriter     = `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'bench' AND application_name = '` + writerApp + `'`
	sqlCurrentLSN    = `SELECT pg_current_wal_lsn()::text`
)

// sampleEvery is how often the sampler looks; caughtUp is how old the target's newest
// writer row may be for the target to count as caught up.
const (
	sampleEvery = 200 * time.Millisecond
	caughtUp    = time.Second
)

// sampler looks at both servers every sampleEvery until ctx ends.
type sampler struct {
	mu      sync.Mutex
	samples []liveSample
}

func (s *sampler) run(ctx context.Context, srcURI, dstURI, slotLike string, device int32) {
	var src, dst *pgx.Conn
	defer func() {
		for _, c := range []*pgx.Conn{src, dst} {
			if c != nil {
				c.Close(context.Background())
			}
		}
	}()
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sm := liveSample{at: time.Now(), applied: -1}
		if src == nil || src.IsClosed() {
			src, _ = pgx.Connect(ctx, srcURI)
		}
		if src != nil {
			src.QueryRow(ctx, sqlSlotWAL, slotLike).Scan(&sm.retained, &sm.behind)
		}
		if dst == nil || dst.IsClosed() {
			// Never wait on the migration's locks for more than a moment.
			dst, _ = pgx.Connect(ctx, dstURI+"&options=-c%20lock_timeout%3D100")
		}
		if dst != nil {
			if dst.QueryRow(ctx, sqlWriterApplied, device).Scan(&sm.applied, &sm.newest) != nil {
				sm.applied = -1
				if dst.PgConn().TxStatus() != 'I' {
					dst.Exec(ctx, "ROLLBACK")
				}
			}
		}
		s.mu.Lock()
		s.samples = append(s.samples, sm)
		s.mu.Unlock()
	}
}

// stale is how old the target's newest writer row was at the last sample, counting
// only rows written after since (an hour when the target has none yet).
func (s *sampler) stale(since time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.samples); n > 0 && s.samples[n-1].applied > 0 && s.samples[n-1].newest.After(since) {
		return s.samples[n-1].at.Sub(s.samples[n-1].newest)
	}
	return time.Hour
}

// figures fills the bench's own measures of f from the samples: peaks, the target's
// staleness while the writer wrote (until frozen), and the catch-up rate once applying
// began.
func (s *sampler) figures(f *liveFigures, w *writerStats, start, frozen, applying time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var after []liveSample
	var last liveSample // the last before applying began
	for _, sm := range s.samples {
		rows, stale := float64(-1), float64(-1)
		if sm.applied >= 0 {
			rows = float64(w.rowsAtInserts(sm.applied))
			if sm.applied > 0 {
				stale = math.Round(sm.at.Sub(sm.newest).Seconds()*100) / 100
			}
		}
		f.Timeline = append(f.Timeline, [5]float64{math.Round(sm.at.Sub(start).Seconds()*100) / 100, float64(sm.retained), float64(sm.behind), rows, stale})
		f.SlotPeakRetained = max(f.SlotPeakRetained, sm.retained)
		f.SlotPeakBehind = max(f.SlotPeakBehind, sm.behind)
		if sm.applied >= 0 && (frozen.IsZero() || sm.at.Before(frozen)) && len(w.ledger) > 0 && sm.at.After(w.ledger[0].at) {
			stale := sm.at.Sub(w.ledger[0].at)
			if sm.applied > 0 && sm.newest.After(w.ledger[0].at) {
				stale = sm.at.Sub(sm.newest)
			}
			f.TargetPeakStale = max(f.TargetPeakStale, stale.Seconds())
		}
		switch {
		case sm.applied < 0 || applying.IsZero():
		case sm.at.After(applying):
			after = append(after, sm)
		default:
			last = sm
		}
	}
	// The catch-up: from the last sample before applying began to the first at which
	// the target was caught up (its newest writer row under caughtUp old), or the last
	// before the freeze.
	from, to := last, -1
	for i := range after {
		if after[i].at.Sub(after[i].newest) < caughtUp || (!frozen.IsZero() && !after[min(i+1, len(after)-1)].at.Before(frozen)) {
			to = i
			break
		}
	}
	if from.at.IsZero() && len(after) > 0 {
		from = after[0]
	}
	if to >= 0 && after[to].at.After(from.at) {
		rows := w.rowsAtInserts(after[to].applied) - w.rowsAtInserts(max(0, from.applied))
		d := after[to].at.Sub(from.at)
		f.CatchUpRate, f.CatchUpRows, f.CatchUpSeconds = float64(rows)/d.Seconds(), rows, d.Seconds()
	}
}

// runLive runs one live way with the writer writing from before it starts to its end.
func (b *bench) runLive(ctx context.Context, way string) result {
	r := result{way: way}
	f := &liveFigures{Way: way, Scale: b.scale, WriterRate: b.writerRate}
	r.live = f
	target := "bench_" + way
	b.dst.Exec(ctx, "postgres", "DROP DATABASE IF EXISTS "+target+" WITH (FORCE)")
	if err := b.dst.CreateDatabase(ctx, target, false); err != nil {
		r.failed, r.note, f.Failed = true, err.Error(), err.Error()
		return r
	}
	b.cursors.nextWay()
	wctx, stopWriter := context.WithCancel(ctx)
	w := newWriter(b.src.SuperURI("bench"), b.writerRate, b.cursors)
	wdone := make(chan struct{})
	go func() { defer close(wdone); w.run(wctx) }()
	smp := &sampler{}
	sctx, stopSampler := context.WithCancel(ctx)
	sdone := make(chan struct{})
	slotLike := "tsmigrate%"
	if way == "pgcopydb" {
		slotLike = "pgcopydb%"
	}
	go func() {
		defer close(sdone)
		smp.run(sctx, b.src.SuperURI("postgres"), b.dst.SuperURI(target), slotLike, b.cursors.device)
	}()
	// The application writes for a while before the migration starts, as it would.
	select {
	case <-ctx.Done():
	case <-time.After(2 * time.Second):
	}

	r.load[0] = loadAverage()
	start := time.Now()
	var err error
	var frozen, applying time.Time
	switch way {
	case "live":
		frozen, applying, err = b.liveTsmigrate(ctx, &r, target)
	case "pgcopydb":
		frozen, applying, err = b.liveCopydb(ctx, f, smp, target)
	default:
		err = fmt.Errorf("unknown live way %q (want live or pgcopydb)", way)
	}
	end := time.Now()
	r.wall = end.Sub(start)
	r.load[1] = loadAverage()
	stopWriter()
	<-wdone
	stopSampler()
	<-sdone
	ws := w.stats()
	f.Writer = ws
	f.WallS, f.Load, f.Phases = r.wall.Seconds(), r.load, r.phases
	if !ws.LastAck.IsZero() && ws.LastAck.Before(end) {
		f.WriterGap = end.Sub(ws.LastAck).Seconds()
	}
	if frozen.IsZero() && !ws.FirstRefuse.IsZero() {
		frozen = ws.FirstRefuse
	}
	smp.figures(f, &ws, start, frozen, applying)
	if !applying.IsZero() {
		f.ApplyingAt = applying.Sub(start).Seconds()
	}
	if !frozen.IsZero() {
		f.FrozenAt = frozen.Sub(start).Seconds()
	}

	// The source writable again for the next way, and nothing of this way left on it.
	switch way {
	case "live":
		b.tsmigrate(ctx, nil, nil, "unfreeze", "--source", b.uri(b.src, "bench"))
	case "pgcopydb":
		b.src.Exec(ctx, "postgres", "ALTER DATABASE bench RESET default_transaction_read_only")
	}
	b.dropSlots(ctx)

	if err != nil {
		r.failed, r.note, f.Failed = true, "FAILED: "+firstLine(err.Error()), firstLine(err.Error())
	}
	srcConn, cerr := pgx.Connect(ctx, b.src.SuperURI("bench"))
	if cerr == nil {
		f.Source, cerr = b.rowCounts(ctx, srcConn)
		srcConn.Close(ctx)
	}
	if cerr == nil {
		f.Target, cerr = b.targetCounts(ctx, target)
	}
	b.dst.Exec(ctx, "postgres", "DROP DATABASE IF EXISTS "+target+" WITH (FORCE)")
	switch {
	case cerr != nil:
		r.note += " (counts: " + cerr.Error() + ")"
	case fmt.Sprint(f.Source) == fmt.Sprint(f.Target):
		r.correct, f.Equal = true, true
	default:
		r.note += fmt.Sprintf(" (WRONG DATA: source rows %v, target rows %v)", f.Source, f.Target)
	}
	r.note += fmt.Sprintf(" load %s to %s", r.load[0], r.load[1])
	return r
}

// liveTsmigrate runs tsmigrate migrate --live --cutover auto. It returns when the
// source was frozen (the start of the downtime, from the summary) and when the copy
// phase ended (tsmigrate announces its phases on stderr).
func (b *bench) liveTsmigrate(ctx context.Context, r *result, target string) (frozen, applying time.Time, err error) {
	args := []string{"migrate", "--live", "--cutover", "auto", "--jobs", b.tsJobs, "--yes", "--json", "--progress", "plain",
		"--freeze-grace", b.freezeGrace.String(), "--pg-bin", testenv.ClientBin(b.kind)}
	if b.identityFull {
		args = append(args, "--replica-identity-full")
	}
	args = append(args, "--source", b.uri(b.src, "bench"), "--target", b.uri(b.dst, target))
	// tsmigrate starts applying once post-data is done: the next phase's line after
	// post-data's is the earliest it may have begun.
	var mu sync.Mutex
	inPost := false
	b.onPhase = func(line string) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case strings.HasPrefix(line, "==> "+migrate.PhasePostData+" ") || line == "==> "+migrate.PhasePostData:
			inPost = true
		case inPost && applying.IsZero():
			applying = time.Now()
		}
	}
	defer func() { b.onPhase = nil }()
	err = b.migrate(ctx, r, args)
	end := time.Now()
	f := r.live
	var sum migrate.Summary
	if jerr := json.Unmarshal(r.summary, &sum); jerr != nil {
		return frozen, applying, errors.Join(err, fmt.Errorf("read the summary: %w", jerr))
	}
	if sum.DowntimeMs > 0 {
		f.Downtime, f.DownHow = float64(sum.DowntimeMs)/1000, "tsmigrate's summary (downtime_ms)"
		frozen = end.Add(-time.Duration(sum.DowntimeMs) * time.Millisecond)
	}
	if l := sum.Live; l != nil {
		f.PeakRetained, f.PeakLagBytes, f.PeakLagSeconds = l.PeakRetainedBytes, l.PeakLagBytes, l.PeakLagSeconds
		f.ApplyRowsPerSec, f.RowsApplied, f.Transactions, f.Reconnects = l.ApplyRowsPerSec, l.RowsApplied, l.Transactions, int64(l.Reconnects)
	} else if err == nil {
		err = fmt.Errorf("the summary has no live figures (outcome %q)", sum.Outcome)
	}
	mu.Lock()
	defer mu.Unlock()
	return frozen, applying, err
}

// dropSlots drops what a live way may have left on the source: its inactive
// replication slots and publications of the bench database.
func (b *bench) dropSlots(ctx context.Context) {
	b.src.Exec(ctx, "bench",
		"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = 'bench' AND NOT active",
		"DO $$DECLARE p text; BEGIN FOR p IN SELECT pubname FROM pg_publication LOOP EXECUTE format('DROP PUBLICATION %I', p); END LOOP; END$$")
}

// checkLiveFlags refuses what -live does not do.
func checkLiveFlags(chunks int, link string, rounds, rate int) error {
	switch {
	case chunks > 0:
		return errors.New("-live runs on the sample database (-scale), not -chunks: its writer updates and deletes the sample's plain tables")
	case link != "":
		return errors.New("-live does not take -link")
	case rounds > 1:
		return errors.New("-live runs each way once: run the bench again for another round")
	case rate <= 0:
		return fmt.Errorf("-writer-rate %d: give rows a second, 1 or more", rate)
	}
	return nil
}

// reportLive prints the live ways side by side, their goals, and the JSON (-json).
func (b *bench) reportLive(rs []result, what string) error {
	fmt.Printf("\n=== live results (database %s; writer %d rows/s: 60%% hypertable inserts at the current time, 30%% updates, 10%% deletes) ===\n", what, b.writerRate)
	fmt.Printf("%-9s %8s %9s %10s %17s %7s %9s %9s %19s  %s\n", "way", "wall", "downtime", "writer gap",
		"peak lag", "stale", "apply r/s", "catch-up", "WAL held tool/slot", "writer rows acked/refused/failed/unsure; data")
	var figs []*liveFigures
	apply := map[string]float64{}
	for _, r := range rs {
		f := r.live
		if f == nil {
			continue
		}
		figs = append(figs, f)
		data := "target = source"
		if !f.Equal {
			data = fmt.Sprintf("TARGET != SOURCE (source %v, target %v)", f.Source, f.Target)
		}
		down := "-"
		if f.Failed == "" {
			down = fmt.Sprintf("%.2fs", f.Downtime)
		}
		w := f.Writer
		// What the tool itself does not tell is "-" (pgcopydb: its apply rate and the WAL
		// its slot held).
		applied, held := "-", "-"
		if f.ApplyRowsPerSec > 0 || f.RowsApplied > 0 {
			applied = fmt.Sprintf("%.0f", f.ApplyRowsPerSec)
		}
		if f.PeakRetained > 0 {
			held = mb(f.PeakRetained)
		}
		fmt.Printf("%-9s %7.2fs %9s %9.2fs %17s %6.1fs %9s %9.0f %19s  %d/%d/%d/%d; %s\n", f.Way, f.WallS, down, f.WriterGap,
			lagText(f), f.TargetPeakStale, applied, f.CatchUpRate, held+" / "+mb(f.SlotPeakRetained),
			w.Acked, w.Refused, w.Failed, w.Unsure, data)
		if f.Failed != "" {
			fmt.Printf("          FAILED: %s\n", f.Failed)
		}
		if f.CatchUpRows > 0 {
			fmt.Printf("          caught up %d rows in %.1f s once applying began (%.1f s in); frozen %.1f s in\n", f.CatchUpRows, f.CatchUpSeconds, f.ApplyingAt, f.FrozenAt)
		}
		if w.Failed > 0 {
			fmt.Printf("          writer failures: %s\n", w.failures())
		}
		if f.Phases != "" {
			fmt.Printf("          phases: %s\n", f.Phases)
		}
		fmt.Printf("          load %s to %s", f.Load[0], f.Load[1])
		if f.DownHow != "" {
			fmt.Printf("; downtime: %s", f.DownHow)
		}
		fmt.Println()
		if f.Failed == "" {
			apply[f.Way] = f.CatchUpRate
		}
	}
	fmt.Println()
	for _, f := range figs {
		if f.Way != "live" || f.Failed != "" {
			continue
		}
		fmt.Printf("goal downtime < 5 s: %.2f s, %s\n", f.Downtime, met(f.Downtime > 0 && f.Downtime < 5))
		fmt.Printf("goal apply rate >= 5x the writer's (%d rows/s): %.0f rows/s (%.1fx), %s\n", b.writerRate, f.ApplyRowsPerSec,
			f.ApplyRowsPerSec/float64(b.writerRate), met(f.ApplyRowsPerSec >= 5*float64(b.writerRate)))
		if p, ok := apply["pgcopydb"]; ok {
			fmt.Printf("goal apply rate above pgcopydb's: catch-up %.0f rows/s against pgcopydb's %.0f (the same measure), %s\n",
				f.CatchUpRate, p, met(f.CatchUpRate > p))
		} else {
			fmt.Println("goal apply rate above pgcopydb's: pgcopydb gave no rate (it did not run to its end)")
		}
	}
	if b.jsonOut == "" {
		return nil
	}
	doc, err := json.MarshalIndent(map[string]any{"database": what, "writer_rate": b.writerRate, "ways": figs}, "", "  ")
	if err != nil {
		return err
	}
	if b.jsonOut == "-" {
		_, err = os.Stdout.Write(append(doc, '\n'))
		return err
	}
	return os.WriteFile(b.jsonOut, append(doc, '\n'), 0o644)
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

func lagText(f *liveFigures) string {
	if f.PeakLagSeconds > 0 {
		return fmt.Sprintf("%s/%.1fs", mb(f.PeakLagBytes), f.PeakLagSeconds)
	}
	return mb(f.PeakLagBytes)
}
