package tsapi

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
)

// Session settings of tsapi's connections: rows travel as text (COPY, one per chunk
// made on the Apache build), read and written in the same styles; a continuous
// aggregate's query is printed with every name qualified but pg_catalog's, so that it
// means the same on the target; the target session writes whatever its role's default
// (the run gives the target the source's role settings at its end). PostgreSQL 15, 17.
const (
	sourceSession = dbconn.NoTimeouts + `; SET DateStyle = ISO; SET IntervalStyle = postgres; SET extra_float_digits = 3;
SET search_path = pg_catalog`
	targetSession = dbconn.NoTimeouts + `; SET DateStyle = ISO; SET IntervalStyle = postgres; SET default_transaction_read_only = off`
)

// Result is what Restore did and found.
type Result struct {
	// Placements say where each source chunk's rows go, in the order the source made
	// the chunks.
	Placements []Placement
	// Hypertables, Aggregates and Chunks count what this call made on the target.
	Hypertables, Aggregates, Chunks int
	// Differences say, in words, where the target's chunks are not the source's.
	Differences []string
}

// Restore makes the source's hypertables on the target (whose pre-data schema holds
// their tables, empty) and their chunks with the source's slices, and says where each
// source chunk's rows go. It makes only what the target lacks, so that a run that
// stopped halfway is continued; with makeChunks false it makes nothing and places
// the source chunks that have no target chunk of the same slices in their hypertable.
// The target's hypertables must hold no rows yet. asOwners makes the continuous
// aggregates as their source owners (see actAs).
func Restore(ctx context.Context, src, dst *dbconn.Config, makeChunks, asOwners bool) (*Result, error) {
	p, err := openPair(ctx, src, dst)
	if err != nil {
		return nil, err
	}
	defer p.close(ctx)
	return restore(ctx, p, makeChunks, asOwners)
}

// pair is tsapi's sessions on the source (s) and the target (d), the schema of the
// target's TimescaleDB (quoted) and what both hold of TimescaleDB's.
type pair struct {
	s, d           *dbconn.Conn
	ext            string
	source, target *Layout
}

// openPair connects to both sides and reads their layouts.
func openPair(ctx context.Context, src, dst *dbconn.Config) (*pair, error) {
	p := &pair{}
	var err error
	if p.s, err = src.ConnectSession(ctx, sourceSession); err != nil {
		return nil, err
	}
	if p.d, err = dst.ConnectSession(ctx, targetSession); err != nil {
		p.close(ctx)
		return nil, err
	}
	if p.ext, err = extSchema(ctx, p.d.Conn); err == nil {
		if p.source, err = ReadLayout(ctx, p.s); err != nil {
			err = fmt.Errorf("source: %w", err)
		} else if p.target, err = ReadLayout(ctx, p.d); err != nil {
			err = fmt.Errorf("target: %w", err)
		}
	}
	if err != nil {
		p.close(ctx)
		return nil, err
	}
	return p, nil
}

func (p *pair) close(ctx context.Context) {
	for _, c := range []*dbconn.Conn{p.s, p.d} {
		if c != nil {
			c.Close(context.WithoutCancel(ctx))
		}
	}
}

