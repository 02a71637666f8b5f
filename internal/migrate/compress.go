package migrate

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/copy"
	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/inventory"
	"github.com/tsmigrate/tsmigrate/internal/preflight"
)

// SQL of --compress-before; TimescaleDB 2.19.3 (full and Apache build), PostgreSQL 17.
const (
	// sqlLicense is the TimescaleDB build: "apache" (no compression) or "timescale".
	sqlLicense = `SELECT coalesce(current_setting('timescaledb.license', true), '')`
	// sqlCompressible lists the hypertables with compression enabled, whether their time
	// dimension is an integer, its type, and their compression policy's compress_after
	// (an interval as text, or an integer for integer time; NULL without a policy). A
	// policy made with compress_created_before instead has no compress_after and counts
	// as none.
	sqlCompressible = `
SELECT format('%I.%I', h.hypertable_schema, h.hypertable_name),
       d.column_type NOT IN ('timestamp with time zone'::regtype, 'timestamp without time zone'::regtype, 'date'::regtype),
       d.column_type::text,
       (SELECT j.config->>'compress_after' FROM timescaledb_information.jobs j
        WHERE j.proc_name = 'policy_compression' AND j.hypertable_schema = h.hypertable_schema
          AND j.hypertable_name = h.hypertable_name ORDER BY j.job_id LIMIT 1)
FROM timescaledb_information.hypertables h
JOIN timescaledb_information.dimensions d
  ON d.hypertable_schema = h.hypertable_schema AND d.hypertable_name = h.hypertable_name AND d.dimension_number = 1
WHERE h.compression_enabled
ORDER BY 1`
	// sqlChunksOlderInterval / sqlChunksOlderInteger: the hypertable's chunks that are not
	// compressed yet and lie wholly before now() - $2, as the compression policy picks
	// them. For integer time, show_chunks' older_than is a point of the time column,
	// not an age: the policy's is the hypertable's integer_now() - compress_after
	// (subtract_integer_from_now), in the time column's own type (%s: show_chunks
	// refuses a bigint for an integer column, "invalid time argument type").
	sqlChunksOlderInterval = `
SELECT s::text FROM show_chunks($1::regclass, older_than => $2::interval) s
JOIN timescaledb_information.chunks c ON format('%I.%I', c.chunk_schema, c.chunk_name)::regclass = s
WHERE NOT c.is_compressed ORDER BY c.range_start`
	sqlChunksOlderInteger = `
SELECT s::text FROM show_chunks($1::regclass, older_than => _timescaledb_functions.subtract_integer_from_now($1::regclass, $2::bigint)::%s) s
JOIN timescaledb_information.chunks c ON format('%%I.%%I', c.chunk_schema, c.chunk_name)::regclass = s
WHERE NOT c.is_compressed ORDER BY c.range_end_integer`
	sqlCompressChunk = `SELECT compress_chunk($1::regclass, if_not_compressed => true)`
	// sqlChunkSizes: a chunk's size before and after compression, from
	// chunk_compression_stats (NULLs while it is not compressed).
	sqlChunkSizes = `
SELECT coalesce(before_compression_total_bytes, 0), coalesce(after_compression_total_bytes, 0)
FROM chunk_compression_stats($1::regclass) WHERE format('%I.%I', chunk_schema, chunk_name)::regclass = $2::regclass`
	// sqlCompressedChunks lists the compressed chunks, to check the target kept them so.
	sqlCompressedChunks = `
SELECT chunk_schema::text, chunk_name::text FROM timescaledb_information.chunks
WHERE is_compressed AND to_regclass('timescaledb_information.chunks') IS NOT NULL ORDER BY 1, 2`
)

// Compression is what --compress-before did on one source database.
type Compression struct {
	Chunks      int   `json:"chunks"`       // chunks compressed
	Hypertables int   `json:"hypertables"`  // hypertables they belong to
	BytesBefore int64 `json:"bytes_before"` // their total size before compression
	BytesAfter  int64 `json:"bytes_after"`  // and after: what the dump now reads
	// Skipped names hypertables with compression enabled that were left alone, and why.
	Skipped []string `json:"skipped,omitempty"`
}

// Saved is how many bytes less the dump has to read and write.
func (c *Compression) Saved() int64 { return c.BytesBefore - c.BytesAfter }

// compressBefore is --compress-before. An Apache-only source cannot compress: it says
// so and does nothing. On a full-build source it compresses the chunks that may be
// compressed: compression enabled on the hypertable, not compressed yet, and older than
// the hypertable's compression policy's compress_after, or than --compress-older-than.
func (r *run) compressBefore(ctx context.Context) error {
	var lines []string
	for _, d := range r.sum.Databases {
		if !d.ts {
			lines = append(lines, d.Source+": no TimescaleDB, nothing to compress")
			continue
		}
		conn, err := connectTS(ctx, d.src)
		if err != nil {
			return err
		}
		c, err := r.compressDatabase(ctx, conn.Conn, d)
		conn.Close(context.WithoutCancel(ctx))
		if err != nil {
			return fmt.Errorf("--compress-before on %s: %w", d.Source, err)
		}
		var line string
		if c == nil {
			line = "the source runs TimescaleDB's Apache build, which cannot compress: nothing was compressed"
		} else {
			d.Compression = c
			line = fmt.Sprintf("compressed %d chunks of %d hypertables: %s before, %s after, the dump reads %s less",
				c.Chunks, c.Hypertables, preflight.HumanBytes(c.BytesBefore), preflight.HumanBytes(c.BytesAfter), preflight.HumanBytes(c.Saved()))
			if c.Chunks == 0 {
				line = "no chunk was old enough and uncompressed: nothing was compressed"
			}
			for _, s := range c.Skipped {
				r.note(d.Source, "--compress-before: skipped "+s)
			}
		}
		r.note(d.Source, "--compress-before: "+line)
		if len(r.sum.Databases) > 1 {
			line = d.Source + ": " + line
		}
		lines = append(lines, line)
	}
	r.sum.CompressBefore = strings.Join(lines, "; ")
	return nil
}

