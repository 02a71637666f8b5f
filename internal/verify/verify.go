// Package verify proves that a target database holds exactly the source's data and
// schema: per table and per hypertable chunk a row count and an order-independent
// checksum computed by SQL on each server (no rows travel), a drill-down to the first
// rows that differ, and a comparison of the schema and TimescaleDB metadata.
package verify

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/inventory"
	"github.com/tsmigrate/tsmigrate/internal/schema"
)

// Options are the inputs of one verification of one database pair.
type Options struct {
	Source, Target *dbconn.Config
	// Jobs is how many units are checksummed at once; each job holds one connection
	// to each server. Zero or less means 2.
	Jobs int
	// ShowRows, when positive, narrows every differing unit down to at most this many
	// differing rows, shown in Unit.Rows. Zero skips the drill-down.
	ShowRows int
	// Privileges also compares owners and access privileges (the chunks' of each
	// hypertable too), the roles the database uses and their memberships (off by
	// default: a migration without --roles legitimately changes them).
	Privileges bool
	// NotGiven names the database's own settings (as ALTER DATABASE ... SET names them,
	// or "comment" for its comment) that the caller knows the target database was not
	// given and has said so: their differences are left out of the report.
	NotGiven []string
	// ChunksDiffer names hypertables (schema, name) whose chunks the caller knows are
	// not the source's on the target, and has said so (a restore through TimescaleDB's
	// API that could not make some with the source's slices): the difference of their
	// numbers of chunks is left out of the report. Their rows are compared all the same,
	// by time ranges where their chunks do not pair.
	ChunksDiffer [][2]string
	// CompressedOnly compares only the data read from compressed chunks (a chunk
	// compressed on either side; every range of a hypertable whose chunks do not pair
	// up and that has one), and not the schema: the check of a migration that trusts
	// its row counts otherwise (--no-verify). Row counts do not vouch for compressed
	// rows: TimescaleDB decodes them with state outside the rows, such as the default
	// of a column added after the chunk was compressed, kept in the chunk's catalog.
	CompressedOnly bool
	// SchemaOnly compares the schema and TimescaleDB metadata alone, no data: the other
	// check of a migration that trusts its row counts (--no-verify), which see no lost
	// constraint, index or key.
	SchemaOnly bool
	// DataOnly compares the data alone, not the schema: the verify of a live
	// migration's copy at the snapshot it was read in (SourceSnapshot), whose schema is
	// compared at its cut-over.
	DataOnly bool
	// SourceSnapshot, when set, is an exported snapshot of the source (held open by the
	// caller for the whole Run) that the source side reads in, instead of one of its
	// own: a live migration verifies its copy against the source as of the replication
	// slot's snapshot, while the source goes on changing.
	SourceSnapshot string
	// Only, when set, restricts the data compared to the units it accepts (the schema
	// is compared whole): a live migration's cut-over compares again only the tables
	// and chunks that changes were applied to since a full verify.
	Only func(u *Unit) bool
	// Keys, by table (schema.name, as Unit.Table names it), restricts the data compared
	// of plain tables to some rows (Unit.KeyRows): a live migration's cut-over compares
	// only the rows that changes were applied to, whatever the table's size.
	Keys map[string]*Keys
	// OnEvent, when set, receives progress. It is called from several goroutines,
	// one call at a time.
	OnEvent func(Event)
}

// EventType says what an Event reports.
type EventType string

const (
	EventSchemaDone EventType = "schema-done" // schema compared; Total is the number of data units
	EventUnitDone   EventType = "unit-done"   // one data unit compared
	// EventRetry: a connection was lost (Err says how); the comparison starts again,
	// from new snapshots, as attempt Attempt.
	EventRetry EventType = "retry"
)

// Event is progress of a Run.
type Event struct {
	Type    EventType `json:"type"`
	Unit    *Unit     `json:"unit,omitempty"`
	Done    int       `json:"done"`
	Total   int       `json:"total"`
	Attempt int       `json:"attempt,omitempty"`
	Err     string    `json:"error,omitempty"`
}

