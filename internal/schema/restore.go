package schema

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/pgtools"
	"github.com/tsmigrate/tsmigrate/internal/scratch"
	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// SQL run on the target around a restore. Checked on PostgreSQL 17 + TimescaleDB 2.19.3
// (the functions exist unchanged since 2.0).
const (
	// sqlPreRestore sets timescaledb.restoring on the database (inherited by pg_restore's
	// sessions) and stops the database's background workers. %s is the extension's
	// schema, quoted: the function is created there, which need not be public.
	sqlPreRestore = "SELECT %s.timescaledb_pre_restore()"
	// sqlPostRestore checks the catalog version, resets timescaledb.restoring and
	// restarts the background workers.
	sqlPostRestore = "SELECT %s.timescaledb_post_restore()"
	// sqlExtension is the installed TimescaleDB's version and schema (no row when absent).
	sqlExtension = `SELECT e.extversion, n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'timescaledb'`
	// sqlCatalogRegclass lists the catalog tables with a regclass column: their rows name
	// user relations (2.19.3: compression_settings.relid and compress_relid, a compressed
	// hypertable and its compressed chunks), so they load only once those exist.
	sqlCatalogRegclass = `
SELECT DISTINCT n.nspname, c.relname FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY($1) AND c.relkind = 'r' AND a.atttypid = 'regclass'::regtype AND a.attnum > 0 AND NOT a.attisdropped`
)

// CatalogSchemas hold TimescaleDB's configuration tables, whose rows must be in place,
// in foreign-key order, before the hypertables and chunks that they describe: a
// parallel pg_restore loads them out of order and loses every hypertable's data.
// _timescaledb_config holds bgw_job up to 2.24.
var CatalogSchemas = map[string]bool{"_timescaledb_catalog": true, "_timescaledb_config": true}

// TimescaleDBStatements create TimescaleDB at version in schema extSchema (the source's),
// that schema first when it is not public: `CREATE EXTENSION ... SCHEMA` does not make it.
func TimescaleDBStatements(extSchema, version string) []string {
	name := pgx.Identifier{extSchema}.Sanitize()
	var out []string
	if extSchema != "public" {
		out = append(out, "CREATE SCHEMA IF NOT EXISTS "+name)
	}
	return append(out, "CREATE EXTENSION timescaledb SCHEMA "+name+" VERSION "+sqltext.Literal(version))
}

// EnsureTimescaleDB makes sure the target database has TimescaleDB in schema extSchema
// (the source's), at the version PlanTimescaleDB picks for a source at version source
// (the source's, or the target's newer default: an upgrade on the way), created so when
// missing, and returns that plan. A version that does not fit (older than the source's,
// another major) or another schema is an error saying what to do: the dump's catalog
// rows only fit the version that wrote them, and its objects name the extension's
// functions in their schema.
func EnsureTimescaleDB(ctx context.Context, conn *pgx.Conn, source, extSchema string) (TimescaleDBTarget, bool, error) {
	plan, haveSchema, err := ReadTimescaleDBTarget(ctx, conn, source)
	if err != nil {
		return plan, false, err
	}
	switch {
	case plan.Problem != "":
		return plan, false, fmt.Errorf("%s: %s", plan.Problem, plan.Do)
	case plan.Installed && haveSchema != extSchema:
		create := strings.Join(TimescaleDBStatements(extSchema, plan.Version), "; ")
		return plan, false, fmt.Errorf("the target database has TimescaleDB in schema %s but the source has it in %s: drop the extension on the (empty) target and create it with %s", haveSchema, extSchema, create)
	case plan.Installed:
		return plan, false, nil
	}
	for _, q := range TimescaleDBStatements(extSchema, plan.Version) {
		if _, err := conn.Exec(ctx, q); err != nil {
			return plan, false, fmt.Errorf("create TimescaleDB %s in schema %s on the target: %s", plan.Version, extSchema, dbconn.Reason(err))
		}
	}
	return plan, true, nil
}

// installedTimescaleDB reads the version and schema of the database's TimescaleDB;
// ok is false when it is not installed.
func installedTimescaleDB(ctx context.Context, conn *pgx.Conn) (version, extSchema string, ok bool, err error) {
	err = conn.QueryRow(ctx, sqlExtension).Scan(&version, &extSchema)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return "", "", false, nil
	case err != nil:
		return "", "", false, fmt.Errorf("read the target's TimescaleDB version: %w", err)
	}
	return version, extSchema, true, nil
}

// timescaleDBSchema is the schema of the target database's TimescaleDB, quoted.
func timescaleDBSchema(ctx context.Context, conn *pgx.Conn) (string, error) {
	_, s, ok, err := installedTimescaleDB(ctx, conn)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", errors.New("TimescaleDB is not installed in the target database")
	}
	return pgx.Identifier{s}.Sanitize(), nil
}

