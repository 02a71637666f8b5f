package copy

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"slices"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/journal"
)

// Choosing how many units are copied at once (Options.Jobs 0, tsmigrate's --jobs
// auto). On servers next to tsmigrate the copy is bound by the CPU: as many units as
// cores keep them busy. Across a WAN a unit mostly waits: for each of its round trips
// (targetRoundTrips and sourceRoundTrips, see worker) the link's round trip time,
// against a few milliseconds of the servers' work for a small chunk. Then more units
// in flight than cores keep the servers as busy: as many as the cores times (work +
// waiting) / work, by Little's law. Small units go in batches, which wait for those
// round trips once for all their units (see copyBatch): more work for the same wait.
const (
	// targetRoundTrips and sourceRoundTrips are the exchanges a chunk's or table's unit
	// waits for (TestRoundTripsPerChunk counts them).
	targetRoundTrips = 2
	sourceRoundTrips = 1
	// unitWork and unitRate estimate the servers' work for a unit of b bytes as
	// unitWork + b/unitRate. Measured on the development machine (2 cores, both servers
	// on it, bench/migrate): 5 000 chunks of 20 rows copied in about 4.5 ms of CPU
	// each, all processes together; the 958 MB sample database at about 70 MB/s per job.
	unitWork = 4 * time.Millisecond
	unitRate = 70 << 20
	// maxAutoJobs bounds the choice: beyond it, sessions cost the servers more than
	// waiting would.
	maxAutoJobs = 32
	// sessionsKept are the sessions on each server that the choice leaves to the rest of
	// the run (the snapshot's, the journal's, pre-flight's, another tool's).
	sessionsKept = 4
	// rttSamples: round trips timed on each side; the fastest counts.
	rttSamples = 5
)

// SQL of the choice. PostgreSQL 15, 17.
const (
	// sqlServerShape: the sessions a user may still open (max_connections less those
	// reserved for superusers and, from 16, for pg_use_reserved_connections, less the
	// client sessions now) and max_parallel_workers, the number of cores where it is
	// tuned (timescaledb-tune and managed services set it so).
	sqlServerShape = `SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int
	- coalesce(current_setting('reserved_connections', true)::int, 0)
	- (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int,
	current_setting('max_parallel_workers')::int`
)

// DefaultJobs is as many jobs as this machine has cores, 2 to 8: the number for steps
// bound by the servers' CPU (index builds, ANALYZE, pg_dump) on a machine like theirs.
func DefaultJobs() int { return max(2, min(runtime.NumCPU(), 8)) }

// server is what the choice learnt of one side.
type server struct {
	rtt   time.Duration
	cores int
	// coresFrom says where cores comes from.
	coresFrom string
	free      int
}

// measure times round trips on conn (the fastest of rttSamples) and reads the server's
// shape.
func measure(ctx context.Context, cfg *dbconn.Config, conn *dbconn.Conn) (server, error) {
	var s server
	for i := range rttSamples {
		t0 := time.Now()
		if err := conn.PgConn().Exec(ctx, ";").Close(); err != nil {
			return s, fmt.Errorf("time a round trip to the %s: %w", cfg.Role, err)
		}
		if d := time.Since(t0); i == 0 || d < s.rtt {
			s.rtt = d
		}
	}
	var workers int
	if err := conn.QueryRow(ctx, sqlServerShape).Scan(&s.free, &workers); err != nil {
		return s, fmt.Errorf("read the %s's sessions and workers: %w", cfg.Role, err)
	}
	if local, _ := cfg.OnThisMachine(conn); local {
		s.cores, s.coresFrom = runtime.NumCPU(), "this machine's"
	} else {
		s.cores, s.coresFrom = min(max(workers, 1), 64), "its max_parallel_workers"
	}
	return s, nil
}

// chooseJobs picks the units at once for the pending data units of units, from the
// round trips to both sides (measured on their connections), the servers' cores and
// free sessions, and the units' sizes; it says why in words.
func chooseJobs(ctx context.Context, opts Options, src, tgt *dbconn.Conn, units []journal.Unit) (int, string, error) {
	s, err := measure(ctx, opts.Source, src)
	if err != nil {
		return 0, "", err
	}
	t, err := measure(ctx, opts.Target, tgt)
	if err != nil {
		return 0, "", err
	}
	var sizes []int64
	for _, u := range units {
		if u.Phase == journal.PhaseData && u.State != journal.Done {
			sizes = append(sizes, u.EstBytes)
		}
	}
	n, why := jobsFor(s, t, sizes, opts.BatchUnits)
	return n, why, nil
}

// jobsFor is the choice for servers s (source) and t (target) and units of sizes, small
// ones in batches of up to batch.
func jobsFor(s, t server, sizes []int64, batch int) (int, string) {
	cores := min(s.cores, t.cores)
	coresWhy := fmt.Sprintf("%d cores (the source's: %s, the target's: %s)", cores, s.coresFrom, t.coresFrom)
	if s.coresFrom == t.coresFrom && s.cores == t.cores {
		coresWhy = fmt.Sprintf("%d cores (%s)", cores, s.coresFrom)
	}
	base := max(2, min(cores, 8)) // as many as cores, as DefaultJobs on their machine
	var median int64
	if len(sizes) > 0 {
		slices.Sort(sizes)
		median = sizes[len(sizes)/2]
	}
	work := unitWork + time.Duration(float64(median)/unitRate*float64(time.Second))
	wait := targetRoundTrips*t.rtt + sourceRoundTrips*s.rtt
	// With the median unit small, a batch waits as long as one unit and works for all
	// of its units: as many as batchSize gives each of base jobs.
	what := "a unit of " + bytesText(median)
	if median < smallUnitBytes {
		small := 0
		for _, b := range sizes {
			if b < smallUnitBytes {
				small++
			}
		}
		if k := max(1, min(batch, small/(4*base))); k > 1 {
			work *= time.Duration(k)
			what = fmt.Sprintf("a batch of %d units of %s", k, bytesText(median))
		}
	}
	n := int(math.Round(float64(base) * float64(work+wait) / float64(work)))
	n = min(max(n, base), maxAutoJobs)
	room := min(s.free, t.free) - sessionsKept
	limited := ""
	if n > room && room >= 1 {
		n, limited = max(room, 1), fmt.Sprintf("; no more: the servers take %d more sessions (%d on the source, %d on the target), of which %d are left to the rest of the run", min(s.free, t.free), s.free, t.free, sessionsKept)
	}
	why := fmt.Sprintf("round trips of %s to the target and %s to the source, %d and %d a unit: %s of waiting against about %s of the servers' work for %s (the median of %d), on %s%s",
		round(t.rtt), round(s.rtt), targetRoundTrips, sourceRoundTrips, round(wait), round(work), what, len(sizes), coresWhy, limited)
	return n, why
}

func round(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Millisecond:
		return d.Round(time.Millisecond)
	case d >= 100*time.Microsecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

func bytesText(n int64) string {
	switch {
	case n >= 10<<20:
		return fmt.Sprintf("%d MB", n>>20)
	case n >= 10<<10:
		return fmt.Sprintf("%d kB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
