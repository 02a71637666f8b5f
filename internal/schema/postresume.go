package schema

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Resuming the rest of post-data. pg_restore runs each TOC entry as one statement
// string, in a transaction of its own (an entry's extra statements, a CLUSTER ON or a
// DISABLE TRIGGER, go with it): after a kill an entry's object is either complete on
// the target or absent. A resumed run therefore restores only the entries whose
// objects are absent. Each entry's object is named from the source's catalog by the
// entry's OID (the source is frozen: its catalog is the dump's), and looked up by that
// name on the target. Entries whose statements are harmless to run again (a comment
// set again, an ALTER TABLE ... ENABLE ROW LEVEL SECURITY) run again. An entry of any
// other kind stops the resume (NotResumableError): nothing tells whether it ran.

// rerunKinds are the entry kinds a resumed post-data phase runs again, harmlessly.
// Checked on PostgreSQL 15 and 17 (restored twice without a message, target equal to
// the source) but SECURITY LABEL, which needs a label provider: by its documentation
// it replaces the object's label of that provider, as COMMENT does.
var rerunKinds = map[string]bool{
	"COMMENT":        true, // COMMENT ON replaces the object's comment
	"SECURITY LABEL": true, // SECURITY LABEL replaces the object's label
	"ROW SECURITY":   true, // ALTER TABLE ... ENABLE ROW LEVEL SECURITY again changes nothing
	"DEFAULT ACL":    true, // ALTER DEFAULT PRIVILEGES granting or revoking what is so already: no change, no message
}

// lookupKind tells how an entry's object is found: source names it (from the entry's
// OID, or its line in pg_restore -l) as a key a, b, c; target says which keys exist.
type lookupKind struct {
	// source: $1 int[] dump IDs, $2 oid[] object OIDs, $3 text[] lines (TOCEntry.listed) of
	// the entries; rows (id, again, a, b, c). again: the entry's statements
	// are harmless to run again (a view's _RETURN rule is CREATE OR REPLACE VIEW).
	source string
	// target: $1 int[] dump IDs, $2 text[] a, $3 text[] b, $4 text[] c; rows (id) of the
	// keys whose objects exist.
	target string
}

// entriesFrom is the FROM item of a lookupKind's source query: the entries, as e.
const entriesFrom = `
FROM unnest($1::int[], $2::oid[], $3::text[]) AS e(id, obj, listed)`

// keysExisting starts a lookupKind's target query: the keys, as k, whose object the
// EXISTS subquery that follows finds.
const keysExisting = `
SELECT k.id FROM unnest($1::int[], $2::text[], $3::text[], $4::text[]) AS k(id, a, b, c)
WHERE EXISTS `

