package roles

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Target is what the target server holds of the source's roles, and what its user
// may do with roles.
type Target struct {
	Major int
	// User is the target user (current_user), and its attributes.
	User                                                 string
	Superuser, CreateRole, CreateDB, Replication, Bypass bool
	// Roles are the roles of the source that exist on the target, by name.
	Roles map[string]Role
	// Memberships held on the target by the roles of interest (as members).
	Memberships []Membership
	// admin and set: the roles the user holds with ADMIN, and those it may SET ROLE to.
	admin, set map[string]bool
}

// sqlTargetUser reads the target user's attributes. PostgreSQL 15-17.
const sqlTargetUser = `SELECT current_user, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls
FROM pg_roles WHERE rolname = current_user`

// ReadTarget reads the target's side of the roles named: which exist and how, their
// memberships, and the target user's rights over roles.
func ReadTarget(ctx context.Context, conn *pgx.Conn, names []string) (*Target, error) {
	t := &Target{Roles: map[string]Role{}, admin: map[string]bool{}, set: map[string]bool{}}
	if err := conn.QueryRow(ctx, sqlMajor).Scan(&t.Major); err != nil {
		return nil, fmt.Errorf("read the server's version: %w", err)
	}
	if err := conn.QueryRow(ctx, sqlTargetUser).Scan(&t.User, &t.Superuser, &t.CreateRole, &t.CreateDB, &t.Replication, &t.Bypass); err != nil {
		return nil, fmt.Errorf("read the target user's attributes: %w", err)
	}
	roles, err := readRoles(ctx, conn, names)
	if err != nil {
		return nil, err
	}
	for _, r := range roles {
		t.Roles[r.Name] = r
	}
	all, err := readMemberships(ctx, conn, t.Major)
	if err != nil {
		return nil, err
	}
	for _, m := range all {
		if _, ok := t.Roles[m.Member]; ok {
			t.Memberships = append(t.Memberships, m)
		}
		if m.Member == t.User {
			if m.Admin {
				t.admin[m.Role] = true
			}
			if m.Set == nil || *m.Set {
				t.set[m.Role] = true
			}
		}
	}
	return t, nil
}

// Exists says whether the target has a role of that name.
func (t *Target) Exists(name string) bool { _, ok := t.Roles[name]; return ok }

// holds says whether the target holds membership m with at least its options.
func (t *Target) holds(m Membership) bool {
	for _, h := range t.Memberships {
		if h.Role != m.Role || h.Member != m.Member {
			continue
		}
		return (!m.Admin || h.Admin) && sameOption(m.Inherit, h.Inherit) && sameOption(m.Set, h.Set)
	}
	return false
}

func sameOption(want, have *bool) bool { return want == nil || have == nil || *want == *have }

// CanAdmin says whether the target user may alter role name and grant it: a superuser,
// or (PostgreSQL 16 and later) a user holding it WITH ADMIN, which a CREATEROLE user has
// on the roles it creates; on PostgreSQL 15 CREATEROLE is enough for a role that is no
// superuser.
func (t *Target) CanAdmin(name string) bool {
	if t.Superuser {
		return true
	}
	if t.Major < 16 {
		r, ok := t.Roles[name]
		return t.CreateRole && (!ok || !r.Superuser)
	}
	return t.admin[name]
}

// CanSet says whether the target user may act as role name (SET ROLE; what giving
// an object to a role needs).
func (t *Target) CanSet(name string) bool { return t.Superuser || name == t.User || t.set[name] }
