package schema

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/pgtools"
	"github.com/tsmigrate/tsmigrate/internal/scratch"
)

// Restoring without TimescaleDB's catalog (see package tsapi): TimescaleDB makes some
// of the dump's objects itself on the target (chunks, their indexes and constraints,
// compressed and materialization hypertables, continuous aggregates' views, its own
// triggers), which the restore leaves out; and the post-data statements of
// hypertables run apart, without ONLY, which TimescaleDB refuses on hypertables
// ("ONLY option not supported on hypertable operations"), once their chunks exist:
// TimescaleDB builds each index and constraint of a hypertable on every chunk.

// Roles of entries in a restore through TimescaleDB's API (the values of package
// tsapi's Role*).
const (
	roleMade       = "made"
	roleHypertable = "hypertable"
	roleAggregate  = "aggregate"
)

// Apart says, for an entry of the dump, whether TimescaleDB makes it ("made"), it
// hangs on a hypertable ("hypertable"), it is a comment or privileges of a
// continuous aggregate ("aggregate"), or none of these ("").
type Apart func(TOCEntry) string

// RestoreSectionApart is RestoreSection leaving out the entries apart says TimescaleDB
// makes itself, and those of continuous aggregates (RestoreAggregateEntries).
func RestoreSectionApart(ctx context.Context, tools *pgtools.Tools, target *dbconn.Config, archive, section string, jobs int, names []string, apart Apart, onMessage func(Message)) ([]Message, error) {
	return restoreSection(ctx, tools, target, archive, section, jobs, names, func(e TOCEntry) bool {
		r := apart(e)
		return r == roleMade || r == roleAggregate
	}, onMessage)
}

// RestoreAggregateEntries restores the comments and privileges of continuous
// aggregates that archive holds, once TimescaleDB made the continuous aggregates.
// names are the archive's names that hold a line break (see RestoreOptions.Names).
func RestoreAggregateEntries(ctx context.Context, tools *pgtools.Tools, target *dbconn.Config, archive string, names []string, apart Apart, onMessage func(Message)) ([]Message, error) {
	toc, err := ReadTOC(ctx, tools, archive)
	if err != nil {
		return nil, err
	}
	dir, err := scratch.New("aggregates")
	if err != nil {
		return nil, fmt.Errorf("restore the continuous aggregates' comments and privileges: %w", err)
	}
	defer dir.Remove()
	list := filepath.Join(dir.Path, "aggregates.list")
	n, err := toc.WriteList(list, func(e TOCEntry) bool { return apart(e) == roleAggregate })
	if err != nil || n == 0 {
		return nil, err
	}
	return restoreList(ctx, RestoreOptions{Tools: tools, Target: target, Archive: archive, OnMessage: onMessage, Names: names}, toc, list, 1)
}

// SetApart makes the plan restore through TimescaleDB's API: the entries TimescaleDB
// makes are left out, those of hypertables are restored by RestoreHypertables, not
// with rows nor by RestoreRest.
func (p *PostDataPlan) SetApart(apart Apart) {
	p.apart = apart
	for _, e := range p.toc.Entries {
		if t, ok := p.early[e.ID]; ok && apart(e) != "" {
			delete(p.sql, t)
			delete(p.early, e.ID)
		}
	}
}

// ofHypertable says whether RestoreHypertables restores e.
func (p *PostDataPlan) ofHypertable(e TOCEntry) bool {
	return p.apart != nil && p.apart(e) == roleHypertable
}

// hypertableStage says which entries of hypertables RestoreHypertables runs in a stage:
// 1, their indexes and constraints but foreign keys (they reference tables RestoreRest
// builds the keys of); 2, the rest (foreign keys, triggers, comments, ...).
func hypertableStage(e TOCEntry) int {
	if e.Desc == "INDEX" || e.Desc == "CONSTRAINT" {
		return 1
	}
	return 2
}

