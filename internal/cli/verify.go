package cli

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/sqltext"
	"github.com/tsmigrate/tsmigrate/internal/verify"
)

type verifyFlags struct {
	conn       connFlags
	jobs       int
	databases  []string
	showRows   int
	json       bool
	privileges bool
}

func init() {
	register(func(a *app) *cobra.Command {
		var f verifyFlags
		c := &cobra.Command{
			Use:   "verify",
			Short: "Prove that the target holds exactly the source's data and schema",
			Long: `verify compares two databases without moving their rows: for every table and every
hypertable chunk (the chunks holding what continuous aggregates have materialized
included), a row count and an order-independent checksum of every column of every row,
computed by SQL on each server at once; then the schema and the TimescaleDB metadata.
A differing table or chunk is narrowed down to the rows that differ with --show-rows.

Equal data gives equal checksums whatever each server's TimeZone, DateStyle or float
settings and whatever the rows' physical order; any different value shows (floats to the
last bit, numeric scale, NULL versus '', jsonb, arrays, text byte for byte).

Each side is read in one repeatable-read snapshot. Verify a source whose writes are
stopped: rows written during the run are not seen, and rows written before it but not
copied are differences.

--json prints one document:
  {"identical", "databases": [{"source", "target" (user@host:port/db), "source_database",
   "target_database", "identical", "units_checked", "units_differing", "source_rows",
   "units_not_compared" (units a side could not read: exit 2), "target_rows", "duration_ns",
   "schema_differences": [{"object", "what" (missing|extra|the attribute), "source", "target"}],
   "upgrades" (what is newer on the target and for that reason alone not a difference:
   its PostgreSQL, its extensions' versions, view definitions it prints otherwise),
   "units": [{"kind" (table|chunk|range), "table", "continuous_aggregate" (true when
     "table" is a continuous aggregate: the rows it materialized), "chunk", "target_chunk", "range",
     "source": SIDE, "target": SIDE, "identical", "not_compared" (a side could not read
     it), "problem", "duration_ns", "key_rows" (in migrate --live's cut-over: only the
     rows of this many keys, those changes were applied to, were compared),
     with --show-rows: "columns", "rows": [{"key", "source", "target"}], "drill_note"}]}]}
  SIDE = {"present", "rows", "checksum"}; in "rows", a side lacking the row is null
  and a NULL value is null.

` + connHelp + `

Exit codes: as diff(1)'s, 0 identical; 1 the target differs; 2 could not compare: bad
usage, a server that cannot be reached or logged into, one older than PostgreSQL 14, a
query that failed, or a table or chunk a side may not read (the others are still
compared and reported); 130 interrupted.`,
			Example: `  tsmigrate verify --source postgres://postgres@db.internal/app \
    --target 'postgres://tsdbadmin@xyz.tsdb.cloud:34567/defaultdb?sslmode=require'

  # two databases, one under another name; show up to 10 differing rows of each unit
  tsmigrate verify --database app --database metrics:metrics_v2 --show-rows 10

  # owners and privileges too, as JSON
  tsmigrate verify --privileges --json`,
			Args: cobra.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error { return a.runVerify(c, f) },
		}
		f.conn.addSource(c)
		f.conn.addTarget(c)
		c.Flags().IntVar(&f.jobs, "jobs", 2, "units compared at once (each holds one connection per server)")
		c.Flags().StringArrayVar(&f.databases, "database", nil, "database pair SRC[:DST] to compare, repeatable (default: the database of each URI)")
		c.Flags().IntVar(&f.showRows, "show-rows", 0, "narrow each differing table or chunk down to at most N differing rows and show them")
		c.Flags().BoolVar(&f.json, "json", false, "print the full report, every unit, as JSON")
		c.Flags().BoolVar(&f.privileges, "privileges", false, "also compare owners and access privileges")
		return c
	})
}

// verifyJSON is the document verify --json prints (documented in its help).
type verifyJSON struct {
	Identical bool             `json:"identical"`
	Databases []*verify.Report `json:"databases"`
}

type dbPair struct{ src, dst string }

func parseDatabases(specs []string) ([]dbPair, error) {
	var out []dbPair
	for _, s := range specs {
		src, dst, found := strings.Cut(s, ":")
		if !found {
			dst = src
		}
		if src == "" || dst == "" {
			return nil, exit.Usagef("write --database SRC or --database SRC:DST", "invalid --database %q", s)
		}
		out = append(out, dbPair{src, dst})
	}
	return out, nil
}

