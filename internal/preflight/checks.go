package preflight

import (
	"fmt"
	"slices"
	"strings"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/inventory"
)

// listMax is how many names a finding lists before "and N more".
const listMax = 10

func list(names []string) string {
	if len(names) <= listMax {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:listMax], ", "), len(names)-listMax)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// HumanBytes renders a byte count for people: 1.5 GB (powers of 1024).
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "KMGTPE"[exp])
}

func (e *env) checkConnect() []Finding {
	var out []Finding
	for _, s := range []struct {
		cfg  *dbconn.Config
		conn *dbconn.Conn
		inv  *inventory.Database
	}{{e.srcCfg, e.src, e.srcInv}, {e.tgtCfg, e.tgt, e.tgtInv}} {
		tls := "without TLS"
		if s.conn.TLS {
			tls = "over TLS"
		}
		saw := fmt.Sprintf("logged in to %s %s, PostgreSQL %s", s.cfg, tls, s.inv.Server.Version)
		if s.inv.Server.InRecovery {
			out = append(out, finding(Fail, s.cfg.Role, saw+", but the server is a standby (in recovery): it cannot be frozen or written to",
				"connect to the primary server"))
			continue
		}
		if w := s.cfg.Warnings(s.conn); len(w) > 0 {
			out = append(out, finding(Warn, s.cfg.Role, saw, strings.Join(w, "; ")))
			continue
		}
		out = append(out, finding(Pass, s.cfg.Role, saw, ""))
	}
	return out
}

func (e *env) checkMajor() []Finding {
	s, t := e.srcInv.Server, e.tgtInv.Server
	if s.Major == t.Major {
		return []Finding{finding(Pass, "both", fmt.Sprintf("both run PostgreSQL %d (source %s, target %s)", s.Major, s.Version, t.Version), "")}
	}
	return []Finding{finding(Fail, "both",
		fmt.Sprintf("source runs PostgreSQL %d (%s), target PostgreSQL %d (%s): the majors differ", s.Major, s.Version, t.Major, t.Version),
		majorAdvice(s.Major, t.Major))}
}

func majorAdvice(src, tgt int) string {
	if tgt > src {
		return fmt.Sprintf("use a target running PostgreSQL %d, or upgrade the source to %d first (pg_upgrade), then migrate", src, tgt)
	}
	return fmt.Sprintf("use a target running PostgreSQL %d: a dump cannot be restored into an older major", src)
}

func (e *env) checkTimescaleVersion() []Finding {
	ts := e.srcInv.TimescaleDB
	if ts == nil {
		return []Finding{finding(Pass, "source", "the source database does not use TimescaleDB", "")}
	}
	if in := e.tgtInv.TimescaleDB; in != nil {
		if in.Version == ts.Version {
			return []Finding{finding(Pass, "target", fmt.Sprintf("TimescaleDB %s is installed on both", ts.Version), "")}
		}
		return []Finding{finding(Fail, "target",
			fmt.Sprintf("source uses TimescaleDB %s; the target database already has %s installed", ts.Version, in.Version),
			fmt.Sprintf("on the empty target database run DROP EXTENSION timescaledb; CREATE EXTENSION timescaledb VERSION '%s' (or update the source to %s first)", ts.Version, in.Version))}
	}
	versions, ok := e.tgtInv.AvailableVersions("timescaledb")
	if !ok {
		return []Finding{finding(Fail, "target",
			fmt.Sprintf("source uses TimescaleDB %s; the target server does not offer TimescaleDB at all", ts.Version),
			fmt.Sprintf("install TimescaleDB %s on the target server (shared_preload_libraries = 'timescaledb'), or pick a target that has it", ts.Version))}
	}
	if !slices.Contains(versions, ts.Version) {
		return []Finding{finding(Fail, "target",
			fmt.Sprintf("source uses TimescaleDB %s; the target server offers only %s", ts.Version, list(versions)),
			fmt.Sprintf("install TimescaleDB %s on the target server, or update the source's extension to a version the target offers (ALTER EXTENSION timescaledb UPDATE TO '...')", ts.Version))}
	}
	if e.probe.extensionErr != nil {
		return []Finding{finding(Fail, "target",
			fmt.Sprintf("the target offers TimescaleDB %s, but CREATE EXTENSION timescaledb VERSION '%s' fails for %s: %s",
				ts.Version, ts.Version, e.tgtInv.User.Name, dbconn.Reason(e.probe.extensionErr)),
			"connect to the target as a user that may create the extension (its database owner or a superuser), or create it there beforehand")}
	}
	saw := fmt.Sprintf("source uses TimescaleDB %s; the target server offers it", ts.Version)
	if e.probe.triedExtension {
		saw += " (CREATE EXTENSION tried in a rolled-back transaction)"
	}
	return []Finding{finding(Pass, "target", saw, "")}
}

