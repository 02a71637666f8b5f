// Package preflight checks, before anything is changed, that a migration from a source
// database to a target database can work: both servers reachable, versions that fit,
// an empty target with the extensions and rights the restore needs, the rights to
// freeze the source, and what on the source is worth knowing before a freeze.
//
// With Options.Live, it also checks what a live migration needs of the source (see
// live.go): logical decoding, a free replication slot and WAL sender, the rights to
// replicate and publish, a replica identity on every table published.
//
// Each check is small (Check: Name, Run) and yields findings: pass, warn or fail, what it
// saw, and what to do. Preflight only reads, except for probes inside transactions that
// it rolls back (see targetProbe) and, with Live, a replication connection it opens and
// closes without a command that changes anything.
package preflight

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/inventory"
	"github.com/tsmigrate/tsmigrate/internal/schema"
)

// Status is the verdict of a finding.
type Status string

const (
	Pass Status = "pass"
	Warn Status = "warn" // worth knowing; does not block
	Fail Status = "fail" // blocks the migration
)

// Finding is one result of a check. The JSON names are part of tsmigrate's contract.
type Finding struct {
	Check  string `json:"check"`
	Status Status `json:"status"`
	Server string `json:"server"` // "source", "target" or "both"
	Saw    string `json:"saw"`
	Do     string `json:"do,omitempty"`
}

// Check is one pre-flight check.
type Check interface {
	Name() string
	Run(ctx context.Context) ([]Finding, error)
}

// Side sums up one server of the report.
type Side struct {
	Server      string `json:"server"` // user@host:port/database, no password
	PostgreSQL  string `json:"postgresql"`
	TimescaleDB string `json:"timescaledb,omitempty"` // installed version in the database
	License     string `json:"timescaledb_license,omitempty"`
	TLS         bool   `json:"tls"`
	Bytes       int64  `json:"database_bytes"`

	// Inventory is everything Load found, for callers that go on to migrate.
	Inventory *inventory.Database `json:"-"`
}

// Summary counts findings by status.
type Summary struct {
	Pass int `json:"pass"`
	Warn int `json:"warn"`
	Fail int `json:"fail"`
}

// Report is the outcome of Run.
type Report struct {
	Source     Side      `json:"source"`
	Target     Side      `json:"target"`
	Findings   []Finding `json:"findings"`
	Summary    Summary   `json:"summary"`
	DurationMS int64     `json:"duration_ms"`
}

// Failed says whether any check failed: the migration must not start.
func (r *Report) Failed() bool { return r.Summary.Fail > 0 }

// Options name the two servers, and say how the migration would restore.
type Options struct {
	Source, Target *dbconn.Config
	// Engine is the migration's engine, EngineDump or EngineStream ("" counts as
	// EngineDefault).
	Engine string
	// RestorePath is the migration's --restore-path ("" counts as schema.PathAuto).
	RestorePath schema.RestorePath
	// Roles: the migration carries roles (--roles; RolesUpdate: --roles-update). The
	// roles check says what it would do, having tried it.
	Roles, RolesUpdate bool
	// Jobs is the migration's --jobs, for the connections check (0: not checked).
	Jobs int
	// Live checks what a live migration (migrate --live, stream engine only) needs of
	// the source, and counts its sessions in the connections check.
	// ReplicaIdentityFull is its --replica-identity-full: tables published without a
	// primary key or replica identity then warn rather than fail.
	Live, ReplicaIdentityFull bool
	// Databases is how many databases the migration moves from the source server
	// (0 counts as 1): with Live, each takes a replication slot and a WAL sender.
	Databases int
}

// Engines, as migrate names them.
const (
	EngineDump   = "dump"
	EngineStream = "stream"
	// EngineDefault is the engine when none is given: to the library (Options with
	// no Engine, here and in migrate) as to tsmigrate's --engine.
	EngineDefault = EngineStream
)

