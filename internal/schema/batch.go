package schema

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/pgtools"
)

// Restoring entries in batches. pg_restore runs each entry of a section in a round trip
// and a transaction of its own: across a WAN, a database of thousands of chunks pays
// thousands of round trips for its pre-data section (a CREATE TABLE per chunk), and
// each entry's commit waits for its WAL flush. tsmigrate takes pg_restore's SQL of the
// entries (pg_restore -f -: the same statements, in the same order, the session's
// settings included) and sends up to batchEntries entries (about batchBytes of SQL) in
// one query: one round trip, one transaction.
//
// What pg_restore prints of an entry that fails is told the same way (the entry, then
// "could not execute query: ERROR: ...", "Command was: ..."), and classified alike;
// as pg_restore does, the restore goes on with the next entry, and the rest of the
// failing entry is not run. A statement that fails rolls the batch's transaction
// back: the entries before it in the batch are sent again.
//
// A killed restore leaves whole batches restored, never part of an entry, as
// pg_restore leaves whole entries (see RestorePreDataAgain).
const (
	batchEntries = 100
	batchBytes   = 1 << 20
)

// sqlStateNoTransactionBlock: "... cannot run inside a transaction block". Such an
// entry runs alone, as pg_restore runs it.
const sqlStateNoTransactionBlock = "25001"

// restoreBatched restores the entries listed in list (a pg_restore -L file of toc's
// entries) of archive into the target in batches. It says false, having done nothing,
// when pg_restore's script of them cannot be sent as SQL (see cutScript): restore
// them with pg_restore then.
func restoreBatched(ctx context.Context, tools *pgtools.Tools, target *dbconn.Config, archive, list string, toc *TOC, names []string, onMessage func(Message)) ([]Message, bool, error) {
	var out bytes.Buffer
	var stderr []string
	if err := tools.Run(ctx, pgtools.Cmd{Program: "pg_restore", Args: []string{"--no-owner", "-f", "-", "-L", list, archive},
		Stdout: &out, Line: func(_ int, s string) { stderr = append(stderr, s) }}); err != nil {
		return nil, true, fmt.Errorf("write the SQL of the entries to restore: %w: %s", err, strings.Join(stderr, " "))
	}
	parts, why := cutScript(out.String())
	if why != "" {
		return nil, false, nil
	}
	cl := NewClassifier(toc, onMessage)
	cl.names = names
	conn, err := target.ConnectNotices(ctx, func(n *pgconn.Notice) { notice(cl, n) })
	if err != nil {
		return nil, true, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	b := &batcher{conn: conn.PgConn(), cl: cl, parts: parts, entries: entriesByComment(toc)}
	if err := b.run(ctx); err != nil {
		return cl.Finish().Messages, true, err
	}
	res := cl.Finish()
	return res.Messages, true, Check("pg_restore", nil, res)
}

// entriesByComment maps the comment pg_restore --no-owner writes before each entry of
// toc to the entry (see scriptHeader). A name that the listing cannot split (one with
// a space) is not found: its messages then name no object.
func entriesByComment(toc *TOC) map[string]TOCEntry {
	m := map[string]TOCEntry{}
	for _, e := range toc.Entries {
		m[scriptHeader(e)] = e
	}
	return m
}

// batcher sends a script's parts in batches (see above).
type batcher struct {
	conn    *pgconn.PgConn
	cl      *Classifier
	parts   []scriptPart
	entries map[string]TOCEntry
	failed  map[int]bool // parts that failed: left out when a batch is sent again
	told    bool         // "while PROCESSING TOC" was said
}

func (b *batcher) run(ctx context.Context) error {
	b.failed = map[int]bool{}
	for i := 0; i < len(b.parts); {
		var sql strings.Builder
		var owner []int // the part of each statement sent
		j, n := i, 0
		for ; j < len(b.parts) && (j == i || n < batchEntries && sql.Len() < batchBytes); j++ {
			if b.failed[j] {
				continue
			}
			for _, st := range b.parts[j].statements {
				sql.WriteString(st.text)
				sql.WriteByte('\n')
				owner = append(owner, j)
			}
			if b.parts[j].comment != "" {
				n++
			}
		}
		if len(owner) == 0 {
			i = j
			continue
		}
		res, err := b.conn.Exec(ctx, sql.String()).ReadAll()
		if err == nil {
			if len(res) != len(owner) {
				return fmt.Errorf("restore in batches: the server ran %d statements of a batch where tsmigrate cut %d", len(res), len(owner))
			}
			i = j
			continue
		}
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || b.conn.IsClosed() {
			return fmt.Errorf("restore in batches: %w", err)
		}
		// The statement that failed: the one after those done, or the last, when a
		// query failed once it had begun to send rows.
		k := len(res)
		if k > 0 && res[k-1].Err != nil {
			k--
		}
		if k >= len(owner) {
			return fmt.Errorf("restore in batches: the server failed statement %d of a batch of %d: %w", k+1, len(owner), err)
		}
		p := owner[k]
		if b.parts[p].comment == "" {
			return fmt.Errorf("restore: pg_restore's setting of the session failed: %s: %w", firstCodeLine(b.parts[p].statements[0].text), err)
		}
		if pgErr.Code == sqlStateNoTransactionBlock && !(k == 0 && j == i+1) {
			// Alone, as pg_restore runs it: sent again from i, part p in a batch of its own.
			if err := b.sendAlone(ctx, i, p); err != nil {
				return err
			}
			i = p + 1
			continue
		}
		b.tell(b.parts[p], pgErr)
		b.failed[p] = true
		// The batch's transaction rolled back: its parts before p go again.
	}
	return nil
}

// sendAlone sends the parts from i to p, but p, as a batch, then p on its own.
func (b *batcher) sendAlone(ctx context.Context, i, p int) error {
	var sql strings.Builder
	for j := i; j < p; j++ {
		if !b.failed[j] {
			for _, st := range b.parts[j].statements {
				sql.WriteString(st.text)
				sql.WriteByte('\n')
			}
		}
	}
	if sql.Len() > 0 {
		if err := b.conn.Exec(ctx, sql.String()).Close(); err != nil {
			return fmt.Errorf("restore in batches: entries sent again: %w", err)
		}
	}
	var one strings.Builder
	for _, st := range b.parts[p].statements {
		one.WriteString(st.text)
		one.WriteByte('\n')
	}
	err := b.conn.Exec(ctx, one.String()).Close()
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
	case errors.As(err, &pgErr) && !b.conn.IsClosed():
		b.tell(b.parts[p], pgErr)
	default:
		return fmt.Errorf("restore: %w", err)
	}
	return nil
}

