package migrate

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/inventory"
	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// sqlUserTables lists the tables a user sees as tables (timescale: in a database that
// has TimescaleDB): plain and partitioned tables that are not partitions, chunks,
// TimescaleDB internals, tsmigrate's journal or extension members; a user's table in
// one of TimescaleDB's schemas is one. PostgreSQL 15/17, TimescaleDB 2.19.3.
func sqlUserTables(timescale bool) string {
	return `
SELECT n.nspname, c.relname, c.relkind = 'p'
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND ` + sqltext.UserRelation("n.nspname", "c.oid", "c.relkind", timescale) + `
  AND NOT ` + sqltext.ExtensionMember(sqltext.Catalog("pg_class"), "c.oid") + `
ORDER BY 1, 2`
}

// SQL for the row counts of the summary; PostgreSQL 15/17, TimescaleDB 2.19.3.
const (
	sqlHypertables = `
SELECT hypertable_schema, hypertable_name, num_chunks FROM timescaledb_information.hypertables
WHERE to_regclass('timescaledb_information.hypertables') IS NOT NULL`
	sqlHasTimescaleDB = `SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')`
	// sqlActivity sums the source's row changes since the statistics were reset.
	sqlActivity = `
SELECT coalesce(sum(n_tup_ins), 0)::bigint, coalesce(sum(n_tup_upd), 0)::bigint, coalesce(sum(n_tup_del), 0)::bigint
FROM pg_stat_user_tables`
)

// TableRows is one table's (or hypertable's) rows on both sides.
type TableRows struct {
	Name         string `json:"name"` // schema.table, quoted where needed
	Kind         string `json:"kind"` // "table", "partitioned table" or "hypertable"
	Source       int64  `json:"source_rows"`
	Target       int64  `json:"target_rows"`
	SourceChunks int    `json:"source_chunks,omitempty"`
	TargetChunks int    `json:"target_chunks,omitempty"`
}

type table struct {
	ident pgx.Identifier
	kind  string
}

func listTables(ctx context.Context, conn *pgx.Conn) ([]table, map[string]int, error) {
	var ts bool
	if err := conn.QueryRow(ctx, sqlHasTimescaleDB).Scan(&ts); err != nil {
		return nil, nil, err
	}
	rows, _ := conn.Query(ctx, sqlUserTables(ts))
	var out []table
	index := map[string]int{}
	for rows.Next() {
		var s, n string
		var partitioned bool
		if err := rows.Scan(&s, &n, &partitioned); err != nil {
			return nil, nil, err
		}
		kind := "table"
		if partitioned {
			kind = "partitioned table"
		}
		index[s+"."+n] = len(out)
		out = append(out, table{ident: pgx.Identifier{s, n}, kind: kind})
	}
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	chunks := map[string]int{}
	if !ts {
		return out, chunks, nil
	}
	rows, _ = conn.Query(ctx, sqlHypertables)
	for rows.Next() {
		var s, n string
		var c int
		if err := rows.Scan(&s, &n, &c); err != nil {
			return nil, nil, err
		}
		if i, ok := index[s+"."+n]; ok {
			out[i].kind = "hypertable"
		}
		chunks[s+"."+n] = c
	}
	return out, chunks, rows.Err()
}

// countRows counts the rows of every user table on both sides, jobs tables at a time.
func countRows(ctx context.Context, src, dst *dbconn.Config, jobs int) ([]TableRows, error) {
	side, err := listBothSides(ctx, src, dst, nil)
	if err != nil {
		return nil, err
	}
	out, err := countTables(ctx, src, dst, jobs, side[0].tables, side[0].chunks, side[1].chunks)
	if err != nil {
		return nil, err
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Source > out[j].Source })
	return out, nil
}

// sideTables is what listTables finds on one side.
type sideTables struct {
	tables []table
	chunks map[string]int
}