func (a *app) runVerify(c *cobra.Command, f verifyFlags) error {
	if f.jobs < 1 {
		return exit.Usagef("give --jobs 1 or more", "invalid --jobs %d", f.jobs)
	}
	a.sizeRuntime(f.jobs)
	if f.showRows < 0 {
		return exit.Usagef("give --show-rows 0 or more", "invalid --show-rows %d", f.showRows)
	}
	pairs, err := parseDatabases(f.databases)
	if err != nil {
		return err
	}
	src, err := a.config("source", f.conn.source)
	if err != nil {
		return err
	}
	tgt, err := a.config("target", f.conn.target)
	if err != nil {
		return err
	}
	if len(pairs) == 0 {
		pairs = []dbPair{{src.Database(), tgt.Database()}}
	}

	ctx := c.Context()
	var reports []*verify.Report
	differ, notCompared := 0, 0
	for _, p := range pairs {
		opt := verify.Options{
			Source: src.WithDatabase(p.src), Target: tgt.WithDatabase(p.dst),
			Jobs: f.jobs, ShowRows: f.showRows, Privileges: f.privileges,
		}
		var progress *unitProgress
		switch {
		case !f.json && isTerminal(a.stderr):
			progress = newUnitProgress(ctx, a.stderr, p.src)
			opt.OnEvent = progress.event
		case a.verbose && !f.json:
			opt.OnEvent = func(e verify.Event) {
				if e.Type == verify.EventUnitDone {
					fmt.Fprintf(a.stderr, "[%d/%d] %s\n", e.Done, e.Total, e.Unit.Name())
				}
			}
		}
		rep, err := a.lib.verify(ctx, opt)
		if progress != nil {
			progress.stop()
		}
		if err != nil {
			return couldNotCompare(err)
		}
		reports = append(reports, rep)
		if !rep.Identical {
			differ++
		}
		notCompared += rep.UnitsNotCompared
		if !f.json {
			printReport(a.stdout, rep)
		}
	}

	if f.json {
		if err := writeJSON(a.stdout, verifyJSON{differ == 0, reports}); err != nil {
			return err
		}
	} else if notCompared > 0 {
		fmt.Fprintf(a.stdout, "verdict: NOT COMPARED (%s could not be read)\n", plural(notCompared, "data unit"))
	} else if differ == 0 {
		fmt.Fprintf(a.stdout, "verdict: IDENTICAL (%s)\n", plural(len(reports), "database"))
	} else {
		fmt.Fprintf(a.stdout, "verdict: DIFFERENT (%d of %s differ)\n", differ, plural(len(reports), "database"))
	}
	if notCompared > 0 {
		return &exit.Error{Code: exit.CannotCompare,
			Msg:  fmt.Sprintf("verify: could not compare %s: a side could not read them", plural(notCompared, "data unit")),
			Hint: "verify as a user that may read every table on both sides (the owner of the data or a superuser)"}
	}
	if differ > 0 {
		return &exit.Error{Code: exit.Failed,
			Msg: fmt.Sprintf("verify: the target differs from the source in %d of %s", differ, plural(len(reports), "database"))}
	}
	return nil
}

// unitProgress draws the units compared so far as a bar on the terminal.
type unitProgress struct {
	p    *mpb.Progress
	name string
	bar  *mpb.Bar
}

func newUnitProgress(ctx context.Context, w io.Writer, database string) *unitProgress {
	return &unitProgress{p: mpb.NewWithContext(ctx, mpb.WithOutput(w)), name: database}
}

// event is called one event at a time (verify.Options.OnEvent).
func (u *unitProgress) event(e verify.Event) {
	switch {
	case e.Type == verify.EventSchemaDone && e.Total > 0:
		u.bar = u.p.AddBar(int64(e.Total), mpb.BarRemoveOnComplete(),
			mpb.PrependDecorators(decor.Name("verify "+u.name+" "), decor.CountersNoUnit("%d/%d units")),
			mpb.AppendDecorators(decor.Elapsed(decor.ET_STYLE_GO)))
	case e.Type == verify.EventUnitDone && u.bar != nil:
		u.bar.Increment()
	case e.Type == verify.EventRetry && u.bar != nil: // a lost connection: all again
		u.bar.Abort(true)
		u.bar = nil
	}
}

