package tsapi

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// Compression settings and continuous aggregates, made through the API. Checked on
// TimescaleDB 2.19.3, full build (the Apache build refuses both).
const (
	// sqlCompressTable enables compression on hypertable %s with segmentby %s and
	// orderby %s (literals).
	sqlCompressTable = `ALTER TABLE %s SET (timescaledb.compress, timescaledb.compress_segmentby = %s, timescaledb.compress_orderby = %s)`
	// sqlCompressAggregate does so on continuous aggregate %s.
	sqlCompressAggregate = `ALTER MATERIALIZED VIEW %s SET (timescaledb.compress = true, timescaledb.compress_segmentby = %s, timescaledb.compress_orderby = %s)`
	// sqlCreateAggregate makes continuous aggregate %s with no rows materialized.
	sqlCreateAggregate = `CREATE MATERIALIZED VIEW %s WITH (timescaledb.continuous, timescaledb.materialized_only = %t,
	timescaledb.create_group_indexes = %t) AS %s WITH NO DATA`
)

// setCompression enables compression with settings c on hypertable rel (a continuous
// aggregate's view when aggregate).
func setCompression(ctx context.Context, tx pgx.Tx, rel Name, c *Compression, aggregate bool) error {
	q := sqlCompressTable
	if aggregate {
		q = sqlCompressAggregate
	}
	if _, err := tx.Exec(ctx, fmt.Sprintf(q, rel.String(), sqltext.Literal(c.Segmentby), sqltext.Literal(c.Orderby))); err != nil {
		return fmt.Errorf("enable compression on %s (segmentby %q, orderby %q): %w", rel.Display(), c.Segmentby, c.Orderby, err)
	}
	return nil
}

// createAggregate makes continuous aggregate a on the target, with no row
// materialized: its rows are copied from the source, as they are there.
func createAggregate(ctx context.Context, tx pgx.Tx, a *Aggregate) error {
	q := strings.TrimSuffix(strings.TrimSpace(a.Query), ";")
	if _, err := tx.Exec(ctx, fmt.Sprintf(sqlCreateAggregate, a.View.String(), a.MaterializedOnly, a.GroupIndexes, q)); err != nil {
		return fmt.Errorf("create continuous aggregate %s: %w", a.View.Display(), err)
	}
	return nil
}

// makeCompressionAndAggregates enables compression on the target's hypertables as on
// the source's, and makes the source's continuous aggregates the target lacks (and
// their compression), in the order the source made them; asOwners: each as its
// source owner where the target user may act as it (see actAs). It says what it made
// and how the target's differ.
func makeCompressionAndAggregates(ctx context.Context, d *pgx.Conn, source, target *Layout, asOwners bool) (made int, diffs []string, err error) {
	for _, h := range source.Hypertables {
		if h.Materialization || h.Compression == nil {
			continue
		}
		if t := target.Hypertable(h.Name); t != nil && t.Compression != nil {
			continue
		}
		if err := pgx.BeginFunc(ctx, d, func(tx pgx.Tx) error { return setCompression(ctx, tx, h.Name, h.Compression, false) }); err != nil {
			return made, diffs, err
		}
	}
	for _, a := range source.Aggregates {
		if target.Aggregate(a.View) != nil {
			continue
		}
		if !a.Finalized {
			diffs = append(diffs, fmt.Sprintf("continuous aggregate %s is in the old, not finalized, form on the source; it is made in the finalized form on the target", a.View.Display()))
		}
		mat := source.Hypertable(a.Materialization)
		if err := pgx.BeginFunc(ctx, d, func(tx pgx.Tx) error {
			if asOwners {
				actAs(ctx, tx, a.Owner)
			}
			if err := createAggregate(ctx, tx, a); err != nil {
				return err
			}
			if mat != nil && mat.Compression != nil {
				return setCompression(ctx, tx, a.View, mat.Compression, true)
			}
			return nil
		}); err != nil {
			return made, diffs, err
		}
		made++
	}
	return made, diffs, nil
}

// actAs makes the rest of transaction tx run as role (SET LOCAL ROLE), when the
// target has it and the target user may act as it (migrate --roles makes it so): what
// TimescaleDB makes then (a continuous aggregate's materialization hypertable and its
// chunks, a job) belongs to that role, whom the target user, who may not create in
// TimescaleDB's schemas, could not give it later. Otherwise the transaction goes on as
// the target user, who then owns what it makes, as without roles.
func actAs(ctx context.Context, tx pgx.Tx, role string) {
	if role == "" {
		return
	}
	sp, err := tx.Begin(ctx)
	if err != nil {
		return
	}
	if _, err := sp.Exec(ctx, "SET LOCAL ROLE "+pgx.Identifier{role}.Sanitize()); err != nil {
		sp.Rollback(ctx)
		return
	}
	sp.Commit(ctx)
}
