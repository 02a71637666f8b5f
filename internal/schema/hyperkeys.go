package schema

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/pgtools"
)

// Foreign keys that reference a hypertable (TimescaleDB 2.16 and later). The rows are
// in the chunks, so TimescaleDB gives every chunk a copy of such a key when the key is
// added and when a chunk is made: a constraint of the referencing table that references
// the chunk, whose parent is the key on the hypertable, with the action triggers that
// refuse (or cascade) a delete of a referenced row. pg_dump dumps only the key on the
// hypertable ("ALTER TABLE ONLY ... ADD CONSTRAINT ... REFERENCES hypertable"), and in
// restoring mode TimescaleDB's hooks are off: restored there, the key lands on the
// hypertable alone (a delete on the target leaves orphans) and its check reads the
// hypertable's own empty table (a referencing table with rows fails with "is not
// present in table"). Restored once timescaledb_post_restore() has ended restoring
// mode, TimescaleDB copies the key to every chunk and checks the rows against them.
//
// A copy takes the first free name made of the referencing table, the referenced
// columns and "fkey" (refs_time_id_fkey, refs_time_id_fkey1, ...), so the names depend
// on the order in which copies were made; the copies are renamed to the source's names
// afterwards, paired by their key and their chunk's slices (its CHECK constraints: a
// restore through TimescaleDB's API names chunks otherwise).
//
// Restored through TimescaleDB's API (no restoring mode), the keys are added the same
// way, once the hypertables' chunks are made and filled.
// Checked on PostgreSQL 17 + TimescaleDB 2.19.3.

// sqlHypertableKeys picks, of the foreign keys $1, those that reference a hypertable.
const sqlHypertableKeys = `
SELECT co.oid FROM pg_constraint co
JOIN pg_class c ON c.oid = co.confrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN _timescaledb_catalog.hypertable h ON h.schema_name = n.nspname AND h.table_name = c.relname
WHERE co.oid = ANY($1::oid[]) AND co.contype = 'f'`

// sqlKeyNames names the keys $1 (source OIDs) by their referencing table and name.
const sqlKeyNames = `
SELECT n.nspname, c.relname, co.conname FROM pg_constraint co
JOIN pg_class c ON c.oid = co.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE co.oid = ANY($1::oid[])`

// sqlChunkCopies lists the chunks' copies of the keys named by ($1 schema, $2 table,
// $3 name) of their referencing tables: the key's position in the arrays, the chunk
// referenced (its CHECK constraints, which hold its slices) and the copy's name.
const sqlChunkCopies = `
SELECT k.i, (SELECT string_agg(pg_get_constraintdef(x.oid), ' AND ' ORDER BY pg_get_constraintdef(x.oid))
	FROM pg_constraint x WHERE x.conrelid = ch.confrelid AND x.contype = 'c'), ch.conname
FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS k(s, t, name, i)
JOIN pg_namespace n ON n.nspname = k.s JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = k.t
JOIN pg_constraint p ON p.conrelid = c.oid AND p.conname = k.name AND p.contype = 'f'
JOIN pg_constraint ch ON ch.conparentid = p.oid AND ch.contype = 'f'`

// HypertableKeys are the entries of an archive that add foreign keys referencing
// hypertables: left out of the restore in restoring mode, restored by Restore after
// timescaledb_post_restore().
type HypertableKeys struct {
	archive string
	toc     *TOC
	ids     map[int]bool
	names   []string // the source's names that hold a line break (LineBreakNames)
}