// Report is the outcome of verifying one database pair.
type Report struct {
	Source         string       `json:"source"` // user@host:port/db, no password
	Target         string       `json:"target"`
	SourceDatabase string       `json:"source_database"`
	TargetDatabase string       `json:"target_database"`
	Schema         []SchemaDiff `json:"schema_differences"`
	// Upgrades say what is newer on the target and for that reason alone not a
	// difference (a migration that upgrades on the way): its PostgreSQL major, its
	// extensions' versions.
	Upgrades       []string `json:"upgrades,omitempty"`
	Units          []Unit   `json:"units"`
	UnitsChecked   int      `json:"units_checked"`
	UnitsDiffering int      `json:"units_differing"`
	// UnitsNotCompared counts the units (among those differing) that one side could
	// not read: whether they differ is not known.
	UnitsNotCompared int           `json:"units_not_compared"`
	SourceRows       int64         `json:"source_rows"`
	TargetRows       int64         `json:"target_rows"`
	Duration         time.Duration `json:"duration_ns"`
	// Identical says whether data and schema are the same on both sides: no unit
	// differs and there is no schema difference.
	Identical bool `json:"identical"`
}

// Run verifies one database pair: Options.Source against Options.Target. A difference
// is not an error: it is in the Report. Errors are connection and query failures. A lost
// connection (dbconn.Lost), in the schema's reads as in a unit's, starts the comparison
// again from new snapshots, up to dbconn.ReadAttempts times in all (EventRetry): the
// snapshots must see the same data, so verify a source whose writes are stopped.
func Run(ctx context.Context, opt Options) (*Report, error) {
	if opt.Source == nil || opt.Target == nil {
		return nil, errors.New("verify: source and target are required")
	}
	emit := eventSink(opt.OnEvent)
	var rep *Report
	err := dbconn.Retry(ctx, func() (err error) {
		rep, err = runOnce(ctx, opt)
		return err
	}, func(attempt int, err error) {
		emit(Event{Type: EventRetry, Attempt: attempt, Err: dbconn.Redact(dbconn.Reason(err))})
	})
	return rep, err
}

