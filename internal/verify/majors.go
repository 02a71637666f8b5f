package verify

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
)

// A view's definition is compared as PostgreSQL prints it (pg_get_viewdef), and
// PostgreSQL 16 prints some definitions differently than 15 for the same view: a view
// over one table no longer qualifies its columns with the table's name ("r1.c" in 15,
// "c" in 16 and later; its rule's range table lost the OLD and NEW entries). Across
// majors, a view definition that differs is made again on the target from the
// source's text, as a temporary view in a transaction rolled back, and compared as the
// target prints it: equal, it is the same view. One whose text the target does not
// take, or that differs still, stays a difference.
const (
	// sqlRenderView makes the temporary view (its query follows). Checked on
	// PostgreSQL 15, 16, 17 and 18.
	sqlRenderView = `CREATE TEMPORARY VIEW tsmigrate_verify_view AS `
	// sqlRenderedView prints it as the server prints its views.
	sqlRenderedView = `SELECT pg_get_viewdef('pg_temp.tsmigrate_verify_view'::regclass)`
)

// renderViews prints each view definition of defs as the server of cfg prints it, by
// a temporary view in a transaction rolled back. A definition the server does not take
// is left out of the result.
func renderViews(ctx context.Context, cfg *dbconn.Config, defs []string) (map[string]string, error) {
	s, err := connect(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer s.close()
	if _, err := s.conn.Exec(ctx, "BEGIN"); err != nil {
		return nil, fmt.Errorf("%s: begin: %w", cfg.Role, err)
	}
	out := map[string]string{}
	for _, def := range defs {
		if _, err := s.conn.Exec(ctx, "SAVEPOINT tsmigrate_view"); err != nil {
			return nil, fmt.Errorf("%s: savepoint: %w", cfg.Role, err)
		}
		// one statement: the extended protocol takes no more
		query := strings.TrimSuffix(strings.TrimSpace(def), ";")
		var printed string
		if _, err := s.conn.Exec(ctx, sqlRenderView+query, pgx.QueryExecModeExec); err == nil {
			if err := s.conn.QueryRow(ctx, sqlRenderedView).Scan(&printed); err == nil {
				out[def] = printed
			}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if _, err := s.conn.Exec(ctx, "ROLLBACK TO SAVEPOINT tsmigrate_view"); err != nil {
			return nil, fmt.Errorf("%s: rollback to savepoint: %w", cfg.Role, err)
		}
	}
	if _, err := s.conn.Exec(ctx, "ROLLBACK"); err != nil {
		return nil, fmt.Errorf("%s: rollback: %w", cfg.Role, err)
	}
	return out, nil
}

// sameViewsAcrossMajors drops from diffs the view definitions that differ only by how
// the two majors print them (see renderViews), and says how many in a line of
// upgrades.
func sameViewsAcrossMajors(ctx context.Context, target *dbconn.Config, srcMajor, tgtMajor int, diffs []SchemaDiff) ([]SchemaDiff, string, error) {
	isView := func(d SchemaDiff) bool {
		return d.What == "definition" && strings.HasPrefix(d.Object, "relation ") && d.Source != "" && d.Target != ""
	}
	var defs []string
	for _, d := range diffs {
		if isView(d) {
			defs = append(defs, d.Source)
		}
	}
	if srcMajor == tgtMajor || len(defs) == 0 {
		return diffs, "", nil
	}
	printed, err := renderViews(ctx, target, defs)
	if err != nil {
		return nil, "", fmt.Errorf("print the source's view definitions as the target does: %w", err)
	}
	var out []SchemaDiff
	for _, d := range diffs {
		if p, ok := printed[d.Source]; ok && isView(d) && p == d.Target {
			continue
		}
		out = append(out, d)
	}
	n := len(diffs) - len(out)
	if n == 0 {
		return out, "", nil
	}
	return out, fmt.Sprintf("view definitions printed differently by PostgreSQL %d and %d (%d): equal as the target prints the source's", srcMajor, tgtMajor, n), nil
}
