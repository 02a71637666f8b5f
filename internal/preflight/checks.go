package preflight

import (
	"fmt"
	"slices"
	"strings"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/inventory"
	"github.com/tsmigrate/tsmigrate/internal/schema"
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
	switch {
	case s.Major == t.Major:
		return []Finding{finding(Pass, "both", fmt.Sprintf("both run PostgreSQL %d (source %s, target %s)", s.Major, s.Version, t.Version), "")}
	case t.Major > s.Major:
		// A newer pg_dump reads the older server and writes what the newer one
		// restores (pgtools picks the target's major).
		return []Finding{finding(Pass, "both", fmt.Sprintf("upgrade from PostgreSQL %d (%s) to PostgreSQL %d (%s): the schema goes through pg_dump/pg_restore %d",
			s.Major, s.Version, t.Major, t.Version, t.Major), "")}
	}
	return []Finding{finding(Fail, "both",
		fmt.Sprintf("source runs PostgreSQL %d (%s), target PostgreSQL %d (%s): a migration cannot go to an older major", s.Major, s.Version, t.Major, t.Version),
		fmt.Sprintf("use a target running PostgreSQL %d or newer: a dump cannot be restored into an older major", s.Major))}
}

func (e *env) checkTimescaleVersion() []Finding {
	ts := e.srcInv.TimescaleDB
	if ts == nil {
		return []Finding{finding(Pass, "source", "the source database does not use TimescaleDB", "")}
	}
	plan := e.tsPlan
	// tsmigrate creates the extension on the target in the source's schema; one
	// installed in another schema would end the copy with the extension elsewhere than
	// on the source (verify tells, after the whole copy).
	create := strings.Join(schema.TimescaleDBStatements(ts.Schema, ts.Version), "; ")
	if in := e.tgtInv.TimescaleDB; in != nil && in.Schema != ts.Schema {
		return []Finding{finding(Fail, "target",
			fmt.Sprintf("the target database has TimescaleDB installed in schema %s, the source in %s", in.Schema, ts.Schema),
			"on the empty target database run DROP EXTENSION timescaledb; "+create)}
	}
	if plan.Problem != "" {
		return []Finding{finding(Fail, "target", plan.Problem, plan.Do)}
	}
	var saw string
	switch {
	case plan.Upgrade():
		where := "the target's default version"
		if plan.Installed {
			where = "installed in the target database"
		}
		saw = fmt.Sprintf("upgrade from TimescaleDB %s to %s%s (%s)", ts.Version, plan.Version, inSchema(ts.Schema), where)
		if e.opt.Engine == EngineDump {
			return []Finding{finding(Fail, "target",
				saw+": the dump engine cannot cross TimescaleDB versions (pg_restore restores TimescaleDB's catalog, which fits only the version that wrote it)",
				"use --engine stream: it restores through TimescaleDB's API, which crosses versions")}
		}
		saw += ": through TimescaleDB's API, as its catalog cannot cross versions"
	case plan.Installed:
		saw = fmt.Sprintf("TimescaleDB %s is installed on both%s", ts.Version, inSchema(ts.Schema))
	default:
		saw = fmt.Sprintf("source uses TimescaleDB %s%s; the target server offers it", ts.Version, inSchema(ts.Schema))
	}
	if e.probe.extensionErr != nil {
		return []Finding{finding(Fail, "target",
			fmt.Sprintf("the target offers TimescaleDB %s, but %s fails for %s: %s",
				plan.Version, e.probe.extensionSQL, e.tgtInv.User.Name, dbconn.Reason(e.probe.extensionErr)),
			"connect to the target as a user that may create the extension (its database owner or a superuser), or create it there beforehand: "+
				strings.Join(schema.TimescaleDBStatements(ts.Schema, plan.Version), "; "))}
	}
	if e.probe.triedExtension {
		saw += " (CREATE EXTENSION tried in a rolled-back transaction)"
	}
	return []Finding{finding(Pass, "target", saw, "")}
}

