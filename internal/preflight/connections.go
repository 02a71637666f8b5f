package preflight

import (
	"fmt"

	"github.com/tsmigrate/tsmigrate/internal/inventory"
)

// sessionsBeside is how many sessions a migration opens on each server besides one per
// job: the copy's snapshot and control sessions, or pg_dump's leader; the freeze's
// proof; the run's own. Measured with --jobs 4 and 8 (every shape of the migrate tests,
// sampling pg_stat_activity every 5 ms): the source held at most jobs + 1 client
// sessions with either engine, the target jobs + 1 (dump) and jobs + 4 (stream).
const sessionsBeside = 3

// liveSessions is how many client sessions a live migration opens on each server
// besides those of an offline one, for the whole run (package live): on the source the
// transaction that holds the slot's snapshot (Stream) and the Receiver's session that
// samples the WAL the slot retains; on the target the Receiver's session that keeps the
// changes and the Applier's. Its replication connection is a WAL sender, which
// PostgreSQL counts apart from max_connections (live-wal-senders checks it).
const liveSessions = 2

// sessionsNeeded is how many client sessions a migration with jobs jobs and engine
// (live or not) opens at most on the source and on the target. The stream engine
// restores the rest of post-data (pg_restore --jobs) while it analyzes the tables
// built (--jobs more).
func sessionsNeeded(engine string, jobs int, live bool) (source, target int) {
	source, target = jobs+sessionsBeside, jobs+sessionsBeside
	if engine != EngineDump {
		target += jobs
	}
	if live {
		source, target = source+liveSessions, target+liveSessions
	}
	return source, target
}

// free is how many more client sessions the user of inv may open on its server once
// pre-flight's own session is closed; on the source, with those connected to its
// database now, which the freeze ends, when it may end them (end: an offline
// migration; a live one freezes only at the cut-over, after the copy, and the
// applications' sessions stay connected until then).
func free(inv *inventory.Database, end bool) int {
	n := inv.Server.FreeSessions(inv.User) + 1
	if end && (inv.User.Superuser || inv.User.SignalBackend) {
		n += inv.Server.ClientSessionsHere - 1
	}
	return n
}

// checkConnections fails when the migration's --jobs needs more client sessions than a
// server takes now (max_connections, less those reserved for superusers and
// pg_use_reserved_connections, less those in use): the run would fail on "too many
// clients" after the freeze. A source and target on one server share its sessions.
func (e *env) checkConnections() []Finding {
	jobs := e.opt.Jobs
	if jobs < 1 {
		return []Finding{finding(Pass, "both", "not checked: no --jobs given", "")}
	}
	live := e.opt.Live
	needS, needT := sessionsNeeded(e.opt.Engine, jobs, live)
	freeS, freeT := free(e.srcInv, !live), free(e.tgtInv, false)
	one := e.srcInv.Identity.SameServer(e.tgtInv.Identity)
	fits := func(j int) bool {
		s, t := sessionsNeeded(e.opt.Engine, j, live)
		if one {
			return s+t <= min(freeS, freeT)
		}
		return s <= freeS && t <= freeT
	}
	what := fmt.Sprintf("a migration with --jobs %d opens up to %d client sessions on the source and %d on the target", jobs, needS, needT)
	if live {
		what = fmt.Sprintf("a live migration with --jobs %d opens up to %d client sessions on the source (%d to keep its snapshot and stream its changes) and %d on the target (%d to keep and apply them), and a replication connection to the source (see live-wal-senders); the applications' sessions stay connected until the cut-over",
			jobs, needS, liveSessions, needT, liveSessions)
	}
	room := fmt.Sprintf("the source server takes %d more (%s), the target server %d more (%s)", freeS, sessionsNow(e.srcInv), freeT, sessionsNow(e.tgtInv))
	if one {
		room = fmt.Sprintf("both are on one server, which takes %d more (%s)", min(freeS, freeT), sessionsNow(e.srcInv))
	}
	if fits(jobs) {
		return []Finding{finding(Pass, "both", what+"; "+room, "")}
	}
	best := 0
	for j := jobs - 1; j >= 1; j-- {
		if fits(j) {
			best = j
			break
		}
	}
	do := "close sessions on the servers, or raise max_connections (a restart)"
	if best > 0 {
		do = fmt.Sprintf("migrate with --jobs %d or fewer; or %s", best, do)
	}
	when := " after the freeze"
	if live {
		when = ""
	}
	return []Finding{finding(Fail, "both", what+"; "+room+": too few, the run would fail on \"too many clients\""+when, do)}
}

// sessionsNow describes a server's sessions for a finding.
func sessionsNow(inv *inventory.Database) string {
	s := inv.Server
	d := fmt.Sprintf("max_connections %d, %d reserved for superusers", s.MaxConnections, s.SuperuserReserved)
	if s.Reserved > 0 {
		d += fmt.Sprintf(", %d for pg_use_reserved_connections", s.Reserved)
	}
	return d + fmt.Sprintf(", %d client sessions now", s.ClientSessions)
}
