package schema

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/pgtools"
	"github.com/tsmigrate/tsmigrate/internal/scratch"
	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// DumpOptions say what to dump where.
type DumpOptions struct {
	Tools  *pgtools.Tools
	Source *dbconn.Config
	// Dir is a directory-format dump (written with Jobs workers); File a custom-format
	// file (one worker). Exactly one is set.
	Dir, File string
	Jobs      int
	OnMessage func(Message)
}

// Dump dumps the whole source database without ownership (--no-owner), classifying
// everything pg_dump prints. It returns the messages, and a *MessageError when one is
// not known to be harmless.
func Dump(ctx context.Context, opt DumpOptions) ([]Message, error) {
	args := []string{"--verbose", "--no-owner"}
	if opt.Tools.VersionOf("pg_dump").Major >= 16 {
		// gzip (the default) makes pg_dump CPU-bound; zstd at level 1 is about 3.5 times
		// faster here and its dump smaller (1.5 M rows: 2.5 s / 32 MB against 0.7 s / 28 MB).
		args = append(args, "--compress=zstd:1")
	}
	switch {
	case opt.Dir != "" && opt.File != "":
		return nil, fmt.Errorf("dump: a directory or a file, not both")
	case opt.Dir != "":
		args = append(args, "--format=directory", "--file="+opt.Dir)
		if opt.Jobs > 1 {
			args = append(args, "--jobs="+strconv.Itoa(opt.Jobs))
		}
	case opt.File != "":
		args = append(args, "--format=custom", "--file="+opt.File)
	default:
		return nil, fmt.Errorf("dump: no directory or file given")
	}
	return runClassified(ctx, opt.Tools, pgtools.Cmd{Program: "pg_dump", Conn: opt.Source, Args: args}, nil, nil, opt.OnMessage)
}

// Sections of a dump (pg_dump --section).
const (
	PreData  = "pre-data"  // types, functions, tables, sequences: everything before the rows
	PostData = "post-data" // indexes, constraints, triggers, rules: everything after the rows
)

// DumpSchema writes the source's schema without rows (sections pre-data and post-data)
// to a custom-format file, for an engine that copies the rows itself. TimescaleDB's
// catalog rows are data: they are not in it.
func DumpSchema(ctx context.Context, tools *pgtools.Tools, src *dbconn.Config, file string, onMessage func(Message)) ([]Message, error) {
	return DumpSchemaAt(ctx, tools, src, file, "", onMessage)
}

// DumpSchemaAt is DumpSchema in the exported snapshot given ("" for none): the schema
// as a copy in that snapshot sees it (a live migration's).
func DumpSchemaAt(ctx context.Context, tools *pgtools.Tools, src *dbconn.Config, file, snapshot string, onMessage func(Message)) ([]Message, error) {
	args := []string{"--verbose", "--no-owner", "--format=custom", "--file=" + file,
		"--section=" + PreData, "--section=" + PostData}
	if snapshot != "" {
		args = append(args, "--snapshot="+snapshot)
	}
	return runClassified(ctx, tools, pgtools.Cmd{Program: "pg_dump", Conn: src, Args: args}, nil, nil, onMessage)
}

// RestoreSection restores one section (PreData or PostData) of archive into the target
// with jobs workers, classifying what pg_restore prints. Run timescaledb_pre_restore()
// (PreRestore) before the pre-data section of a TimescaleDB database: the schema that
// its TimescaleDB is installed in is left out, made with the extension. names are the
// archive's names that hold a line break (see RestoreOptions.Names).
func RestoreSection(ctx context.Context, tools *pgtools.Tools, target *dbconn.Config, archive, section string, jobs int, names []string, onMessage func(Message)) ([]Message, error) {
	return restoreSection(ctx, tools, target, archive, section, jobs, names, nil, onMessage)
}