func (u *unitProgress) stop() {
	if u.bar != nil && !u.bar.Completed() {
		u.bar.Abort(true)
	}
	u.p.Wait()
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// printReport writes one database's result: a line per difference, then the totals.
func printReport(w io.Writer, r *verify.Report) {
	fmt.Fprintf(w, "database %s -> %s\n", r.SourceDatabase, r.TargetDatabase)
	if len(r.Upgrades) > 0 {
		fmt.Fprintf(w, "  newer on the target, not a difference: %s\n", strings.Join(r.Upgrades, "; "))
	}
	writeDifferences(w, r, "  ", -1)
	verdict := "identical"
	switch {
	case r.UnitsNotCompared > 0:
		verdict = fmt.Sprintf("NOT COMPARED: %s could not be read; %d other data units and %s differ",
			plural(r.UnitsNotCompared, "data unit"), r.UnitsDiffering-r.UnitsNotCompared, plural(len(r.Schema), "schema difference"))
	case !r.Identical:
		verdict = fmt.Sprintf("DIFFERENT: %s, %s", plural(r.UnitsDiffering, "data unit"), plural(len(r.Schema), "schema difference"))
	}
	fmt.Fprintf(w, "  %s checked, %d rows on the source, %d on the target, %.1fs: %s\n",
		plural(r.UnitsChecked, "unit"), r.SourceRows, r.TargetRows, r.Duration.Seconds(), verdict)
}

// couldNotCompare makes a failure of the comparison itself (a query or a connection
// that failed) exit 2, as diff(1) does for trouble: exit 1 says the sides differ.
func couldNotCompare(err error) error {
	if exit.Code(err) != exit.Failed {
		return err // bad input, a server that cannot be reached (2), interrupted (130)
	}
	return &exit.Error{Code: exit.CannotCompare, Msg: "verify: could not compare: " + err.Error(), Err: err}
}

// writeDifferences writes the schema differences and differing units of r, each on a
// line starting with indent (a unit's rows below it), at most limit of them (all when
// limit < 0), and returns how many it left out.
func writeDifferences(w io.Writer, r *verify.Report, indent string, limit int) (left int) {
	shown := 0
	room := func() bool {
		if limit >= 0 && shown >= limit {
			left++
			return false
		}
		shown++
		return true
	}
	for _, d := range r.Schema {
		if room() {
			fmt.Fprintf(w, "%sDIFF schema: %s\n", indent, d)
		}
	}
	for i := range r.Units {
		u := &r.Units[i]
		if u.Identical || !room() {
			continue
		}
		name := u.Name()
		if u.Chunk != "" && u.Range != "" {
			name += " " + u.Range
		}
		what := "DIFF"
		if u.NotCompared {
			what = "NOT COMPARED"
		}
		fmt.Fprintf(w, "%s%s %s: %s\n", indent, what, name, u.Problem)
		for _, row := range u.Rows {
			fmt.Fprintf(w, "%s  %s\n", indent, rowLine(u.Columns, row))
		}
		if u.DrillNote != "" {
			fmt.Fprintf(w, "%s  (%s)\n", indent, u.DrillNote)
		}
	}
	return left
}

// rowLine shows one differing row: the columns that differ when both sides have it,
// else the whole row and the side that lacks it.
func rowLine(cols []string, r verify.RowDiff) string {
	key := r.Key
	if key != "" {
		key = "row " + key + ": "
	}
	switch {
	case r.Source != nil && r.Target != nil:
		var parts []string
		for i, c := range cols {
			if !sameValue(r.Source[i], r.Target[i]) {
				parts = append(parts, fmt.Sprintf("%s: source %s, target %s", c, showValue(r.Source[i]), showValue(r.Target[i])))
			}
		}
		return key + strings.Join(parts, "; ")
	case r.Source != nil:
		return key + "only on the source: " + showRow(cols, r.Source)
	default:
		return key + "only on the target: " + showRow(cols, r.Target)
	}
}

func sameValue(a, b *string) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func showValue(v *string) string {
	if v == nil {
		return "NULL"
	}
	return sqltext.Literal(*v)
}

func showRow(cols []string, vals []*string) string {
	parts := make([]string, len(cols))
	for i, c := range cols {
		parts[i] = c + "=" + showValue(vals[i])
	}
	return "(" + strings.Join(parts, ", ") + ")"
}
