package migrate

import (
	"context"
	"fmt"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/schema"
)

// chooseRestorePath creates TimescaleDB in d's target database (in the source's schema,
// at the version schema.PlanTimescaleDB picks: the source's, or the target's newer
// default) when missing, and picks how its objects reach the target
// (Options.RestorePath, schema.CatalogRights.Choose; only the API path crosses
// TimescaleDB versions): d.RestorePath, said in a note. Pre-flight has chosen the same
// way before anything changed, and blocked a path that cannot work; a --resume, which
// skips pre-flight, is refused here.
func (r *run) chooseRestorePath(ctx context.Context, d *DatabaseRun) error {
	return onTarget(ctx, d, func(ctx context.Context, c *dbconn.Conn) error {
		plan, _, err := schema.EnsureTimescaleDB(ctx, c.Conn, d.TimescaleDB, d.tsSchema)
		if err != nil {
			return err
		}
		d.TargetTimescaleDB = plan.Version
		rights, err := schema.ReadCatalogRights(ctx, c.Conn)
		if err != nil {
			return err
		}
		rights.Across(plan)
		pc := rights.Choose(r.opt.RestorePath, r.opt.Engine == EngineDump)
		if pc.Problem != "" {
			return exit.New(exit.Blocked, pc.Do, "target database %s: %s", d.Target, pc.Problem)
		}
		d.RestorePath = pc.Path
		r.note(d.Source, fmt.Sprintf("restore path %s: %s", pc.Path, pc.Why))
		return nil
	})
}

// enterRestoring puts d's target database in restoring mode with
// timescaledb_pre_restore(), which stops its TimescaleDB scheduler; a failed run ends
// it (undo, leaveRestoring).
func (r *run) enterRestoring(ctx context.Context, d *DatabaseRun) error {
	if d.RestorePath != schema.PathCatalog {
		return nil
	}
	d.restoring = true
	return onTarget(ctx, d, func(ctx context.Context, c *dbconn.Conn) error { return schema.PreRestore(ctx, c.Conn) })
}

// leaveRestoring ends restoring mode in d's target database and starts its TimescaleDB
// scheduler again (timescaledb_post_restore()).
func (r *run) leaveRestoring(ctx context.Context, d *DatabaseRun) error {
	if d.RestorePath != schema.PathCatalog {
		return nil
	}
	if err := onTarget(ctx, d, func(ctx context.Context, c *dbconn.Conn) error { return schema.PostRestore(ctx, c.Conn) }); err != nil {
		return err
	}
	d.restoring = false
	return nil
}