// targetLicense is the target's TimescaleDB license, from the installed extension or
// the probe; "" when unknown.
func (e *env) targetLicense() string {
	if e.tgtInv.TimescaleDB != nil && e.tgtInv.TimescaleDB.License != "" {
		return e.tgtInv.TimescaleDB.License
	}
	return e.probe.license
}

func (e *env) checkEdition() []Finding {
	if e.srcInv.TimescaleDB == nil {
		return []Finding{finding(Pass, "source", "the source database does not use TimescaleDB", "")}
	}
	var uses []string
	compressed := 0
	for _, h := range e.srcInv.Hypertables {
		if h.CompressionEnabled || h.CompressedChunks > 0 {
			compressed++
		}
	}
	if compressed > 0 {
		uses = append(uses, "compression on "+plural(compressed, "hypertable", "hypertables"))
	}
	if n := len(e.srcInv.ContinuousAggregates); n > 0 {
		uses = append(uses, plural(n, "continuous aggregate", "continuous aggregates"))
	}
	if n := len(e.srcInv.UserJobs()); n > 0 {
		uses = append(uses, plural(n, "job", "jobs")+" (policies or add_job)")
	}
	lic := e.targetLicense()
	if len(uses) == 0 {
		return []Finding{finding(Pass, "both", "the source uses no compression, continuous aggregates or jobs: either TimescaleDB edition can hold it", "")}
	}
	switch lic {
	case "timescale":
		return []Finding{finding(Pass, "target", fmt.Sprintf("the source uses %s; the target runs the full (Timescale License) build", strings.Join(uses, ", ")), "")}
	case "apache":
		return []Finding{finding(Fail, "target",
			fmt.Sprintf("the source uses %s; the target's TimescaleDB is the Apache-2 build (timescaledb.license = apache), which cannot read compressed chunks or run continuous aggregates and jobs: that data would be unreadable or lost",
				strings.Join(uses, ", ")),
			"use a target with the full TimescaleDB build (timescaledb.license = timescale), as managed services provide")}
	}
	return []Finding{finding(Warn, "target",
		fmt.Sprintf("the source uses %s; the target's TimescaleDB edition could not be read", strings.Join(uses, ", ")),
		"make sure the target runs the full TimescaleDB build: SHOW timescaledb.license must say timescale")}
}

func (e *env) checkTargetEmpty() []Finding {
	t := e.tgtInv
	var objs []string
	for _, s := range t.Schemas {
		if s.Name != "public" {
			objs = append(objs, "schema "+s.Name)
		}
	}
	for _, tb := range t.Tables {
		kind := tb.Kind
		if tb.Hypertable {
			kind = "hypertable"
		}
		objs = append(objs, kind+" "+inventory.DisplayName(tb.Schema, tb.Name))
	}
	for _, s := range t.Sequences {
		objs = append(objs, "sequence "+inventory.DisplayName(s.Schema, s.Name))
	}
	for _, o := range append(slices.Clone(t.Routines), t.Types...) {
		objs = append(objs, o.Kind+" "+inventory.DisplayName(o.Schema, o.Name))
	}
	if t.LargeObjects > 0 {
		objs = append(objs, plural(int(t.LargeObjects), "large object", "large objects"))
	}
	if len(objs) == 0 {
		return []Finding{finding(Pass, "target", fmt.Sprintf("the target database %s holds no user objects", t.Name), "")}
	}
	return []Finding{finding(Fail, "target",
		fmt.Sprintf("the target database %s is not empty: %s", t.Name, list(objs)),
		"restore into an empty database: drop these objects (or the database) first, or name another target database")}
}

func (e *env) checkExtensions() []Finding {
	var missing, versions []string
	for _, x := range e.srcInv.Extensions {
		if x.Name == "plpgsql" || x.Name == "timescaledb" {
			continue // always there; TimescaleDB has its own checks
		}
		avail, ok := e.tgtInv.AvailableVersions(x.Name)
		switch {
		case !ok:
			missing = append(missing, x.Name)
		case !slices.Contains(avail, x.Version):
			versions = append(versions, fmt.Sprintf("%s %s (target offers %s)", x.Name, x.Version, list(avail)))
		}
	}
	switch {
	case len(missing) > 0:
		return []Finding{finding(Fail, "target",
			fmt.Sprintf("the source uses extensions the target server does not offer: %s", strings.Join(missing, ", ")),
			"install them on the target server (for Debian: postgresql-NN-<name> or contrib), or drop them on the source if nothing uses them")}
	case len(versions) > 0:
		return []Finding{finding(Warn, "target",
			fmt.Sprintf("extension versions differ: %s", strings.Join(versions, "; ")),
			"the restore creates each extension at the target's default version; check that nothing depends on the source's version")}
	}
	n := len(e.srcInv.Extensions)
	return []Finding{finding(Pass, "target", fmt.Sprintf("the target offers every extension the source uses (%s)", plural(n, "extension", "extensions")), "")}
}

