package schema

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/pgtools"
	"github.com/tsmigrate/tsmigrate/internal/scratch"
)

// Privileges that name roles the target lacks (a migration without --roles, or a role
// the target refused to create). pg_restore runs each entry of privileges (ACL,
// DEFAULT ACL) as one statement: when one of its GRANTs names a missing role, none of
// the entry's statements take, a REVOKE ... FROM PUBLIC beside it included, so the
// object would be more open on the target than on the source. The classifier lets such
// a failure through (RuleGrantToMissingRole); RestoreGrantsToMissingRoles then runs the
// statements of every entry of privileges again, one by one, but those naming a
// missing role, which it returns by role.

// RoleGrants are the statements of privileges left out because they name a role the
// target lacks. Its JSON names are part of tsmigrate's contract.
type RoleGrants struct {
	Role       string   `json:"role"`
	Statements int      `json:"statements"`
	Shown      []string `json:"shown"` // the first few
}

// String is the role's statements left out, in one line.
func (g RoleGrants) String() string {
	s := strings.Join(g.Shown, " ")
	if g.Statements > len(g.Shown) {
		s += fmt.Sprintf(" and %d more", g.Statements-len(g.Shown))
	}
	return s
}

const shownGrants = 3

// sqlExistingRoles lists which of the names are roles. PostgreSQL 12-18.
const sqlExistingRoles = `SELECT rolname FROM pg_catalog.pg_roles WHERE rolname = ANY($1)`

// privilegesBatch is how many statements go to the target at once.
const privilegesBatch = 500

// RestoreGrantsToMissingRoles gives the target again the privileges of archive's
// entries that keep accepts (nil: all; the entries that were restored), one statement
// at a time, but the statements that name a role the target lacks (as grantee,
// grantor, or the role of default privileges): those are returned by role. It does
// nothing when no statement names a missing role, unless failed says pg_restore let
// entries through by RuleGrantToMissingRole (a role it did not see named, or made
// since): then every statement runs. Run it once the schema is restored, whatever
// restored it; running a GRANT or REVOKE again changes nothing.
func RestoreGrantsToMissingRoles(ctx context.Context, tools *pgtools.Tools, target *dbconn.Config, archive string, keep func(TOCEntry) bool, failed bool) ([]RoleGrants, error) {
	toc, err := ReadTOC(ctx, tools, archive)
	if err != nil {
		return nil, err
	}
	return RestoreGrantsOfTOC(ctx, tools, target, archive, toc, keep, failed)
}

// RestoreGrantsOfTOC is RestoreGrantsToMissingRoles with archive's contents read
// already (ReadTOC): the caller may read them while the target is busy with another
// step (pg_restore -l of a schema of 5 000 chunks takes 50 to 100 ms).
func RestoreGrantsOfTOC(ctx context.Context, tools *pgtools.Tools, target *dbconn.Config, archive string, toc *TOC, keep func(TOCEntry) bool, failed bool) ([]RoleGrants, error) {
	n := 0
	for _, e := range toc.Entries {
		if isPrivileges(e) && (keep == nil || keep(e)) {
			n++
		}
	}
	if n == 0 {
		return nil, nil
	}
	dir, err := scratch.New("privileges")
	if err != nil {
		return nil, fmt.Errorf("restore privileges: %w", err)
	}
	defer dir.Remove()
	list := filepath.Join(dir.Path, "privileges.list")
	if _, err := toc.WriteList(list, func(e TOCEntry) bool { return isPrivileges(e) && (keep == nil || keep(e)) }); err != nil {
		return nil, fmt.Errorf("restore privileges: %w", err)
	}
	var out bytes.Buffer
	var stderr []string
	if err := tools.Run(ctx, pgtools.Cmd{Program: "pg_restore", Args: []string{"--no-owner", "-f", "-", "-L", list, archive},
		Stdout: &out, Line: func(_ int, s string) { stderr = append(stderr, s) }}); err != nil {
		return nil, fmt.Errorf("write the SQL of the dump's privileges: %w: %s", err, strings.Join(stderr, " "))
	}
	statements := splitStatements(out.String())
	named := make([][]string, len(statements))
	var all []string
	for i, st := range statements {
		named[i] = rolesNamed(st)
		all = append(all, named[i]...)
	}
	if len(all) == 0 && !failed {
		return nil, nil
	}
	conn, err := target.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, _ := conn.Query(ctx, sqlExistingRoles, all)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("target: look up the roles the privileges name: %w", err)
	}
	existing := map[string]bool{}
	for _, n := range names {
		existing[n] = true
	}
	missing := map[string]*RoleGrants{}
	run := make([]string, 0, len(statements))
	for i, st := range statements {
		left := false
		for _, r := range named[i] {
			if existing[r] {
				continue
			}
			left = true
			g := missing[r]
			if g == nil {
				g = &RoleGrants{Role: r}
				missing[r] = g
			}
			g.Statements++
			if len(g.Shown) < shownGrants {
				g.Shown = append(g.Shown, st)
			}
		}
		if !left {
			run = append(run, st)
		}
	}
	if len(missing) == 0 && !failed {
		return nil, nil
	}
	for len(run) > 0 {
		batch := run[:min(privilegesBatch, len(run))]
		run = run[len(batch):]
		if err := conn.PgConn().Exec(ctx, "BEGIN;\n"+strings.Join(batch, "\n")+"\nCOMMIT;").Close(); err != nil {
			return nil, fmt.Errorf("target: give the privileges of the dump again, but those of roles the target lacks: %s", dbconn.Reason(err))
		}
	}
	var res []RoleGrants
	for _, g := range missing {
		res = append(res, *g)
	}
	sort.Slice(res, func(i, j int) bool { return res[i].Role < res[j].Role })
	return res, nil
}

