// Package roles carries to the target server the roles that migrated databases use:
// which roles those are (owners, grantees, the roles named by row-security policies,
// roles with settings in the database, owners of TimescaleDB jobs, and the members of
// all those), their attributes, memberships, own settings and password verifiers; the
// plan of what to create, what to leave as it is and what a managed target refuses;
// and, once a database is restored, the owners of its objects (owners.go).
//
// It never prints. A password verifier (the SCRAM or MD5 hash pg_authid holds, never a
// clear-text password) is a secret: it is held in a Verifier, which formats as
// "(hidden)", is registered with dbconn.Redact, and goes only into the one statement
// that gives it to the target role, a statement no report, error or event ever shows.
package roles

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// Verifier is a role's password verifier as pg_authid stores it. It formats as
// "(hidden)" whatever the verb, and marshals to nothing readable. The text is behind
// a pointer: fmt shows a pointer nested in a value as an address, also where it cannot
// call these methods (a Verifier in an unexported field).
type Verifier struct{ p *verifierText }

type verifierText struct{ v string }

func newVerifier(v string) Verifier { return Verifier{&verifierText{v}} }

// Set says whether there is a verifier.
func (v Verifier) Set() bool { return v.p != nil && v.p.v != "" }

// text is the verifier ("" for none).
func (v Verifier) text() string {
	if v.p == nil {
		return ""
	}
	return v.p.v
}

// String hides the verifier.
func (v Verifier) String() string { return "(hidden)" }

// GoString hides the verifier.
func (v Verifier) GoString() string { return "(hidden)" }

// Format hides the verifier from every fmt verb.
func (v Verifier) Format(f fmt.State, _ rune) { fmt.Fprint(f, "(hidden)") }

// MarshalText hides the verifier from encoders.
func (v Verifier) MarshalText() ([]byte, error) { return []byte("(hidden)"), nil }

// Role is one role as a server holds it.
type Role struct {
	Name                                 string
	Superuser, Inherit, CreateRole       bool
	CreateDB, Login, Replication, Bypass bool
	ConnLimit                            int
	ValidUntil                           string // "" for none; else a timestamptz literal's text
	Settings                             []Setting
	Password                             Verifier // unset: none, or not readable
	Why                                  []string // why the databases use it (source roles)
	builtin                              bool
}

// Setting is one of a role's own settings (ALTER ROLE ... SET name TO value), as
// pg_db_role_setting stores it for every database.
type Setting struct{ Name, Value string }

// Membership is one role granted to another. Inherit and Set are nil where the
// server has no such options (PostgreSQL 15: the member's INHERIT attribute decides,
// and membership always allows SET ROLE).
type Membership struct {
	Role, Member string
	Admin        bool
	Inherit, Set *bool
}

// String names the membership for a person: "app_read to app_login (ADMIN)".
func (m Membership) String() string {
	var opts []string
	if m.Admin {
		opts = append(opts, "ADMIN")
	}
	if m.Inherit != nil && !*m.Inherit {
		opts = append(opts, "NOINHERIT")
	}
	if m.Set != nil && !*m.Set {
		opts = append(opts, "NOSET")
	}
	s := m.Role + " to " + m.Member
	if len(opts) > 0 {
		s += " (" + strings.Join(opts, ", ") + ")"
	}
	return s
}

// Source is what the source server holds of the roles some databases use.
type Source struct {
	Major int
	Roles []Role // by name
	// Memberships of those roles (as members) in any role, built-in ones included.
	Memberships []Membership
	// PasswordsReadable: the source user may read pg_authid (a superuser), so the
	// roles' password verifiers are in Roles.
	PasswordsReadable bool
}

// Role finds a role by name.
func (s *Source) Role(name string) (Role, bool) {
	i, ok := slices.BinarySearchFunc(s.Roles, name, func(r Role, n string) int { return strings.Compare(r.Name, n) })
	if !ok {
		return Role{}, false
	}
	return s.Roles[i], true
}

