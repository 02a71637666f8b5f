package migrate_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/migrate"
	"github.com/tsmigrate/tsmigrate/internal/testenv"
	"github.com/tsmigrate/tsmigrate/internal/verify"
)

// migrateWronged migrates src into dst with engine and --no-verify, and makes the
// target wrong with wrong (statements run on it) once its data is in, as the run counts
// the rows.
func migrateWronged(t *testing.T, srv *testenv.Server, src, dst, engine string, wrong ...string) (*migrate.Summary, error) {
	t.Helper()
	var mutated error
	sum, err := migrate.Run(context.Background(), migrate.Options{
		Source: cfg(t, "source", srv.URI(src)), Target: cfg(t, "target", srv.URI(dst)),
		Engine: engine, Jobs: 2, PgBin: srv.ClientBin(), FreezeGrace: time.Second, NoVerify: true,
		OnEvent: func(e migrate.Event) {
			if e.Type == migrate.EventPhase && e.Phase == migrate.PhaseCount {
				mutated = srv.Exec(context.Background(), dst, wrong...)
			}
		}})
	if mutated != nil {
		t.Fatalf("could not make the target wrong: %v", mutated)
	}
	return sum, err
}

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
			sum, err := migrateWronged(t, srv, src, dst, engine, `UPDATE pg_attribute SET atthasmissing = false, attmissingval = NULL
				WHERE attname IN ('a', 'note') AND attrelid IN (SELECT format('%I.%I', chunk_schema, chunk_name)::regclass
					FROM timescaledb_information.chunks WHERE hypertable_name = 'm' AND is_compressed)`)
			if exit.Code(err) != exit.Failed || !strings.Contains(err.Error(), "compressed unit(s) differ") || sum.Outcome != migrate.OutcomeFailed {
				t.Fatalf("a target whose compressed rows lost their defaults, with --no-verify: %v (outcome %s)", err, sum.Outcome)
			}
		})
	}
}

// Item 2's wrong copy: a foreign key from a plain table to a hypertable that reached
// the hypertable's root and not its chunks (as pg_restore makes it in restoring mode;
// here the target's key is made so once the data is in), so that a delete of a
// referenced row on the target leaves orphans. No row count sees it; with --no-verify
// the schema check fails the run, with either engine.
func TestNoVerifyCatchesHypertableKeyOffChunks(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	for _, engine := range []string{migrate.EngineStream, migrate.EngineDump} {
		t.Run(engine, func(t *testing.T) {
			src := testenv.NewDB(t, srv, true)
			dst := testenv.NewDB(t, srv, false)
			testenv.MustExec(t, srv, src,
				"CREATE TABLE h (t timestamptz NOT NULL, id int NOT NULL, PRIMARY KEY (t, id))",
				"SELECT create_hypertable('h', by_range('t', interval '1 day'))",
				"INSERT INTO h SELECT '2025-01-01'::timestamptz + g * interval '12 hours', g FROM generate_series(0, 5) g",
				"CREATE TABLE refs (t timestamptz, id int, CONSTRAINT refs_h FOREIGN KEY (t, id) REFERENCES h (t, id))")
			unfreezeAtCleanup(t, srv, src)
			sum, err := migrateWronged(t, srv, src, dst, engine, "SET timescaledb.restoring = on",
				"ALTER TABLE refs DROP CONSTRAINT refs_h",
				"ALTER TABLE refs ADD CONSTRAINT refs_h FOREIGN KEY (t, id) REFERENCES h (t, id)")
			if exit.Code(err) != exit.Failed || !strings.Contains(err.Error(), "schema difference") || sum.Outcome != migrate.OutcomeFailed {
				t.Fatalf("a target whose key to the hypertable is on its root alone, with --no-verify: %v (outcome %s)", err, sum.Outcome)
			}
			if rep, ok := sum.Databases[0].Verify.(*verify.Report); !ok || len(rep.Schema) == 0 ||
				!strings.Contains(rep.Schema[0].String(), "constraint public.refs.refs_t_id_fkey") {
				t.Errorf("the summary's differences do not name the key's copies: %+v", sum.Databases[0].Verify)
			}
		})
	}
}
