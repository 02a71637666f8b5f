package tsapi

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// API calls that make hypertables, in the schema %s of the target's TimescaleDB. The
// form of create_hypertable and add_dimension with named columns is deprecated since
// 2.13 in favour of by_range/by_hash, but it is the one that takes
// associated_schema_name and associated_table_prefix, and it is still there (checked on
// 2.19.3; present in the sources up to 2.2x). An integer chunk interval is microseconds
// for time types and the column's units for integer types.
const (
	sqlCreateHypertable = `SELECT %s.create_hypertable($1::regclass, $2::name, chunk_time_interval => $3::bigint,
	create_default_indexes => false, associated_schema_name => nullif($4, '')::name,
	associated_table_prefix => nullif($5, '')::name, time_partitioning_func => nullif($6, '')::regproc)`
	sqlAddOpenDimension = `SELECT %s.add_dimension($1::regclass, $2::name, chunk_time_interval => $3::bigint,
	partitioning_func => nullif($4, '')::regproc)`
	sqlAddClosedDimension = `SELECT %s.add_dimension($1::regclass, $2::name, number_partitions => $3::int,
	partitioning_func => nullif($4, '')::regproc)`
	sqlSetIntegerNow = `SELECT %s.set_integer_now_func($1::regclass, $2::regproc)`
	// sqlSetInterval sets an open dimension's chunk interval.
	sqlSetInterval = `SELECT %s.set_chunk_time_interval($1::regclass, $2::bigint, $3::name)`
	// sqlSetPartitions sets a closed dimension's number of partitions.
	sqlSetPartitions = `SELECT %s.set_number_partitions($1::regclass, $2::int, $3::name)`
	// defaultAssociatedSchema is where TimescaleDB makes chunks unless told otherwise.
	defaultAssociatedSchema = "_timescaledb_internal"
	// sqlExtSchema is the schema of the database's TimescaleDB, quoted.
	sqlExtSchema = `SELECT quote_ident(n.nspname) FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'timescaledb'`
)

// extSchema is the quoted schema of conn's TimescaleDB.
func extSchema(ctx context.Context, conn *pgx.Conn) (string, error) {
	var s string
	err := conn.QueryRow(ctx, sqlExtSchema).Scan(&s)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", errors.New("TimescaleDB is not installed in the target database")
	}
	if err != nil {
		return "", fmt.Errorf("find the target's TimescaleDB: %w", err)
	}
	return s, nil
}

// createHypertable makes the target's table h (restored by pre-data, empty) a hypertable
// partitioned as the source's h, with its current intervals, in transaction tx.
// Materialization hypertables are the continuous aggregates' to make.
func createHypertable(ctx context.Context, tx pgx.Tx, ext string, h *Hypertable) error {
	rel := h.Name.String()
	first := h.Dimensions[0]
	if !first.Open() {
		return fmt.Errorf("hypertable %s: its first dimension %s is not a time dimension", h.Name.Display(), first.Column)
	}
	// TimescaleDB's own choices (from the hypertable's id, which differs on the target)
	// are left to it: one given would collide with those it makes for other
	// hypertables (a compressed hypertable's prefix is _hyper_<its id>).
	schemaName, prefix := h.AssociatedSchema, h.AssociatedPrefix
	if schemaName == defaultAssociatedSchema {
		schemaName = ""
	}
	if prefix == fmt.Sprintf("_hyper_%d", h.ID) {
		prefix = ""
	}
	if _, err := tx.Exec(ctx, fmt.Sprintf(sqlCreateHypertable, ext), rel, first.Column, first.Interval,
		schemaName, prefix, first.PartitioningFunc); err != nil {
		return fmt.Errorf("create_hypertable(%s): %w", h.Name.Display(), err)
	}
	for _, d := range h.Dimensions[1:] {
		var err error
		if d.Open() {
			_, err = tx.Exec(ctx, fmt.Sprintf(sqlAddOpenDimension, ext), rel, d.Column, d.Interval, d.PartitioningFunc)
		} else {
			_, err = tx.Exec(ctx, fmt.Sprintf(sqlAddClosedDimension, ext), rel, d.Column, d.Partitions, d.PartitioningFunc)
		}
		if err != nil {
			return fmt.Errorf("add_dimension(%s, %s): %w", h.Name.Display(), d.Column, err)
		}
	}
	for _, d := range h.Dimensions {
		if d.IntegerNow != "" {
			if _, err := tx.Exec(ctx, fmt.Sprintf(sqlSetIntegerNow, ext), rel, d.IntegerNow); err != nil {
				return fmt.Errorf("set_integer_now_func(%s, %s): %w", h.Name.Display(), d.IntegerNow, err)
			}
		}
	}
	return nil
}

// setIntervals gives the target's hypertable t the intervals and numbers of partitions
// of want (the source's), where they differ.
func setIntervals(ctx context.Context, tx pgx.Tx, ext string, t *Hypertable, want []Dimension) error {
	for _, st := range intervalChanges(ext, t, want) {
		if _, err := tx.Exec(ctx, st.sql, st.args...); err != nil {
			return fmt.Errorf("hypertable %s: set the chunk interval of %s: %w", t.Name.Display(), st.column, err)
		}
	}
	setDimensions(t, want)
	return nil
}

// intervalChange is a call that sets one dimension's interval or number of partitions.
type intervalChange struct {
	sql    string
	args   []any // t's name, the interval or number, the column
	column string
}

// intervalChanges are the calls that give hypertable t the intervals and numbers of
// partitions of want, where they differ from those t has.
func intervalChanges(ext string, t *Hypertable, want []Dimension) []intervalChange {
	var out []intervalChange
	for i, d := range want {
		if i >= len(t.Dimensions) {
			break
		}
		have := t.Dimensions[i]
		switch {
		case d.Open() && have.Interval != d.Interval:
			out = append(out, intervalChange{fmt.Sprintf(sqlSetInterval, ext), []any{t.Name.String(), d.Interval, d.Column}, d.Column})
		case !d.Open() && have.Partitions != d.Partitions:
			out = append(out, intervalChange{fmt.Sprintf(sqlSetPartitions, ext), []any{t.Name.String(), d.Partitions, d.Column}, d.Column})
		}
	}
	return out
}

// setDimensions records that hypertable t has want's intervals and numbers of partitions.
func setDimensions(t *Hypertable, want []Dimension) {
	for i, d := range want {
		if i < len(t.Dimensions) {
			t.Dimensions[i].Interval, t.Dimensions[i].Partitions = d.Interval, d.Partitions
		}
	}
}
