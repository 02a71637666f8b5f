package roles

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// Report is what carrying the roles did (in pre-flight: would do). Its JSON names are
// part of tsmigrate's contract; it never holds a password verifier.
type Report struct {
	Created  []string   `json:"created,omitempty"`
	Existing []Existing `json:"existing,omitempty"`
	// Updated: existing roles given the source's attributes (--roles-update).
	Updated           []string  `json:"updated,omitempty"`
	DroppedAttributes []Dropped `json:"dropped_attributes,omitempty"`
	// PasswordsCarried: roles created with the source's password verifier;
	// WithoutPassword: login roles created without one, whose password is to be set.
	PasswordsCarried []string `json:"passwords_carried,omitempty"`
	WithoutPassword  []string `json:"without_password,omitempty"`
	// Memberships ("app_read to app_login") and Settings ("statement_timeout of role
	// app_login") given.
	Memberships []string `json:"memberships,omitempty"`
	Settings    []string `json:"settings,omitempty"`
	// ActAs are the roles the target user was made a member of (SET ROLE, and their
	// privileges), to give them their objects and keep reading them.
	ActAs []string `json:"act_as,omitempty"`
	// Refused are the steps the target refused, each with the server's reason.
	Refused []Refusal `json:"refused,omitempty"`
}

// Refusal is a step the target refused.
type Refusal struct {
	What   string `json:"what"`
	Reason string `json:"reason"`
}

// String is the refusal in one line.
func (r Refusal) String() string { return r.What + ": " + r.Reason }

// Beginner is where a plan is applied: a connection (Apply commits what worked) or a
// transaction (pre-flight's, which is rolled back).
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Apply takes the plan's steps on the target in one transaction, each step under a
// savepoint: a step the target refuses is reported (its role's later steps are left
// out when its creation was refused) and the others are kept. It fails only when the
// transaction itself fails (a lost connection, a cancelled context).
func (p *Plan) Apply(ctx context.Context, db Beginner) (*Report, error) {
	rep := &Report{Existing: p.Existing, DroppedAttributes: p.Dropped, WithoutPassword: p.WithoutPassword}
	tx, err := db.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("carry roles: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	notCreated := map[string]bool{}
	for _, st := range p.statements {
		if st.skip != "" {
			rep.Refused = append(rep.Refused, Refusal{What: st.what, Reason: st.skip})
			continue
		}
		if notCreated[st.role] {
			continue
		}
		q := st.sql
		if st.password.Set() {
			q += sqltext.Literal(st.password.text())
		}
		if err := try(ctx, tx, q); err != nil {
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) {
				return nil, fmt.Errorf("carry roles: %s: %w", st.what, err)
			}
			rep.Refused = append(rep.Refused, Refusal{What: st.what, Reason: dbconn.Redact(dbconn.Reason(err))})
			switch st.kind {
			case stepCreate:
				notCreated[st.role] = true
			case stepPassword:
				rep.WithoutPassword = append(rep.WithoutPassword, st.role)
			}
			continue
		}
		switch st.kind {
		case stepCreate:
			rep.Created = append(rep.Created, st.role)
		case stepPassword:
			rep.PasswordsCarried = append(rep.PasswordsCarried, st.role)
		case stepSetting:
			rep.Settings = append(rep.Settings, st.what[len("setting "):])
		case stepMembership:
			rep.Memberships = append(rep.Memberships, st.what[len("membership "):])
		case stepUpdate:
			rep.Updated = append(rep.Updated, st.role)
		case stepSelf:
			rep.ActAs = append(rep.ActAs, st.role)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("carry roles: %w", err)
	}
	return rep, nil
}

// try runs sql under a savepoint, in the simple protocol (no statement is kept
// prepared: one may carry a password verifier), and undoes it when it fails.
func try(ctx context.Context, tx pgx.Tx, sql string) error {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return err
	}
	if _, err := sp.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol); err != nil {
		if rbErr := sp.Rollback(ctx); rbErr != nil {
			return fmt.Errorf("%w (and rolling back to the savepoint: %v)", err, rbErr)
		}
		return err
	}
	return sp.Commit(ctx)
}
