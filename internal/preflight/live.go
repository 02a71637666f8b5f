package preflight

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/inventory"
	"github.com/tsmigrate/tsmigrate/internal/live"
)

// The checks of a live migration (Options.Live): what package live needs on the
// source, read without changing anything there. live.Start makes a publication and a
// logical replication slot (pgoutput) on the source, and sets replica identities; a
// Receiver then streams from the slot through a replication connection (a WAL sender)
// for the whole run, and the target keeps and applies the changes.

// sqlReplication reads what logical decoding needs of the source server: wal_level,
// its replication slots and WAL senders, those in use. pg_replication_slots and the
// backend_type of pg_stat_activity are visible to every role. PostgreSQL 15, 17, 18.
const sqlReplication = `SELECT current_setting('wal_level'),
	current_setting('max_replication_slots')::int, (SELECT count(*) FROM pg_replication_slots)::int,
	current_setting('max_wal_senders')::int, (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender')::int`

// sqlNotOwned lists, of the tables named in $1 (quoted names; one dropped meanwhile is
// left out), those the current user neither owns nor is a member of the owner role
// of: it may not publish them nor alter their replica identity. PostgreSQL 15, 17.
const sqlNotOwned = `SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid IN (SELECT to_regclass(t) FROM unnest($1::text[]) t) AND NOT pg_has_role(c.relowner, 'USAGE') ORDER BY 1, 2`

// liveSource is what the live checks read on the source.
type liveSource struct {
	walLevel            string
	maxSlots, slots     int
	maxSenders, senders int
	plan                *live.Plan
	// notOwned: the tables published that a source user who is not a superuser
	// does not own (read only without TimescaleDB).
	notOwned []string
	// triedReplConn: a replication connection was tried; replConnErr is why it failed.
	triedReplConn bool
	replConnErr   error
}

// readLive reads what the live checks look at, once.
func (e *env) readLive(ctx context.Context) error {
	r := &e.liveSrc
	if err := e.src.QueryRow(ctx, sqlReplication).Scan(&r.walLevel, &r.maxSlots, &r.slots, &r.maxSenders, &r.senders); err != nil {
		return fmt.Errorf("read the source's replication settings: %w", err)
	}
	var err error
	if r.plan, err = live.ReadPlan(ctx, e.src.Conn); err != nil {
		return err
	}
	u := e.srcInv.User
	if !u.Superuser && !r.plan.Timescale {
		// Without TimescaleDB nothing is published by schema: the owner of the tables
		// may publish them, and set their replica identities.
		var names []string
		for _, t := range r.plan.Tables {
			names = append(names, pgx.Identifier{t.Schema, t.Name}.Sanitize())
		}
		rows, _ := e.src.Query(ctx, sqlNotOwned, names)
		var s, n string
		if _, err := pgx.ForEachRow(rows, []any{&s, &n}, func() error {
			r.notOwned = append(r.notOwned, inventory.DisplayName(s, n))
			return nil
		}); err != nil {
			return fmt.Errorf("list the tables %s does not own: %w", u.Name, err)
		}
	}
	if (u.Superuser || u.Replication) && r.maxSenders > r.senders {
		// Only the walsender's start-up is tried: IDENTIFY_SYSTEM changes nothing.
		r.triedReplConn = true
		conn, err := e.srcCfg.ConnectReplication(ctx, nil)
		if err == nil {
			err = conn.Exec(ctx, "IDENTIFY_SYSTEM").Close()
			conn.Close(context.WithoutCancel(ctx))
		}
		r.replConnErr = err
	}
	return nil
}

// databases is how many databases the migration moves from the source server.
func (e *env) databases() int { return max(e.opt.Databases, 1) }

func (e *env) checkWalLevel() []Finding {
	r := e.liveSrc
	if r.walLevel == "logical" {
		return []Finding{finding(Pass, "source", "wal_level = logical: the source's changes can be decoded and streamed", "")}
	}
	return []Finding{finding(Fail, "source",
		fmt.Sprintf("wal_level = %s: the source's WAL holds too little to decode its changes, and a logical replication slot cannot be created", r.walLevel),
		"on the source run ALTER SYSTEM SET wal_level = logical, then restart the server (on a managed service: turn on logical replication in its settings); or migrate without --live, freezing the source for the whole copy")}
}

func (e *env) checkLiveSlots() []Finding {
	r := e.liveSrc
	return e.capacity("makes one logical replication slot per database", "max_replication_slots", r.maxSlots, r.slots,
		"drop the slots nobody reads (see replication-slots), or raise max_replication_slots to %d or more on the source and restart it")
}

func (e *env) checkWalSenders() []Finding {
	r := e.liveSrc
	return e.capacity("streams each database's changes through one replication connection, a WAL sender", "max_wal_senders", r.maxSenders, r.senders,
		"raise max_wal_senders to %d or more on the source and restart it, or end replication connections nobody needs")
}

// capacity checks that the source server's setting, of which used are in use now,
// leaves one free for each database migrated; doFormat takes the value to raise it to.
func (e *env) capacity(what, setting string, limit, used int, doFormat string) []Finding {
	need := e.databases()
	free := limit - used
	saw := fmt.Sprintf("a live migration %s (%d); the source server has %s = %d, %d in use, %d free", what, need, setting, limit, used, max(free, 0))
	if free >= need {
		return []Finding{finding(Pass, "source", saw, "")}
	}
	return []Finding{finding(Fail, "source", saw+": too few", fmt.Sprintf(doFormat, used+need))}
}

