package freeze

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// The deferred proof's catalog digest sees what the freeze's locks cannot stop and the
// write counters may not show yet: objects created, changed or dropped (CREATE, ALTER,
// DROP, COMMENT, GRANT, ... write rows of the catalog) and sequences moved (nextval,
// setval), and large objects written (lo_put, lowrite, lo_truncate: their pages are
// rows of pg_largeobject, which the freeze cannot lock, since reading a large object
// takes the lock writing does), by a session that turned the read-only default off and
// stays in its transaction. It holds:
//   - how many rows the database's own catalogs hold (not the shared ones, where the
//     freeze keeps its record; not pg_statistic and pg_statistic_ext_data, which
//     ANALYZE rewrites; pg_largeobject included, whose count reads the large objects'
//     pages, as many bytes as the copy reads of them, twice: at the baseline and at the
//     end), and, at the end, how many of them a transaction begun after the
//     baseline wrote: their xmin lies between the baseline's next transaction id and
//     the current one (in 32 bits, as xmin is kept; a frozen row whose original xmin is
//     four billion transactions older could match: a false failure, never a miss). An
//     update of a catalog row is a new row version, so it shows; so does an insert; a
//     delete alone lowers the count. VACUUM and ANALYZE change pg_class's statistics in
//     place, which changes neither;
//   - a hash of every sequence's last value (those the role may read; PostgreSQL 14+
//     for bit_xor).
//
// Both are read only when a transaction id was assigned on the server since the
// baseline (no transaction wrote anywhere otherwise). Checked on PostgreSQL 15 and 17.

// sqlCatalogs lists the catalogs counted, as the query that counts them ($1: the
// baseline's next transaction id modulo 2^32; $2: how many ids were assigned since).
var sqlCatalogs = `
SELECT 'SELECT coalesce(sum(n), 0)::bigint, coalesce(sum(newer), 0)::bigint FROM (' ||
	string_agg(format('SELECT count(*) AS n, count(*) FILTER (WHERE (xmin::text::bigint - $1 + 4294967296) %% 4294967296 < $2) AS newer FROM pg_catalog.%I', c.relname),
		' UNION ALL ' ORDER BY c.relname) || ') AS x'
FROM pg_class c
WHERE c.relnamespace = 'pg_catalog'::regnamespace AND c.relkind = 'r' AND NOT c.relisshared
  AND c.relname NOT IN ('pg_statistic', 'pg_statistic_ext_data')
  AND has_table_privilege(c.oid, 'SELECT')`

// sqlUnreadCatalogs lists the catalogs the digest counts but the role may not read
// (pg_largeobject, when there are large objects, and pg_user_mapping, for a role that
// is not a superuser), whose changes it then does not see. Checked on PostgreSQL 15
// and 17.
var sqlUnreadCatalogs = `
SELECT coalesce(array_agg(c.relname::text ORDER BY c.relname), '{}')
FROM pg_class c
WHERE c.relnamespace = 'pg_catalog'::regnamespace AND c.relkind = 'r' AND NOT c.relisshared
  AND c.relname NOT IN ('pg_statistic', 'pg_statistic_ext_data')
  AND NOT has_table_privilege(c.oid, 'SELECT')
  AND (c.relname <> 'pg_largeobject' OR EXISTS (SELECT FROM pg_largeobject_metadata))`

// sqlSequences hashes the last values of the sequences the role may read.
var sqlSequences = `
SELECT coalesce(bit_xor(hashtextextended(c.oid::text || ':' || coalesce(pg_sequence_last_value(c.oid)::text, '-'), 0)), 0)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'S' AND NOT ` + sqltext.SystemSchema("n.nspname") + `
  AND CASE WHEN c.relkind = 'S' THEN has_sequence_privilege(c.oid, 'SELECT, USAGE') END`

// catalogState is the digest: the catalogs' rows, how many of them were written by
// transactions that began after base's next transaction id when since is the current
// one (zero when since is base), and the sequences' hash.
func catalogState(ctx context.Context, conn *pgx.Conn, base, since int64) (rows, newer, sequences int64, err error) {
	var q string
	if err := conn.QueryRow(ctx, sqlCatalogs).Scan(&q); err != nil {
		return 0, 0, 0, fmt.Errorf("list the catalogs: %w", err)
	}
	if err := conn.QueryRow(ctx, q, base%(1<<32), min(max(since-base, 0), 1<<31)).Scan(&rows, &newer); err != nil {
		return 0, 0, 0, fmt.Errorf("count the catalogs' rows: %w", err)
	}
	if err := conn.QueryRow(ctx, sqlSequences).Scan(&sequences); err != nil {
		return 0, 0, 0, fmt.Errorf("read the sequences: %w", err)
	}
	return rows, newer, sequences, nil
}

// unreadCatalogs says what the digest cannot see for want of the right to read a
// catalog, in a sentence for CannotStop (none when it sees everything).
func unreadCatalogs(ctx context.Context, conn *pgx.Conn) ([]string, error) {
	var names []string
	if err := conn.QueryRow(ctx, sqlUnreadCatalogs).Scan(&names); err != nil {
		return nil, fmt.Errorf("list the catalogs the role may not read: %w", err)
	}
	if len(names) == 0 {
		return nil, nil
	}
	return []string{fmt.Sprintf("the freezing role may not read the catalog(s) %s (a superuser may): a change there (in pg_largeobject: a large object written) by a session that turns read-only off and stays in its transaction does not show in the proof",
		strings.Join(names, ", "))}, nil
}