// SQL of the source. Checked on PostgreSQL 15, 16 and 17 (pg_shdepend's deptypes o, a
// and r; pg_auth_members' inherit_option and set_option from 16).
// sqlDirectRoles lists the roles the connected database names, and why
// (sqltext.UsedRoles).
var sqlDirectRoles = `SELECT rolname, why FROM (` + sqltext.UsedRoles + `) AS u`

const (
	// sqlJobOwners lists the owners of TimescaleDB's user jobs (2.x), which its catalog
	// names rather than pg_shdepend.
	sqlJobOwners      = `SELECT DISTINCT owner::text FROM timescaledb_information.jobs WHERE job_id >= 1000`
	sqlHasTimescaleDB = `SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb')`
	// sqlRoles reads roles by name: attributes and own settings (pg_roles.rolconfig
	// holds those for every database). VALID UNTIL as an unambiguous literal in UTC.
	sqlRoles = `
SELECT r.rolname, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin,
	r.rolreplication, r.rolbypassrls, r.rolconnlimit,
	CASE WHEN r.rolvaliduntil IS NULL THEN ''
		WHEN isfinite(r.rolvaliduntil) THEN to_char(r.rolvaliduntil AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'
		ELSE r.rolvaliduntil::text END,
	coalesce(r.rolconfig, '{}'), r.oid < 16384
FROM pg_roles r WHERE r.rolname = ANY($1) ORDER BY r.rolname`
	sqlCanReadPasswords = `SELECT has_table_privilege('pg_catalog.pg_authid', 'SELECT')`
	sqlPasswords        = `SELECT rolname, rolpassword FROM pg_catalog.pg_authid WHERE rolname = ANY($1) AND rolpassword IS NOT NULL`
	sqlMajor            = `SELECT current_setting('server_version_num')::int / 10000`
	// sqlMemberships15 and sqlMemberships16 read every membership (one row per role and
	// member, the options of several grantors' grants combined).
	sqlMemberships15 = `
SELECT g.rolname, m.rolname, bool_or(a.admin_option), NULL::bool, NULL::bool
FROM pg_auth_members a JOIN pg_roles g ON g.oid = a.roleid JOIN pg_roles m ON m.oid = a.member
GROUP BY 1, 2 ORDER BY 1, 2`
	sqlMemberships16 = `
SELECT g.rolname, m.rolname, bool_or(a.admin_option), bool_or(a.inherit_option), bool_or(a.set_option)
FROM pg_auth_members a JOIN pg_roles g ON g.oid = a.roleid JOIN pg_roles m ON m.oid = a.member
GROUP BY 1, 2 ORDER BY 1, 2`
)

