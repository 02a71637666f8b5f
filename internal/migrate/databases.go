package migrate

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/inventory"
	"github.com/tsmigrate/tsmigrate/internal/pgtools"
	"github.com/tsmigrate/tsmigrate/internal/preflight"
	"github.com/tsmigrate/tsmigrate/internal/schema"
	"github.com/tsmigrate/tsmigrate/internal/scratch"
	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// sqlHasUserObjects says whether a database holds relations or functions of its own
// (not of the system, of an extension or tsmigrate's journal; a table in one of
// TimescaleDB's schemas that is not the extension's is a user's). PostgreSQL 15 and 17.
var sqlHasUserObjects = `
SELECT EXISTS (
  SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE ` + sqltext.DataSchema("n.nspname") + `
    AND NOT ` + sqltext.ExtensionMember(sqltext.Catalog("pg_class"), "c.oid") + `
) OR EXISTS (
  SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  WHERE ` + sqltext.DataSchema("n.nspname") + `
    AND NOT ` + sqltext.ExtensionMember(sqltext.Catalog("pg_proc"), "p.oid") + `
)`

// SQL about databases; checked on PostgreSQL 15 and 17.
const (
	// sqlDatabases lists the databases --all-databases considers.
	sqlDatabases = `SELECT datname FROM pg_database WHERE NOT datistemplate AND datallowconn ORDER BY datname`
	// sqlSourceFacts: the TimescaleDB version and schema ("" without it), the bytes a
	// dump may need at most: the database's size without its indexes (a dump holds no
	// index data), and the database's encoding and locale.
	sqlSourceFacts = `
SELECT coalesce((SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'), ''),
       coalesce((SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'timescaledb'), ''),
       pg_database_size(current_database()) - coalesce((SELECT sum(pg_relation_size(indexrelid)) FROM pg_index), 0)::bigint,
       d.encoding, d.datcollate, d.datctype
FROM pg_database d WHERE d.datname = current_database()`
	// sqlDefaultEncoding is the encoding CREATE DATABASE gives without options: template1's.
	sqlDefaultEncoding   = `SELECT encoding FROM pg_database WHERE datname = 'template1'`
	sqlExistingDatabases = `SELECT datname FROM pg_database WHERE datname = ANY($1)`
)

// resolve turns the options into the database pairs to migrate and reads what the
// run needs to know about each source database.
func (r *run) resolve(ctx context.Context) ([]*DatabaseRun, error) {
	opt := r.opt
	var pairs []Mapping
	switch {
	case opt.AllDatabases && len(opt.Databases) > 0:
		return nil, exit.Usagef("pick one", "--all-databases and --database exclude each other")
	case opt.AllDatabases:
		names, err := databasesWithUserObjects(ctx, opt.Source)
		if err != nil {
			return nil, err
		}
		if len(names) == 0 {
			return nil, exit.Usagef("", "the source server has no database with user objects")
		}
		for _, n := range names {
			pairs = append(pairs, Mapping{Source: n, Target: n})
		}
	case len(opt.Databases) > 0:
		pairs = opt.Databases
	default:
		pairs = []Mapping{{Source: opt.Source.Database(), Target: opt.Target.Database()}}
	}
	// Checked before anything connects: the same source twice would be frozen twice.
	pairs = slices.Clone(pairs)
	targets, sources := map[string]string{}, map[string]string{}
	for i, p := range pairs {
		if p.Target == "" {
			pairs[i].Target, p.Target = p.Source, p.Source
		}
		if other, dup := sources[p.Source]; dup {
			return nil, exit.Usagef("give each source database once", "source database %q is given twice (into %q and %q)", p.Source, other, p.Target)
		}
		if other, dup := targets[p.Target]; dup {
			return nil, exit.Usagef("give each source database its own target database", "target database %q would receive both %q and %q", p.Target, other, p.Source)
		}
		sources[p.Source], targets[p.Target] = p.Target, p.Source
	}
	var dbs []*DatabaseRun
	for _, p := range pairs {
		d := &DatabaseRun{Source: p.Source, Target: p.Target, src: opt.Source.WithDatabase(p.Source), dst: opt.Target.WithDatabase(p.Target)}
		conn, err := d.src.Connect(ctx)
		if err != nil {
			return nil, err
		}
		err = conn.QueryRow(ctx, sqlSourceFacts).Scan(&d.TimescaleDB, &d.tsSchema, &d.sizeBytes, &d.encoding, &d.collate, &d.ctype)
		if err == nil {
			d.lineBreakNames, err = schema.LineBreakNames(ctx, conn.Conn)
		}
		if err == nil {
			d.identity, err = inventory.ReadIdentity(ctx, conn.Conn)
		}
		conn.Close(ctx)
		if err != nil {
			return nil, fmt.Errorf("inspect source database %s: %w", p.Source, err)
		}
		d.ts = d.TimescaleDB != ""
		dbs = append(dbs, d)
	}
	return dbs, nil
}

