package schema

import (
	"regexp"
	"strings"
)

// rule is a kind of message known to be harmless in a whole-database migration.
type rule struct {
	id     string
	reason string
	// match sees the head and every continuation line (prefixes removed) and must
	// account for all of them: a harmless head with an unexpected line is not harmless.
	match func(m Message, detail []string) bool
}

// rules, each checked against real output of pg_dump/pg_restore 17.12 and
// TimescaleDB 2.19.3 (and the seed's older format), and each with a test.
var rules = []rule{
	{
		id:     "timescaledb-circular-fk",
		reason: "TimescaleDB's own catalog tables reference themselves; the warning concerns data-only dumps, and tsmigrate restores the catalog whole, alone and first",
		match:  matchCircularFK,
	},
	{
		id:     "timescaledb-hypertable-data-in-chunks",
		reason: "a hypertable's rows live in its chunks, which the dump carries as tables of their own",
		match:  matchHypertableNotice,
	},
	{
		id:     "subscription-not-connected",
		reason: "pg_dump writes a subscription with connect = false: the target has it, disabled and not subscribed to any table yet, to be enabled after the cut-over (pre-flight's subscriptions check says how)",
		match:  matchSubscriptionNotConnected,
	},
	{
		id:     "comment-on-extension-not-owner",
		reason: "only the extension's descriptive comment is not set; the extension itself is there, at the right version",
		match:  matchCommentOnExtension,
	},
	{
		id:     RuleGrantToMissingRole,
		reason: "the privileges name a role the target does not have; tsmigrate gives them again one statement at a time once the schema is restored, leaving out (and naming) those of roles the target lacks",
		match:  matchGrantToMissingRole,
	},
}

// circularTables are TimescaleDB catalog tables with self-referencing foreign keys.
var circularTables = map[string]bool{"hypertable": true, "chunk": true, "continuous_agg": true}

const (
	circularHead  = "there are circular foreign-key constraints on this table:"
	circularHint1 = "You might not be able to restore the dump without using --disable-triggers or temporarily dropping the constraints."
	circularHint2 = "Consider using a full dump instead of a --data-only dump to avoid this problem."
)

func matchCircularFK(m Message, detail []string) bool {
	if m.Program != "pg_dump" || m.Severity != SevWarning || m.Text != circularHead {
		return false
	}
	tables := 0
	for _, d := range detail {
		switch {
		case d == circularHint1 || d == circularHint2:
		case circularTables[d]:
			tables++
		default:
			return false
		}
	}
	return tables == 1
}

// oldStyleCircularFollower says whether body continues a circular-FK warning in the
// format of PostgreSQL 11 and older, where the table and hints are plain info lines:
// "pg_dump: hypertable", "pg_dump: You might not be able to restore ...".
func oldStyleCircularFollower(cur *Message, body string) bool {
	if cur.Text != circularHead {
		return false
	}
	return body == circularHint1 || body == circularHint2 || identifier.MatchString(body)
}

