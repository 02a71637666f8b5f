package roles

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// Options change the plan.
type Options struct {
	// Update gives roles that exist on the target already the source's attributes and
	// memberships (--roles-update); by default they are left as they are, and reported.
	Update bool
}

// Plan is what carrying the source's roles would do on the target.
type Plan struct {
	// Create are the roles to create, as they will be (refused attributes cleared).
	Create []Role
	// Existing are the source's roles that the target has already: left as they are
	// (or updated, with Options.Update), with how they differ from the source's.
	Existing []Existing
	// Dropped names, per role, the attributes the target user may not give (a
	// managed service's admin is no superuser): left out.
	Dropped []Dropped
	// Passwords names the roles created with the source's password verifier;
	// WithoutPassword the login roles created without one (the source user may not read
	// the verifiers: the source has no superuser's connection).
	Passwords, WithoutPassword []string
	// Problem says why no role can be created at all ("" when they can).
	Problem string

	target     *Target
	statements []statement
}

// Existing is a source role the target has already.
type Existing struct {
	Role        string   `json:"role"`
	Differences []string `json:"differences,omitempty"`
}

// Dropped are the attributes of a role the target user may not give it.
type Dropped struct {
	Role       string   `json:"role"`
	Attributes []string `json:"attributes"`
}

// statement is one step of a plan. what names it for a person; sql is the statement
// but for a password verifier, which password holds and Apply adds last as a literal.
type statement struct {
	what, role, sql string
	kind            stepKind
	password        Verifier
	// skip, when set, says why the step cannot be taken at all (sql is empty).
	skip string
}

type stepKind int

const (
	stepCreate     stepKind = iota // CREATE ROLE: when refused, the role's other steps are skipped
	stepSelf                       // the target user may act as the role (to give it objects)
	stepPassword                   // the role's password verifier
	stepSetting                    // one of the role's own settings
	stepMembership                 // a membership
	stepUpdate                     // ALTER ROLE of an existing role (Options.Update)
)

// attribute is a role attribute by its keyword.
type attribute struct {
	name string
	of   func(Role) bool
}

var attributes = []attribute{
	{"SUPERUSER", func(r Role) bool { return r.Superuser }},
	{"LOGIN", func(r Role) bool { return r.Login }},
	{"INHERIT", func(r Role) bool { return r.Inherit }},
	{"CREATEROLE", func(r Role) bool { return r.CreateRole }},
	{"CREATEDB", func(r Role) bool { return r.CreateDB }},
	{"REPLICATION", func(r Role) bool { return r.Replication }},
	{"BYPASSRLS", func(r Role) bool { return r.Bypass }},
}

// refused says whether the target user may not give attribute a to a role: only a
// superuser gives SUPERUSER, and (PostgreSQL 16 and later) only a role that has
// REPLICATION, BYPASSRLS, CREATEDB or CREATEROLE gives it.
func (t *Target) refused(a string) bool {
	if t.Superuser {
		return false
	}
	switch a {
	case "SUPERUSER":
		return true
	case "REPLICATION":
		return !t.Replication
	case "BYPASSRLS":
		return !t.Bypass
	case "CREATEDB":
		return t.Major >= 16 && !t.CreateDB
	case "CREATEROLE":
		return t.Major >= 16 && !t.CreateRole
	}
	return false
}

// clauses are the attribute clauses of CREATE or ALTER ROLE that give r's attributes,
// but those the target user may not give, which are returned apart (the ones r has).
func (t *Target) clauses(r Role) (out, dropped []string) {
	for _, a := range attributes {
		on := a.of(r)
		switch {
		case t.refused(a.name) && on:
			dropped = append(dropped, a.name)
		case t.refused(a.name):
		case on:
			out = append(out, a.name)
		default:
			out = append(out, "NO"+a.name)
		}
	}
	out = append(out, "CONNECTION LIMIT "+strconv.Itoa(r.ConnLimit))
	if r.ValidUntil != "" {
		out = append(out, "VALID UNTIL "+sqltext.Literal(r.ValidUntil))
	}
	return out, dropped
}