// tell passes what pg_restore would print of part p's failure to the classifier.
func (b *batcher) tell(p scriptPart, pgErr *pgconn.PgError) {
	if !b.told {
		b.cl.Line(0, "pg_restore: while PROCESSING TOC:")
		b.told = true
	}
	k := p.comment
	if j := strings.LastIndex(k, noOwner); j >= 0 {
		k = k[:j+len(noOwner)]
	}
	if e, ok := b.entries[k]; ok {
		owner := e.Owner
		if owner == "" {
			owner = "-"
		}
		b.cl.Line(0, fmt.Sprintf("pg_restore: from TOC entry %d; %d %d %s %s %s", e.ID, e.CatalogTable, e.OID, e.Desc, sanitizeLine(e.Name), owner))
	}
	lines := serverLines(pgErr)
	b.cl.Line(0, "pg_restore: error: could not execute query: "+lines[0])
	for _, l := range lines[1:] {
		b.cl.Line(0, l)
	}
	var cmd strings.Builder
	for _, st := range p.statements {
		cmd.WriteString(strings.TrimLeft(st.text, "\n"))
		cmd.WriteByte('\n')
	}
	for i, l := range strings.Split(strings.TrimRight(cmd.String(), "\n"), "\n") {
		if i == 0 {
			l = "Command was: " + l
		}
		b.cl.Line(0, l)
	}
}

// serverLines is a server's error or notice as libpq prints it (PQerrorMessage, the
// default verbosity): "ERROR:  message", then its DETAIL, HINT and CONTEXT.
func serverLines(e *pgconn.PgError) []string {
	out := strings.Split(e.Severity+":  "+e.Message, "\n")
	for _, f := range []struct{ name, text string }{{"DETAIL", e.Detail}, {"HINT", e.Hint}, {"CONTEXT", e.Where}} {
		if f.text != "" {
			out = append(out, strings.Split(f.name+":  "+f.text, "\n")...)
		}
	}
	return out
}

// notice passes a server's notice or warning to the classifier as pg_restore prints it
// (its notice processor: "pg_restore: WARNING:  message", then DETAIL and HINT).
func notice(cl *Classifier, n *pgconn.Notice) {
	lines := serverLines((*pgconn.PgError)(n))
	cl.Line(0, "pg_restore: "+lines[0])
	for _, l := range lines[1:] {
		cl.Line(0, l)
	}
}
