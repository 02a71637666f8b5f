package schema

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// DatabaseSettings is what pg_dump leaves out of a database's dump unless it is given
// --create: the database's own settings (ALTER DATABASE ... SET), the settings of roles
// in it (ALTER ROLE ... IN DATABASE ... SET) and its comment. A search_path set on the
// database is the common case: without it, an application's unqualified names stop
// resolving on the new server.
type DatabaseSettings struct {
	Settings     []Setting // the database's own, in the catalog's order
	RoleSettings []Setting // of roles in the database
	// Privileges are the database's privileges where they differ from PostgreSQL's
	// default (CONNECT and TEMPORARY for PUBLIC), its owner's left out: a CONNECT
	// revoked from PUBLIC and granted to the application's role, say.
	Privileges []Privilege
	Comment    *string
}

// Privilege is a database privilege granted beyond the default, or a default one
// revoked. Grantee "" is PUBLIC.
type Privilege struct {
	Revoke      bool
	Name        string // CONNECT, CREATE, TEMPORARY
	Grantee     string
	GrantOption bool
}

// sqlDatabasePrivileges compares the current database's ACL with the default one for
// its owner (acldefault), leaving the owner's own entries out: revokes of default
// privileges first, then grants beyond them. Checked on PostgreSQL 15 and 17.
const sqlDatabasePrivileges = `
WITH d AS (SELECT datdba, datacl FROM pg_database WHERE datname = current_database() AND datacl IS NOT NULL),
cur AS (SELECT a.grantee, a.privilege_type, a.is_grantable FROM d, aclexplode(d.datacl) a WHERE a.grantee <> d.datdba),
def AS (SELECT a.grantee, a.privilege_type, a.is_grantable FROM d, aclexplode(acldefault('d', d.datdba)) a WHERE a.grantee <> d.datdba),
g AS (
	(SELECT true AS revoke, grantee, privilege_type, false AS is_grantable FROM def
	 EXCEPT SELECT true, grantee, privilege_type, false FROM cur)
	UNION ALL
	(SELECT false, grantee, privilege_type, is_grantable FROM cur EXCEPT SELECT false, grantee, privilege_type, is_grantable FROM def))
SELECT g.revoke, g.privilege_type, coalesce(r.rolname, ''), g.is_grantable
FROM g LEFT JOIN pg_roles r ON r.oid = g.grantee
ORDER BY 1 DESC, 3, 2`

// Setting is one stored setting: Name=Value as pg_db_role_setting holds it, and the
// role it is for ("" for every role).
type Setting struct {
	Role, Name, Value string
}

// sqlDatabaseSettings reads the current database's settings and those of roles in it
// (pg_db_role_setting stores "name=value"; the name holds no '='). Checked on
// PostgreSQL 15 and 17.
const sqlDatabaseSettings = `
SELECT coalesce(r.rolname, ''), split_part(c.cfg, '=', 1), substr(c.cfg, strpos(c.cfg, '=') + 1)
FROM pg_db_role_setting s
JOIN pg_database d ON d.oid = s.setdatabase AND d.datname = current_database()
LEFT JOIN pg_roles r ON r.oid = s.setrole
CROSS JOIN LATERAL unnest(s.setconfig) WITH ORDINALITY AS c(cfg, n)
ORDER BY s.setrole <> 0, r.rolname, c.n`

// RestoringSetting is TimescaleDB's restoring mode, which timescaledb_pre_restore() and
// timescaledb_post_restore() turn on and off at database level.
const RestoringSetting = "timescaledb.restoring"

