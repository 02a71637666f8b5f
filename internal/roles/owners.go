package roles

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// Owners. A migration restores every object as the target user (pg_restore
// --no-owner); once the schema, its privileges and the rows are in, the objects are
// given their source owners here: an ALTER ... OWNER TO per object whose owner
// differs, for every kind of object that has one (pg_shdepend's owner entries, named by
// pg_identify_object). Run while TimescaleDB is in restoring mode (the catalog path),
// ALTER TABLE of a hypertable does not recurse to its chunks, each of which is given its
// owner on its own; otherwise the chunks go first, so that the hypertable's recursion
// finds them done.
//
// PostgreSQL lets a user who is no superuser give an object to a role it may SET ROLE
// to (what roles.Plan grants a CREATEROLE target user on the roles it creates), and
// only when that role may create in the object's schema. Where the role may not (its
// CREATE on the schema was given by a superuser on the source, or never needed), the
// target user gives it CREATE for as long as it takes, when it may grant it (it owns the
// schema), in the same transaction. TimescaleDB's own schemas belong to the superuser
// who created the extension: there the owner stays the target user, and the report
// says why and what a superuser can run.

// sqlOwned lists the objects of the connected database that have an owner, but
// extension members (the extension's), default privileges (restored as they are),
// and sequences that belong to a column (serial, identity), which follow their
// table. Checked on PostgreSQL 15, 16 and 17.
const sqlOwned = `
SELECT i.type, i.identity, coalesce(i.schema, ''), coalesce(i.name, ''), r.rolname
FROM pg_shdepend s
JOIN pg_roles r ON r.oid = s.refobjid
CROSS JOIN LATERAL pg_identify_object(s.classid, s.objid, s.objsubid) AS i
WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
	AND s.refclassid = 'pg_authid'::regclass AND s.deptype = 'o'
	AND s.classid <> 'pg_default_acl'::regclass
	AND NOT EXISTS (SELECT FROM pg_depend e WHERE e.classid = s.classid AND e.objid = s.objid AND e.deptype = 'e')
	AND NOT (s.classid = 'pg_class'::regclass AND EXISTS (
		SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = s.objid
			AND d.refclassid = 'pg_class'::regclass AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i')))`

// alterKeyword is the ALTER statement of each kind of object pg_identify_object names,
// whose identity it takes as written (PostgreSQL 15-17).
var alterKeyword = map[string]string{
	"schema": "SCHEMA", "table": "TABLE", "view": "VIEW", "materialized view": "MATERIALIZED VIEW",
	"sequence": "SEQUENCE", "foreign table": "FOREIGN TABLE", "composite type": "TYPE", "type": "TYPE",
	"function": "FUNCTION", "procedure": "PROCEDURE", "aggregate": "AGGREGATE",
	"collation": "COLLATION", "conversion": "CONVERSION", "operator": "OPERATOR",
	"operator class": "OPERATOR CLASS", "operator family": "OPERATOR FAMILY",
	"text search dictionary": "TEXT SEARCH DICTIONARY", "text search configuration": "TEXT SEARCH CONFIGURATION",
	"statistics object": "STATISTICS", "foreign-data wrapper": "FOREIGN DATA WRAPPER", "server": "SERVER",
	"publication": "PUBLICATION", "subscription": "SUBSCRIPTION", "event trigger": "EVENT TRIGGER",
	"language": "LANGUAGE", "large object": "LARGE OBJECT",
}

// Owned is an object and its owner. Schema and Name are raw ("" for an object
// without), Identity quoted as SQL wants it.
type Owned struct {
	Type, Identity, Schema, Name, Owner string
}

// Title is the object for a person: "table public.metrics".
func (o Owned) Title() string { return o.Type + " " + o.Identity }