// FindHypertableKeys finds the FK CONSTRAINT entries of toc (of archive) whose keys
// reference hypertables, in the catalog of the source the archive was dumped from
// (frozen: the dump's catalog). A source without TimescaleDB has none.
func FindHypertableKeys(ctx context.Context, src *pgx.Conn, toc *TOC, archive string) (*HypertableKeys, error) {
	k := &HypertableKeys{archive: archive, toc: toc, ids: map[int]bool{}}
	var fks []uint32
	byOID := map[uint32][]int{}
	for _, e := range toc.Entries {
		if e.Desc == "FK CONSTRAINT" && e.CatalogTable == catalogPgConstraint {
			fks = append(fks, e.OID)
			byOID[e.OID] = append(byOID[e.OID], e.ID)
		}
	}
	if len(fks) == 0 {
		return k, nil
	}
	var ts bool
	if err := src.QueryRow(ctx, `SELECT to_regclass('_timescaledb_catalog.hypertable') IS NOT NULL`).Scan(&ts); err != nil || !ts {
		return k, err
	}
	rows, _ := src.Query(ctx, sqlHypertableKeys, fks)
	var oid uint32
	if _, err := pgx.ForEachRow(rows, []any{&oid}, func() error {
		for _, id := range byOID[oid] {
			k.ids[id] = true
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("find the foreign keys that reference hypertables: %w", err)
	}
	if len(k.ids) == 0 {
		return k, nil
	}
	names, err := LineBreakNames(ctx, src)
	k.names = names
	return k, err
}

// Any says whether there are keys to restore (false for a nil k).
func (k *HypertableKeys) Any() bool { return k != nil && len(k.ids) > 0 }

// Holds says whether e is one of the keys (false for a nil k).
func (k *HypertableKeys) Holds(e TOCEntry) bool { return k != nil && k.ids[e.ID] }

// Restore adds the keys to the target, out of restoring mode, those it holds already
// left out (a resumed run), and gives the chunks' copies the source's names; src is
// the source the archive was dumped from.
func (k *HypertableKeys) Restore(ctx context.Context, tools *pgtools.Tools, target *dbconn.Config, src *pgx.Conn, jobs int, onMessage func(Message)) ([]Message, error) {
	if !k.Any() {
		return nil, nil
	}
	var entries []TOCEntry
	for _, e := range k.toc.Entries {
		if k.ids[e.ID] {
			entries = append(entries, e)
		}
	}
	dst, err := target.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer dst.Close(context.WithoutCancel(ctx))
	present := map[int]bool{}
	if _, err := lookUp(ctx, src, dst.Conn, sqlLookups["CONSTRAINT"], entries, present); err != nil {
		return nil, fmt.Errorf("find which foreign keys to hypertables the target holds: %w", err)
	}
	list := filepath.Join(filepath.Dir(k.archive), filepath.Base(k.archive)+".hypertable-keys.list")
	n, err := k.toc.WriteList(list, func(e TOCEntry) bool { return k.ids[e.ID] && !present[e.ID] })
	if err != nil {
		return nil, err
	}
	defer os.Remove(list)
	var msgs []Message
	if n > 0 {
		msgs, err = restoreList(ctx, RestoreOptions{Tools: tools, Target: target, Archive: k.archive, OnMessage: onMessage, Names: k.names}, k.toc, list, jobs)
		if err != nil {
			return msgs, err
		}
	}
	return msgs, k.renameCopies(ctx, src, dst.Conn, entries)
}

// renameCopies gives the chunks' copies of the keys of entries on dst the names their
// counterparts (same key, same chunk) have on src, in one transaction: first to
// names of their own, then to the source's, so that two copies may swap names.
func (k *HypertableKeys) renameCopies(ctx context.Context, src, dst *pgx.Conn, entries []TOCEntry) error {
	oids := make([]uint32, len(entries))
	for i, e := range entries {
		oids[i] = e.OID
	}
	var s, t, name []string
	rows, _ := src.Query(ctx, sqlKeyNames, oids)
	var ks, kt, kn string
	if _, err := pgx.ForEachRow(rows, []any{&ks, &kt, &kn}, func() error {
		s, t, name = append(s, ks), append(t, kt), append(name, kn)
		return nil
	}); err != nil {
		return fmt.Errorf("name the foreign keys to hypertables on the source: %w", err)
	}
	type copyOf struct {
		key   int64
		chunk string // its slices
	}
	copies := func(c *pgx.Conn) (map[copyOf]string, error) {
		out := map[copyOf]string{}
		rows, _ := c.Query(ctx, sqlChunkCopies, s, t, name)
		var k copyOf
		var n string
		_, err := pgx.ForEachRow(rows, []any{&k.key, &k.chunk, &n}, func() error { out[k] = n; return nil })
		return out, err
	}
	want, err := copies(src)
	if err != nil {
		return fmt.Errorf("list the chunks' copies of foreign keys on the source: %w", err)
	}
	have, err := copies(dst)
	if err != nil {
		return fmt.Errorf("list the chunks' copies of foreign keys on the target: %w", err)
	}
	type rename struct{ table, from, to string }
	var renames []rename
	for c, got := range have {
		if w, ok := want[c]; ok && w != got {
			i := c.key - 1
			renames = append(renames, rename{pgx.Identifier{s[i], t[i]}.Sanitize(), got, w})
		}
	}
	if len(renames) == 0 {
		return nil
	}
	return pgx.BeginFunc(ctx, dst, func(tx pgx.Tx) error {
		for pass := range 2 {
			for i, r := range renames {
				from, to := r.from, fmt.Sprintf("tsmigrate_key_%d", i)
				if pass == 1 {
					from, to = to, r.to
				}
				q := fmt.Sprintf("ALTER TABLE %s RENAME CONSTRAINT %s TO %s", r.table, pgx.Identifier{from}.Sanitize(), pgx.Identifier{to}.Sanitize())
				if _, err := tx.Exec(ctx, q); err != nil {
					return fmt.Errorf("give a chunk's copy of a foreign key the source's name: %s: %s", q, dbconn.Reason(err))
				}
			}
		}
		return nil
	})
}
