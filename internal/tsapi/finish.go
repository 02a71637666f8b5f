package tsapi

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// What is made once the rows are in: continuous aggregates' watermarks, then jobs.
//
// A continuous aggregate made WITH NO DATA has its watermark (where its real-time view
// stops reading materialized rows and aggregates raw ones) at the start of time, and
// TimescaleDB moves it only by a refresh that materializes rows, to the end of the
// last bucket materialized. So, once its rows are copied, the aggregate's last bucket
// is refreshed (recomputed from the raw rows, which are in too) up to the source's
// watermark, and then given the source's rows of that bucket again, exactly as they
// are there (a recomputation may differ in a float's last bits). Its invalidation log
// is not carried (no API writes it): on the target every bucket but those refreshed
// reads as invalid, and the first refresh of a window recomputes it from the raw rows.
//
// Checked on TimescaleDB 2.19.3, full build.
const (
	// sqlWatermark is continuous aggregate $1's watermark (its materialization
	// hypertable's id), in TimescaleDB's internal units. %s: its functions' schema.
	sqlWatermark = `SELECT %s.cagg_watermark($1)`
	// sqlRefresh refreshes continuous aggregate %s over [%s, %s). %s: TimescaleDB's schema.
	sqlRefresh = `CALL %s.refresh_continuous_aggregate(%s, %s, %s)`
)

// sqlIndexes lists the indexes of table $1 with their definitions (PostgreSQL 15, 17).
const sqlIndexes = `SELECT c.relname::text, pg_get_indexdef(x.indexrelid) FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid
WHERE x.indrelid = $1::regclass ORDER BY 1`

// makeAggregateIndexes makes on the target's continuous aggregate a the indexes the
// source's has and the target's lacks: those the user made on it (CREATE INDEX on the
// view makes them on its materialization hypertable, in TimescaleDB's schema, where the
// schema dump's entries cannot be restored; TimescaleDB makes them there for the view's
// owner). An index is told by its definition, its name and table's aside. It returns
// how many it made.
func makeAggregateIndexes(ctx context.Context, s, d *pgx.Conn, source, target *Layout, a *Aggregate) (int, error) {
	ta := target.Aggregate(a.View)
	if ta == nil {
		return 0, fmt.Errorf("continuous aggregate %s is not on the target", a.View.Display())
	}
	read := func(conn *pgx.Conn, mat Name) (map[string]string, error) {
		rows, _ := conn.Query(ctx, sqlIndexes, mat.String())
		defs := map[string]string{}
		var name, def string
		_, err := pgx.ForEachRow(rows, []any{&name, &def}, func() error { defs[indexBody(def)] = name; return nil })
		return defs, err
	}
	have, err := read(s, a.Materialization)
	if err != nil {
		return 0, fmt.Errorf("source: read the indexes of %s: %w", a.View.Display(), err)
	}
	got, err := read(d, ta.Materialization)
	if err != nil {
		return 0, fmt.Errorf("target: read the indexes of %s: %w", a.View.Display(), err)
	}
	made := 0
	for body, name := range have {
		if _, ok := got[body]; ok {
			continue
		}
		q := fmt.Sprintf("CREATE %s %s ON %s %s", strings.TrimSpace(strings.SplitN(body, "|", 2)[0]), pgx.Identifier{name}.Sanitize(),
			a.View.String(), strings.SplitN(body, "|", 2)[1])
		if _, err := d.Exec(ctx, q); err != nil {
			return made, fmt.Errorf("target: make index %s of continuous aggregate %s: %s", name, a.View.Display(), dbconn.Reason(err))
		}
		made++
	}
	return made, nil
}

// indexBody is an index's definition (pg_get_indexdef) without its name and table:
// "UNIQUE INDEX|USING btree (a)" for "CREATE UNIQUE INDEX x ON s.t USING btree (a)".
func indexBody(def string) string {
	kind := "INDEX"
	if strings.HasPrefix(def, "CREATE UNIQUE INDEX ") {
		kind = "UNIQUE INDEX"
	}
	if i := strings.Index(def, " USING "); i >= 0 {
		return kind + "|" + def[i+1:]
	}
	return kind + "|" + def
}

// FinishResult is what Finish did and found.
type FinishResult struct {
	Jobs       int // jobs made
	Watermarks int // continuous aggregates whose watermark was set
	Indexes    int // indexes made on continuous aggregates
	// Differences say, in words, where the target's continuous aggregates or jobs are
	// not the source's.
	Differences []string
}