// Run connects to both servers, reads their inventories, runs every check and returns
// the report. A server that cannot be reached or logged into makes Run return dbconn's
// *exit.Error (exit 2), the source's first when both fail, with the report
// NotConnected makes; other errors mean a check could not run at all.
func Run(ctx context.Context, opt Options) (*Report, error) {
	start := time.Now()
	if opt.Live && opt.Engine == EngineDump {
		return nil, exit.Usagef("use the stream engine", "a live migration needs the stream engine, not --engine %s", opt.Engine)
	}
	src, tgt, role, err := connectBoth(ctx, opt.Source, opt.Target)
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		return NotConnected(role, opt.Source, opt.Target, err), err
	}
	defer src.Close(context.WithoutCancel(ctx))
	defer tgt.Close(context.WithoutCancel(ctx))

	if opt.Engine == "" {
		opt.Engine = EngineDefault
	}
	if opt.RestorePath == "" {
		opt.RestorePath = schema.PathAuto
	}
	e := &env{opt: opt, srcCfg: opt.Source, tgtCfg: opt.Target, src: src, tgt: tgt}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) {
		e.srcInv, err = inventory.Load(gctx, src.Conn)
		if err != nil {
			return fmt.Errorf("source: %w", err)
		}
		return nil
	})
	g.Go(func() (err error) {
		e.tgtInv, err = inventory.Load(gctx, tgt.Conn)
		if err != nil {
			return fmt.Errorf("target: %w", err)
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if id := e.tgtInv.Identity; id.SameDatabase(e.srcInv.Identity) {
		// Nothing to check: a migration would freeze its own target (and migrate
		// refuses it the same way before anything changes).
		err := TargetIsSource(e.srcInv.Name, e.tgtInv.Name, opt.Target, id)
		return NotConnected("both", opt.Source, opt.Target, err), err
	}
	if ts := e.srcInv.TimescaleDB; ts != nil {
		e.tsPlan = e.planTimescaleDB(ts.Version)
	}
	if err := e.probeTarget(ctx); err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	if opt.Live {
		if err := e.readLive(ctx); err != nil {
			return nil, fmt.Errorf("source: %w", err)
		}
	}

	r := &Report{Source: side(opt.Source, src, e.srcInv), Target: side(opt.Target, tgt, e.tgtInv)}
	if r.Target.License == "" {
		r.Target.License = e.probe.license
	}
	for _, c := range e.checks() {
		fs, err := c.Run(ctx)
		if err != nil {
			return nil, fmt.Errorf("check %s: %w", c.Name(), err)
		}
		for _, f := range fs {
			f.Check = c.Name()
			f.Saw = dbconn.Redact(f.Saw)
			f.Do = dbconn.Redact(f.Do)
			r.Findings = append(r.Findings, f)
			switch f.Status {
			case Pass:
				r.Summary.Pass++
			case Warn:
				r.Summary.Warn++
			case Fail:
				r.Summary.Fail++
			}
		}
	}
	r.DurationMS = time.Since(start).Milliseconds()
	return r, nil
}

// NotConnected is the report of a pre-flight that could not start: role's connection
// string is malformed, or its server cannot be reached or logged into (err, an
// *exit.Error naming the server; no password in it). It holds one failed connect
// finding saying so. source and target may be nil (not parsed).
func NotConnected(role string, source, target *dbconn.Config, err error) *Report {
	saw, do := err.Error(), ""
	var e *exit.Error
	if errors.As(err, &e) {
		saw, do = e.Msg, e.Hint
	}
	r := &Report{Findings: []Finding{{Check: "connect", Status: Fail, Server: role, Saw: dbconn.Redact(saw), Do: dbconn.Redact(do)}},
		Summary: Summary{Fail: 1}}
	if source != nil {
		r.Source.Server = source.String()
	}
	if target != nil {
		r.Target.Server = target.String()
	}
	return r
}

// TargetIsSource refuses (exit 2) target database target, reached by cfg, that is the
// source database source itself: the same server (id) and the same database.
func TargetIsSource(source, target string, cfg *dbconn.Config, id inventory.Identity) error {
	return exit.Usagef("name another target database, or another server",
		"the target database %s (%s) is the source database %s itself: the same server (port %d, started %s) and the same database",
		target, cfg, source, id.Port, id.Started.UTC().Format(time.RFC3339))
}

// connectBoth connects to both servers; on failure it says which (the source when both fail).
func connectBoth(ctx context.Context, source, target *dbconn.Config) (src, tgt *dbconn.Conn, role string, err error) {
	var srcErr, tgtErr error
	var g errgroup.Group
	g.Go(func() error { src, srcErr = source.Connect(ctx); return nil })
	g.Go(func() error { tgt, tgtErr = target.Connect(ctx); return nil })
	g.Wait()
	if srcErr != nil || tgtErr != nil {
		if src != nil {
			src.Close(ctx)
		}
		if tgt != nil {
			tgt.Close(ctx)
		}
		if srcErr != nil {
			return nil, nil, source.Role, srcErr
		}
		return nil, nil, target.Role, tgtErr
	}
	return src, tgt, "", nil
}

func side(cfg *dbconn.Config, conn *dbconn.Conn, inv *inventory.Database) Side {
	s := Side{Server: cfg.String(), PostgreSQL: inv.Server.Version, TLS: conn.TLS, Bytes: inv.Bytes, Inventory: inv}
	if inv.TimescaleDB != nil {
		s.TimescaleDB = inv.TimescaleDB.Version
		s.License = inv.TimescaleDB.License
	}
	return s
}

// env is what the checks look at: both connections, configs, inventories and the
// result of the target probe.
type env struct {
	opt            Options
	srcCfg, tgtCfg *dbconn.Config
	src, tgt       *dbconn.Conn
	srcInv, tgtInv *inventory.Database
	probe          targetProbe
	// tsPlan is the target's TimescaleDB for the source's (when the source has it).
	tsPlan schema.TimescaleDBTarget
	// liveSrc is what the live checks read on the source (Options.Live).
	liveSrc liveSource
}

// planTimescaleDB picks the target's TimescaleDB for a source at version source, as
// the migration does (schema.PlanTimescaleDB).
func (e *env) planTimescaleDB(source string) schema.TimescaleDBTarget {
	installed := ""
	if e.tgtInv.TimescaleDB != nil {
		installed = e.tgtInv.TimescaleDB.Version
	}
	def := ""
	for _, a := range e.tgtInv.Available {
		if a.Name == "timescaledb" {
			def = a.DefaultVersion
		}
	}
	available, _ := e.tgtInv.AvailableVersions("timescaledb")
	return schema.PlanTimescaleDB(source, installed, def, available)
}

// check adapts a function to Check.
type check struct {
	name string
	run  func(ctx context.Context) ([]Finding, error)
}

func (c check) Name() string                               { return c.name }
func (c check) Run(ctx context.Context) ([]Finding, error) { return c.run(ctx) }

// pure makes a check from a function of the inventories alone.
func pure(name string, f func() []Finding) Check {
	return check{name: name, run: func(context.Context) ([]Finding, error) { return f(), nil }}
}

// checks lists every check in the order the report shows them.
func (e *env) checks() []Check {
	all := []Check{
		pure("connect", e.checkConnect),
		pure("postgres-major", e.checkMajor),
		pure("timescaledb-version", e.checkTimescaleVersion),
		pure("timescaledb-edition", e.checkEdition),
		check{name: "timescaledb-upgrade", run: e.checkTimescaleUpgrade},
		pure("compressed-defaults", e.checkCompressedDefaults),
		pure("target-empty", e.checkTargetEmpty),
		pure("extensions", e.checkExtensions),
		check{name: "encoding", run: e.checkEncoding},
		check{name: "xml-declarations", run: e.checkXML},
		pure("size", e.checkSize),
		pure("dump-locks", e.checkDumpLocks),
		pure("source-read", e.checkSourceRead),
		check{name: "source-freeze", run: e.checkFreeze},
		check{name: "granted-roles", run: e.checkRoles},
		pure("connections", e.checkConnections),
		pure("source-terminate", e.checkTerminate),
		check{name: "target-create", run: e.checkTargetCreate},
		pure("target-restore-mode", e.checkRestoreMode),
		pure("long-transactions", e.checkLongTransactions),
		pure("prepared-transactions", e.checkPrepared),
		pure("replication-slots", e.checkSlots),
		pure("subscriptions", e.checkSubscriptions),
		pure("roles", e.checkRolesPlan),
		pure("database-settings", e.checkDatabaseSettings),
		pure("timescaledb-jobs", e.checkJobs),
		pure("unlogged-tables", e.checkUnlogged),
		pure("large-objects", e.checkLargeObjects),
	}
	if !e.opt.Live {
		return all
	}
	return append(all,
		pure("live-wal-level", e.checkWalLevel),
		pure("live-slots", e.checkLiveSlots),
		pure("live-wal-senders", e.checkWalSenders),
		pure("live-replication", e.checkReplicationRight),
		pure("live-publication", e.checkPublish),
		pure("live-replica-identity", e.checkReplicaIdentity),
	)
}

func finding(st Status, server, saw, do string) Finding {
	return Finding{Status: st, Server: server, Saw: saw, Do: do}
}