// refuseSame refuses, before anything is changed, a target database that is a source
// database of the run itself, its own or another pair's (the same server, whatever
// address reached it, and the same database): a migration there would freeze its own
// target and fail, and the reset it then advises would drop a source.
func (r *run) refuseSame(ctx context.Context) error {
	for _, d := range r.sum.Databases {
		conn, err := d.dst.Connect(ctx)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "3D000" {
			continue // it does not exist: not the source
		}
		if err != nil {
			return err
		}
		id, err := inventory.ReadIdentity(ctx, conn.Conn)
		conn.Close(context.WithoutCancel(ctx))
		if err != nil {
			return fmt.Errorf("target: %w", err)
		}
		for _, s := range r.sum.Databases {
			if id.SameDatabase(s.identity) {
				return preflight.TargetIsSource(s.Source, d.Target, d.dst, id)
			}
		}
	}
	return nil
}

func databasesWithUserObjects(ctx context.Context, src *dbconn.Config) ([]string, error) {
	conn, err := src.Connect(ctx)
	if err != nil {
		return nil, err
	}
	rows, _ := conn.Query(ctx, sqlDatabases)
	all, err := pgx.CollectRows(rows, pgx.RowTo[string])
	conn.Close(ctx)
	if err != nil {
		return nil, fmt.Errorf("list the source's databases: %w", err)
	}
	var out []string
	for _, name := range all {
		c, err := src.WithDatabase(name).Connect(ctx)
		if err != nil {
			return nil, err
		}
		var has bool
		err = c.QueryRow(ctx, sqlHasUserObjects).Scan(&has)
		c.Close(ctx)
		if err != nil {
			return nil, fmt.Errorf("look into source database %s: %w", name, err)
		}
		if has {
			out = append(out, name)
		}
	}
	return out, nil
}

// connectServer connects to cfg's database, or to the maintenance database postgres
// when that one does not exist (yet).
func connectServer(ctx context.Context, cfg *dbconn.Config) (*dbconn.Conn, *dbconn.Config, error) {
	conn, err := cfg.Connect(ctx)
	var pgErr *pgconn.PgError
	if err != nil && errors.As(err, &pgErr) && pgErr.Code == "3D000" && cfg.Database() != "postgres" {
		cfg = cfg.WithDatabase("postgres")
		conn, err = cfg.Connect(ctx)
	}
	return conn, cfg, err
}

// findTools picks pg_dump and pg_restore for the two servers' majors (pgtools.Find).
func (r *run) findTools(ctx context.Context) error {
	majors := [2]int{}
	for i, cfg := range []*dbconn.Config{r.sum.Databases[0].src, r.opt.Target} {
		conn, _, err := connectServer(ctx, cfg)
		if err != nil {
			return err
		}
		majors[i], err = pgtools.ServerMajor(ctx, conn.Conn)
		conn.Close(ctx)
		if err != nil {
			return err
		}
	}
	if majors[1] < majors[0] && !r.opt.Resume && !r.opt.Worker {
		// A migration cannot go to an older major: pre-flight blocks it (postgres-major,
		// naming both versions) among its other findings, before anything needs tools.
		return nil
	}
	t, err := pgtools.Find(ctx, pgtools.Options{PgBin: r.opt.PgBin, SourceMajor: majors[0], TargetMajor: majors[1]})
	if err != nil {
		return err
	}
	r.tools = t
	r.sum.Tools = t.String()
	r.note("", t.String())
	for _, w := range t.Warnings {
		r.warn(w)
	}
	return nil
}

