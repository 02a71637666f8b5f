package migrate

import (
	"context"
	"fmt"

	"github.com/tsmigrate/tsmigrate/internal/exit"
)

// sqlLicense is the TimescaleDB build: "apache" (no compression) or "timescale".
const sqlLicense = `SELECT coalesce(current_setting('timescaledb.license', true), '')`

// compressBefore is --compress-before. An Apache-only source cannot compress: it says
// so and does nothing. Compressing on a full-build source is not implemented yet and is
// refused before anything changes.
func (r *run) compressBefore(ctx context.Context) error {
	for _, d := range r.sum.Databases {
		if !d.ts {
			r.sum.CompressBefore = "no source database uses TimescaleDB: nothing to compress"
			continue
		}
		conn, err := d.src.Connect(ctx)
		if err != nil {
			return err
		}
		var license string
		err = conn.QueryRow(ctx, sqlLicense).Scan(&license)
		conn.Close(ctx)
		if err != nil {
			return fmt.Errorf("read the source's TimescaleDB license: %w", err)
		}
		if license != "apache" {
			return exit.Usagef("run without --compress-before, or compress old chunks with compress_chunk() first",
				"--compress-before on a TimescaleDB %q build is not implemented in this version", license)
		}
		r.sum.CompressBefore = "the source runs TimescaleDB's Apache build, which cannot compress: nothing was compressed"
		r.note(d.Source, "--compress-before: "+r.sum.CompressBefore)
	}
	return nil
}