// MakePlan plans the roles of src on target t.
func MakePlan(src *Source, t *Target, opt Options) *Plan {
	p := &Plan{target: t}
	if !t.Superuser && !t.CreateRole {
		p.Problem = fmt.Sprintf("the target user %s may not create roles (it has no CREATEROLE)", t.User)
	}
	created := map[string]bool{}
	for _, r := range src.Roles {
		ident := pgx.Identifier{r.Name}.Sanitize()
		if have, ok := t.Roles[r.Name]; ok {
			ex := Existing{Role: r.Name, Differences: differences(r, have, src, t)}
			p.Existing = append(p.Existing, ex)
			clauses, dropped := t.clauses(r)
			if now, _ := t.clauses(have); opt.Update && !slices.Equal(clauses, now) {
				if len(dropped) > 0 {
					p.Dropped = append(p.Dropped, Dropped{Role: r.Name, Attributes: dropped})
				}
				p.statements = append(p.statements, statement{what: "the attributes of role " + r.Name, role: r.Name, kind: stepUpdate,
					sql: "ALTER ROLE " + ident + " WITH " + strings.Join(clauses, " ")})
			}
			if owns(r) && !t.CanSet(r.Name) && t.CanAdmin(r.Name) {
				p.statements = append(p.statements, p.selfGrant(r.Name))
			}
			continue
		}
		if p.Problem != "" {
			continue
		}
		clauses, dropped := t.clauses(r)
		if len(dropped) > 0 {
			p.Dropped = append(p.Dropped, Dropped{Role: r.Name, Attributes: dropped})
			r.Superuser = r.Superuser && !t.refused("SUPERUSER")
			r.Replication = r.Replication && !t.refused("REPLICATION")
			r.Bypass = r.Bypass && !t.refused("BYPASSRLS")
			r.CreateDB = r.CreateDB && !t.refused("CREATEDB")
			r.CreateRole = r.CreateRole && !t.refused("CREATEROLE")
		}
		p.Create = append(p.Create, r)
		created[r.Name] = true
		p.statements = append(p.statements, statement{what: "role " + r.Name, role: r.Name, kind: stepCreate,
			sql: "CREATE ROLE " + ident + " WITH " + strings.Join(clauses, " ")})
		if owns(r) && !t.Superuser {
			p.statements = append(p.statements, p.selfGrant(r.Name))
		}
		switch {
		case r.Password.Set():
			p.Passwords = append(p.Passwords, r.Name)
			p.statements = append(p.statements, statement{what: "the password verifier of role " + r.Name, role: r.Name,
				kind: stepPassword, sql: "ALTER ROLE " + ident + " PASSWORD ", password: r.Password})
		case r.Login && !src.PasswordsReadable:
			p.WithoutPassword = append(p.WithoutPassword, r.Name)
		}
		for _, s := range r.Settings {
			p.statements = append(p.statements, statement{what: "setting " + s.Name + " of role " + r.Name, role: r.Name, kind: stepSetting,
				sql: "ALTER ROLE " + ident + " SET " + pgx.Identifier{s.Name}.Sanitize() + " TO " + sqltext.SettingValue(s.Name, s.Value)})
		}
	}
	for _, m := range src.Memberships {
		if !created[m.Member] && !(opt.Update && t.Exists(m.Member)) {
			continue
		}
		if !created[m.Role] && !t.Exists(m.Role) {
			if _, used := src.Role(m.Role); !used {
				// A group the databases do not use and the target lacks: say so.
				p.statements = append(p.statements, statement{what: "membership " + m.String(), role: m.Member, kind: stepMembership,
					skip: fmt.Sprintf("role %s does not exist on the target, and the databases do not use it", m.Role)})
			}
			continue
		}
		if !created[m.Member] && t.holds(m) {
			continue
		}
		p.statements = append(p.statements, statement{what: "membership " + m.String(), role: m.Member, kind: stepMembership,
			sql: t.grantSQL(m)})
	}
	return p
}

// selfGrant makes the target user a member of role name, with SET ROLE (what giving
// objects to it needs: on PostgreSQL 16 and later a CREATEROLE user holds the roles it
// creates WITH ADMIN only) and its privileges: those the target user had as the owner
// of everything restored, which it keeps, to read what it migrated (verify) and to
// restore what needs them (ALTER DEFAULT PRIVILEGES FOR ROLE). It could grant them to
// itself anyway (ADMIN); Report.ActAs names the roles.
func (p *Plan) selfGrant(name string) statement {
	q := "GRANT " + pgx.Identifier{name}.Sanitize() + " TO " + pgx.Identifier{p.target.User}.Sanitize()
	if p.target.Major >= 16 {
		q += " WITH SET TRUE, INHERIT TRUE"
	}
	return statement{what: fmt.Sprintf("membership of %s in %s (to give it its objects)", p.target.User, name), role: name, kind: stepSelf, sql: q}
}

func (t *Target) grantSQL(m Membership) string {
	q := "GRANT " + pgx.Identifier{m.Role}.Sanitize() + " TO " + pgx.Identifier{m.Member}.Sanitize()
	if t.Major < 16 {
		if m.Admin {
			q += " WITH ADMIN OPTION"
		}
		return q
	}
	opts := []string{"ADMIN " + strings.ToUpper(strconv.FormatBool(m.Admin))}
	if m.Inherit != nil {
		opts = append(opts, "INHERIT "+strings.ToUpper(strconv.FormatBool(*m.Inherit)))
	}
	if m.Set != nil {
		opts = append(opts, "SET "+strings.ToUpper(strconv.FormatBool(*m.Set)))
	}
	return q + " WITH " + strings.Join(opts, ", ")
}

// owns says whether r owns objects of the databases (or jobs).
func owns(r Role) bool { return slices.Contains(r.Why, "owner") || slices.Contains(r.Why, "job owner") }

// differences says how the target's role have differs from the source's r:
// attributes, connection limit, expiry, own settings, memberships.
func differences(r, have Role, src *Source, t *Target) []string {
	var out []string
	for _, a := range attributes {
		if s, g := a.of(r), a.of(have); s != g {
			out = append(out, fmt.Sprintf("%s on the source, %s on the target", yesNo(a.name, s), yesNo(a.name, g)))
		}
	}
	if r.ConnLimit != have.ConnLimit {
		out = append(out, fmt.Sprintf("CONNECTION LIMIT %d on the source, %d on the target", r.ConnLimit, have.ConnLimit))
	}
	if r.ValidUntil != have.ValidUntil {
		out = append(out, fmt.Sprintf("VALID UNTIL %s on the source, %s on the target", orNone(r.ValidUntil), orNone(have.ValidUntil)))
	}
	settings := func(r Role) string {
		var s []string
		for _, x := range r.Settings {
			s = append(s, x.Name)
		}
		return strings.Join(s, ", ")
	}
	if !slices.Equal(r.Settings, have.Settings) {
		out = append(out, fmt.Sprintf("own settings (%s) on the source, (%s) on the target", settings(r), settings(have)))
	}
	for _, m := range src.Memberships {
		if m.Member == r.Name && !t.holds(m) {
			out = append(out, "membership "+m.String()+" not on the target")
		}
	}
	return out
}

func yesNo(name string, on bool) string {
	if on {
		return name
	}
	return "NO" + name
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
