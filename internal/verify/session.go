package verify

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/exit"
	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// PinSettings makes every value's text form independent of the server's, database's
// and role's settings, so equal data gives equal checksums on both sides (and a value
// printed by one server reads back the same on the other: package migrate's use):
//   - TimeZone UTC: timestamptz text;
//   - DateStyle ISO, YMD and IntervalStyle postgres: date, timestamp and interval text;
//   - extra_float_digits 3: since PostgreSQL 12 any value > 0 prints float4/float8 in
//     the shortest form that reads back to the same bits, so a difference in the last
//     bit shows;
//   - bytea_output hex, lc_monetary C: bytea and money text;
//   - search_path pg_catalog: regclass/regtype values, defaults and definitions come
//     out schema-qualified;
//   - standard_conforming_strings on: definitions (pg_get_viewdef and the like) write
//     their string constants by it;
//   - no timeouts (dbconn.NoTimeouts): a database's or role's timeout must not kill a
//     long checksum, nor the coordinator's snapshot, idle in its transaction.
//
// Checked on PostgreSQL 15 and 17.
const PinSettings = `SELECT set_config('TimeZone', 'UTC', false),
	set_config('DateStyle', 'ISO, YMD', false),
	set_config('IntervalStyle', 'postgres', false),
	set_config('extra_float_digits', '3', false),
	set_config('bytea_output', 'hex', false),
	set_config('lc_monetary', 'C', false),
	set_config('search_path', 'pg_catalog', false),
	set_config('standard_conforming_strings', 'on', false)`

// minServerVersion is the first PostgreSQL with hash_record_extended.
const minServerVersion = 140000

// session is one connection with the pinned settings.
type session struct {
	cfg      *dbconn.Config
	conn     *dbconn.Conn
	snapshot string // exported by the coordinator, imported by workers
	// timescale: the database has TimescaleDB (read by the coordinator).
	timescale bool
	encoding  string // the database's (server_encoding), read by the coordinator
	// version is the server's (server_version, read by the coordinator), major its major.
	version string
	major   int
}

// everyRow makes a session read every row of a table with row-level security, or fail
// (insufficient privilege: the unit is not compared) where policies would hide some
// from the user, as pg_dump and the copy do: checksums over the rows a policy shows
// would compare part of the data, and could call two sides identical that are not.
const everyRow = "SET row_security = off"

func connect(ctx context.Context, cfg *dbconn.Config) (*session, error) {
	conn, err := cfg.ConnectSession(ctx, PinSettings+";\n"+dbconn.NoTimeouts+";\n"+everyRow)
	if err != nil {
		return nil, err
	}
	return &session{cfg: cfg, conn: conn}, nil
}

// openCoordinator connects and opens the read-only repeatable-read transaction whose
// snapshot every worker of that side imports.
func openCoordinator(ctx context.Context, cfg *dbconn.Config) (*session, error) {
	return openCoordinatorAt(ctx, cfg, "")
}

// openCoordinatorAt is openCoordinator in the exported snapshot given, when not "":
// the workers import it too.
func openCoordinatorAt(ctx context.Context, cfg *dbconn.Config, snapshot string) (*session, error) {
	s, err := connect(ctx, cfg)
	if err != nil {
		return nil, err
	}
	var version int
	if err := s.conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int, current_setting('server_version'), current_setting('server_encoding'), "+timescaleSQL).Scan(&version, &s.version, &s.encoding, &s.timescale); err != nil {
		s.close()
		return nil, fmt.Errorf("%s: server version: %w", cfg.Role, err)
	}
	if version < minServerVersion {
		s.close()
		return nil, exit.New(exit.Usage, "verify compares servers of PostgreSQL 14 and later only",
			"%s: verify needs PostgreSQL 14 or later (hash_record_extended); %s runs %d.%d", cfg.Role, cfg, version/10000, version%100)
	}
	s.major = version / 10000
	if snapshot != "" {
		if err := s.begin(ctx, snapshot); err != nil {
			s.close()
			return nil, err
		}
		s.snapshot = snapshot
		return s, nil
	}
	if _, err := s.conn.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		s.close()
		return nil, fmt.Errorf("%s: begin snapshot: %w", cfg.Role, err)
	}
	if err := s.conn.QueryRow(ctx, "SELECT pg_export_snapshot()").Scan(&s.snapshot); err != nil {
		s.close()
		return nil, fmt.Errorf("%s: export snapshot: %w", cfg.Role, err)
	}
	return s, nil
}

func (s *session) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.conn.Close(ctx)
}

// begin starts a transaction on the coordinator's snapshot.
func (s *session) begin(ctx context.Context, snapshot string) error {
	if _, err := s.conn.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		return fmt.Errorf("%s: begin: %w", s.cfg.Role, err)
	}
	if _, err := s.conn.Exec(ctx, "SET TRANSACTION SNAPSHOT "+sqltext.Literal(snapshot)); err != nil {
		return fmt.Errorf("%s: import snapshot: %w", s.cfg.Role, err)
	}
	return nil
}

func (s *session) commit(ctx context.Context) error {
	_, err := s.conn.Exec(ctx, "COMMIT")
	return err
}

// rollback ends both sides' transactions after a failed query.
func (w *worker) rollback(ctx context.Context) error {
	return w.both(ctx, func(ctx context.Context, s *session, _ int) error {
		_, err := s.conn.Exec(ctx, "ROLLBACK")
		return err
	})
}

// worker owns one connection to each side; it checks one unit at a time.
type worker struct {
	src, tgt *session
}

// workerPool hands out workers, connecting new ones on demand (at most Jobs exist,
// since the errgroup limits how many units run at once).
type workerPool struct {
	source, target   *dbconn.Config
	srcSnap, tgtSnap string

	mu   sync.Mutex
	idle []*worker
	all  []*worker
}

func (p *workerPool) get(ctx context.Context) (*worker, error) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		w := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return w, nil
	}
	p.mu.Unlock()
	src, err := connect(ctx, p.source)
	if err != nil {
		return nil, err
	}
	src.snapshot = p.srcSnap
	tgt, err := connect(ctx, p.target)
	if err != nil {
		src.close()
		return nil, err
	}
	tgt.snapshot = p.tgtSnap
	w := &worker{src: src, tgt: tgt}
	p.mu.Lock()
	p.all = append(p.all, w)
	p.mu.Unlock()
	return w, nil
}

// put returns a worker; one whose unit failed is not reused (its transaction state is
// unknown).
func (p *workerPool) put(w *worker, err error) {
	if err != nil {
		return
	}
	p.mu.Lock()
	p.idle = append(p.idle, w)
	p.mu.Unlock()
}

func (p *workerPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, w := range p.all {
		w.src.close()
		w.tgt.close()
	}
}

// both runs f on the source and the target session at the same time.
func (w *worker) both(ctx context.Context, f func(ctx context.Context, s *session, side int) error) error {
	errs := make(chan error, 1)
	go func() { errs <- f(ctx, w.tgt, target) }()
	err := f(ctx, w.src, source)
	if terr := <-errs; err == nil {
		err = terr
	}
	return err
}

func (w *worker) session(side int) *session {
	if side == source {
		return w.src
	}
	return w.tgt
}

const (
	source = 0
	target = 1
)

func quoteIdent(s string) string { return pgx.Identifier{s}.Sanitize() }