var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_$]*$`)

const (
	hypertableNotice = "NOTICE:  hypertable data are in the chunks, no data will be copied"
	hypertableDetail = "DETAIL:  Data for hypertables are stored in the chunks of a hypertable so COPY TO of a hypertable will not copy any data."
	hypertableHint   = `HINT:  Use "COPY (SELECT * FROM <hypertable>) TO ..." to copy all data in hypertable, or copy each chunk individually.`
)

func matchHypertableNotice(m Message, detail []string) bool {
	if m.Program != "pg_dump" || m.Severity != SevNotice || m.Text != hypertableNotice {
		return false
	}
	for _, d := range detail {
		if d != hypertableDetail && d != hypertableHint {
			return false
		}
	}
	return true
}

// The server's warnings on CREATE SUBSCRIPTION ... WITH (connect = false), passed on
// by pg_restore: PostgreSQL 16 and later, and 15 (one line, no hint).
const (
	subscriptionNotConnected    = "WARNING:  subscription was created, but is not connected"
	subscriptionHint            = "HINT:  To initiate replication, you must manually create the replication slot, enable the subscription, and refresh the subscription."
	subscriptionNotSubscribed15 = "WARNING:  tables were not subscribed, you will have to run ALTER SUBSCRIPTION ... REFRESH PUBLICATION to subscribe the tables"
)

func matchSubscriptionNotConnected(m Message, detail []string) bool {
	if m.Program != "pg_restore" || m.Severity != SevWarning {
		return false
	}
	switch m.Text {
	case subscriptionNotSubscribed15:
		return len(detail) == 0
	case subscriptionNotConnected:
		for _, d := range detail {
			if d != subscriptionHint {
				return false
			}
		}
		return true
	}
	return false
}

var commentOnExtension = regexp.MustCompile(`^Command was: COMMENT ON EXTENSION [a-z_][a-z0-9_]* IS '.*';$`)

func matchCommentOnExtension(m Message, detail []string) bool {
	if m.Program != "pg_restore" || m.Severity != SevError ||
		!strings.HasPrefix(m.Text, "could not execute query: ERROR:  must be owner of extension ") {
		return false
	}
	if m.Object != "" && !strings.HasPrefix(m.Object, "COMMENT") {
		return false
	}
	cmd := 0
	for _, d := range detail {
		if commentOnExtension.MatchString(d) {
			cmd++
		} else {
			return false
		}
	}
	return cmd == 1
}

// RuleGrantToMissingRole is the rule of an entry of privileges (ACL, DEFAULT ACL) that
// pg_restore could not run because it names a role the target lacks. pg_restore runs
// an entry's statements as one, so none of them took (a REVOKE ... FROM PUBLIC beside
// the GRANT included): whoever restores must run RestoreGrantsToMissingRoles after.
const RuleGrantToMissingRole = "grant-to-missing-role"

var (
	missingRole = regexp.MustCompile(`^could not execute query: ERROR:  role "(?:[^"]|"")*" does not exist$`)
	// privilegeStatement is a line of an entry of privileges as pg_dump 12-17 writes it
	// (buildACLCommands, buildDefaultACLCommands).
	privilegeStatement = regexp.MustCompile(`^(?:Command was: )?(?:GRANT|REVOKE|ALTER DEFAULT PRIVILEGES|SET SESSION AUTHORIZATION|RESET SESSION AUTHORIZATION)\b.*;$`)
)

func matchGrantToMissingRole(m Message, detail []string) bool {
	if m.Program != "pg_restore" || m.Severity != SevError || !missingRole.MatchString(m.Text) ||
		!strings.HasPrefix(m.Object, "ACL ") && !strings.HasPrefix(m.Object, "DEFAULT ACL ") {
		return false
	}
	cmd := 0
	for i, d := range detail {
		switch {
		case i == 0 && !strings.HasPrefix(d, "Command was: "):
			return false
		case privilegeStatement.MatchString(d):
			cmd++
		default:
			return false
		}
	}
	return cmd > 0
}

// classify marks m harmless when a rule accounts for it, and otherwise says what to do.
func classify(m *Message) {
	detail := m.detail()
	for _, r := range rules {
		if r.match(*m, detail) {
			m.Harmless, m.Rule, m.Reason = true, r.id, r.reason
			return
		}
	}
	m.Hint = hintFor(*m, detail)
}

// hints by what pg_restore printed. pg_restore passes the server's text on without its
// SQLSTATE, so these match text; an unmatched message still fails, with the general hint.
var hints = []struct {
	re   *regexp.Regexp
	hint string
}{
	{regexp.MustCompile(`already exists`), "the target already holds this object: drop it there (or start from an empty target database), then run again"},
	{regexp.MustCompile(`role "[^"]*" does not exist`), "migrate with --roles (it creates the roles the databases use first), or create the role on the target, then run again"},
	{regexp.MustCompile(`permission denied|must be owner|must be superuser`), "the target user lacks this privilege: connect as the database owner or the service's admin role"},
	{regexp.MustCompile(`extension "[^"]*" is not available|could not open extension control file`), "install that extension on the target server (the same version as the source), then run again"},
	{regexp.MustCompile(`violates foreign key constraint`), "rows arrived before the rows they reference: report this with the output of --verbose"},
	{regexp.MustCompile(`No space left on device|could not extend file`), "the disk is full: free or add space, then run again"},
	{regexp.MustCompile(`unrecognized configuration parameter`), "the client tools are newer than the server: use pg_dump/pg_restore of the server's major (--pg-bin)"},
}

func hintFor(m Message, detail []string) string {
	all := m.Text + "\n" + strings.Join(detail, "\n")
	for _, h := range hints {
		if h.re.MatchString(all) {
			return h.hint
		}
	}
	if m.Severity == SevUnknown {
		return "tsmigrate does not recognise this output; look at the target before trusting it"
	}
	return "fix the cause on the target (or the source), reset the target, and run again"
}