// isPrivileges says whether e is an entry of privileges.
func isPrivileges(e TOCEntry) bool { return e.Desc == "ACL" || e.Desc == "DEFAULT ACL" }

// rolesNamed lists the roles a statement of privileges names, as pg_dump 12-17 writes
// them: the grantees after GRANT's last TO or REVOKE's last FROM (PUBLIC and the
// CURRENT_USER kind left out), GRANTED BY's role, ALTER DEFAULT PRIVILEGES' FOR ROLE
// roles, and SET SESSION AUTHORIZATION's role. Object names are never taken for roles:
// pg_dump quotes every name that is a keyword, so a bare TO or FROM is the keyword.
func rolesNamed(st string) []string {
	toks := sqlTokens(st)
	if len(toks) == 0 {
		return nil
	}
	var out []string
	list := func(from int) {
		for i := from; i < len(toks); i++ {
			t := toks[i]
			switch {
			case t.text == ",":
			case !t.word:
				return
			case !t.quoted && slices.Contains([]string{"WITH", "GRANTED", "CASCADE", "RESTRICT", "IN", "GRANT", "REVOKE"}, strings.ToUpper(t.text)):
				return
			case !t.quoted && slices.Contains([]string{"PUBLIC", "CURRENT_USER", "CURRENT_ROLE", "SESSION_USER", "GROUP"}, strings.ToUpper(t.text)):
			default:
				out = append(out, t.name())
			}
		}
	}
	kw := func(i int, w string) bool { return i >= 0 && i < len(toks) && toks[i].keyword(w) }
	grantee := -1
	verb := ""
	for i, t := range toks {
		switch {
		case t.keyword("GRANT") || t.keyword("REVOKE"):
			if verb == "" { // not REVOKE GRANT OPTION FOR, nor WITH GRANT OPTION
				verb = strings.ToUpper(t.text)
			}
		case verb == "GRANT" && t.keyword("TO"), verb == "REVOKE" && t.keyword("FROM"):
			grantee = i + 1
		case t.keyword("BY") && kw(i-1, "GRANTED"):
			list(i + 1)
		case (t.keyword("ROLE") || t.keyword("USER")) && kw(i-1, "FOR"):
			list(i + 1)
		case t.keyword("AUTHORIZATION") && kw(i-1, "SESSION") && kw(i-2, "SET") && !kw(i+1, "DEFAULT"):
			list(i + 1)
		}
	}
	if grantee > 0 {
		list(grantee)
	}
	return out
}

// sqlToken is a word (a keyword or an identifier, quoted or not), or one other
// character; string literals are left out.
type sqlToken struct {
	text         string
	word, quoted bool
}

// keyword says whether the token is the keyword w.
func (t sqlToken) keyword(w string) bool { return t.word && !t.quoted && strings.EqualFold(t.text, w) }

// name is the identifier the token names: a bare one folded to lower case.
func (t sqlToken) name() string {
	if t.quoted {
		return t.text
	}
	return strings.ToLower(t.text)
}

func sqlTokens(s string) []sqlToken {
	var out []sqlToken
	isWord := func(c byte, first bool) bool {
		return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80 || !first && (c >= '0' && c <= '9' || c == '$')
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '"' || c == '\'':
			var b strings.Builder
			j := i + 1
			for ; j < len(s); j++ {
				if s[j] == c {
					if j+1 < len(s) && s[j+1] == c {
						b.WriteByte(c)
						j++
						continue
					}
					break
				}
				b.WriteByte(s[j])
			}
			if c == '"' {
				out = append(out, sqlToken{text: b.String(), word: true, quoted: true})
			}
			i = j + 1
		case isWord(c, true):
			j := i + 1
			for j < len(s) && isWord(s[j], false) {
				j++
			}
			out = append(out, sqlToken{text: s[i:j], word: true})
			i = j
		default:
			out = append(out, sqlToken{text: string(c)})
			i++
		}
	}
	return out
}
