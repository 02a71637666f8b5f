package preflight

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/roles"
)

// rolesProbe is what carrying the roles (migrate --roles) would do, tried in the
// probe's transaction, which is rolled back.
type rolesProbe struct {
	tried  bool
	source *roles.Source
	user   string // the target user
	plan   *roles.Plan
	report *roles.Report
}

// tryRoles plans the roles the source database uses and applies the plan in the
// probe's transaction: roles, memberships, settings and verifiers, all rolled back.
// Before the database settings are tried: those of roles in the database need them.
func (e *env) tryRoles(ctx context.Context, tx pgx.Tx) error {
	p := &e.probe.roles
	src, err := roles.ReadSource(ctx, e.src.Conn)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	var names []string
	for _, r := range src.Roles {
		names = append(names, r.Name)
	}
	tgt, err := roles.ReadTarget(ctx, e.tgt.Conn, names)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	p.tried, p.source, p.user = true, src, tgt.User
	p.plan = roles.MakePlan(src, tgt, roles.Options{Update: e.opt.RolesUpdate})
	if p.report, err = p.plan.Apply(ctx, tx); err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	return nil
}

// checkRolesPlan says what migrate --roles would do with the roles: create which, leave
// which as they are, which attributes it would leave out, whether it can carry the
// password verifiers, and what the target refused when tried.
func (e *env) checkRolesPlan() []Finding {
	p := &e.probe.roles
	if !e.opt.Roles || !p.tried {
		return nil
	}
	if len(p.source.Roles) == 0 {
		return []Finding{finding(Pass, "source", "the source database uses no role of its own (its objects belong to the bootstrap superuser)", "")}
	}
	if p.plan.Problem != "" && len(p.plan.Create) == 0 && len(p.plan.Existing) < len(p.source.Roles) {
		return []Finding{finding(Fail, "target", "--roles: "+p.plan.Problem, "migrate as a user with CREATEROLE (a managed service's admin role has it), or without --roles")}
	}
	rep := p.report
	var out []Finding
	saw := "tried in a rolled-back transaction: "
	var parts []string
	if len(rep.Created) > 0 {
		parts = append(parts, fmt.Sprintf("would create %s", list(rep.Created)))
	}
	if len(p.plan.Existing) > 0 {
		var names []string
		for _, x := range p.plan.Existing {
			names = append(names, x.Role)
		}
		how := "left as they are"
		if e.opt.RolesUpdate {
			how = "given the source's attributes and memberships (--roles-update)"
		}
		parts = append(parts, fmt.Sprintf("exist on the target already, %s: %s", how, strings.Join(names, ", ")))
	}
	if len(rep.Memberships) > 0 {
		parts = append(parts, fmt.Sprintf("memberships %s", strings.Join(rep.Memberships, ", ")))
	}
	if len(rep.Settings) > 0 {
		parts = append(parts, fmt.Sprintf("settings %s", strings.Join(rep.Settings, ", ")))
	}
	out = append(out, finding(Pass, "both", saw+strings.Join(parts, "; "), ""))
	if len(rep.DroppedAttributes) > 0 {
		var d []string
		for _, x := range rep.DroppedAttributes {
			d = append(d, x.Role+" without "+strings.Join(x.Attributes, ", "))
		}
		out = append(out, finding(Warn, "target", fmt.Sprintf("the target user %s may not give these attributes (a managed service's admin is no superuser); the roles would be created without them: %s",
			p.user, strings.Join(d, "; ")), "nothing, if the applications do not need them; else give them as a superuser of the target after the migration"))
	}
	if !e.opt.RolesUpdate {
		for _, x := range p.plan.Existing {
			if len(x.Differences) > 0 {
				out = append(out, finding(Warn, "target", fmt.Sprintf("role %s exists on the target and differs from the source's: %s; it would be left as it is", x.Role, strings.Join(x.Differences, "; ")),
					"check that the applications work with the target's role, or migrate with --roles-update to give it the source's attributes and memberships"))
			}
		}
	}
	switch {
	case len(rep.WithoutPassword) > 0:
		out = append(out, finding(Warn, "source", fmt.Sprintf("the source user %s may not read the roles' password verifiers (pg_authid; a superuser or a member of pg_read_all_data may): these login roles would be created without a password: %s",
			e.srcCfg.User(), strings.Join(rep.WithoutPassword, ", ")),
			"migrate as a superuser of the source to carry them, or set each password on the target after the migration (\\password ROLE in psql)"))
	case len(rep.PasswordsCarried) > 0:
		out = append(out, finding(Pass, "source", fmt.Sprintf("the password verifiers of %s would be carried (never their clear text, which the source does not hold)", list(rep.PasswordsCarried)), ""))
	}
	if len(rep.Refused) > 0 {
		var r []string
		for _, x := range rep.Refused {
			r = append(r, x.String())
		}
		out = append(out, finding(Warn, "target", "the target refused: "+strings.Join(r, "; ")+"; the migration would go on without them",
			"give them after the migration as a role allowed to"))
	}
	return out
}
