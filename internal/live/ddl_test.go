package live

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tsmigrate/tsmigrate/internal/testenv"
)

// ddlCase is DDL on the source during a live migration, with the writes after it,
// and what the applier's StopError must name.
type ddlCase struct {
	name  string
	sql   []string
	names []string
}

// TestApplyStopsOnDDL: DDL on the source during the stream stops the applier with a
// StopError that names the table and the change, before the end marker.
func TestApplyStopsOnDDL(t *testing.T) {
	srv := testenv.Shared(t, testenv.PG17TS)
	for _, c := range []ddlCase{
		{"column added to a plain table", []string{
			`ALTER TABLE docs ADD COLUMN extra int`,
			`UPDATE docs SET extra = 1 WHERE id = 1`}, []string{"docs", "extra"}},
		{"column added to a hypertable", []string{
			`ALTER TABLE m ADD COLUMN extra int`,
			`INSERT INTO m VALUES ('2024-01-03 00:00:01', 1, 1, 'x', 5)`}, []string{"m", "extra"}},
		{"hypertable created", []string{
			`CREATE TABLE late (ts timestamptz NOT NULL, v int)`,
			`SELECT create_hypertable('late', 'ts')`,
			`INSERT INTO late VALUES ('2024-01-01', 1)`}, []string{"late"}},
		{"table created and published", []string{
			`CREATE TABLE later (id int PRIMARY KEY)`,
			`ALTER PUBLICATION $PUB ADD TABLE later`,
			`INSERT INTO later VALUES (1)`}, []string{"later"}},
		{"column type changed", []string{
			`ALTER TABLE scratchpad ALTER COLUMN t TYPE int USING length(t)`,
			`INSERT INTO scratchpad VALUES (1000, 3)`}, []string{"scratchpad", "t"}},
		{"column dropped", []string{
			`ALTER TABLE docs DROP COLUMN title`,
			`INSERT INTO docs VALUES (1000, 'body')`}, []string{"docs", "title"}},
		{"table renamed", []string{
			`ALTER TABLE docs RENAME TO docs2`,
			`UPDATE docs2 SET title = 'x' WHERE id = 1`}, []string{"docs2"}},
		{"hypertable renamed", []string{
			`ALTER TABLE events RENAME TO events2`}, []string{"events", "events2"}},
		{"hypertable dropped", []string{
			`DROP TABLE events`}, []string{"events", "dropped"}},
	} {
		t.Run(c.name, func(t *testing.T) { testApplyStopsOnDDL(t, srv, c) })
	}
}

func testApplyStopsOnDDL(t *testing.T, srv *testenv.Server, c ddlCase) {
	p := newLivePair(t, srv)
	ctx := context.Background()
	s := p.start(t)
	receive(t, p)
	p.copyAt(t, s)
	s.Close(ctx)
	testenv.MustExec(t, srv, p.src, `UPDATE scratchpad SET t = 'before' WHERE id = 2`)
	for _, q := range c.sql {
		testenv.MustExec(t, srv, p.src, strings.ReplaceAll(q, "$PUB", s.Publication))
	}
	testenv.MustExec(t, srv, p.src, `UPDATE nokey SET b = 'after' WHERE a = 3`)
	if _, err := EmitEndMarker(ctx, p.source, s.Slot); err != nil {
		t.Fatal(err)
	}
	actx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	ap := &Applier{Target: p.target, End: s.Slot}
	err := ap.Run(actx)
	var se *StopError
	if !errors.As(err, &se) {
		t.Fatalf("Applier.Run: %v (%T), want a *StopError", err, err)
	}
	t.Logf("stopped: %v; hint: %s", se, se.Hint)
	for _, n := range c.names {
		if !containsWord(se.Error(), n) {
			t.Errorf("the StopError does not name %q: %v", n, se)
		}
	}
	if st := ap.Status(); st.ReachedEnd {
		t.Errorf("the applier reached the end marker: %+v", st)
	}
}

var wordRE = map[string]*regexp.Regexp{}

// containsWord: s names n as a word of its own (an identifier, not part of one).
func containsWord(s, n string) bool {
	re, ok := wordRE[n]
	if !ok {
		re = regexp.MustCompile(`(^|[^A-Za-z0-9_])` + regexp.QuoteMeta(n) + `($|[^A-Za-z0-9_])`)
		wordRE[n] = re
	}
	return re.MatchString(s)
}