// ReadDatabaseSettings reads the connected database's settings and comment, leaving
// out restoring mode and, among the database's own settings (not its roles'), those
// named in skip (a tool's own, such as the freeze's).
func ReadDatabaseSettings(ctx context.Context, conn *pgx.Conn, skip ...string) (DatabaseSettings, error) {
	var out DatabaseSettings
	var s Setting
	rows, _ := conn.Query(ctx, sqlDatabaseSettings)
	_, err := pgx.ForEachRow(rows, []any{&s.Role, &s.Name, &s.Value}, func() error {
		if s.Role == "" && (s.Name == RestoringSetting || slices.Contains(skip, s.Name)) {
			return nil
		}
		if s.Role == "" {
			out.Settings = append(out.Settings, s)
		} else {
			out.RoleSettings = append(out.RoleSettings, s)
		}
		return nil
	})
	if err != nil {
		return out, fmt.Errorf("read the database's settings: %w", err)
	}
	var p Privilege
	rows, _ = conn.Query(ctx, sqlDatabasePrivileges)
	_, err = pgx.ForEachRow(rows, []any{&p.Revoke, &p.Name, &p.Grantee, &p.GrantOption}, func() error {
		out.Privileges = append(out.Privileges, p)
		return nil
	})
	if err != nil {
		return out, fmt.Errorf("read the database's privileges: %w", err)
	}
	err = conn.QueryRow(ctx, `SELECT shobj_description(d.oid, 'pg_database') FROM pg_database d
		WHERE d.datname = current_database()`).Scan(&out.Comment)
	if err != nil {
		return out, fmt.Errorf("read the database's comment: %w", err)
	}
	return out, nil
}

// Empty says whether there is nothing to carry.
func (d DatabaseSettings) Empty() bool {
	return len(d.Settings) == 0 && len(d.RoleSettings) == 0 && len(d.Privileges) == 0 && d.Comment == nil
}

// Statement is one statement that carries a setting, a privilege or the comment.
// What names it without a setting's value (a custom setting may hold something
// private): "search_path", "work_mem of role app", "revoke of CONNECT from PUBLIC",
// "comment"; How is the kind of statement, for a user to run it.
type Statement struct {
	What, SQL, How string
}

// Statements give database db the same settings, privileges and comment, one
// statement each: the database's settings, its roles' settings, then privileges
// (revokes first), then the comment.
func (d DatabaseSettings) Statements(db string) []Statement {
	ident := pgx.Identifier{db}.Sanitize()
	var out []Statement
	for _, s := range append(slices.Clone(d.Settings), d.RoleSettings...) {
		set := fmt.Sprintf("SET %s TO %s", pgx.Identifier{s.Name}.Sanitize(), sqltext.SettingValue(s.Name, s.Value))
		if s.Role == "" {
			out = append(out, Statement{s.Name, fmt.Sprintf("ALTER DATABASE %s %s", ident, set), "ALTER DATABASE ... SET"})
		} else {
			out = append(out, Statement{s.Name + " of role " + s.Role,
				fmt.Sprintf("ALTER ROLE %s IN DATABASE %s %s", pgx.Identifier{s.Role}.Sanitize(), ident, set),
				"ALTER ROLE ... IN DATABASE ... SET"})
		}
	}
	for _, p := range d.Privileges {
		who, name := "PUBLIC", "PUBLIC"
		if p.Grantee != "" {
			who, name = pgx.Identifier{p.Grantee}.Sanitize(), p.Grantee
		}
		if p.Revoke {
			out = append(out, Statement{fmt.Sprintf("revoke of %s from %s", p.Name, name),
				fmt.Sprintf("REVOKE %s ON DATABASE %s FROM %s", p.Name, ident, who), "REVOKE ... ON DATABASE"})
			continue
		}
		option := ""
		if p.GrantOption {
			option = " WITH GRANT OPTION"
		}
		out = append(out, Statement{fmt.Sprintf("grant of %s%s to %s", p.Name, option, name),
			fmt.Sprintf("GRANT %s ON DATABASE %s TO %s%s", p.Name, ident, who, option), "GRANT ... ON DATABASE"})
	}
	if d.Comment != nil {
		out = append(out, Statement{"comment", fmt.Sprintf("COMMENT ON DATABASE %s IS %s", ident, sqltext.Literal(*d.Comment)), "COMMENT ON DATABASE"})
	}
	return out
}

// Held tells whether the database these settings were read from (named db) holds a
// statement: reading it back gives the same statement.
func (d DatabaseSettings) Held(db string) func(Statement) bool {
	sql := map[string]bool{}
	for _, st := range d.Statements(db) {
		sql[st.SQL] = true
	}
	return func(st Statement) bool { return sql[st.SQL] }
}