// listBothSides lists the tables of the source (0) and the target (1) at the same
// time, each on a connection of its own: at many chunks, each side's list takes tens
// of milliseconds of its server. more, when not nil, then reads what else the caller
// needs on each side's connection.
func listBothSides(ctx context.Context, src, dst *dbconn.Config, more func(ctx context.Context, side int, conn *pgx.Conn) error) ([2]sideTables, error) {
	var side [2]sideTables
	g, gctx := errgroup.WithContext(ctx)
	for i, cfg := range []*dbconn.Config{src, dst} {
		g.Go(func() error {
			conn, err := cfg.Connect(gctx)
			if err != nil {
				return err
			}
			defer conn.Close(context.WithoutCancel(gctx))
			side[i].tables, side[i].chunks, err = listTables(gctx, conn.Conn)
			if err == nil && more != nil {
				err = more(gctx, i, conn.Conn)
			}
			if err != nil {
				return fmt.Errorf("list the %s's tables: %w", cfg.Role, err)
			}
			return nil
		})
	}
	return side, g.Wait()
}

// countTables counts the rows of tables on both sides, jobs tables at a time.
func countTables(ctx context.Context, src, dst *dbconn.Config, jobs int, tables []table, srcChunks, dstChunks map[string]int) ([]TableRows, error) {
	if len(tables) == 0 {
		return nil, nil
	}
	out := make([]TableRows, len(tables))
	var mu sync.Mutex
	work := make(chan int)
	g, gctx := errgroup.WithContext(ctx)
	for range max(1, min(jobs, len(tables))) {
		g.Go(func() error {
			// No timeout a database or role setting gives (the target has the source
			// database's settings by now) may cut a long count short.
			s, err := src.ConnectSession(gctx, dbconn.NoTimeouts)
			if err != nil {
				return err
			}
			defer s.Close(context.WithoutCancel(gctx))
			d, err := dst.ConnectSession(gctx, dbconn.NoTimeouts)
			if err != nil {
				return err
			}
			defer d.Close(context.WithoutCancel(gctx))
			for i := range work {
				t := tables[i]
				q := "SELECT count(*) FROM " + t.ident.Sanitize()
				var a, b int64
				if err := s.QueryRow(gctx, q).Scan(&a); err != nil {
					return fmt.Errorf("count %s on the source: %s", t.ident.Sanitize(), dbconn.Reason(err))
				}
				if err := d.QueryRow(gctx, q).Scan(&b); err != nil {
					return fmt.Errorf("count %s on the target: %s", t.ident.Sanitize(), dbconn.Reason(err))
				}
				key := t.ident[0] + "." + t.ident[1]
				mu.Lock()
				out[i] = TableRows{Name: inventory.DisplayName(t.ident[0], t.ident[1]), Kind: t.kind, Source: a, Target: b,
					SourceChunks: srcChunks[key], TargetChunks: dstChunks[key]}
				mu.Unlock()
			}
			return nil
		})
	}
	g.Go(func() error {
		defer close(work)
		for i := range tables {
			select {
			case work <- i:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

// Changes are rows inserted, updated and deleted on the source.
type Changes struct {
	Inserted int64 `json:"inserted"`
	Updated  int64 `json:"updated"`
	Deleted  int64 `json:"deleted"`
}

// Total is every changed row.
func (c Changes) Total() int64 { return c.Inserted + c.Updated + c.Deleted }

func (c *Changes) add(o Changes) {
	c.Inserted += o.Inserted
	c.Updated += o.Updated
	c.Deleted += o.Deleted
}

func (c *Changes) minus(o *Changes) Changes {
	return Changes{Inserted: c.Inserted - o.Inserted, Updated: c.Updated - o.Updated, Deleted: c.Deleted - o.Deleted}
}

// sourceActivity reads the source database's cumulative row-change counters.
func sourceActivity(ctx context.Context, src *dbconn.Config) (*Changes, error) {
	conn, err := src.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	c := &Changes{}
	if err := conn.QueryRow(ctx, sqlActivity).Scan(&c.Inserted, &c.Updated, &c.Deleted); err != nil {
		return nil, fmt.Errorf("read %s's activity counters: %w", src.Database(), err)
	}
	return c, nil
}
