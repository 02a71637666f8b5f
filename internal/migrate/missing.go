package migrate

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/sqltext"
	"github.com/tsmigrate/tsmigrate/internal/verify"
)

// Columns added with a default after chunks were compressed (issue 10, item 1).
//
// ALTER TABLE ... ADD COLUMN with a non-volatile DEFAULT writes no row: each existing
// table, every chunk of a hypertable included, keeps the value as the column's
// "missing value" (pg_attribute.atthasmissing, attmissingval), read for rows stored
// before the column existed. TimescaleDB's compressed chunks are such rows: their
// compressed data holds NULL for the column, and decompression takes the uncompressed
// chunk's missing value instead (tsl/src/nodes/decompress_chunk/compressed_batch.c,
// getmissingattr). pg_dump does not carry missing values (only pg_upgrade does), so a
// restored chunk reads NULL: with both engines, 20 160 of 32 370 rows arrived wrong.
//
// The target's compressed chunks are given the source's missing values, value for
// value: each distinct value is made by adding a column of the same type with that
// default to a temporary table (PostgreSQL computes and stores it exactly as it did on
// the source), then copied into the chunk's pg_attribute row, as pg_upgrade's
// binary_upgrade_set_missing_value does; an anyarray cannot be written from text. Only
// a superuser may write pg_attribute: pre-flight says so first (compressed-defaults).
// The value travels as its text in the source's output under verify.PinSettings, read
// back under the same settings on the target: exact for every type whose text reads
// back as itself. Rows copied into the chunk hold the column themselves, so the
// missing value only changes what compressed rows read, whenever it is set.
const (
	// sqlMissingValues lists the missing values of compressed chunks' columns: the
	// chunk, the column, its type (with its modifier), and the value as the text of a
	// one-element array. TimescaleDB 2.19.3 full build, PostgreSQL 15 and 17.
	sqlMissingValues = `
SELECT format('%I.%I', ch.chunk_schema, ch.chunk_name), a.attname::text, format_type(a.atttypid, a.atttypmod), a.attmissingval::text
FROM timescaledb_information.chunks ch
JOIN pg_attribute a ON a.attrelid = format('%I.%I', ch.chunk_schema, ch.chunk_name)::regclass
WHERE ch.is_compressed AND a.attnum > 0 AND NOT a.attisdropped AND a.atthasmissing
ORDER BY 1, 2`
	// sqlMissingTable is the temporary table whose columns make the values.
	sqlMissingTable = `CREATE TEMPORARY TABLE tsmigrate_missing () ON COMMIT DROP`
	// sqlMissingColumn adds one value's column: %d numbers it, %s is the type (twice)
	// and %s the array's text as a literal; the element is read as the type's text.
	sqlMissingColumn = `ALTER TABLE pg_temp.tsmigrate_missing ADD COLUMN v%d %s DEFAULT (%s::text[])[1]::%s`
	// sqlSetMissing gives the chunks' columns the values of the temporary table's.
	sqlSetMissing = `
UPDATE pg_catalog.pg_attribute a SET atthasmissing = true, attmissingval = s.attmissingval
FROM unnest($1::text[], $2::text[], $3::text[]) AS m(chunk, col, val)
JOIN pg_catalog.pg_attribute s ON s.attrelid = 'pg_temp.tsmigrate_missing'::regclass AND s.attname = m.val
WHERE a.attrelid = m.chunk::regclass AND a.attname = m.col AND NOT a.attisdropped`
)

// missingValue is one compressed chunk's column with a missing value.
type missingValue struct {
	chunk, column, typ, value string
}

// readMissingValues lists the missing values of the compressed chunks of cfg's database.
func readMissingValues(ctx context.Context, cfg *dbconn.Config) ([]missingValue, error) {
	conn, err := cfg.ConnectSession(ctx, verify.PinSettings)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, _ := conn.Query(ctx, sqlMissingValues)
	vals, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (missingValue, error) {
		var v missingValue
		err := row.Scan(&v.chunk, &v.column, &v.typ, &v.value)
		return v, err
	})
	if err != nil {
		return nil, fmt.Errorf("read the defaults of columns added after chunks were compressed, on the %s: %w", cfg.Role, err)
	}
	return vals, nil
}

// carryMissingValues gives d's target the missing values of the source's compressed
// chunks (see above). It runs after the data is in and before anything reads it.
func (r *run) carryMissingValues(ctx context.Context, d *DatabaseRun) error {
	if !d.ts || d.api() {
		return nil // the API path copies compressed rows decompressed, with their values
	}
	vals, err := readMissingValues(ctx, d.src)
	if err != nil || len(vals) == 0 {
		return err
	}
	conn, err := d.dst.ConnectSession(ctx, verify.PinSettings+"; "+sqlWritable)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	column := map[[2]string]string{} // (type, value) -> column of the temporary table
	var chunks, cols, made []string
	var stmts []string
	for _, v := range vals {
		key := [2]string{v.typ, v.value}
		if column[key] == "" {
			column[key] = fmt.Sprintf("v%d", len(column))
			stmts = append(stmts, fmt.Sprintf(sqlMissingColumn, len(column)-1, v.typ, sqltext.Literal(v.value), v.typ))
		}
		chunks, cols, made = append(chunks, v.chunk), append(cols, v.column), append(made, column[key])
	}
	err = pgx.BeginFunc(ctx, conn.Conn, func(tx pgx.Tx) error {
		for _, s := range append([]string{sqlMissingTable}, stmts...) {
			if _, err := tx.Exec(ctx, s); err != nil {
				return fmt.Errorf("make the value: %s", dbconn.Reason(err))
			}
		}
		tag, err := tx.Exec(ctx, sqlSetMissing, chunks, cols, made)
		if err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "42501" {
				return fmt.Errorf("%s; only a superuser may set them: migrate as one, or on the source decompress and compress those chunks again (decompress_chunk, compress_chunk), which stores the values in their data", dbconn.Reason(err))
			}
			return fmt.Errorf("set them: %s", dbconn.Reason(err))
		}
		if int(tag.RowsAffected()) != len(vals) {
			return fmt.Errorf("set %d of them: the target lacks some of those chunks or columns", tag.RowsAffected())
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("give the target's compressed chunks the defaults of the %d columns added after they were compressed (%s): %w",
			len(vals), missingNames(vals), err)
	}
	r.note(d.Source, fmt.Sprintf("compressed chunks: the defaults of %d columns added after they were compressed, which their rows read from the chunk's catalog, given to the target (%s)",
		len(vals), missingNames(vals)))
	return nil
}

// missingNames names the first columns of vals.
func missingNames(vals []missingValue) string {
	var names []string
	for _, v := range vals {
		names = append(names, v.chunk+"."+v.column)
	}
	return strings.Join(firstN(names, 3), ", ")
}
