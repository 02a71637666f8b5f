package verify

import (
	"context"
	"fmt"
	"strings"

	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// Roles (Options.Privileges): the roles each database uses (sqltext.UsedRoles, and
// their members, recursively), with their attributes and own settings, and their
// memberships. Owners and privileges of objects are compared by name, so a role of
// another name, or with other attributes, is a difference of its own.
//
// Left out: the session users of either side (a migration's user differs between the
// servers by nature: a managed service's admin role is given SET ROLE on the roles it
// creates), and the attributes the target user may not give (SUPERUSER, and
// REPLICATION and BYPASSRLS unless it has them: a managed service refuses them, and
// migrate --roles leaves them out, saying so). Password verifiers are not compared:
// only a superuser (or a member of pg_read_all_data) may read them.

// sqlRoleFacts lists the facts of the roles the database uses. $1: the roles left out.
// PostgreSQL 15 has no per-membership INHERIT and SET: there they follow the member's
// INHERIT attribute and are always allowed, so that is what is compared.
// Checked on PostgreSQL 15, 16 and 17.
const sqlRoleFacts = `
WITH RECURSIVE used(oid) AS (
	SELECT r.oid FROM (` + sqltext.UsedRoles + `) AS u JOIN pg_roles r ON r.rolname = u.rolname
	UNION
	SELECT m.member FROM pg_auth_members m JOIN used ON m.roleid = used.oid
), role AS (
	SELECT r.* FROM pg_roles r WHERE r.oid IN (SELECT oid FROM used) AND r.oid >= 16384 AND r.rolname <> ALL($1)
)
SELECT format('role %I', r.rolname), '', a.attr, a.val FROM role r
CROSS JOIN LATERAL (VALUES ('superuser', r.rolsuper::text), ('login', r.rolcanlogin::text), ('inherit', r.rolinherit::text),
	('createrole', r.rolcreaterole::text), ('createdb', r.rolcreatedb::text), ('replication', r.rolreplication::text),
	('bypassrls', r.rolbypassrls::text), ('connection limit', r.rolconnlimit::text),
	('valid until', CASE WHEN isfinite(r.rolvaliduntil) THEN to_char(r.rolvaliduntil AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') ELSE r.rolvaliduntil::text END),
	('settings', (SELECT string_agg(c, ', ' ORDER BY c) FROM unnest(r.rolconfig) AS c))) AS a(attr, val)
UNION ALL
SELECT format('membership %I to %I', g.rolname, r.rolname), format('role %I', r.rolname), a.attr, a.val
FROM (SELECT roleid, member, bool_or(admin_option) AS admin, {membership options} FROM pg_auth_members GROUP BY roleid, member) AS x
JOIN role r ON r.oid = x.member JOIN pg_roles g ON g.oid = x.roleid
CROSS JOIN LATERAL (VALUES ('admin option', x.admin::text), ('inherit', x.inherit::text), ('set', x.set::text)) AS a(attr, val)`

// Membership options by server version (see sqlRoleFacts).
const (
	membershipOptions16 = `bool_or(inherit_option) AS inherit, bool_or(set_option) AS set`
	membershipOptions15 = `bool_or((SELECT rolinherit FROM pg_roles WHERE oid = member)) AS inherit, true AS set`
)

// giveable are the role attributes a target user gives only with the right of its
// own: the attribute, and the pg_roles column of the user that must be true.
var giveable = []struct{ attr, right string }{
	{"superuser", "rolsuper"}, {"replication", "rolreplication"}, {"bypassrls", "rolbypassrls"},
}

// sqlSessionUser is the session's user and, per giveable attribute, whether it may
// give it (a superuser may give all).
const sqlSessionUser = `SELECT current_user, current_setting('server_version_num')::int,
	rolsuper, rolsuper OR rolreplication, rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user`

// sessionUser is who a side's session is, and what it may give.
type sessionUser struct {
	name    string
	version int
	may     [3]bool // by giveable
}

func readSessionUser(ctx context.Context, s *session) (sessionUser, error) {
	var u sessionUser
	err := s.conn.QueryRow(ctx, sqlSessionUser).Scan(&u.name, &u.version, &u.may[0], &u.may[1], &u.may[2])
	if err != nil {
		return u, fmt.Errorf("%s: read the session's user: %w", s.cfg.Role, err)
	}
	return u, nil
}

// readRoleFacts adds the facts of the roles the database uses to f, but those of the
// roles in leave.
func readRoleFacts(ctx context.Context, s *session, u sessionUser, leave []string, f facts) error {
	opts := membershipOptions16
	if u.version < 160000 {
		opts = membershipOptions15
	}
	rows, err := s.conn.Query(ctx, strings.Replace(sqlRoleFacts, "{membership options}", opts, 1), leave)
	if err != nil {
		return fmt.Errorf("%s: read roles: %w", s.cfg.Role, err)
	}
	defer rows.Close()
	for rows.Next() {
		var obj, parent, attr string
		var val *string
		if err := rows.Scan(&obj, &parent, &attr, &val); err != nil {
			return fmt.Errorf("%s: read roles: %w", s.cfg.Role, err)
		}
		v := none
		if val != nil {
			v = *val
		}
		if f[obj] == nil {
			f[obj] = map[string]fact{}
		}
		f[obj][attr] = fact{parent: parent, value: v}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("%s: read roles: %w", s.cfg.Role, err)
	}
	return nil
}

// compareRoles reads both sides' role facts into srcFacts and tgtFacts, leaving out
// both session users and the attributes the target user may not give.
func compareRoles(ctx context.Context, src, tgt *session, srcFacts, tgtFacts facts) error {
	su, err := readSessionUser(ctx, src)
	if err != nil {
		return err
	}
	tu, err := readSessionUser(ctx, tgt)
	if err != nil {
		return err
	}
	leave := []string{su.name, tu.name}
	if err := readRoleFacts(ctx, src, su, leave, srcFacts); err != nil {
		return err
	}
	if err := readRoleFacts(ctx, tgt, tu, leave, tgtFacts); err != nil {
		return err
	}
	for i, g := range giveable {
		if tu.may[i] {
			continue
		}
		for _, f := range []facts{srcFacts, tgtFacts} {
			for obj, attrs := range f {
				if strings.HasPrefix(obj, "role ") {
					delete(attrs, g.attr)
				}
			}
		}
	}
	return nil
}
