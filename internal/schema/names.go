package schema

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
)

// sqlLineBreakNames lists the names in the database that hold a line break, of the
// objects pg_dump and pg_restore name in what they print (a progress line, the context
// of an error): schemas, relations, constraints, routines, types, triggers, policies,
// rules, publications, subscriptions, event triggers, collations, statistics objects,
// extensions and roles (owners). Every role may read these columns (PostgreSQL 15, 17).
const sqlLineBreakNames = `
SELECT DISTINCT name FROM (
	SELECT nspname::text FROM pg_namespace UNION ALL SELECT relname::text FROM pg_class
	UNION ALL SELECT conname::text FROM pg_constraint UNION ALL SELECT proname::text FROM pg_proc
	UNION ALL SELECT typname::text FROM pg_type UNION ALL SELECT tgname::text FROM pg_trigger
	UNION ALL SELECT polname::text FROM pg_policy UNION ALL SELECT rulename::text FROM pg_rewrite
	UNION ALL SELECT pubname::text FROM pg_publication UNION ALL SELECT subname::text FROM pg_subscription
	UNION ALL SELECT evtname::text FROM pg_event_trigger UNION ALL SELECT collname::text FROM pg_collation
	UNION ALL SELECT stxname::text FROM pg_statistic_ext UNION ALL SELECT extname::text FROM pg_extension
	UNION ALL SELECT rolname::text FROM pg_roles
) n(name) WHERE strpos(name, chr(10)) > 0`

// LineBreakNames lists the names in the database conn is connected to that hold a line
// break. pg_dump and pg_restore print names raw, so such a name cuts the line naming
// it in two; the classifier reads the rest as part of that line only when it is the
// rest of one of these names.
func LineBreakNames(ctx context.Context, conn *pgx.Conn) ([]string, error) {
	rows, _ := conn.Query(ctx, sqlLineBreakNames)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list the names that hold a line break: %w", err)
	}
	return names, nil
}

// sourceLineBreakNames is LineBreakNames of the database src names.
func sourceLineBreakNames(ctx context.Context, src *dbconn.Config) ([]string, error) {
	conn, err := src.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return LineBreakNames(ctx, conn.Conn)
}

// continuesName says whether line, which carries no program prefix, is the rest of a
// name cut by a line break in text (the line or lines so far of a message that named
// it): text ends with the start of one of names up to a line break, and line goes on
// with what follows that break (to the name's end, or to its next line break).
func continuesName(text, line string, names []string) bool {
	joined := text + "\n" + line
	cut := len(text) // where the line break being judged is in joined
	for _, n := range names {
		for i := 0; i < len(n); i++ {
			if n[i] != '\n' || i > cut {
				continue
			}
			start := cut - i // where n would start in joined
			end := min(len(joined), start+len(n))
			// the whole name, or up to one of its line breaks where line ends
			if joined[start:end] == n[:end-start] && (end-start == len(n) || n[end-start] == '\n') {
				return true
			}
		}
	}
	return false
}