// Finish, once the rows are copied (and the indexes built: a reorder policy names
// one), makes the indexes the user made on continuous aggregates, sets their
// watermarks and makes the source's jobs, unscheduled (see jobs.go); asOwners: each
// as its source owner (see actAs). It makes only what the target lacks, so that a run
// that stopped halfway is continued.
func Finish(ctx context.Context, src, dst *dbconn.Config, asOwners bool) (*FinishResult, error) {
	p, err := openPair(ctx, src, dst)
	if err != nil {
		return nil, err
	}
	defer p.close(ctx)
	s, d, ext, source, target := p.s, p.d, p.ext, p.source, p.target
	res := &FinishResult{}
	for _, a := range source.Aggregates {
		n, err := makeAggregateIndexes(ctx, s.Conn, d.Conn, source, target, a)
		if err != nil {
			return nil, err
		}
		res.Indexes += n
		done, diff, err := setWatermark(ctx, s.Conn, d.Conn, ext, source, target, a)
		if err != nil {
			return nil, err
		}
		if done {
			res.Watermarks++
		}
		if diff != "" {
			res.Differences = append(res.Differences, diff)
		}
	}
	srcJobs, err := ReadJobs(ctx, s)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	dstJobs, err := ReadJobs(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	made, diffs, err := makeJobs(ctx, d.Conn, ext, source, target, srcJobs, dstJobs, asOwners)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	res.Jobs, res.Differences = made, append(res.Differences, diffs...)
	return res, nil
}

// functionsSchema is the schema of TimescaleDB's internal functions on conn's server.
func functionsSchema(ctx context.Context, conn *pgx.Conn) (string, error) {
	var s string
	if err := conn.QueryRow(ctx, sqlFunctionsSchema).Scan(&s); err != nil {
		return "", fmt.Errorf("find TimescaleDB's functions: %w", err)
	}
	return s, nil
}

// watermark reads continuous aggregate mat's watermark on conn.
func watermark(ctx context.Context, conn *pgx.Conn, mat *Hypertable) (int64, error) {
	fns, err := functionsSchema(ctx, conn)
	if err != nil {
		return 0, err
	}
	var w int64
	if err := conn.QueryRow(ctx, fmt.Sprintf(sqlWatermark, fns), mat.ID).Scan(&w); err != nil {
		return 0, fmt.Errorf("read the watermark of %s: %w", mat.Name.Display(), err)
	}
	return w, nil
}

// setWatermark gives the target's continuous aggregate a the source's watermark (see
// above), unless it has it. It says whether it set it, and how the target's differs
// when it could not.
func setWatermark(ctx context.Context, s, d *pgx.Conn, ext string, source, target *Layout, a *Aggregate) (bool, string, error) {
	ta := target.Aggregate(a.View)
	sm, tm := source.Hypertable(a.Materialization), (*Hypertable)(nil)
	if ta != nil {
		tm = target.Hypertable(ta.Materialization)
	}
	if sm == nil || tm == nil || len(sm.Dimensions) == 0 {
		return false, "", fmt.Errorf("continuous aggregate %s: no materialization hypertable on both sides", a.View.Display())
	}
	want, err := watermark(ctx, s, sm)
	if err != nil {
		return false, "", fmt.Errorf("source: %w", err)
	}
	have, err := watermark(ctx, d, tm)
	if err != nil {
		return false, "", fmt.Errorf("target: %w", err)
	}
	dim := sm.Dimensions[0]
	col := pgx.Identifier{dim.Column}.Sanitize()
	var last *string
	if err := s.QueryRow(ctx, fmt.Sprintf("SELECT max(%s)::text FROM %s", col, sm.Name.String())).Scan(&last); err != nil {
		return false, "", fmt.Errorf("source: read the last bucket of %s: %w", a.View.Display(), err)
	}
	if have == want || last == nil {
		return false, "", nil
	}
	end, ok := timeLiteral(want, dim.Type)
	if !ok {
		return false, fmt.Sprintf("continuous aggregate %s: its watermark is not set on the target (time type %s)", a.View.Display(), dim.Type), nil
	}
	start := sqltext.Literal(*last) + "::" + dim.Type
	if _, err := d.Exec(ctx, fmt.Sprintf(sqlRefresh, ext, sqltext.Literal(a.View.String()), start, end)); err != nil {
		return false, "", fmt.Errorf("target: refresh the last bucket of %s: %s", a.View.Display(), dbconn.Reason(err))
	}
	// The source's rows of the refreshed bucket, exactly.
	rows, _ := s.Query(ctx, sqlColumns, sm.Name.String())
	cols, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var n, t string
		err := r.Scan(&n, &t)
		return pgx.Identifier{n}.Sanitize(), err
	})
	if err != nil {
		return false, "", fmt.Errorf("source: %w", err)
	}
	list := strings.Join(cols, ", ")
	where := fmt.Sprintf("%s >= %s AND %s < %s", col, start, col, end)
	var buf bytes.Buffer
	if _, err := s.PgConn().CopyTo(ctx, &buf, fmt.Sprintf("COPY (SELECT %s FROM %s WHERE %s) TO STDOUT", list, sm.Name.String(), where)); err != nil {
		return false, "", fmt.Errorf("source: read the last bucket of %s: %w", a.View.Display(), err)
	}
	err = pgx.BeginFunc(ctx, d, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, fmt.Sprintf("DELETE FROM %s WHERE %s", tm.Name.String(), where)); err != nil {
			return err
		}
		_, err := tx.Conn().PgConn().CopyFrom(ctx, &buf, fmt.Sprintf("COPY %s (%s) FROM STDIN", tm.Name.String(), list))
		return err
	})
	if err != nil {
		return false, "", fmt.Errorf("target: put the source's rows of the last bucket of %s back: %w", a.View.Display(), err)
	}
	if have, err = watermark(ctx, d, tm); err != nil {
		return false, "", fmt.Errorf("target: %w", err)
	}
	if have != want {
		return false, fmt.Sprintf("continuous aggregate %s: its watermark is %d on the target, %d on the source (its last bucket has no raw rows to refresh it from)",
			a.View.Display(), have, want), nil
	}
	return true, "", nil
}