// ReadOwned lists the objects of the connected database and their owners (objects
// owned by the bootstrap superuser are not listed: PostgreSQL records no owner for it).
func ReadOwned(ctx context.Context, conn *pgx.Conn) ([]Owned, error) {
	rows, _ := conn.Query(ctx, sqlOwned)
	var out []Owned
	var o Owned
	if _, err := pgx.ForEachRow(rows, []any{&o.Type, &o.Identity, &o.Schema, &o.Name, &o.Owner}, func() error {
		out = append(out, o)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list the owners of objects: %w", err)
	}
	return out, nil
}

// OwnersReport is what SetOwners did. Its JSON names are part of tsmigrate's contract.
type OwnersReport struct {
	// Set counts the objects given their source owner.
	Set int `json:"set"`
	// NotSet are the objects that kept another owner, by owner and reason.
	NotSet []NotSet `json:"not_set,omitempty"`
}

// NotSet are objects whose owner could not be given, for one reason.
type NotSet struct {
	Owner   string   `json:"owner"`
	Reason  string   `json:"reason"`
	Count   int      `json:"count"`
	Objects []string `json:"objects"` // the first few
	// Fix is what a user allowed to can run ("" when nothing simple does).
	Fix string `json:"fix,omitempty"`
}

// String is the refusal in one line.
func (n NotSet) String() string {
	objs := strings.Join(n.Objects, ", ")
	if n.Count > len(n.Objects) {
		objs += fmt.Sprintf(" and %d more", n.Count-len(n.Objects))
	}
	s := fmt.Sprintf("%d objects of role %s keep another owner (%s): %s", n.Count, n.Owner, objs, n.Reason)
	if n.Fix != "" {
		s += "; " + n.Fix
	}
	return s
}

const shownObjects = 5

// SQL of the owners' step on the target. PostgreSQL 15-17 (pg_has_role's SET from 16).
const (
	sqlRolesExist = `SELECT rolname FROM pg_roles WHERE rolname = ANY($1)`
	sqlCanSet16   = `SELECT pg_has_role(current_user, $1, 'SET') OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)`
	sqlCanSet15   = `SELECT pg_has_role(current_user, $1, 'MEMBER') OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)`
	sqlMayCreate  = `SELECT has_schema_privilege($1, $2, 'CREATE')`
)

// SetOwners gives each object of the target database (dst, as the target user) the
// owner it has in the source database (src), where they differ and the owner exists
// on the target. It returns what it could not do; an error only when the target's
// transaction fails.
func SetOwners(ctx context.Context, src, dst *pgx.Conn) (*OwnersReport, error) {
	want, err := ReadOwned(ctx, src)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	have, err := ReadOwned(ctx, dst)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	now := map[[2]string]string{}
	for _, o := range have {
		now[[2]string{o.Type, o.Identity}] = o.Owner
	}
	rep := &OwnersReport{}
	notSet := map[[2]string]*NotSet{}
	refuse := func(o Owned, reason, fix string) {
		k := [2]string{o.Owner, reason}
		n := notSet[k]
		if n == nil {
			n = &NotSet{Owner: o.Owner, Reason: reason, Fix: fix}
			notSet[k] = n
		}
		n.Count++
		if len(n.Objects) < shownObjects {
			n.Objects = append(n.Objects, o.Title())
		}
	}
	var todo []Owned
	owners := map[string]bool{}
	for _, o := range want {
		if now[[2]string{o.Type, o.Identity}] == o.Owner {
			continue
		}
		todo = append(todo, o)
		owners[o.Owner] = true
	}
	if len(todo) == 0 {
		return rep, nil
	}
	var names []string
	for n := range owners {
		names = append(names, n)
	}
	rows, _ := dst.Query(ctx, sqlRolesExist, names)
	existing, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("target: look up roles: %w", err)
	}
	exists := map[string]bool{}
	for _, n := range existing {
		exists[n] = true
	}
	var major int
	if err := dst.QueryRow(ctx, sqlMajor).Scan(&major); err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	canSet := map[string]bool{}
	for n := range owners {
		if !exists[n] {
			continue
		}
		q := sqlCanSet16
		if major < 16 {
			q = sqlCanSet15
		}
		var ok bool
		if err := dst.QueryRow(ctx, q, n).Scan(&ok); err != nil {
			return nil, fmt.Errorf("target: may the target user act as role %s: %w", n, err)
		}
		canSet[n] = ok
	}
	// Schemas first (an object's owner may need to own its schema to create in it),
	// then what is in TimescaleDB's schemas (chunks before their hypertables), then
	// the rest.
	rank := func(o Owned) int {
		switch {
		case o.Type == "schema":
			return 0
		case isTimescaleSchema(o.Schema):
			return 1
		}
		return 2
	}
	sort.SliceStable(todo, func(i, j int) bool { return rank(todo[i]) < rank(todo[j]) })

	tx, err := dst.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	aside := &asideSchema{}
	type grant struct{ schema, role string }
	granted := map[grant]bool{} // CREATE given for the step, taken back before the commit
	tried := map[grant]error{}
	for _, o := range todo {
		keyword, known := alterKeyword[o.Type]
		switch {
		case !exists[o.Owner]:
			refuse(o, "the role does not exist on the target", "")
			continue
		case !canSet[o.Owner]:
			refuse(o, "the target user may not act as the role (SET ROLE)", "")
			continue
		case !known:
			refuse(o, "tsmigrate does not know how to give such an object an owner", "")
			continue
		}
		g := grant{o.Schema, o.Owner}
		if o.Type != "schema" && o.Type != "large object" && o.Schema != "" && !granted[g] {
			if _, done := tried[g]; !done {
				tried[g] = giveCreate(ctx, tx, o.Schema, o.Owner)
				granted[g] = tried[g] == nil && mayCreateGiven(ctx, tx, o.Schema, o.Owner)
			}
		}
		q := "ALTER " + keyword + " " + o.Identity + " OWNER TO " + pgx.Identifier{o.Owner}.Sanitize()
		err := try(ctx, tx, q)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "0A000" && o.Type == "view" {
			// A continuous aggregate's view, while TimescaleDB is not in restoring
			// mode: its own ALTER, which gives its materialization hypertable too.
			keyword = "MATERIALIZED VIEW"
			err = try(ctx, tx, "ALTER "+keyword+" "+o.Identity+" OWNER TO "+pgx.Identifier{o.Owner}.Sanitize())
		}
		if errors.As(err, &pgErr) && pgErr.Code == "42501" && relocatable[o.Type] && o.Name != "" {
			err = aside.giveThere(ctx, tx, o, keyword)
		}
		if err != nil {
			if !errors.As(err, &pgErr) {
				return nil, fmt.Errorf("target: give %s to %s: %w", o.Title(), o.Owner, err)
			}
			if absent[pgErr.Code] {
				// Not on the target (yet: the chunks the API path makes later, under
				// names of their own, get their hypertable's owner): verify says what
				// is missing.
				continue
			}
			reason, fix := dbconn.Reason(err), ""
			if pgErr.Code == "42501" && isTimescaleSchema(o.Schema) {
				reason = fmt.Sprintf("role %s may not create in TimescaleDB's schema %s, which the target user may not grant; TimescaleDB checks privileges on the hypertable, so the role's use of its tables is not affected",
					o.Owner, o.Schema)
				fix = fmt.Sprintf("a superuser can run GRANT CREATE ON SCHEMA %s TO %s, then ALTER %s ... OWNER TO %s for each",
					pgx.Identifier{o.Schema}.Sanitize(), pgx.Identifier{o.Owner}.Sanitize(), keyword, pgx.Identifier{o.Owner}.Sanitize())
			}
			refuse(o, reason, fix)
			continue
		}
		rep.Set++
	}
	for g, ok := range granted {
		if ok {
			if _, err := tx.Exec(ctx, "REVOKE CREATE ON SCHEMA "+pgx.Identifier{g.schema}.Sanitize()+" FROM "+pgx.Identifier{g.role}.Sanitize()); err != nil {
				return nil, fmt.Errorf("target: take back the CREATE on schema %s given to %s for the owners' step: %w", g.schema, g.role, err)
			}
		}
	}
	if err := aside.drop(ctx, tx); err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	for _, n := range notSet {
		rep.NotSet = append(rep.NotSet, *n)
	}
	sort.Slice(rep.NotSet, func(i, j int) bool {
		if rep.NotSet[i].Owner != rep.NotSet[j].Owner {
			return rep.NotSet[i].Owner < rep.NotSet[j].Owner
		}
		return rep.NotSet[i].Reason < rep.NotSet[j].Reason
	})
	return rep, nil
}