// PreRestore runs timescaledb_pre_restore() on the target database, in the schema its
// TimescaleDB is installed in.
func PreRestore(ctx context.Context, conn *pgx.Conn) error {
	return callInExtSchema(ctx, conn, sqlPreRestore, "timescaledb_pre_restore()")
}

// PostRestore runs timescaledb_post_restore() on the target database, in the schema its
// TimescaleDB is installed in, twice. The first call resets restoring mode and restarts
// the database's scheduler before its transaction commits: the new scheduler often
// still reads restoring mode on, and exits ("the database is restoring or upgrading"),
// which left the target's jobs unscheduled until a server restart (7 of 10 times
// here, TimescaleDB 2.19.3, as the database owner and as a superuser alike). The
// second call, once the reset is committed, starts one that stays (10 of 10); it
// needs no more rights than the first, where a superuser's start_background_workers()
// would.
func PostRestore(ctx context.Context, conn *pgx.Conn) error {
	if err := callInExtSchema(ctx, conn, sqlPostRestore, "timescaledb_post_restore()"); err != nil {
		return err
	}
	return callInExtSchema(ctx, conn, sqlPostRestore, "timescaledb_post_restore() (again, to start the scheduler)")
}

func callInExtSchema(ctx context.Context, conn *pgx.Conn, sqlFormat, what string) error {
	s, err := timescaleDBSchema(ctx, conn)
	if err != nil {
		return fmt.Errorf("%s on the target: %w", what, err)
	}
	if _, err := conn.Exec(ctx, fmt.Sprintf(sqlFormat, s)); err != nil {
		return fmt.Errorf("%s on the target: %s", what, reasonWithHint(err))
	}
	return nil
}

func reasonWithHint(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42501" {
		return dbconn.Reason(err) + "; the target user must be a superuser or a managed service's admin role that may run it"
	}
	return dbconn.Reason(err)
}

// Step is one timed step of a restore.
type Step struct {
	Name     string        `json:"name"`
	Duration time.Duration `json:"duration_ns"`
}

// RestoreOptions say what to restore where.
type RestoreOptions struct {
	Tools   *pgtools.Tools
	Target  *dbconn.Config
	Archive string // dump directory or custom-format file
	Jobs    int
	// TimescaleDB is the source's TimescaleDB version, "" when it has none;
	// TimescaleDBSchema the schema it is installed in there.
	TimescaleDB, TimescaleDBSchema string
	// KeepRestoring leaves timescaledb_post_restore() to the caller, who can ANALYZE
	// first (see Analyze) and then call PostRestore.
	KeepRestoring bool
	// HypertableKeys are left out: the caller restores them once
	// timescaledb_post_restore() has run (HypertableKeys.Restore).
	HypertableKeys *HypertableKeys
	// WorkDir holds the list files (a temporary directory when empty).
	WorkDir string
	// OnStep is told when each step starts; OnMessage gets each classified message.
	OnStep    func(name string)
	OnMessage func(Message)
	// Names are the archive's names that hold a line break (LineBreakNames of the
	// source): pg_restore prints them raw, cutting the lines that name them.
	Names []string
}

// RestoreResult is what the restore did and printed.
type RestoreResult struct {
	Steps            []Step    `json:"steps"`
	Messages         []Message `json:"messages"`
	CreatedExtension bool      `json:"created_extension"`
}