// createTargets creates the target databases that do not exist, in the source's
// encoding where it can (createDatabase), with TimescaleDB in the source's schema,
// where the source has it, at the version schema.PlanTimescaleDB picks (the source's,
// or the target's newer default). When none fits (the target's is older), the database
// is left without it: pre-flight says why, and the database is dropped again.
func (r *run) createTargets(ctx context.Context) error {
	conn, _, err := connectServer(ctx, r.opt.Target)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var defaultEncoding int32
	if err := conn.QueryRow(ctx, sqlDefaultEncoding).Scan(&defaultEncoding); err != nil {
		return fmt.Errorf("read the target's default encoding: %w", err)
	}
	var names []string
	for _, d := range r.sum.Databases {
		names = append(names, d.Target)
	}
	rows, _ := conn.Query(ctx, sqlExistingDatabases, names)
	existing, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("list the target's databases: %w", err)
	}
	have := map[string]bool{}
	for _, n := range existing {
		have[n] = true
		if r.opt.ResetAfterRehearsal {
			return exit.Usagef("name a target database that does not exist, such as --database SRC:SRC_rehearsal",
				"--reset-target drops the target databases a rehearsal creates, and target database %s exists already", n)
		}
	}
	for _, d := range r.sum.Databases {
		if have[d.Target] {
			continue
		}
		if err := r.createDatabase(ctx, conn, d, defaultEncoding); err != nil {
			return err
		}
		d.CreatedTarget = true
		if d.ts {
			c, err := d.dst.Connect(ctx)
			if err != nil {
				return err
			}
			plan, _, err := schema.ReadTimescaleDBTarget(ctx, c.Conn, d.TimescaleDB)
			if err == nil && plan.Problem == "" {
				_, _, err = schema.EnsureTimescaleDB(ctx, c.Conn, d.TimescaleDB, d.tsSchema)
			}
			c.Close(ctx)
			if err != nil {
				return fmt.Errorf("target database %s: %w", d.Target, err)
			}
		}
	}
	return nil
}