// compressDatabase compresses one database's old chunks; nil on the Apache build.
func (r *run) compressDatabase(ctx context.Context, conn *pgx.Conn, d *DatabaseRun) (*Compression, error) {
	var license string
	if err := conn.QueryRow(ctx, sqlLicense).Scan(&license); err != nil {
		return nil, fmt.Errorf("read the TimescaleDB license: %w", err)
	}
	if license == "apache" {
		return nil, nil
	}
	type hypertable struct {
		name          string
		integer       bool
		timeType      string // regtype's text: quoted and qualified as needed
		compressAfter *string
	}
	rows, _ := conn.Query(ctx, sqlCompressible)
	hts, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (hypertable, error) {
		var h hypertable
		err := row.Scan(&h.name, &h.integer, &h.timeType, &h.compressAfter)
		return h, err
	})
	if err != nil {
		return nil, fmt.Errorf("list hypertables with compression: %w", err)
	}
	c := &Compression{}
	for _, h := range hts {
		query, older := sqlChunksOlderInterval, any(nil)
		switch {
		case r.opt.CompressOlderThan > 0 && !h.integer:
			older = fmt.Sprintf("%d microseconds", r.opt.CompressOlderThan/time.Microsecond)
		case h.compressAfter == nil:
			why := "it has no compression policy (give --compress-older-than)"
			if r.opt.CompressOlderThan > 0 {
				why = "its time is an integer, which --compress-older-than does not measure, and it has no compression policy"
			}
			c.Skipped = append(c.Skipped, h.name+": "+why)
			continue
		default:
			older = *h.compressAfter
			if h.integer {
				query = fmt.Sprintf(sqlChunksOlderInteger, h.timeType)
			}
		}
		rows, _ := conn.Query(ctx, query, h.name, older)
		chunks, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return c, fmt.Errorf("list the chunks of %s older than %v: %s", h.name, older, dbconn.Reason(err))
		}
		for _, ch := range chunks {
			if _, err := conn.Exec(ctx, sqlCompressChunk, ch); err != nil {
				return c, fmt.Errorf("compress chunk %s of %s: %s", ch, h.name, dbconn.Reason(err))
			}
			var before, after int64
			if err := conn.QueryRow(ctx, sqlChunkSizes, h.name, ch).Scan(&before, &after); err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return c, fmt.Errorf("read the compression of %s: %w", ch, err)
			}
			c.Chunks++
			c.BytesBefore += before
			c.BytesAfter += after
		}
		if len(chunks) > 0 {
			c.Hypertables++
		}
	}
	return c, nil
}

// checkCompressed makes sure the chunks compressed on the source are compressed on the
// target too: a dump restored without its compressed tables, or a copy that wrote the
// rows into plain chunks, would hold the data but lose the space --compress-before won.
// targets maps a source chunk to the target's of the same slices where their names
// differ (the API path), nil when they are the same.
func checkCompressed(ctx context.Context, src, dst *dbconn.Config, targets map[copy.TableName]copy.ChunkTarget) (int, error) {
	list := func(cfg *dbconn.Config) (map[copy.TableName]bool, error) {
		conn, err := connectTS(ctx, cfg)
		if err != nil {
			return nil, err
		}
		defer conn.Close(context.WithoutCancel(ctx))
		rows, _ := conn.Query(ctx, sqlCompressedChunks)
		set := map[copy.TableName]bool{}
		var n copy.TableName
		if _, err := pgx.ForEachRow(rows, []any{&n.Schema, &n.Name}, func() error { set[n] = true; return nil }); err != nil {
			return nil, fmt.Errorf("list the compressed chunks of %s: %w", cfg.Database(), err)
		}
		return set, nil
	}
	srcSet, err := list(src)
	if err != nil {
		return 0, err
	}
	dstSet, err := list(dst)
	if err != nil {
		return 0, err
	}
	var missing []string
	for n := range srcSet {
		t := n
		if c, ok := targets[n]; ok {
			t = c.Table
		}
		if !dstSet[t] {
			missing = append(missing, inventory.DisplayName(n.Schema, n.Name))
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		return len(srcSet), fmt.Errorf("%d of the %d chunks compressed on the source are not compressed on the target (%s); compress them there with SELECT compress_chunk('<chunk>')",
			len(missing), len(srcSet), strings.Join(firstN(missing, 5), ", "))
	}
	return len(srcSet), nil
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], "...")
	}
	return s
}
