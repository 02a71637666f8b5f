package migrate

import (
	"context"
	"fmt"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/schema"
)

// chooseRestorePath creates TimescaleDB in d's target database (at the source's version,
// in the source's schema) when missing, and picks how its objects reach the target
// (Options.RestorePath, schema.CatalogRights.Choose): d.RestorePath, said in a note.
// Pre-flight has chosen the same way before anything changed, and blocked a path that
// cannot work; a --resume, which skips pre-flight, is refused here.
func (r *run) chooseRestorePath(ctx context.Context, d *DatabaseRun) error {
	return onTarget(ctx, d, func(ctx context.Context, c *dbconn.Conn) error {
		if _, err := schema.EnsureTimescaleDB(ctx, c.Conn, d.TimescaleDB, d.tsSchema); err != nil {
			return err
		}
		rights, err := schema.ReadCatalogRights(ctx, c.Conn)
		if err != nil {
			return err
		}
		pc := rights.Choose(r.opt.RestorePath, r.opt.Engine == EngineDump)
		if pc.Problem != "" {
			return exit.New(exit.Blocked, pc.Do, "target database %s: %s", d.Target, pc.Problem)
		}
		d.RestorePath = pc.Path
		r.note(d.Source, fmt.Sprintf("restore path %s: %s", pc.Path, pc.Why))
		return nil
	})
}