// sqlLookups by entry kind. Each query names only catalogs of PostgreSQL 15 and later,
// and runs only for the kinds the dump holds (pg_publication_namespace is new in 15).
// Checked on PostgreSQL 15 and 17 (TimescaleDB 2.19.3 in restoring mode changes none
// of these catalogs' behaviour).
var sqlLookups = map[string]lookupKind{
	"INDEX": {
		source: `
SELECT e.id, false, n.nspname::text, c.relname::text, ''` + entriesFrom + `
JOIN pg_class c ON c.oid = e.obj JOIN pg_namespace n ON n.oid = c.relnamespace`,
		target: keysExisting + `(SELECT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = k.a AND c.relname = k.b AND c.relkind IN ('i', 'I'))`,
	},
	// An index of a partition attached to its partitioned table's index: the entry
	// (catalog ID 0 0) names the partition's index, its schema and owner (the table's)
	// as pg_restore -l lists them, unquoted: matched whole, whatever spaces the names hold.
	"INDEX ATTACH": {
		source: `
SELECT e.id, false, n.nspname::text, c.relname::text, ''` + entriesFrom + `
JOIN pg_class c ON c.relkind IN ('i', 'I') JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname || ' ' || c.relname || ' ' || pg_get_userbyid(c.relowner) = e.listed
  AND EXISTS (SELECT FROM pg_inherits i WHERE i.inhrelid = c.oid)`,
		target: keysExisting + `(SELECT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_inherits i ON i.inhrelid = c.oid
  WHERE n.nspname = k.a AND c.relname = k.b)`,
	},
	// Constraints of tables and of domains (a domain's NOT VALID check): a table's row
	// type never has constraints, so relation or type name b is not ambiguous.
	"CONSTRAINT": {
		source: `
SELECT e.id, false, n.nspname::text, coalesce(c.relname, t.typname)::text, co.conname::text` + entriesFrom + `
JOIN pg_constraint co ON co.oid = e.obj JOIN pg_namespace n ON n.oid = co.connamespace
LEFT JOIN pg_class c ON c.oid = co.conrelid LEFT JOIN pg_type t ON t.oid = co.contypid`,
		target: keysExisting + `(SELECT FROM pg_constraint co JOIN pg_namespace n ON n.oid = co.connamespace
  LEFT JOIN pg_class c ON c.oid = co.conrelid LEFT JOIN pg_type t ON t.oid = co.contypid
  WHERE n.nspname = k.a AND co.conname = k.c AND coalesce(c.relname, t.typname) = k.b)`,
	},
	"TRIGGER": {
		source: `
SELECT e.id, false, n.nspname::text, c.relname::text, tg.tgname::text` + entriesFrom + `
JOIN pg_trigger tg ON tg.oid = e.obj JOIN pg_class c ON c.oid = tg.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace`,
		target: keysExisting + `(SELECT FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = k.a AND c.relname = k.b AND tg.tgname = k.c)`,
	},
	// A view's _RETURN rule is a RULE entry when pg_dump broke a dependency loop with a
	// placeholder view: its CREATE OR REPLACE VIEW runs again, since the rule exists
	// from the start.
	"RULE": {
		source: `
SELECT e.id, r.rulename = '_RETURN', n.nspname::text, c.relname::text, r.rulename::text` + entriesFrom + `
JOIN pg_rewrite r ON r.oid = e.obj JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace`,
		target: keysExisting + `(SELECT FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = k.a AND c.relname = k.b AND r.rulename = k.c)`,
	},
	"POLICY": {
		source: `
SELECT e.id, false, n.nspname::text, c.relname::text, p.polname::text` + entriesFrom + `
JOIN pg_policy p ON p.oid = e.obj JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace`,
		target: keysExisting + `(SELECT FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = k.a AND c.relname = k.b AND p.polname = k.c)`,
	},
	"STATISTICS": {
		source: `
SELECT e.id, false, n.nspname::text, s.stxname::text, ''` + entriesFrom + `
JOIN pg_statistic_ext s ON s.oid = e.obj JOIN pg_namespace n ON n.oid = s.stxnamespace`,
		target: keysExisting + `(SELECT FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace
  WHERE n.nspname = k.a AND s.stxname = k.b)`,
	},
	// REFRESH MATERIALIZED VIEW: done when the view is populated (it is created empty).
	"MATERIALIZED VIEW DATA": {
		source: `
SELECT e.id, false, n.nspname::text, c.relname::text, ''` + entriesFrom + `
JOIN pg_class c ON c.oid = e.obj AND c.relkind = 'm' JOIN pg_namespace n ON n.oid = c.relnamespace`,
		target: keysExisting + `(SELECT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = k.a AND c.relname = k.b AND c.relkind = 'm' AND c.relispopulated)`,
	},
	"EVENT TRIGGER": {
		source: `
SELECT e.id, false, t.evtname::text, '', ''` + entriesFrom + `
JOIN pg_event_trigger t ON t.oid = e.obj`,
		target: keysExisting + `(SELECT FROM pg_event_trigger t WHERE t.evtname = k.a)`,
	},
	// A subscription of the current database, restored disabled and not connected.
	"SUBSCRIPTION": {
		source: `
SELECT e.id, false, s.subname::text, '', ''` + entriesFrom + `
JOIN pg_subscription s ON s.oid = e.obj`,
		target: keysExisting + `(SELECT FROM pg_subscription s
  WHERE s.subname = k.a AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database()))`,
	},
	"PUBLICATION": {
		source: `
SELECT e.id, false, p.pubname::text, '', ''` + entriesFrom + `
JOIN pg_publication p ON p.oid = e.obj`,
		target: keysExisting + `(SELECT FROM pg_publication p WHERE p.pubname = k.a)`,
	},
	"PUBLICATION TABLE": {
		source: `
SELECT e.id, false, p.pubname::text, n.nspname::text, c.relname::text` + entriesFrom + `
JOIN pg_publication_rel pr ON pr.oid = e.obj JOIN pg_publication p ON p.oid = pr.prpubid
JOIN pg_class c ON c.oid = pr.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace`,
		target: keysExisting + `(SELECT FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
  JOIN pg_class c ON c.oid = pr.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE p.pubname = k.a AND n.nspname = k.b AND c.relname = k.c)`,
	},
	"PUBLICATION TABLES IN SCHEMA": {
		source: `
SELECT e.id, false, p.pubname::text, n.nspname::text, ''` + entriesFrom + `
JOIN pg_publication_namespace pn ON pn.oid = e.obj JOIN pg_publication p ON p.oid = pn.pnpubid
JOIN pg_namespace n ON n.oid = pn.pnnspid`,
		target: keysExisting + `(SELECT FROM pg_publication_namespace pn JOIN pg_publication p ON p.oid = pn.pnpubid
  JOIN pg_namespace n ON n.oid = pn.pnnspid WHERE p.pubname = k.a AND n.nspname = k.b)`,
	},
}