// createDatabase creates d's target database. One whose source database is in another
// encoding than the target server's default (template1's) is made from template0 in the
// source's encoding and locale, so that it holds what the source holds, byte for byte;
// when the target refuses that (a locale it lacks), it is made with the defaults, and
// a warning says that the source's text is converted.
func (r *run) createDatabase(ctx context.Context, conn *dbconn.Conn, d *DatabaseRun, defaultEncoding int32) error {
	name := pgx.Identifier{d.Target}.Sanitize()
	if d.encoding != defaultEncoding {
		q := fmt.Sprintf("CREATE DATABASE %s TEMPLATE template0 ENCODING %d LC_COLLATE %s LC_CTYPE %s",
			name, d.encoding, sqltext.Literal(d.collate), sqltext.Literal(d.ctype))
		_, err := conn.Exec(ctx, q)
		if err == nil {
			r.note(d.Source, fmt.Sprintf("created database %s on the target, in the source's encoding and locale (%s)", d.Target, d.collate))
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.warn(fmt.Sprintf("%s: the target refused a database in the source's encoding and locale (%s): %s; %s is created with the target's defaults, into which the source's text is converted",
			d.Source, d.collate, dbconn.Reason(err), d.Target))
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return fmt.Errorf("create target database %s: %s", d.Target, dbconn.Reason(err))
	}
	r.note(d.Source, fmt.Sprintf("created database %s on the target", d.Target))
	return nil
}

// resetAfterRehearsal drops the target databases of a rehearsal when asked to
// (Options.ResetAfterRehearsal), and says whether it did.
func (r *run) resetAfterRehearsal(ctx context.Context) bool {
	if !r.opt.Rehearsal || !r.opt.ResetAfterRehearsal {
		return false
	}
	r.dropCreatedTargets(ctx, "the rehearsal's target, --reset-target")
	r.sum.TargetReset = true
	for _, d := range r.sum.Databases {
		r.sum.TargetReset = r.sum.TargetReset && !d.CreatedTarget
	}
	return r.sum.TargetReset
}

// dropCreatedTargets removes the databases createTargets made (why: for the note).
func (r *run) dropCreatedTargets(ctx context.Context, why string) {
	conn, _, err := connectServer(ctx, r.opt.Target.WithDatabase("postgres"))
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	for _, d := range r.sum.Databases {
		if d.CreatedTarget {
			if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{d.Target}.Sanitize()+" WITH (FORCE)"); err == nil {
				d.CreatedTarget = false
				r.note(d.Source, fmt.Sprintf("dropped database %s again on the target (%s)", d.Target, why))
			}
		}
	}
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// dumpPath is where database d's dump goes; it must not exist yet.
func (r *run) dumpPath(d *DatabaseRun) (string, error) {
	if r.opt.DumpFile != "" {
		r.dumps = append(r.dumps, r.opt.DumpFile)
		return r.opt.DumpFile, nil
	}
	base := r.opt.DumpDir
	if base == "" {
		dir, err := r.tempDir("dump")
		if err != nil {
			return "", fmt.Errorf("make a dump directory: %w", err)
		}
		base = dir
	} else if err := os.MkdirAll(base, 0o700); err != nil {
		return "", fmt.Errorf("--dump-dir: %w", err)
	}
	path := filepath.Join(base, unsafeName.ReplaceAllString(d.Source, "_")+".dump")
	if _, err := os.Stat(path); err == nil {
		return "", exit.Usagef("remove it or pick another --dump-dir", "dump %s exists already", path)
	}
	r.dumps = append(r.dumps, path)
	return path, nil
}

// cleanDumps removes the run's dumps, unless they are to be kept.
func (r *run) cleanDumps() {
	if r.opt.KeepDump {
		for _, d := range r.sum.Databases {
			for _, p := range r.dumps {
				if filepath.Base(p) == unsafeName.ReplaceAllString(d.Source, "_")+".dump" || p == r.opt.DumpFile {
					d.DumpPath = p
				}
			}
		}
		return
	}
	for _, p := range r.dumps {
		os.RemoveAll(p)
	}
	if r.scratch != nil {
		r.scratch.Remove()
	}
}

// tempDir is the run's temporary directory (for the dumps, or the schema dumps of the
// stream engine), made on first use: a scratch directory, which a later run removes
// if this process is killed, but with --keep-dump, whose dump stays whatever happens.
func (r *run) tempDir(kind string) (string, error) {
	switch {
	case r.base != "":
	case r.opt.KeepDump:
		dir, err := os.MkdirTemp("", scratch.Prefix+kind+"-")
		if err != nil {
			return "", err
		}
		r.base = dir
	default:
		d, err := scratch.New(kind)
		if err != nil {
			return "", err
		}
		r.scratch, r.base = d, d.Path
	}
	return r.base, nil
}

// checkSpace refuses a run whose dumps may not fit on their disk.
func (r *run) checkSpace() error {
	if r.opt.KeepDump && r.opt.DumpDir == "" && r.opt.DumpFile == "" {
		r.warn("--keep-dump without --dump-dir keeps the dump in a temporary directory")
	}
	dir := r.opt.DumpDir
	switch {
	case r.opt.DumpFile != "":
		dir = filepath.Dir(r.opt.DumpFile)
	case dir == "":
		dir = os.TempDir()
	}
	for dir != "/" {
		if _, err := os.Stat(dir); err == nil {
			break
		}
		dir = filepath.Dir(dir)
	}
	var need int64
	for _, d := range r.sum.Databases {
		need += d.sizeBytes
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		r.warn(fmt.Sprintf("cannot tell the free space of %s (%v); the dump may need up to %s", dir, err, preflight.HumanBytes(need)))
		return nil
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if free < need {
		return exit.New(exit.Blocked, "free space there or point --dump-dir at a larger disk",
			"the dump may need up to %s (the source's table data, uncompressed) and %s has %s free", preflight.HumanBytes(need), dir, preflight.HumanBytes(free))
	}
	return nil
}

func pathSize(path string) int64 {
	var n int64
	filepath.WalkDir(path, func(_ string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			if info, err := e.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}