// giveCreate gives role CREATE on schema for the owners' step when it lacks it:
// errNotNeeded when it has it.
func giveCreate(ctx context.Context, tx pgx.Tx, schema, role string) error {
	var may bool
	if err := tx.QueryRow(ctx, sqlMayCreate, role, schema).Scan(&may); err != nil {
		return err
	}
	if may {
		return errNotNeeded
	}
	return try(ctx, tx, "GRANT CREATE ON SCHEMA "+pgx.Identifier{schema}.Sanitize()+" TO "+pgx.Identifier{role}.Sanitize())
}

var errNotNeeded = errors.New("not needed")

// mayCreateGiven says whether the GRANT took: one by a user without the grant option
// only warns.
func mayCreateGiven(ctx context.Context, tx pgx.Tx, schema, role string) bool {
	var may bool
	return tx.QueryRow(ctx, sqlMayCreate, role, schema).Scan(&may) == nil && may
}

func isTimescaleSchema(s string) bool { return slices.Contains(sqltext.TimescaleSchemas, s) }

// absent are the SQLSTATEs of an ALTER of an object that does not exist: undefined
// table, function, object, schema.
var absent = map[string]bool{"42P01": true, "42883": true, "42704": true, "3F000": true}

// relocatable are the kinds of objects giveThere can give an owner.
var relocatable = map[string]bool{"table": true, "view": true, "materialized view": true, "sequence": true, "foreign table": true}