// runOnce is one attempt of Run.
func runOnce(ctx context.Context, opt Options) (*Report, error) {
	jobs := opt.Jobs
	if jobs <= 0 {
		jobs = 2
	}
	start := time.Now()
	rep := &Report{
		Source: opt.Source.String(), Target: opt.Target.String(),
		SourceDatabase: opt.Source.Database(), TargetDatabase: opt.Target.Database(),
	}

	// One coordinator session per side holds a repeatable-read snapshot for the whole
	// run; every worker imports it, so all units of a side see one consistent state.
	var src, tgt *session
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) { src, err = openCoordinatorAt(gctx, opt.Source, opt.SourceSnapshot); return })
	g.Go(func() (err error) { tgt, err = openCoordinator(gctx, opt.Target); return })
	err := g.Wait()
	defer func() {
		for _, s := range []*session{src, tgt} {
			if s != nil {
				s.close()
			}
		}
	}()
	if err != nil {
		return nil, err
	}

	// A schema-only run compares no data: it reads no inventory of tables and chunks,
	// whose chunks' query is the slowest read of a side at many chunks.
	srcInv, tgtInv := &contents{}, &contents{}
	var srcFacts, tgtFacts facts
	g, gctx = errgroup.WithContext(ctx)
	read := func(s *session, inv **contents, f *facts) func() error {
		return func() (err error) {
			if !opt.SchemaOnly {
				if *inv, err = readInventory(gctx, s); err != nil || opt.CompressedOnly || opt.DataOnly {
					return err
				}
			}
			*f, err = readFacts(gctx, s, opt.Privileges)
			return err
		}
	}
	g.Go(read(src, &srcInv, &srcFacts))
	g.Go(read(tgt, &tgtInv, &tgtFacts))
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if opt.Privileges && !opt.CompressedOnly && !opt.DataOnly {
		if err := compareRoles(ctx, src, tgt, srcFacts, tgtFacts); err != nil {
			return nil, err
		}
	}
	chunksDiffer := map[string]bool{}
	for _, h := range opt.ChunksDiffer {
		// As the facts name it (format's %I, which quotes where needed; both forms of
		// each part are taken, %I quoting reserved words too).
		for _, s := range []string{inventory.Ident(h[0]), quoteIdent(h[0])} {
			for _, n := range []string{inventory.Ident(h[1]), quoteIdent(h[1])} {
				chunksDiffer["hypertable "+s+"."+n] = true
			}
		}
	}
	if tgt.major > src.major {
		rep.Upgrades = append(rep.Upgrades, fmt.Sprintf("PostgreSQL %s to %s", src.version, tgt.version))
	}
	rep.Schema = slices.DeleteFunc(compareFacts(srcFacts, tgtFacts), func(d SchemaDiff) bool {
		if d.What == "number of chunks" && chunksDiffer[d.Object] {
			return true
		}
		if ext, ok := strings.CutPrefix(d.Object, "extension "); ok && d.What == "version" {
			if c, ok := schema.CompareVersions(d.Target, d.Source); ok && c > 0 {
				rep.Upgrades = append(rep.Upgrades, fmt.Sprintf("extension %s %s to %s", ext, d.Source, d.Target))
				return true
			}
		}
		if x, ok := strings.CutPrefix(d.Object, "extension "); ok && d.What != "missing" && schema.PlatformExtension(x) {
			return true // the target's own, a managed service's (pre-flight agrees)
		}
		return d.Object == "database" && slices.ContainsFunc(opt.NotGiven, func(n string) bool {
			return d.What == n && n == "comment" || d.What == "setting "+n
		})
	})
	var note string
	if rep.Schema, note, err = sameViewsAcrossMajors(ctx, opt.Target, src.major, tgt.major, rep.Schema); err != nil {
		return nil, err
	}
	if note != "" {
		rep.Upgrades = append(rep.Upgrades, note)
	}
	if rep.Schema == nil {
		rep.Schema = []SchemaDiff{}
	}
	units := planUnits(srcInv, tgtInv) // none without the inventories (SchemaOnly)
	if opt.CompressedOnly {
		units = slices.DeleteFunc(units, func(p *plan) bool { return !p.compressed })
	}
	if opt.Only != nil {
		units = slices.DeleteFunc(units, func(p *plan) bool { return !opt.Only(&p.Unit) })
	}
	if err := restrictToKeys(units, srcInv, tgtInv, opt.Keys); err != nil {
		return nil, err
	}
	for _, p := range units {
		p.reencode = src.encoding != tgt.encoding
	}
	emit := eventSink(opt.OnEvent)
	emit(Event{Type: EventSchemaDone, Total: len(units)})

	results := make([]Unit, len(units))
	pool := &workerPool{source: opt.Source, target: opt.Target, srcSnap: src.snapshot, tgtSnap: tgt.snapshot}
	defer pool.close()
	var mu sync.Mutex
	done := 0
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(jobs)
	for _, i := range biggestFirst(units) {
		g.Go(func() error {
			w, err := pool.get(gctx)
			if err != nil {
				return err
			}
			u, err := w.check(gctx, units[i], opt.ShowRows)
			pool.put(w, err)
			if err != nil {
				return fmt.Errorf("verify %s: %w", units[i].name(), err)
			}
			results[i] = u
			mu.Lock()
			done++
			ev := Event{Type: EventUnitDone, Unit: &results[i], Done: done, Total: len(units)}
			mu.Unlock()
			emit(ev)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}

	rep.Units = results // in plan order: by table, then time
	for _, u := range results {
		rep.UnitsChecked++
		rep.SourceRows += u.Source.Rows
		rep.TargetRows += u.Target.Rows
		if !u.Identical {
			rep.UnitsDiffering++
		}
		if u.NotCompared {
			rep.UnitsNotCompared++
		}
	}
	rep.Duration = time.Since(start)
	rep.Identical = rep.UnitsDiffering == 0 && len(rep.Schema) == 0
	return rep, nil
}

// biggestFirst is the order to start units in: the largest first, so that a big
// table does not start last and run alone.
func biggestFirst(units []*plan) []int {
	order := make([]int, len(units))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return units[order[a]].pages > units[order[b]].pages })
	return order
}

// eventSink serialises calls to the user's callback.
func eventSink(f func(Event)) func(Event) {
	if f == nil {
		return func(Event) {}
	}
	var mu sync.Mutex
	return func(e Event) {
		mu.Lock()
		defer mu.Unlock()
		f(e)
	}
}