// inSchema names the extension's schema in a finding when it is not the usual public.
func inSchema(s string) string {
	if s == "public" {
		return ""
	}
	return " in schema " + s
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
		// public, and the schema TimescaleDB is installed in (its objects are the
		// extension's), are what tsmigrate would create itself.
		if s.Name != "public" && (t.TimescaleDB == nil || s.Name != t.TimescaleDB.Schema) {
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
	extra, other, own, newer := e.targetExtensions()
	var fails, dos []string
	if len(missing) > 0 {
		fails = append(fails, "the source uses extensions the target server does not offer: "+strings.Join(missing, ", "))
		dos = append(dos, "install them on the target server (for Debian: postgresql-NN-<name> or contrib), or drop them on the source if nothing uses them")
	}
	if len(extra)+len(other) > 0 {
		var what []string
		if len(extra) > 0 {
			what = append(what, "extensions the source database does not have: "+strings.Join(extra, ", "))
		}
		if len(other) > 0 {
			what = append(what, "extensions at another version than the source's: "+strings.Join(other, ", "))
		}
		fails = append(fails, "the target database already has "+strings.Join(what, "; and ")+
			"; the restore leaves them as they are (it creates an extension only where there is none), and verify would report them")
		dos = append(dos, "on the target database, DROP EXTENSION those the migration does not need (or ALTER EXTENSION ... UPDATE TO the source's version), or pick a target database without them")
	}
	ownNote := ""
	if len(own) > 0 {
		ownNote = fmt.Sprintf("; the target database's own %s (installed by managed services in every database, holding no data) stays as it is, and verify leaves it out", strings.Join(own, ", "))
	}
	if len(newer) > 0 {
		ownNote += fmt.Sprintf("; the target database has newer versions than the source's of %s: an upgrade on the way, which verify says as such", strings.Join(newer, ", "))
	}
	switch {
	case len(fails) > 0:
		return []Finding{finding(Fail, "target", strings.Join(fails, "; ")+ownNote, strings.Join(dos, "; "))}
	case len(versions) > 0:
		return []Finding{finding(Warn, "target",
			fmt.Sprintf("extension versions differ: %s%s", strings.Join(versions, "; "), ownNote),
			"the restore creates each extension at the target's default version; check that nothing depends on the source's version")}
	}
	n := len(e.srcInv.Extensions)
	return []Finding{finding(Pass, "target", fmt.Sprintf("the target offers every extension the source uses (%s)%s", plural(n, "extension", "extensions"), ownNote), "")}
}

// targetExtensions sorts the extensions installed in the target database that the
// source's lacks or has at another version: extra and other (with versions) would
// stay so after the restore, which creates an extension only where it is missing, and
// verify would report them; newer (a newer version than the source's) stays so too,
// an upgrade that verify reports as one, not as a difference; own are those a managed
// service installs in every database (schema.PlatformExtension), which pre-flight and
// verify leave to the target.
func (e *env) targetExtensions() (extra, other, own, newer []string) {
	src := map[string]string{}
	for _, x := range e.srcInv.Extensions {
		src[x.Name] = x.Version
	}
	for _, x := range e.tgtInv.Extensions {
		v, on := src[x.Name]
		switch {
		case x.Name == "plpgsql" || x.Name == "timescaledb" || (on && v == x.Version):
			// always there; TimescaleDB has its own checks
		case schema.PlatformExtension(x.Name):
			own = append(own, x.Name)
		case !on:
			extra = append(extra, x.Name+" "+x.Version)
		case isNewer(x.Version, v):
			newer = append(newer, fmt.Sprintf("%s %s (the source's: %s)", x.Name, x.Version, v))
		default:
			other = append(other, fmt.Sprintf("%s %s (the source's: %s)", x.Name, x.Version, v))
		}
	}
	return extra, other, own, newer
}

// isNewer says whether extension version a is newer than b.
func isNewer(a, b string) bool {
	c, ok := schema.CompareVersions(a, b)
	return ok && c > 0
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

// checkCompressedDefaults: the rows of a compressed chunk read the default of a column
// added after it was compressed from the chunk's catalog (pg_attribute.attmissingval),
// which pg_dump does not carry; the migration sets it on the target's chunks, which
// only a superuser may do (see package migrate, carryMissingValues).
func (e *env) checkCompressedDefaults() []Finding {
	chunks := 0
	var hypertables []string
	seen := map[string]bool{}
	for _, c := range e.srcInv.Chunks {
		if c.MissingDefaults == 0 {
			continue
		}
		chunks++
		if h := inventory.DisplayName(c.HypertableSchema, c.HypertableName); !seen[h] {
			seen[h] = true
			hypertables = append(hypertables, h)
		}
	}
	if chunks == 0 {
		return []Finding{finding(Pass, "source", "no compressed chunk reads a column's default from its catalog", "")}
	}
	saw := fmt.Sprintf("%s of %s read the defaults of columns added after they were compressed from the chunk's catalog (pg_attribute.attmissingval), which pg_dump does not carry",
		plural(chunks, "compressed chunk", "compressed chunks"), list(hypertables))
	u := e.tgtInv.User.Name
	switch {
	case e.probe.path.Path == schema.PathAPI && e.probe.path.Problem == "":
		return []Finding{finding(Pass, "target", saw+"; the catalog-less path copies those rows decompressed, with their values, and compresses them again", "")}
	case e.tgtInv.User.Superuser:
		return []Finding{finding(Pass, "target", fmt.Sprintf("%s; %s is a superuser: the migration gives them to the target's chunks", saw, u), "")}
	}
	return []Finding{finding(Fail, "target",
		fmt.Sprintf("%s; only a superuser may give them to the target's chunks, and %s is not one: those rows would read NULL", saw, u),
		"migrate as a superuser on the target, or on the source first decompress and compress those chunks again (SELECT decompress_chunk(c), then compress_chunk(c)), which stores the values in their compressed data")}
}