// lookupAs: entry kinds looked up as another kind.
var lookupAs = map[string]string{"FK CONSTRAINT": "CONSTRAINT", "CHECK CONSTRAINT": "CONSTRAINT"}

// NotResumableError says why the rest of post-data cannot be resumed: an entry whose
// presence on the target cannot be told.
type NotResumableError struct {
	Entry TOCEntry
	Why   string
}

func (e *NotResumableError) Error() string {
	return fmt.Sprintf("cannot tell whether %s was restored: %s", e.Entry.Object(), e.Why)
}

// RestOnTarget is what of the rest of post-data (RestoreRest) the target holds
// already, after a run that stopped while restoring it.
type RestOnTarget struct {
	Entries int // entries of the rest
	// Present are the dump IDs of entries whose objects are on the target: left out.
	Present map[int]bool
	Again   int // entries that run again, harmlessly
}

// FindOnTarget finds which entries of the rest of post-data (those RestoreRest with
// the same done restores, and RestoreHypertables) have their objects on the target already: src is the
// source the archive was dumped from (frozen since: its catalog is the dump's), dst
// the target. An entry of a kind it cannot tell about is a *NotResumableError.
func (p *PostDataPlan) FindOnTarget(ctx context.Context, src, dst *pgx.Conn, done func(TableName) bool) (*RestOnTarget, error) {
	res := &RestOnTarget{Present: map[int]bool{}}
	byKind := map[string][]TOCEntry{}
	for _, e := range p.toc.Entries {
		if !p.inRest(e, done) && !p.ofHypertable(e) {
			continue
		}
		res.Entries++
		kind, err := restKind(e)
		switch {
		case err != nil:
			return nil, err
		case kind == "":
			res.Again++
		default:
			byKind[kind] = append(byKind[kind], e)
		}
	}
	kinds := make([]string, 0, len(byKind))
	for k := range byKind {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, kind := range kinds {
		again, err := lookUp(ctx, src, dst, sqlLookups[kind], byKind[kind], res.Present)
		if err != nil {
			return nil, fmt.Errorf("find which %s entries of post-data the target holds: %w", strings.ToLower(kind), err)
		}
		res.Again += again
	}
	return res, nil
}

// restKind says how a resumed post-data phase treats entry e: "" when it runs again,
// else the kind of sqlLookups that finds its object; a *NotResumableError for an entry
// kind it does not know.
func restKind(e TOCEntry) (string, error) {
	if rerunKinds[e.Desc] {
		return "", nil
	}
	kind := e.Desc
	if k, ok := lookupAs[kind]; ok {
		kind = k
	}
	if _, ok := sqlLookups[kind]; !ok {
		return "", &NotResumableError{Entry: e, Why: "entries of kind " + e.Desc + " are not known to tsmigrate's resume"}
	}
	return kind, nil
}

// listed is the entry's line of pg_restore -l after its kind: "<schema> <tag> <owner>".
func (e TOCEntry) listed() string {
	m := tocLine.FindStringSubmatch(e.Line)
	if m == nil {
		return ""
	}
	_, rest := splitDesc(m[4])
	return rest
}

// lookUp names entries on the source and marks those whose objects exist on the
// target in present; it returns how many run again.
func lookUp(ctx context.Context, src, dst *pgx.Conn, k lookupKind, entries []TOCEntry, present map[int]bool) (int, error) {
	var ids []int32
	var oids []uint32
	var listed []string
	for _, e := range entries {
		ids = append(ids, int32(e.ID))
		oids = append(oids, e.OID)
		listed = append(listed, e.listed())
	}
	rows, _ := src.Query(ctx, k.source, ids, oids, listed)
	named := map[int32]bool{}
	again := 0
	var keys struct {
		ids     []int32
		a, b, c []string
	}
	var row struct {
		id      int32
		again   bool
		a, b, c string
	}
	if _, err := pgx.ForEachRow(rows, []any{&row.id, &row.again, &row.a, &row.b, &row.c}, func() error {
		named[row.id] = true
		if row.again {
			again++
			return nil
		}
		keys.ids, keys.a, keys.b, keys.c = append(keys.ids, row.id), append(keys.a, row.a), append(keys.b, row.b), append(keys.c, row.c)
		return nil
	}); err != nil {
		return 0, fmt.Errorf("on the source: %w", err)
	}
	for _, e := range entries {
		if !named[int32(e.ID)] {
			return 0, &NotResumableError{Entry: e, Why: "its object is not on the source (any more)"}
		}
	}
	if len(keys.ids) == 0 {
		return again, nil
	}
	rows, _ = dst.Query(ctx, k.target, keys.ids, keys.a, keys.b, keys.c)
	var id int32
	if _, err := pgx.ForEachRow(rows, []any{&id}, func() error { present[int(id)] = true; return nil }); err != nil {
		return 0, fmt.Errorf("on the target: %w", err)
	}
	return again, nil
}
