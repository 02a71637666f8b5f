package preflight

import (
	"context"
	"fmt"
)

// sqlEncoding is the current database's encoding. PostgreSQL 15, 17.
const sqlEncoding = `SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()`

// checkEncoding compares the two databases' encodings. Text travels as characters
// (every session's client_encoding is UTF8, and each server converts from and to its
// own), so a target in UTF8 holds every source's characters, and one in the source's
// encoding holds them byte for byte. A target in another encoding lacks characters the
// source may hold: the copy would fail on the first, after the freeze. SQL_ASCII
// declares no encoding: its bytes are passed on unconverted, and a UTF8 target refuses
// those that are not UTF-8.
func (e *env) checkEncoding(ctx context.Context) ([]Finding, error) {
	var src, tgt string
	if err := e.src.QueryRow(ctx, sqlEncoding).Scan(&src); err != nil {
		return nil, fmt.Errorf("source: read the database's encoding: %w", err)
	}
	if err := e.tgt.QueryRow(ctx, sqlEncoding).Scan(&tgt); err != nil {
		return nil, fmt.Errorf("target: read the database's encoding: %w", err)
	}
	saw := fmt.Sprintf("source database %s is in encoding %s, target database %s in %s", e.srcInv.Name, src, e.tgtInv.Name, tgt)
	switch {
	case src == tgt:
		return []Finding{finding(Pass, "both", saw, "")}, nil
	case src == "SQL_ASCII":
		return []Finding{finding(Warn, "both", saw+": SQL_ASCII text is bytes of no declared encoding, passed on unconverted; the copy fails on any that are not valid "+tgt,
			"migrate into a target database in SQL_ASCII to keep the bytes as they are")}, nil
	case tgt == "UTF8":
		return []Finding{finding(Pass, "both", saw+": text is converted to UTF8 on its way", "")}, nil
	case tgt == "SQL_ASCII":
		return []Finding{finding(Warn, "both", saw+": SQL_ASCII stores bytes of no declared encoding; the source's text arrives as UTF-8 bytes, which clients reading in "+src+" get unconverted",
			fmt.Sprintf("migrate into a target database in %s or UTF8", src))}, nil
	}
	return []Finding{finding(Fail, "both", saw+": "+tgt+" lacks characters that "+src+" has, and the copy would fail on the first one, after the freeze",
		fmt.Sprintf("make the target database in UTF8 or %s (CREATE DATABASE ... TEMPLATE template0 ENCODING '%s'), or name a target database that does not exist: tsmigrate creates it in the source's encoding", src, src))}, nil
}
