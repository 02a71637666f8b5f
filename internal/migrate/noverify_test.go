package migrate_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/migrate"
)

// With --no-verify a wrong copy is still never MIGRATED (issue 10, item 9). Item 1's:
// the target's compressed chunks lose the defaults of the columns added after they were
// compressed (what both engines did before they carried them; here the target is made
// so once the data is in), and their rows read NULL: the checksums of compressed rows
// that --no-verify keeps fail the run, with either engine. (Item 3's wrong copy, writes
// the proof missed, is TestRogueWritersDuringCopy's, also with --no-verify.)
func TestNoVerifyCatchesLostCompressedDefaultsFullBuild(t *testing.T) {
	for _, engine := range []string{migrate.EngineStream, migrate.EngineDump} {
		t.Run(engine, func(t *testing.T) {
			srv, src, dst := missingPair(t)
			var mutated error
			sum, err := migrate.Run(context.Background(), migrate.Options{
				Source: cfg(t, "source", srv.URI(src)), Target: cfg(t, "target", srv.URI(dst)),
				Engine: engine, Jobs: 2, PgBin: srv.ClientBin(), FreezeGrace: time.Second, NoVerify: true,
				OnEvent: func(e migrate.Event) {
					if e.Type == migrate.EventPhase && e.Phase == migrate.PhaseCount {
						mutated = srv.Exec(context.Background(), dst, `UPDATE pg_attribute SET atthasmissing = false, attmissingval = NULL
							WHERE attname IN ('a', 'note') AND attrelid IN (SELECT format('%I.%I', chunk_schema, chunk_name)::regclass
								FROM timescaledb_information.chunks WHERE hypertable_name = 'm' AND is_compressed)`)
					}
				}})
			if mutated != nil {
				t.Fatalf("could not make the target wrong: %v", mutated)
			}
			if exit.Code(err) != exit.Failed || !strings.Contains(err.Error(), "compressed unit(s) differ") || sum.Outcome != migrate.OutcomeFailed {
				t.Fatalf("a target whose compressed rows lost their defaults, with --no-verify: %v (outcome %s)", err, sum.Outcome)
			}
		})
	}
}
