package preflight

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/inventory"
)

// sqlGrantedRoles lists the roles that what pg_dump writes of the source database
// names, besides owners (left out with --no-owner) and PUBLIC, and how: the grantees of
// privileges on its objects (and their grantors other than the owner, as whom pg_dump
// grants), roles with default privileges, roles of row-security policies, and users of
// user mappings. The restore of each of those statements fails on a target server
// without the role. Privileges on the database itself are carried apart (a refusal
// is a warning, see database-settings). Every role may read these catalogs and views
// (PostgreSQL 15, 17).
const sqlGrantedRoles = `
WITH acl(owner, acl) AS (
	SELECT relowner, relacl FROM pg_class
	UNION ALL SELECT c.relowner, a.attacl FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid WHERE a.attacl IS NOT NULL
	UNION ALL SELECT nspowner, nspacl FROM pg_namespace
	UNION ALL SELECT proowner, proacl FROM pg_proc
	UNION ALL SELECT typowner, typacl FROM pg_type
	UNION ALL SELECT lanowner, lanacl FROM pg_language
	UNION ALL SELECT lomowner, lomacl FROM pg_largeobject_metadata
	UNION ALL SELECT fdwowner, fdwacl FROM pg_foreign_data_wrapper
	UNION ALL SELECT srvowner, srvacl FROM pg_foreign_server
	UNION ALL SELECT defaclrole, defaclacl FROM pg_default_acl
), named(role, how) AS (
	SELECT x.grantee, 'privileges' FROM acl, aclexplode(acl.acl) x WHERE acl.acl IS NOT NULL AND x.grantee NOT IN (0, acl.owner)
	UNION ALL SELECT x.grantor, 'privileges' FROM acl, aclexplode(acl.acl) x WHERE acl.acl IS NOT NULL AND x.grantor <> acl.owner
	UNION ALL SELECT defaclrole, 'default privileges' FROM pg_default_acl
	UNION ALL SELECT unnest(polroles), 'row-security policies' FROM pg_policy
	UNION ALL SELECT umuser, 'user mappings' FROM pg_user_mappings
)
SELECT r.rolname::text, string_agg(DISTINCT n.how, ', ' ORDER BY n.how)
FROM named n JOIN pg_roles r ON r.oid = n.role
GROUP BY 1 ORDER BY 1`

const sqlRolesThere = `SELECT rolname::text FROM pg_roles WHERE rolname = ANY($1)`

// checkRoles fails when the source database grants privileges to (or otherwise names,
// see sqlGrantedRoles) roles the target server does not have: pg_restore would fail on
// their statements, after the freeze. With --roles the migration creates them: the
// roles check says what it would do instead.
func (e *env) checkRoles(ctx context.Context) ([]Finding, error) {
	if e.opt.Roles {
		return nil, nil
	}
	rows, _ := e.src.Query(ctx, sqlGrantedRoles)
	how := map[string]string{}
	var names []string
	var name, what string
	if _, err := pgx.ForEachRow(rows, []any{&name, &what}, func() error {
		names = append(names, name)
		how[name] = what
		return nil
	}); err != nil {
		return nil, fmt.Errorf("source: list the roles granted privileges: %w", err)
	}
	if len(names) == 0 {
		return []Finding{finding(Pass, "both", "the source database grants privileges to no role but its owners and PUBLIC", "")}, nil
	}
	rows, _ = e.tgt.Query(ctx, sqlRolesThere, names)
	there, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("target: look up roles: %w", err)
	}
	have := map[string]bool{}
	for _, n := range there {
		have[n] = true
	}
	var missing, named []string
	blocks := false
	for _, n := range names {
		if !have[n] {
			missing = append(missing, n)
			named = append(named, fmt.Sprintf("%s (%s)", inventory.Ident(n), how[n]))
			// Grants and default privileges naming a missing role are left out by
			// the run, each role reported once; a row-security policy or a user
			// mapping naming one cannot be restored at all.
			blocks = blocks || strings.Contains(how[n], "row-security policies") || strings.Contains(how[n], "user mappings")
		}
	}
	if len(missing) == 0 {
		return []Finding{finding(Pass, "both", fmt.Sprintf("the target server has every role the source database grants privileges to (%s)", list(names)), "")}, nil
	}
	if !blocks {
		return []Finding{finding(Warn, "target",
			fmt.Sprintf("the source database grants privileges to roles the target server does not have: %s; the migration leaves those grants out (each role reported once), so those roles' applications would lack them", list(named)),
			missingRolesAdvice(missing))}, nil
	}
	return []Finding{finding(Fail, "target",
		fmt.Sprintf("the source database grants privileges to roles the target server does not have: %s; restoring those would fail", list(named)),
		missingRolesAdvice(missing))}, nil
}

// missingRolesAdvice says what to do about roles the source database names that the
// target server lacks.
func missingRolesAdvice(roles []string) string {
	var create []string
	for _, r := range roles {
		create = append(create, "CREATE ROLE "+inventory.Ident(r))
	}
	return fmt.Sprintf("migrate with --roles, which creates them on the target with their attributes and memberships; or create them there first (%s); or REVOKE those privileges on the source",
		strings.Join(create, "; "))
}