// asideSchema is a schema of the target user's own, made for the owners' step and
// dropped before its transaction commits, where a relation is given its owner when
// the owner may not create in the relation's schema and the target user may not let
// it (TimescaleDB's schemas, which belong to the superuser who created the extension;
// the target user may create there). Moving a relation to another schema asks CREATE
// there of the user who moves it, the relation's owner or a member of it, not of the
// owner itself: so the relation moves here, is given its owner, and moves back, all
// in one savepoint. Its indexes, constraints and row type move with it. While
// TimescaleDB is in restoring mode its catalog does not hear of the moves, and names
// the chunk where it is again at the end.
type asideSchema struct {
	made    bool
	err     error
	granted map[string]bool
}

// asideName is the aside schema's name.
const asideName = "_tsmigrate_owners"

func (a *asideSchema) giveThere(ctx context.Context, tx pgx.Tx, o Owned, keyword string) error {
	if !a.made && a.err == nil {
		a.err = try(ctx, tx, "CREATE SCHEMA "+pgx.Identifier{asideName}.Sanitize())
		a.made, a.granted = a.err == nil, map[string]bool{}
	}
	if a.err != nil {
		return a.err
	}
	owner := pgx.Identifier{o.Owner}.Sanitize()
	if !a.granted[o.Owner] {
		if err := try(ctx, tx, "GRANT CREATE ON SCHEMA "+pgx.Identifier{asideName}.Sanitize()+" TO "+owner); err != nil {
			return err
		}
		a.granted[o.Owner] = true
	}
	there := pgx.Identifier{asideName, o.Name}.Sanitize()
	return try(ctx, tx, "ALTER "+keyword+" "+o.Identity+" SET SCHEMA "+pgx.Identifier{asideName}.Sanitize()+";\n"+
		"ALTER "+keyword+" "+there+" OWNER TO "+owner+";\n"+
		"ALTER "+keyword+" "+there+" SET SCHEMA "+pgx.Identifier{o.Schema}.Sanitize())
}

// drop removes the aside schema (empty by then), in the step's transaction.
func (a *asideSchema) drop(ctx context.Context, tx pgx.Tx) error {
	if !a.made {
		return nil
	}
	_, err := tx.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{asideName}.Sanitize())
	return err
}