// RestoreHypertables runs the post-data entries of hypertables of stage (1 or 2, see
// hypertableStage), their ALTER TABLE ONLY run as ALTER TABLE: stage 1 jobs at a
// time, stage 2 one by one in the dump's order. Stage 1 runs before RestoreRest, stage
// 2 after it. Entries on says are on the target already are left out (nil: none).
func (p *PostDataPlan) RestoreHypertables(ctx context.Context, tools *pgtools.Tools, target *dbconn.Config, stage, jobs int, on *RestOnTarget) error {
	var entries []TOCEntry
	for _, e := range p.toc.Entries {
		if p.ofHypertable(e) && hypertableStage(e) == stage && (on == nil || !on.Present[e.ID]) {
			entries = append(entries, e)
		}
	}
	if len(entries) == 0 {
		return nil
	}
	script, err := p.entriesSQL(ctx, tools, entries, fmt.Sprintf("hypertables%d", stage))
	if err != nil {
		return err
	}
	blocks, why := splitScript(script, entries)
	if why != "" || stage == 2 {
		// One session, the script as pg_restore wrote it, in order.
		sql, err := scriptSQL(script)
		if err != nil {
			return err
		}
		return runOn(ctx, target, withoutOnly(sql))
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, jobs))
	for i, b := range blocks {
		g.Go(func() error {
			err := runOn(gctx, target, "BEGIN;\n"+earlySession+withoutOnly(b)+"\nCOMMIT;")
			if err != nil {
				return fmt.Errorf("restore %s: %w", entries[i].Object(), err)
			}
			return nil
		})
	}
	return g.Wait()
}

// entriesSQL is the SQL pg_restore writes for entries of the plan's archive.
func (p *PostDataPlan) entriesSQL(ctx context.Context, tools *pgtools.Tools, entries []TOCEntry, name string) ([]byte, error) {
	keep := map[int]bool{}
	for _, e := range entries {
		keep[e.ID] = true
	}
	list := filepath.Join(filepath.Dir(p.archive), filepath.Base(p.archive)+"."+name+".list")
	if _, err := p.toc.WriteList(list, func(e TOCEntry) bool { return keep[e.ID] }); err != nil {
		return nil, err
	}
	defer os.Remove(list)
	var out bytes.Buffer
	var stderr []string
	if err := tools.Run(ctx, pgtools.Cmd{Program: "pg_restore", Args: []string{"--no-owner", "-f", "-", "-L", list, p.archive},
		Stdout: &out, Line: func(_ int, s string) { stderr = append(stderr, s) }}); err != nil {
		return nil, fmt.Errorf("write the SQL of post-data entries: %w: %s", err, strings.Join(stderr, " "))
	}
	return out.Bytes(), nil
}

// scriptSQL is pg_restore's plain script without the psql meta-commands pg_dump 17.6
// and later writes around it (\restrict, \unrestrict); any other meta-command is an
// error, since the script runs as SQL.
func scriptSQL(script []byte) (string, error) {
	var b strings.Builder
	for _, line := range strings.SplitAfter(string(script), "\n") {
		switch {
		case strings.HasPrefix(line, `\restrict `) || strings.HasPrefix(line, `\unrestrict `):
		case strings.HasPrefix(line, `\`):
			return "", fmt.Errorf("pg_restore's script holds a psql meta-command: %s", strings.TrimSpace(line))
		default:
			b.WriteString(line)
		}
	}
	return b.String(), nil
}

// withoutOnly turns pg_restore's ALTER TABLE ONLY into ALTER TABLE: the statements are
// those of hypertables, where TimescaleDB refuses ONLY and applies the change to every
// chunk.
func withoutOnly(sql string) string {
	return strings.ReplaceAll(sql, "ALTER TABLE ONLY ", "ALTER TABLE ")
}

// runOn runs sql (statements, simple protocol) on a new session of target.
func runOn(ctx context.Context, target *dbconn.Config, sql string) error {
	conn, err := target.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := conn.PgConn().Exec(ctx, sql).Close(); err != nil {
		return fmt.Errorf("target: %s", dbconn.Reason(err))
	}
	return nil
}
