package schema

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tsmigrate/tsmigrate/internal/dbconn"
	"github.com/tsmigrate/tsmigrate/internal/pgtools"
	"github.com/tsmigrate/tsmigrate/internal/scratch"
)

// Resuming pre-data. A run killed while it restored the pre-data section leaves some
// of the section's objects on the target, each whole (pg_restore runs an entry as one
// statement string, in a transaction of its own) or absent. The target held none of
// them before (pre-flight's target-empty), so every object the section names that the
// target holds now is the killed run's: RestorePreDataAgain drops those, in the reverse
// order of the section, with the DROP ... IF EXISTS statements pg_restore --clean
// --if-exists writes for them, and restores the section again.
//
// Two kinds stay: extensions (CREATE EXTENSION IF NOT EXISTS runs again as a no-op; one
// the target had before the run must not go, and an extension the killed run created
// is what the section creates), and so the schemas that hold an extension on the target
// (their CREATE SCHEMA is left out, as the schema of TimescaleDB's; their comment and
// privileges are restored). The public schema pg_restore never drops.

// sqlExtensionSchemas lists the schemas that hold an extension. PostgreSQL 15, 17.
const sqlExtensionSchemas = `SELECT DISTINCT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace`

// RestorePreDataAgain restores the pre-data section of archive into a target where a
// run that was killed restored part of it (see above), classifying what pg_restore
// prints. Run timescaledb_pre_restore() (PreRestore) first, as for RestoreSection;
// names as RestoreSection's.
func RestorePreDataAgain(ctx context.Context, tools *pgtools.Tools, target *dbconn.Config, archive string, names []string, onMessage func(Message)) ([]Message, error) {
	toc, err := listTOC(ctx, tools, "--section="+PreData, archive)
	if err != nil {
		return nil, err
	}
	conn, err := target.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	made, err := madeWithExtension(ctx, conn.Conn)
	if err != nil {
		return nil, err
	}
	rows, _ := conn.Query(ctx, sqlExtensionSchemas)
	holders, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list the target's schemas that hold extensions: %w", err)
	}
	keep := func(e TOCEntry) bool {
		return !made(e) && !(e.Desc == "SCHEMA" && slices.Contains(holders, e.Name))
	}
	dir, err := scratch.New(PreData)
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", PreData, err)
	}
	defer dir.Remove()
	drops, err := dropScript(ctx, tools, archive, toc, dir, func(e TOCEntry) bool { return keep(e) && e.Desc != "EXTENSION" })
	if err != nil {
		return nil, err
	}
	for _, st := range drops {
		err := conn.PgConn().Exec(ctx, st).Close()
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && notThere[pgErr.Code] {
			continue // a DROP pg_restore could not give IF EXISTS: the object is not there
		}
		if err != nil {
			return nil, fmt.Errorf("drop what the killed run restored of pre-data: %s: %w", firstLine(st), err)
		}
	}
	return restoreEntries(ctx, tools, target, archive, PreData, 1, names, onMessage, toc, dir, keep)
}

// notThere are the SQLSTATEs of a DROP whose object does not exist: undefined_table,
// undefined_object, undefined_function, invalid_schema_name.
var notThere = map[string]bool{"42P01": true, "42704": true, "42883": true, "3F000": true}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// dropScript is what pg_restore --clean --if-exists writes to drop the entries keep
// says, in the reverse order of the section: the statements before its first entry's
// header ("-- Name: ..."), which are the session's settings and the drops, one
// statement each.
func dropScript(ctx context.Context, tools *pgtools.Tools, archive string, toc *TOC, dir *scratch.Dir, keep func(TOCEntry) bool) ([]string, error) {
	list := filepath.Join(dir.Path, "drop.list")
	if _, err := toc.WriteList(list, keep); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	var stderr []string
	if err := tools.Run(ctx, pgtools.Cmd{Program: "pg_restore", Args: []string{"--clean", "--if-exists", "--no-owner", "-f", "-", "-L", list, archive},
		Stdout: &out, Line: func(_ int, s string) { stderr = append(stderr, s) }}); err != nil {
		return nil, fmt.Errorf("write the statements that drop pre-data: %w: %s", err, strings.Join(stderr, " "))
	}
	script := out.String()
	if i := strings.Index(script, "\n--\n-- Name: "); i >= 0 {
		script = script[:i+1]
	}
	return splitStatements(script), nil
}

// splitStatements cuts SQL text into statements at the semicolons outside quotes and
// comments, leaving out comment lines and psql's meta-commands (\\restrict) at the
// start of a statement.
func splitStatements(sql string) []string {
	var out []string
	var cur strings.Builder
	var quote byte
	for i := 0; i < len(sql); i++ {
		c := sql[i]
		if quote == 0 && strings.TrimSpace(cur.String()) == "" && (c == '\\' || strings.HasPrefix(sql[i:], "--")) {
			for i < len(sql) && sql[i] != '\n' {
				i++
			}
			cur.Reset()
			continue
		}
		cur.WriteByte(c)
		switch {
		case quote != 0 && c == quote:
			quote = 0
		case quote == 0 && (c == '"' || c == '\''):
			quote = c
		case quote == 0 && c == ';':
			out = append(out, strings.TrimSpace(cur.String()))
			cur.Reset()
		}
	}
	return out
}