// Restore restores a whole-database archive in the order that keeps TimescaleDB's data:
// the extension at the source's version; timescaledb_pre_restore(); the catalog schemas
// alone, serially; everything else with Jobs workers; timescaledb_post_restore() (unless
// KeepRestoring). A message not known to be harmless fails it (*MessageError), whatever
// pg_restore's exit status. ANALYZE is the caller's (see Analyze).
func Restore(ctx context.Context, opt RestoreOptions) (*RestoreResult, error) {
	res := &RestoreResult{}
	step := func(name string, f func() error) error {
		if opt.OnStep != nil {
			opt.OnStep(name)
		}
		t0 := time.Now()
		err := f()
		res.Steps = append(res.Steps, Step{Name: name, Duration: time.Since(t0)})
		return err
	}
	work := opt.WorkDir
	if work == "" {
		d, err := scratch.New("restore")
		if err != nil {
			return res, err
		}
		defer d.Remove()
		work = d.Path
	}
	toc, err := ReadTOC(ctx, opt.Tools, opt.Archive)
	if err != nil {
		return res, err
	}
	conn, err := opt.Target.Connect(ctx)
	if err != nil {
		return res, err
	}
	defer conn.Close(context.WithoutCancel(ctx))

	ts := opt.TimescaleDB != ""
	if ts {
		if err := step("timescaledb_pre_restore", func() error {
			plan, created, err := EnsureTimescaleDB(ctx, conn.Conn, opt.TimescaleDB, opt.TimescaleDBSchema)
			res.CreatedExtension = created
			if err != nil {
				return err
			}
			if plan.Upgrade() {
				return fmt.Errorf("the target's TimescaleDB is %s, the source's %s: %s", plan.Version, plan.Source, ErrCatalogVersions)
			}
			return PreRestore(ctx, conn.Conn)
		}); err != nil {
			return res, err
		}
	}
	run := func(name, list string, jobs int) error {
		return step(name, func() error {
			msgs, err := restoreList(ctx, opt, toc, list, jobs)
			res.Messages = append(res.Messages, msgs...)
			return err
		})
	}
	rest := filepath.Join(work, "rest.list")
	// late: the data of catalog tables that name user relations, restored last.
	var late map[string]bool
	isLate := func(e TOCEntry) bool { return e.Desc == "TABLE DATA" && late[e.Schema+"."+e.Name] }
	if ts {
		if late, err = catalogRegclassTables(ctx, conn.Conn); err != nil {
			return res, err
		}
		catalog := filepath.Join(work, "catalog.list")
		n, err := toc.WriteList(catalog, func(e TOCEntry) bool { return CatalogSchemas[e.Schema] && !isLate(e) })
		if err != nil {
			return res, err
		}
		if n > 0 {
			if err := run("restore TimescaleDB catalog", catalog, 1); err != nil {
				return res, err
			}
		}
	}
	made, err := madeWithExtension(ctx, conn.Conn)
	if err != nil {
		return res, err
	}
	if _, err := toc.WriteList(rest, func(e TOCEntry) bool {
		return (!ts || !CatalogSchemas[e.Schema]) && !made(e) && !opt.HypertableKeys.Holds(e)
	}); err != nil {
		return res, err
	}
	if err := run("restore schema and data", rest, opt.Jobs); err != nil {
		return res, err
	}
	if ts {
		list := filepath.Join(work, "late.list")
		n, err := toc.WriteList(list, isLate)
		if err != nil {
			return res, err
		}
		if n > 0 {
			if err := run("restore TimescaleDB catalog rows that name relations", list, 1); err != nil {
				return res, err
			}
		}
	}
	if ts && !opt.KeepRestoring {
		if err := step("timescaledb_post_restore", func() error { return PostRestore(ctx, conn.Conn) }); err != nil {
			return res, err
		}
	}
	return res, nil
}

// madeWithExtension says which entry of a dump the target database holds already: the
// schema its TimescaleDB is installed in, made with the extension before the restore
// (EnsureTimescaleDB), whose CREATE SCHEMA would fail. The schema's comment and
// privileges are entries of their own, restored. public, which every database has,
// pg_dump does not create.
func madeWithExtension(ctx context.Context, conn *pgx.Conn) (func(TOCEntry) bool, error) {
	_, s, ok, err := installedTimescaleDB(ctx, conn)
	if err != nil {
		return nil, err
	}
	return func(e TOCEntry) bool { return ok && s != "public" && e.Desc == "SCHEMA" && e.Name == s }, nil
}

// catalogRegclassTables names ("schema.table") the catalog tables of the target's
// TimescaleDB whose rows name user relations by regclass: their COPY fails ("relation
// does not exist") before the rest of the schema is restored.
func catalogRegclassTables(ctx context.Context, conn *pgx.Conn) (map[string]bool, error) {
	var schemas []string
	for s := range CatalogSchemas {
		schemas = append(schemas, s)
	}
	rows, _ := conn.Query(ctx, sqlCatalogRegclass, schemas)
	out := map[string]bool{}
	var s, n string
	_, err := pgx.ForEachRow(rows, []any{&s, &n}, func() error { out[s+"."+n] = true; return nil })
	if err != nil {
		return nil, fmt.Errorf("list TimescaleDB catalog tables that name relations: %w", err)
	}
	return out, nil
}

// restoreList runs pg_restore -L list and classifies what it prints.
func restoreList(ctx context.Context, opt RestoreOptions, toc *TOC, list string, jobs int, extra ...string) ([]Message, error) {
	args := append([]string{"--verbose", "--no-owner", "-L", list}, extra...)
	if jobs > 1 {
		args = append(args, "--jobs="+strconv.Itoa(jobs))
	}
	args = append(args, opt.Archive)
	return runClassified(ctx, opt.Tools, pgtools.Cmd{Program: "pg_restore", Conn: opt.Target, Args: args}, toc, opt.Names, opt.OnMessage)
}

// runClassified runs a program, classifies its stderr, and checks the verdict. names
// are the archive's names holding a line break (LineBreakNames): a pg_dump run reads
// them from its source itself.
func runClassified(ctx context.Context, tools *pgtools.Tools, cmd pgtools.Cmd, toc *TOC, names []string, onMessage func(Message)) ([]Message, error) {
	if cmd.Program == "pg_dump" {
		var err error
		if names, err = sourceLineBreakNames(ctx, cmd.Conn); err != nil {
			return nil, err
		}
	}
	cl := NewClassifier(toc, onMessage)
	cl.names = names
	cmd.Line = cl.Line
	runErr := tools.Run(ctx, cmd)
	res := cl.Finish()
	return res.Messages, Check(cmd.Program, runErr, res)
}
