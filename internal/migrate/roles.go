package migrate

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/roles"
	"github.com/tsmigrate/tsmigrate/internal/schema"
	"github.com/tsmigrate/tsmigrate/internal/tsapi"
)

// Phases of Options.Roles.
const (
	PhaseRoles  = "roles"  // the roles created on the target, before the schema
	PhaseOwners = "owners" // each database's objects given their source owners
)

// sourceRoles reads the roles the run's source databases use.
func (r *run) sourceRoles(ctx context.Context) (*roles.Source, error) {
	var all *roles.Source
	for _, d := range r.sum.Databases {
		conn, err := d.src.Connect(ctx)
		if err != nil {
			return nil, err
		}
		s, err := roles.ReadSource(ctx, conn.Conn)
		conn.Close(context.WithoutCancel(ctx))
		if err != nil {
			return nil, fmt.Errorf("source database %s: %w", d.Source, err)
		}
		if all == nil {
			all = s
		} else {
			all.Merge(s)
		}
	}
	return all, nil
}

// carryRoles creates on the target the roles the source databases use (Options.Roles),
// before their schema: attributes but those the target user may not give, own
// settings, memberships, password verifiers when the source user may read them. It
// leaves the roles the target has already as they are (Options.RolesUpdate updates
// them), and says what it did and did not.
func (r *run) carryRoles(ctx context.Context) error {
	src, err := r.sourceRoles(ctx)
	if err != nil {
		return err
	}
	var names []string
	for _, x := range src.Roles {
		names = append(names, x.Name)
	}
	conn, _, err := connectServer(ctx, r.opt.Target)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tgt, err := roles.ReadTarget(ctx, conn.Conn, names)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	plan := roles.MakePlan(src, tgt, roles.Options{Update: r.opt.RolesUpdate})
	if plan.Problem != "" && len(plan.Create) == 0 && len(plan.Existing) < len(src.Roles) {
		return exit.New(exit.Blocked, "migrate as a user with CREATEROLE, or without --roles", "--roles: %s", plan.Problem)
	}
	rep, err := plan.Apply(ctx, conn.Conn)
	if err != nil {
		return err
	}
	r.sum.Roles = rep
	if len(rep.ActAs) > 0 {
		r.note("", fmt.Sprintf("the target user %s was made a member of %s, to give them their objects (and to read them, as it did as their owner before)",
			tgt.User, strings.Join(rep.ActAs, ", ")))
	}
	if len(rep.Created) > 0 {
		r.note("", fmt.Sprintf("created %d roles on the target: %s", len(rep.Created), strings.Join(rep.Created, ", ")))
	}
	for _, d := range rep.DroppedAttributes {
		r.warn(fmt.Sprintf("role %s was created without %s: the target user %s may not give it (a managed service's admin is no superuser)",
			d.Role, strings.Join(d.Attributes, ", "), tgt.User))
	}
	for _, e := range rep.Existing {
		if len(e.Differences) == 0 {
			continue
		}
		if slices.Contains(rep.Updated, e.Role) {
			r.note("", fmt.Sprintf("role %s exists on the target: given the source's attributes and memberships (--roles-update); it differed: %s", e.Role, strings.Join(e.Differences, "; ")))
			continue
		}
		r.warn(fmt.Sprintf("role %s exists on the target and differs from the source's: %s; left as it is (--roles-update would give it the source's attributes and memberships)",
			e.Role, strings.Join(e.Differences, "; ")))
	}
	if len(rep.WithoutPassword) > 0 {
		r.warn(fmt.Sprintf("login roles created without a password (the source user %s may not read the password verifiers; a superuser or a member of pg_read_all_data may): %s; set each on the target, as %s: \\password ROLE in psql (it sends a verifier, not the password)",
			r.opt.Source.User(), strings.Join(rep.WithoutPassword, ", "), tgt.User))
	}
	for _, x := range rep.Refused {
		r.warn("roles: the target refused " + x.String())
	}
	return nil
}

// setOwners gives the objects of d's target database the owners they have on the
// source (Options.Roles), once everything is restored and while TimescaleDB is still
// in restoring mode (see roles.SetOwners). The API path calls it twice: after the
// pre-data section, so that the chunks TimescaleDB makes get their hypertable's owner,
// then for what it made since (continuous aggregates); the report's objects that keep
// another owner are the second call's.
func (r *run) setOwners(ctx context.Context, d *DatabaseRun) error {
	if !r.opt.Roles {
		return nil
	}
	return r.phase(d, PhaseOwners, func() error {
		src, err := d.src.Connect(ctx)
		if err != nil {
			return err
		}
		defer src.Close(context.WithoutCancel(ctx))
		return onTarget(ctx, d, func(ctx context.Context, c *dbconn.Conn) error {
			rep, err := roles.SetOwners(ctx, src.Conn, c.Conn)
			if err != nil {
				return err
			}
			if d.Owners != nil { // the API path's second step: what it made since
				rep.Set += d.Owners.Set
			}
			d.Owners = rep
			if rep.Set > 0 {
				r.note(d.Source, fmt.Sprintf("gave %d objects their source owners", rep.Set))
			}
			for _, n := range rep.NotSet {
				r.warn(d.Source + ": " + n.String())
			}
			return nil
		})
	})
}

// restoreGrants gives d's target again the privileges of its dump (archive) that
// pg_restore could not restore because they name roles the target lacks: the other
// statements of those entries (a REVOKE ... FROM PUBLIC beside a GRANT to a missing
// role), one by one (see schema.RestoreGrantsToMissingRoles). Each missing role is
// named once, in a warning; the run goes on, as it did before --roles existed, with
// every object the target user's.
//
// toc, when not nil, gives archive's contents (schema.ReadTOC), read already.
func (r *run) restoreGrants(ctx context.Context, d *DatabaseRun, archive string, toc *schema.TOC) error {
	var keep func(schema.TOCEntry) bool
	if d.api() {
		keep = func(e schema.TOCEntry) bool { return d.apart(e) != tsapi.RoleMade }
	}
	failed := slices.ContainsFunc(d.Messages, func(m schema.Message) bool { return m.Rule == schema.RuleGrantToMissingRole })
	var left []schema.RoleGrants
	var err error
	if toc != nil {
		left, err = schema.RestoreGrantsOfTOC(ctx, r.tools, d.dst, archive, toc, keep, failed)
	} else {
		left, err = schema.RestoreGrantsToMissingRoles(ctx, r.tools, d.dst, archive, keep, failed)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", d.Source, err)
	}
	d.GrantsLeftOut = left
	for _, g := range left {
		r.warn(fmt.Sprintf("%s: role %s does not exist on the target: %d statements of privileges that name it were left out (%s); migrate with --roles, or create the role on the target and run them",
			d.Source, g.Role, g.Statements, g))
	}
	return nil
}