// restoreSection is RestoreSection leaving out the entries skip says (nil: none).
func restoreSection(ctx context.Context, tools *pgtools.Tools, target *dbconn.Config, archive, section string, jobs int, names []string, skip func(TOCEntry) bool, onMessage func(Message)) ([]Message, error) {
	if section != PreData && section != PostData {
		return nil, fmt.Errorf("restore section %q: want %q or %q", section, PreData, PostData)
	}
	toc, err := listTOC(ctx, tools, "--section="+section, archive)
	if err != nil {
		return nil, err
	}
	conn, err := target.Connect(ctx)
	if err != nil {
		return nil, err
	}
	made, err := madeWithExtension(ctx, conn.Conn)
	conn.Close(context.WithoutCancel(ctx))
	if err != nil {
		return nil, err
	}
	dir, err := scratch.New(section)
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", section, err)
	}
	defer dir.Remove()
	return restoreEntries(ctx, tools, target, archive, section, jobs, names, onMessage, toc, dir, func(e TOCEntry) bool {
		return !made(e) && (skip == nil || !skip(e))
	})
}

// restoreEntries restores the entries of a section's toc that keep says into the
// target, from a list in dir.
func restoreEntries(ctx context.Context, tools *pgtools.Tools, target *dbconn.Config, archive, section string, jobs int, names []string, onMessage func(Message),
	toc *TOC, dir *scratch.Dir, keep func(TOCEntry) bool) ([]Message, error) {
	list := filepath.Join(dir.Path, section+".list")
	if _, err := toc.WriteList(list, keep); err != nil {
		return nil, fmt.Errorf("restore %s: %w", section, err)
	}
	if jobs <= 1 {
		// One session, in order: in batches (see restoreBatched).
		msgs, done, err := restoreBatched(ctx, tools, target, archive, list, toc, names, onMessage)
		if done {
			return msgs, err
		}
	}
	// The list holds the section's entries; --section given again would make pg_restore
	// 17 drop the comment and privileges of a schema whose CREATE SCHEMA is left out.
	args := []string{"--verbose", "--no-owner", "-L", list}
	if jobs > 1 {
		args = append(args, "--jobs="+strconv.Itoa(jobs))
	}
	args = append(args, archive)
	return runClassified(ctx, tools, pgtools.Cmd{Program: "pg_restore", Conn: target, Args: args}, toc, names, onMessage)
}

// sqlAnalyzeTargets lists what ANALYZE covers (tables, partitioned tables, materialized
// views, hypertable chunks included); sqlAnalyzeSizes gives the sizes of those picked,
// largest first. PostgreSQL 15/17. The sizes only of those picked: pg_relation_size
// reads the size of each table's files, about 60 ms for 5 000 chunks that the
// analyze after a stream copy leaves out (they were analyzed with the rest of
// post-data).
//
// Not the tables of _timescaledb_cache: TimescaleDB keeps them empty, to signal through
// their relcache invalidations, and the first ANALYZE of cache_inval_extension (its
// reltuples go from -1 to 0) tells every session of the database that the extension
// may have been dropped or created. TimescaleDB 2.19.3 then decides again whether it is
// loaded, and a session that asks meanwhile fails, "tried calling catalog_get when
// extension isn't loaded": another worker's ANALYZE of a hypertable, a pg_restore
// statement running alongside, a user's query.
var sqlAnalyzeTargets = `
SELECT c.oid, n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm', 'p') AND NOT ` + sqltext.SystemSchema("n.nspname") + ` AND n.nspname <> '_timescaledb_cache'`

// sqlAnalyzeSizes: a table dropped meanwhile has no size (its ANALYZE fails as before).
const sqlAnalyzeSizes = `
SELECT t.oid, coalesce(pg_relation_size(t.oid), 0) FROM unnest($1::oid[]) AS t (oid)
ORDER BY 2 DESC`

// analyzeGroup and analyzeGroupBytes bound the tables one ANALYZE statement takes.
const (
	analyzeGroup      = 50
	analyzeGroupBytes = 16 << 20
)