func (e *env) checkSize() []Finding {
	size := e.srcInv.Bytes
	return []Finding{finding(Warn, "target",
		fmt.Sprintf("the source database %s takes %s; PostgreSQL does not report the target's free disk space", e.srcInv.Name, HumanBytes(size)),
		fmt.Sprintf("provision at least %s on the target, plus room for WAL and index builds during the restore", HumanBytes(size)))}
}

// catalogTables is about how many TimescaleDB catalog and configuration tables pg_dump
// also locks (2.19.3 has 31; later versions fewer).
const catalogTables = 40

func (e *env) checkDumpLocks() []Finding {
	s := e.srcInv
	n := len(s.Chunks)
	for _, t := range s.Tables {
		if t.Kind == "table" || t.Kind == "partitioned table" {
			n++
		}
	}
	for _, h := range s.Hypertables {
		n += h.CompressedChunks // each compressed chunk has an internal table holding its data
	}
	if s.TimescaleDB != nil {
		n += catalogTables
	}
	capacity := s.Server.LockCapacity()
	conns := s.Server.MaxConnections + s.Server.MaxPreparedXacts
	need := (2*n + conns - 1) / conns
	saw := fmt.Sprintf("pg_dump locks every table it dumps in one transaction: about %d on the source; the lock table is sized for %d (max_locks_per_transaction %d × (max_connections %d + max_prepared_transactions %d))",
		n, capacity, s.Server.MaxLocksPerTransaction, s.Server.MaxConnections, s.Server.MaxPreparedXacts)
	if n <= capacity {
		return []Finding{finding(Pass, "source", saw, "")}
	}
	// Not a failure: the lock table borrows spare shared memory beyond its size (pg_dump
	// 17 dumped 10 000 chunks with the defaults here), but how far that goes depends on
	// the server and on other sessions.
	return []Finding{finding(Warn, "source", saw+": the dump may fail with \"out of shared memory\"",
		fmt.Sprintf("set max_locks_per_transaction = %d (or more) on the source and restart it before the migration", need))}
}

func (e *env) checkSourceRead() []Finding {
	s := e.srcInv
	var denied []string
	for _, t := range s.Tables {
		if !t.Readable {
			denied = append(denied, inventory.DisplayName(t.Schema, t.Name))
		}
	}
	for _, q := range s.Sequences {
		if !q.Readable {
			denied = append(denied, "sequence "+inventory.DisplayName(q.Schema, q.Name))
		}
	}
	chunks := 0
	for _, c := range s.Chunks {
		if !c.Readable {
			chunks++
		}
	}
	if chunks > 0 {
		denied = append(denied, plural(chunks, "chunk", "chunks"))
	}
	if len(denied) > 0 {
		return []Finding{finding(Fail, "source",
			fmt.Sprintf("%s cannot read: %s", s.User.Name, list(denied)),
			fmt.Sprintf("connect as the owner of the data or a superuser, or GRANT SELECT on them (and on future chunks) to %s", s.User.Name))}
	}
	return []Finding{finding(Pass, "source", fmt.Sprintf("%s can read all %s, %s and %s",
		s.User.Name, plural(len(s.Tables), "table", "tables"), plural(len(s.Sequences), "sequence", "sequences"),
		plural(len(s.Chunks), "chunk", "chunks")), "")}
}

func (e *env) checkFreeze() []Finding {
	u := e.srcInv.User
	db := e.srcInv.Name
	switch {
	case u.Superuser:
		return []Finding{finding(Pass, "source", fmt.Sprintf("%s is a superuser: it may ALTER DATABASE %s to freeze writes", u.Name, db), "")}
	case u.OwnsDatabase:
		return []Finding{finding(Pass, "source", fmt.Sprintf("%s owns %s (owner %s): it may ALTER DATABASE %s to freeze writes", u.Name, db, u.DatabaseOwner, db), "")}
	}
	return []Finding{finding(Fail, "source",
		fmt.Sprintf("%s is neither a superuser nor the owner of %s (owner %s): it cannot ALTER DATABASE %s SET default_transaction_read_only", u.Name, db, u.DatabaseOwner, db),
		fmt.Sprintf("connect to the source as %s or a superuser, or GRANT %s TO %s", u.DatabaseOwner, u.DatabaseOwner, u.Name))}
}