// ReadSource reads the roles the connected database uses (see sqlDirectRoles; and the
// owners of its TimescaleDB jobs), with the members of those, recursively: a login
// role granted a group that holds the privileges.
func ReadSource(ctx context.Context, conn *pgx.Conn) (*Source, error) {
	s := &Source{}
	if err := conn.QueryRow(ctx, sqlMajor).Scan(&s.Major); err != nil {
		return nil, fmt.Errorf("read the server's version: %w", err)
	}
	why := map[string][]string{}
	add := func(name, reason string) {
		if !slices.Contains(why[name], reason) {
			why[name] = append(why[name], reason)
		}
	}
	rows, _ := conn.Query(ctx, sqlDirectRoles)
	var name, reason string
	if _, err := pgx.ForEachRow(rows, []any{&name, &reason}, func() error { add(name, reason); return nil }); err != nil {
		return nil, fmt.Errorf("list the roles the database uses: %w", err)
	}
	var ts bool
	if err := conn.QueryRow(ctx, sqlHasTimescaleDB).Scan(&ts); err != nil {
		return nil, fmt.Errorf("look for TimescaleDB: %w", err)
	}
	if ts {
		rows, _ := conn.Query(ctx, sqlJobOwners)
		if _, err := pgx.ForEachRow(rows, []any{&name}, func() error { add(name, "job owner"); return nil }); err != nil {
			return nil, fmt.Errorf("list the owners of TimescaleDB jobs: %w", err)
		}
	}
	all, err := readMemberships(ctx, conn, s.Major)
	if err != nil {
		return nil, err
	}
	// The members of the roles used, recursively (memberships cannot form a cycle).
	for changed := true; changed; {
		changed = false
		for _, m := range all {
			if _, used := why[m.Role]; used {
				if _, have := why[m.Member]; !have {
					changed = true
				}
				add(m.Member, "member of "+m.Role)
			}
		}
	}
	names := make([]string, 0, len(why))
	for n := range why {
		names = append(names, n)
	}
	roles, err := readRoles(ctx, conn, names)
	if err != nil {
		return nil, err
	}
	for _, r := range roles {
		if r.builtin {
			continue // a built-in role made member of a used one: every server has it
		}
		r.Why = why[r.Name]
		sort.Strings(r.Why)
		s.Roles = append(s.Roles, r)
	}
	for _, m := range all {
		if _, ok := s.Role(m.Member); ok {
			s.Memberships = append(s.Memberships, m)
		}
	}
	if err := conn.QueryRow(ctx, sqlCanReadPasswords).Scan(&s.PasswordsReadable); err != nil {
		return nil, fmt.Errorf("check whether password verifiers are readable: %w", err)
	}
	if s.PasswordsReadable && len(s.Roles) > 0 {
		rows, _ := conn.Query(ctx, sqlPasswords, names)
		var verifier string
		if _, err := pgx.ForEachRow(rows, []any{&name, &verifier}, func() error {
			dbconn.RegisterSecret(verifier)
			if i, ok := slices.BinarySearchFunc(s.Roles, name, func(r Role, n string) int { return strings.Compare(r.Name, n) }); ok {
				s.Roles[i].Password = newVerifier(verifier)
			}
			return nil
		}); err != nil {
			return nil, fmt.Errorf("read the roles' password verifiers: %w", err)
		}
	}
	return s, nil
}

// Merge adds the roles other uses (read from another database of the same server).
func (s *Source) Merge(other *Source) {
	for _, r := range other.Roles {
		i, ok := slices.BinarySearchFunc(s.Roles, r.Name, func(x Role, n string) int { return strings.Compare(x.Name, n) })
		if !ok {
			s.Roles = slices.Insert(s.Roles, i, r)
			continue
		}
		for _, w := range r.Why {
			if !slices.Contains(s.Roles[i].Why, w) {
				s.Roles[i].Why = append(s.Roles[i].Why, w)
			}
		}
		sort.Strings(s.Roles[i].Why)
	}
	for _, m := range other.Memberships {
		if !slices.ContainsFunc(s.Memberships, func(x Membership) bool { return x.Role == m.Role && x.Member == m.Member }) {
			s.Memberships = append(s.Memberships, m)
		}
	}
	s.PasswordsReadable = s.PasswordsReadable && other.PasswordsReadable
}

func readRoles(ctx context.Context, conn *pgx.Conn, names []string) ([]Role, error) {
	rows, _ := conn.Query(ctx, sqlRoles, names)
	var out []Role
	var r Role
	var config []string
	_, err := pgx.ForEachRow(rows, []any{&r.Name, &r.Superuser, &r.Inherit, &r.CreateRole, &r.CreateDB, &r.Login,
		&r.Replication, &r.Bypass, &r.ConnLimit, &r.ValidUntil, &config, &r.builtin}, func() error {
		role := r
		role.Settings = nil
		for _, c := range config {
			n, v, _ := strings.Cut(c, "=")
			role.Settings = append(role.Settings, Setting{Name: n, Value: v})
		}
		out = append(out, role)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read roles: %w", err)
	}
	return out, nil
}

func readMemberships(ctx context.Context, conn *pgx.Conn, major int) ([]Membership, error) {
	q := sqlMemberships16
	if major < 16 {
		q = sqlMemberships15
	}
	rows, _ := conn.Query(ctx, q)
	var out []Membership
	var m Membership
	var inherit, set *bool
	_, err := pgx.ForEachRow(rows, []any{&m.Role, &m.Member, &m.Admin, &inherit, &set}, func() error {
		x := m
		if inherit != nil {
			v := *inherit
			x.Inherit = &v
		}
		if set != nil {
			v := *set
			x.Set = &v
		}
		out = append(out, x)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read role memberships: %w", err)
	}
	return out, nil
}
