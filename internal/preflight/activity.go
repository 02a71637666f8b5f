package preflight

import (
	"fmt"
	"slices"
	"strings"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/inventory"
)

func (e *env) checkLongTransactions() []Finding {
	const long = 60 // seconds
	var seen []string
	others := len(e.srcInv.Activity.Sessions)
	for _, s := range e.srcInv.Activity.Sessions {
		if s.XactSeconds >= long {
			seen = append(seen, fmt.Sprintf("pid %d (%s, %s, %s for %.0fs)", s.PID, s.User, orDash(s.Application), s.State, s.XactSeconds))
		}
	}
	if len(seen) == 0 {
		return []Finding{finding(Pass, "source", fmt.Sprintf("no transaction open for a minute or more (%s connected)", plural(others, "other session", "other sessions")), "")}
	}
	return []Finding{finding(Warn, "source",
		fmt.Sprintf("long transactions: %s", list(seen)),
		"let them finish before the freeze: the freeze ends sessions still open after its grace period (or waits for them with --no-terminate)")}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (e *env) checkPrepared() []Finding {
	var here, elsewhere []string
	for _, p := range e.srcInv.Activity.PreparedTransactions {
		if p.Database == e.srcInv.Name {
			here = append(here, fmt.Sprintf("%q (owner %s)", p.GID, p.Owner))
		} else {
			elsewhere = append(elsewhere, p.GID)
		}
	}
	switch {
	case len(here) > 0:
		return []Finding{finding(Warn, "source",
			fmt.Sprintf("prepared transactions on %s: %s; a freeze cannot end them and their writes are invisible to the dump until committed", e.srcInv.Name, list(here)),
			"COMMIT PREPARED or ROLLBACK PREPARED them before the freeze")}
	case len(elsewhere) > 0:
		return []Finding{finding(Pass, "source", fmt.Sprintf("no prepared transaction on %s (%d on other databases of the server)", e.srcInv.Name, len(elsewhere)), "")}
	}
	return []Finding{finding(Pass, "source", "no prepared transactions", "")}
}

func (e *env) checkSlots() []Finding {
	slots := e.srcInv.Activity.ReplicationSlots
	if len(slots) == 0 {
		return []Finding{finding(Pass, "source", "no replication slots", "")}
	}
	var names []string
	for _, s := range slots {
		state := "inactive"
		if s.Active {
			state = "active"
		}
		d := s.Type
		if s.Plugin != "" {
			d += " " + s.Plugin
		}
		names = append(names, fmt.Sprintf("%s (%s, %s)", s.Name, d, state))
	}
	return []Finding{finding(Warn, "source",
		fmt.Sprintf("replication slots on the source server: %s; they are not migrated, and inactive ones hold WAL on the source", list(names)),
		"recreate the slots and subscribers the target needs after the migration; drop slots nobody reads")}
}

func (e *env) checkSubscriptions() []Finding {
	subs := e.srcInv.Activity.Subscriptions
	if len(subs) == 0 {
		return []Finding{finding(Pass, "source", "no subscriptions in the database", "")}
	}
	var names []string
	for _, s := range subs {
		state := "disabled"
		if s.Enabled {
			state = "enabled"
		}
		names = append(names, fmt.Sprintf("%s (%s)", s.Name, state))
	}
	if !e.srcInv.User.Superuser {
		return []Finding{finding(Warn, "source",
			fmt.Sprintf("subscriptions in the database: %s; pg_dump leaves them out for a user who is not a superuser, with a warning that stops the migration", list(names)),
			"migrate as a superuser, or drop the subscriptions (and create them on the target after the migration)")}
	}
	return []Finding{finding(Warn, "source",
		fmt.Sprintf("subscriptions in the database: %s; they arrive on the target disabled, not connected and subscribed to no table (pg_dump writes them with connect = false)", list(names)),
		"after the cut-over, hand the publisher's replication slot over: on the source ALTER SUBSCRIPTION <name> DISABLE, then ALTER SUBSCRIPTION <name> SET (slot_name = NONE); on the target ALTER SUBSCRIPTION <name> ENABLE, then ALTER SUBSCRIPTION <name> REFRESH PUBLICATION WITH (copy_data = false), since the rows are there already")}
}

func (e *env) checkJobs() []Finding {
	if e.srcInv.TimescaleDB == nil {
		return []Finding{finding(Pass, "source", "the source database does not use TimescaleDB: no jobs", "")}
	}
	var scheduled []string
	for _, j := range e.srcInv.UserJobs() {
		if j.Scheduled {
			scheduled = append(scheduled, fmt.Sprintf("%d %s", j.ID, j.Application))
		}
	}
	if len(scheduled) == 0 {
		return []Finding{finding(Pass, "source", "no scheduled TimescaleDB jobs of the user's", "")}
	}
	return []Finding{finding(Warn, "source",
		fmt.Sprintf("scheduled TimescaleDB jobs: %s; they write until the freeze, and a policy holding locks can stall a parallel dump", list(scheduled)),
		"expect the freeze to pause them (alter_job(id, scheduled => false)) until tsmigrate unfreeze; the target gets them paused, and once verified, scheduled as on the source, each to run next when it would have there")}
}

func (e *env) checkUnlogged() []Finding {
	var names []string
	for _, t := range e.srcInv.Tables {
		if t.Unlogged {
			names = append(names, inventory.DisplayName(t.Schema, t.Name))
		}
	}
	if len(names) == 0 {
		return []Finding{finding(Pass, "source", "no unlogged tables", "")}
	}
	return []Finding{finding(Warn, "source",
		fmt.Sprintf("unlogged tables: %s; their rows are copied as they are at the dump, they stay unlogged on the target and are emptied after a crash there", list(names)),
		"nothing to do if that is intended; ALTER TABLE ... SET LOGGED on the source to keep them crash-safe")}
}

func (e *env) checkLargeObjects() []Finding {
	n := e.srcInv.LargeObjects
	if n == 0 {
		return []Finding{finding(Pass, "source", "no large objects", "")}
	}
	return []Finding{finding(Warn, "source",
		fmt.Sprintf("%s in the source database: pg_dump copies them with the database, one by one, which is slow when there are many", plural(int(n), "large object", "large objects")),
		"nothing to do, unless they are leftovers: then vacuumlo or lo_unlink them on the source first")}
}

// checkDatabaseSettings says which of the source database's own settings (ALTER
// DATABASE ... SET, a role's in the database), privileges (GRANT/REVOKE ... ON
// DATABASE) and comment the migration gives the target database, which pg_dump leaves
// out, and warns about those the target refused when they were tried (in the probe's
// rolled-back transaction). Settings are named, never shown with their values.
func (e *env) checkDatabaseSettings() []Finding {
	p := &e.probe
	if !p.ran {
		return nil // a standby target: target-create says so
	}
	if len(p.settings) == 0 {
		return []Finding{finding(Pass, "source", "the source database has no settings (ALTER DATABASE ... SET), privileges beyond the default, nor comment of its own", "")}
	}
	var given, refused, how []string
	for _, st := range p.settings {
		if !slices.ContainsFunc(p.settingsRefused, func(r refusal) bool { return r.st == st }) {
			given = append(given, st.What)
		}
	}
	for _, r := range p.settingsRefused {
		refused = append(refused, fmt.Sprintf("%s (%s)", r.st.What, dbconn.Reason(r.err)))
		if !slices.Contains(how, r.st.How) {
			how = append(how, r.st.How)
		}
	}
	if len(refused) == 0 {
		return []Finding{finding(Pass, "target",
			fmt.Sprintf("the source database's %s will be given to the target database (pg_dump leaves them out); tried in a rolled-back transaction", list(given)), "")}
	}
	saw := fmt.Sprintf("the target refuses the source database's %s (tried in a rolled-back transaction); the migration goes on without them", strings.Join(refused, ", "))
	if len(given) > 0 {
		saw += fmt.Sprintf(", and gives the target database its %s", list(given))
	}
	return []Finding{finding(Warn, "target", saw,
		fmt.Sprintf("after the migration, give them as a role allowed to (%s), creating any missing role first; or migrate as such a role (the owner of the target database, or a superuser)", strings.Join(how, "; ")))}
}