func restore(ctx context.Context, p *pair, makeChunks, asOwners bool) (*Result, error) {
	s, d, ext, source, target := p.s.Conn, p.d.Conn, p.ext, p.source, p.target
	var err error
	res := &Result{}
	if makeChunks {
		for _, h := range source.Hypertables {
			if h.Materialization || target.Hypertable(h.Name) != nil {
				continue
			}
			if err := pgx.BeginFunc(ctx, d, func(tx pgx.Tx) error { return createHypertable(ctx, tx, ext, h) }); err != nil {
				return nil, fmt.Errorf("target: %w", err)
			}
			res.Hypertables++
		}
		made, diffs, err := makeCompressionAndAggregates(ctx, d, source, target, asOwners)
		if err != nil {
			return nil, fmt.Errorf("target: %w", err)
		}
		res.Aggregates, res.Differences = made, append(res.Differences, diffs...)
		if target, err = ReadLayout(ctx, d); err != nil {
			return nil, fmt.Errorf("target: %w", err)
		}
		if err := sameIntervals(ctx, d, ext, source, target); err != nil {
			return nil, err
		}
	}
	names := hypertableNames(source, target)
	pairs, missing := PairChunks(source, target, names)
	placed := map[Name]Placement{}
	for _, p := range pairs {
		placed[p.Source.Name] = Placement{Source: p.Source.Name, Hypertable: p.Source.Hypertable, Target: p.Target.Name, Compressed: p.Source.Compressed}
	}
	m, err := newChunkMaker(ctx, s, d, ext, source)
	if err != nil {
		return nil, err
	}
	var jobs []*chunkJob
	for _, c := range missing {
		srcH := source.Hypertable(c.Hypertable)
		tn, ok := names(c.Hypertable)
		if srcH == nil || !ok {
			return nil, fmt.Errorf("source chunk %s: its hypertable %s is not on the target", c.Name.Display(), c.Hypertable.Display())
		}
		t := target.Hypertable(tn)
		if !sameDimensions(srcH, t) {
			return nil, fmt.Errorf("hypertable %s is partitioned otherwise on the target than on the source", tn.Display())
		}
		if !makeChunks {
			placed[c.Name] = Placement{Source: c.Name, Hypertable: c.Hypertable, Target: tn, Routed: true, Compressed: c.Compressed}
			continue
		}
		jobs = append(jobs, &chunkJob{srcH: srcH, t: t, c: c})
	}
	ps, diffs, err := m.makeChunks(ctx, jobs)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	for i, p := range ps {
		if diffs[i] != "" {
			res.Differences = append(res.Differences, diffs[i])
		} else {
			res.Chunks++
		}
		placed[p.Source] = p
	}
	// The intervals changed to make chunks go back to the source's.
	if len(m.changed) > 0 {
		if target, err = ReadLayout(ctx, d); err != nil {
			return nil, fmt.Errorf("target: %w", err)
		}
		if err := sameIntervals(ctx, d, ext, source, target); err != nil {
			return nil, err
		}
	}
	for _, c := range source.Chunks {
		if p, ok := placed[c.Name]; ok {
			res.Placements = append(res.Placements, p)
		}
	}
	return res, nil
}

// hypertableNames maps a source hypertable's name to the target's: the same name for
// user hypertables; a materialization hypertable, named by its id, by its continuous
// aggregate's view.
func hypertableNames(source, target *Layout) func(Name) (Name, bool) {
	return func(n Name) (Name, bool) {
		h := source.Hypertable(n)
		switch {
		case h == nil:
			return Name{}, false
		case h.Materialization:
			for _, a := range source.Aggregates {
				if a.Materialization != n {
					continue
				}
				if t := target.Aggregate(a.View); t != nil && target.Hypertable(t.Materialization) != nil {
					return t.Materialization, true
				}
			}
			return Name{}, false
		case target.Hypertable(n) == nil:
			return Name{}, false
		}
		return n, true
	}
}

// sameIntervals gives each target hypertable the source's chunk intervals and numbers
// of partitions, where they differ: those set to make chunks, and those TimescaleDB
// chose itself for a continuous aggregate's materialization hypertable.
func sameIntervals(ctx context.Context, d *pgx.Conn, ext string, source, target *Layout) error {
	names := hypertableNames(source, target)
	for _, h := range source.Hypertables {
		tn, ok := names(h.Name)
		if !ok {
			continue
		}
		t := target.Hypertable(tn)
		if err := pgx.BeginFunc(ctx, d, func(tx pgx.Tx) error { return setIntervals(ctx, tx, ext, t, h.Dimensions) }); err != nil {
			return fmt.Errorf("target: %w", err)
		}
	}
	return nil
}