// Analyze updates the planner statistics of every table of the target database, jobs
// tables at a time (what a plain ANALYZE does, in parallel). On a TimescaleDB database,
// run it before timescaledb_post_restore(): with the extension active, ANALYZE of a
// hypertable analyzes all its chunks again, which are analyzed here on their own
// (measured on 1.3 M rows in 30 chunks: 1.0 s for the hypertable against 75 ms while
// timescaledb.restoring is on). which, when not nil, picks the tables to analyze.
//
// Small tables go several to a statement (ANALYZE a, b, ...: each in a transaction of
// its own, as when alone), up to analyzeGroup of them or analyzeGroupBytes: thousands
// of chunks take as many round trips otherwise, which across a WAN cost more than
// their ANALYZE.
func Analyze(ctx context.Context, target *dbconn.Config, jobs int, which func(TableName) bool) error {
	conn, err := target.Connect(ctx)
	if err != nil {
		return err
	}
	tables, err := analyzeGroups(ctx, conn.Conn, jobs, which)
	conn.Close(ctx)
	if err != nil {
		return fmt.Errorf("list tables to analyze: %w", err)
	}
	if len(tables) == 0 {
		return nil
	}
	jobs = max(1, min(jobs, len(tables)))
	work := make(chan string)
	g, gctx := errgroup.WithContext(ctx)
	for range jobs {
		g.Go(func() error {
			c, err := target.Connect(gctx)
			if err != nil {
				return err
			}
			defer c.Close(context.WithoutCancel(gctx))
			for t := range work {
				if _, err := c.Exec(gctx, "ANALYZE "+t); err != nil {
					return fmt.Errorf("ANALYZE %s: %s", t, dbconn.Reason(err))
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		defer close(work)
		for _, t := range tables {
			select {
			case work <- t:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	return g.Wait()
}

// analyzeGroups lists the tables to analyze (which picks them; nil: all), largest
// first, and groups them into the statements Analyze runs, each a comma-separated list
// of tables: at least jobs of them where the tables allow (a few small tables, such as
// the catalog tables left after a stream copy, go to every job rather than one).
func analyzeGroups(ctx context.Context, conn *pgx.Conn, jobs int, which func(TableName) bool) ([]string, error) {
	rows, _ := conn.Query(ctx, sqlAnalyzeTargets) // CollectRows returns Query's error
	type target struct {
		oid  uint32
		name TableName
	}
	all, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (target, error) {
		var t target
		return t, row.Scan(&t.oid, &t.name.Schema, &t.name.Name)
	})
	if err != nil {
		return nil, err
	}
	names := map[uint32]string{}
	var oids []uint32
	for _, t := range all {
		if which != nil && !which(t.name) {
			continue
		}
		names[t.oid] = pgx.Identifier{t.name.Schema, t.name.Name}.Sanitize()
		oids = append(oids, t.oid)
	}
	if len(oids) == 0 {
		return nil, nil
	}
	rows, _ = conn.Query(ctx, sqlAnalyzeSizes, oids)
	var groups [][]string
	var groupBytes int64
	var oid uint32
	var size int64
	_, err = pgx.ForEachRow(rows, []any{&oid, &size}, func() error {
		name := names[oid]
		// Largest first: a table joins the group before it while the group stays small.
		if n := len(groups); n > 0 && groupBytes+size <= analyzeGroupBytes && len(groups[n-1]) < analyzeGroup {
			groups[n-1] = append(groups[n-1], name)
			groupBytes += size
			return nil
		}
		groups = append(groups, []string{name})
		groupBytes = size
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Fewer groups than jobs: the group of most tables is dealt in two, by turns (its
	// tables are in order of size), until every job has one or no group has two.
	for len(groups) < jobs {
		most := 0
		for i, g := range groups {
			if len(g) > len(groups[most]) {
				most = i
			}
		}
		if len(groups[most]) < 2 {
			break
		}
		var a, b []string
		for i, t := range groups[most] {
			if i%2 == 0 {
				a = append(a, t)
			} else {
				b = append(b, t)
			}
		}
		groups[most] = a
		groups = append(groups, b)
	}
	tables := make([]string, len(groups))
	for i, g := range groups {
		tables[i] = strings.Join(g, ", ")
	}
	return tables, nil
}