// checkReplicationRight: the slot is created and read through a replication
// connection, which only a superuser or a role with REPLICATION may open.
func (e *env) checkReplicationRight() []Finding {
	r, u := e.liveSrc, e.srcInv.User
	if !u.Superuser && !u.Replication {
		return []Finding{finding(Fail, "source",
			fmt.Sprintf("%s is neither a superuser nor has REPLICATION: it may not open the replication connection that creates the slot and streams the changes", u.Name),
			fmt.Sprintf("as a superuser: ALTER ROLE %s REPLICATION; or connect to the source as a superuser", inventory.Ident(u.Name)))}
	}
	why := "is a superuser"
	if !u.Superuser {
		why = "has REPLICATION"
	}
	saw := fmt.Sprintf("%s %s: it may open a replication connection", u.Name, why)
	switch {
	case !r.triedReplConn:
		saw += " (not tried: no WAL sender free, see live-wal-senders)"
	case r.replConnErr != nil:
		return []Finding{finding(Fail, "source",
			saw+", but the source refuses one: "+dbconn.Reason(r.replConnErr),
			"make the source accept a replication connection (replication=database) from this user and this machine: the error says what stops it")}
	default:
		saw += " (one opened and closed)"
	}
	return []Finding{finding(Pass, "source", saw, "")}
}

// checkPublish: live.Start publishes TimescaleDB's chunk schemas FOR TABLES IN SCHEMA
// (so that chunks created during the migration are streamed too), which PostgreSQL
// lets only a superuser do, and the plain tables by name, which their owner may do.
func (e *env) checkPublish() []Finding {
	r, u := e.liveSrc, e.srcInv.User
	if u.Superuser {
		return []Finding{finding(Pass, "source", fmt.Sprintf("%s is a superuser: it may create the publication and set replica identities", u.Name), "")}
	}
	if r.plan.Timescale {
		return []Finding{finding(Fail, "source",
			fmt.Sprintf("a live migration publishes TimescaleDB's chunk schemas (%s) as a whole, so that the rows of chunks created during the migration are streamed too; PostgreSQL lets only a superuser publish FOR TABLES IN SCHEMA, and %s is not one",
				strings.Join(r.plan.ChunkSchemas, ", "), u.Name),
			"connect to the source as a superuser for a live migration; where no superuser is to be had (a managed service), migrate without --live: the source is frozen for the whole copy")}
	}
	var fails, dos []string
	if !u.CanCreate {
		fails = append(fails, fmt.Sprintf("%s may not create a publication in %s (no CREATE on the database)", u.Name, e.srcInv.Name))
		dos = append(dos, fmt.Sprintf("GRANT CREATE ON DATABASE %s TO %s", inventory.Ident(e.srcInv.Name), inventory.Ident(u.Name)))
	}
	if len(r.notOwned) > 0 {
		fails = append(fails, fmt.Sprintf("%s may publish only the tables it owns, and does not own %s", u.Name, list(r.notOwned)))
		dos = append(dos, "connect as their owner or a superuser")
	}
	if len(fails) > 0 {
		return []Finding{finding(Fail, "source", strings.Join(fails, "; "), strings.Join(dos, "; "))}
	}
	return []Finding{finding(Pass, "source", fmt.Sprintf("%s may create a publication in %s and owns the %s it publishes", u.Name, e.srcInv.Name, plural(len(r.plan.Tables), "table", "tables")), "")}
}

// checkReplicaIdentity: once a table is published, PostgreSQL refuses its UPDATE and
// DELETE at once unless it has a replica identity (a primary key, by default). Those
// without are listed (live.Plan.Missing); --replica-identity-full sets FULL on them
// for the migration and puts back what was there at its end.
func (e *env) checkReplicaIdentity() []Finding {
	p := e.liveSrc.plan
	published := plural(len(p.Tables), "table", "tables")
	if p.Timescale {
		published += " and " + plural(len(p.Hypertables), "hypertable", "hypertables")
	}
	own := ""
	if n := len(p.Identity); n > 0 {
		var names []string
		for _, c := range p.Identity {
			what := map[string]string{"materialization": "continuous aggregate materialization ", "timescaledb": "TimescaleDB's "}[c.Kind]
			names = append(names, what+c.Table.String())
		}
		own = fmt.Sprintf("; the migration also sets a replica identity on %s: %s, and puts it back at its end", plural(n, "table", "tables"), list(names))
	}
	if len(p.Missing) == 0 {
		note := ""
		if e.opt.ReplicaIdentityFull {
			note = "; --replica-identity-full has nothing to do"
		}
		return []Finding{finding(Pass, "source", fmt.Sprintf("every one of the %s published has a primary key or a replica identity%s%s", published, own, note), "")}
	}
	var names []string
	for _, c := range p.Missing {
		names = append(names, c.Kind+" "+c.Table.String())
	}
	missing := fmt.Sprintf("of the %s published, %d %s neither a primary key nor a replica identity: %s",
		published, len(p.Missing), map[bool]string{true: "has", false: "have"}[len(p.Missing) == 1], list(names))
	if !e.opt.ReplicaIdentityFull {
		return []Finding{finding(Fail, "source",
			missing+"; once published, their UPDATE and DELETE would fail on the source"+own,
			"add a primary key to each, or run with --replica-identity-full (tsmigrate sets REPLICA IDENTITY FULL on them for the migration and puts back what was there at its end)")}
	}
	return []Finding{finding(Warn, "source",
		missing+"; --replica-identity-full sets REPLICA IDENTITY FULL on them for the migration and puts back what was there at its end"+own,
		"expect their UPDATE and DELETE to write the whole old row to the source's WAL, and each to be found by all its columns on the target (slow on a large table without an index): a primary key avoids both")}
}