func (e *env) checkTerminate() []Finding {
	u := e.srcInv.User
	if u.Superuser || u.SignalBackend {
		why := "a superuser"
		if !u.Superuser {
			why = "a member of pg_signal_backend"
		}
		return []Finding{finding(Pass, "source", fmt.Sprintf("%s is %s: a freeze can end other sessions of %s", u.Name, why, e.srcInv.Name), "")}
	}
	var others []string
	for _, s := range e.srcInv.Activity.Sessions {
		if s.User != u.Name && !slices.Contains(others, s.User) {
			others = append(others, s.User)
		}
	}
	saw := fmt.Sprintf("%s may end only sessions of roles it is a member of (not a superuser, not in pg_signal_backend)", u.Name)
	if len(others) > 0 {
		saw += "; sessions of " + list(others) + " are connected now"
	}
	return []Finding{finding(Warn, "source", saw,
		fmt.Sprintf("GRANT pg_signal_backend TO %s, or freeze with --no-terminate and let those sessions finish", u.Name))}
}

func (e *env) checkTargetCreate() []Finding {
	p := e.probe
	u := e.tgtInv.User.Name
	switch {
	case !p.ran:
		return []Finding{finding(Fail, "target", "the target is a standby: nothing can be created there", "connect to the primary server")}
	case p.triedSchema && p.createSchemaErr != nil:
		return []Finding{finding(Fail, "target",
			fmt.Sprintf("%s cannot create schemas in %s: %s", u, e.tgtInv.Name, dbconn.Reason(p.createSchemaErr)),
			fmt.Sprintf("GRANT CREATE ON DATABASE %s TO %s, or connect as the database owner", e.tgtInv.Name, u))}
	case p.triedTable && p.createTableErr != nil:
		return []Finding{finding(Fail, "target",
			fmt.Sprintf("%s cannot create tables in schema public: %s", u, dbconn.Reason(p.createTableErr)),
			fmt.Sprintf("GRANT CREATE ON SCHEMA public TO %s, or connect as the database owner", u))}
	case !p.triedTable && !e.tgtInv.User.CanCreate:
		return []Finding{finding(Fail, "target",
			fmt.Sprintf("the target has no schema public and %s may not create schemas in %s", u, e.tgtInv.Name),
			fmt.Sprintf("GRANT CREATE ON DATABASE %s TO %s", e.tgtInv.Name, u))}
	}
	return []Finding{finding(Pass, "target", fmt.Sprintf("%s can create objects in %s (tried in a rolled-back transaction)", u, e.tgtInv.Name), "")}
}

func (e *env) checkRestoreMode() []Finding {
	p := e.probe
	u := e.tgtInv.User.Name
	switch {
	case e.srcInv.TimescaleDB == nil:
		return []Finding{finding(Pass, "target", "the source does not use TimescaleDB: no restoring mode is needed", "")}
	case !p.triedRestoring:
		return []Finding{finding(Warn, "target", "not tried: TimescaleDB could not be set up on the target (see timescaledb-version)", "fix timescaledb-version first")}
	case e.tgtInv.User.Superuser:
		return []Finding{finding(Pass, "target", fmt.Sprintf("%s is a superuser: it may run timescaledb_pre_restore() and timescaledb_post_restore()", u), "")}
	case p.preRestoreErr == nil:
		return []Finding{finding(Pass, "target", fmt.Sprintf("timescaledb_pre_restore() works for %s (tried in a rolled-back transaction)", u), "")}
	}
	pre := fmt.Sprintf("timescaledb_pre_restore() fails for %s: %s", u, dbconn.Reason(p.preRestoreErr))
	switch {
	case p.setErr != nil:
		return []Finding{finding(Fail, "target",
			fmt.Sprintf("%s; and SET timescaledb.restoring fails too: %s", pre, dbconn.Reason(p.setErr)),
			fmt.Sprintf("connect to the target as a superuser, or have one run GRANT SET ON PARAMETER timescaledb.restoring TO %s", u))}
	case p.alterErr != nil:
		return []Finding{finding(Warn, "target",
			fmt.Sprintf("%s; %s may SET timescaledb.restoring in its own sessions but not ALTER DATABASE %s SET it: %s", pre, u, e.tgtInv.Name, dbconn.Reason(p.alterErr)),
			"tsmigrate sets restoring mode in every restore session itself; TimescaleDB's background workers keep running on the target during the restore")}
	}
	return []Finding{finding(Warn, "target",
		fmt.Sprintf("%s; %s may set timescaledb.restoring itself (GRANT SET ON PARAMETER)", pre, u),
		"tsmigrate turns restoring mode on with ALTER DATABASE ... SET timescaledb.restoring instead; background workers already running on the target database are not stopped (harmless on an empty database)")}
}

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
		"expect them to be paused during the dump (alter_job(id, scheduled => false)); they are restored with the database")}
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
