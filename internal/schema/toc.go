package schema

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/tsmigrate/tsmigrate/internal/pgtools"
	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// tocDescs are the object kinds pg_dump writes into an archive's TOC (PostgreSQL 12-17,
// and 18's STATISTICS DATA). Kinds of more than one word must be known to split
// "TABLE DATA public t owner".
var tocDescs = []string{
	"ACCESS METHOD", "ACL", "AGGREGATE", "ATTRDEF", "BLOB", "BLOB METADATA", "BLOBS", "CAST",
	"CHECK CONSTRAINT", "COLLATION", "COMMENT", "CONSTRAINT", "CONVERSION", "DATABASE",
	"DATABASE PROPERTIES", "DEFAULT", "DEFAULT ACL", "DOMAIN", "ENCODING", "EVENT TRIGGER",
	"EXTENSION", "FK CONSTRAINT", "FOREIGN DATA WRAPPER", "FOREIGN SERVER", "FOREIGN TABLE",
	"FUNCTION", "INDEX", "INDEX ATTACH", "LARGE OBJECT", "LARGE OBJECTS", "MATERIALIZED VIEW",
	"MATERIALIZED VIEW DATA", "OPERATOR", "OPERATOR CLASS", "OPERATOR FAMILY", "POLICY",
	"PROCEDURAL LANGUAGE", "PROCEDURE", "PUBLICATION", "PUBLICATION TABLE",
	"PUBLICATION TABLES IN SCHEMA", "ROW SECURITY", "RULE", "SCHEMA", "SEARCHPATH",
	"SECURITY LABEL", "SEQUENCE", "SEQUENCE OWNED BY", "SEQUENCE SET", "SERVER", "SHELL TYPE",
	"STATISTICS", "STATISTICS DATA", "STDSTRINGS", "SUBSCRIPTION", "SUBSCRIPTION TABLE", "TABLE", "TABLE ATTACH",
	"TABLE DATA", "TEXT SEARCH CONFIGURATION", "TEXT SEARCH DICTIONARY", "TEXT SEARCH PARSER",
	"TEXT SEARCH TEMPLATE", "TRANSFORM", "TRIGGER", "TYPE", "USER MAPPING", "VIEW",
}

func init() { sort.Slice(tocDescs, func(i, j int) bool { return len(tocDescs[i]) > len(tocDescs[j]) }) }

// splitDesc takes the longest known kind off the front of s; an unknown kind is one word.
func splitDesc(s string) (desc, rest string) {
	for _, d := range tocDescs {
		if s == d {
			return d, ""
		}
		if strings.HasPrefix(s, d+" ") {
			return d, s[len(d)+1:]
		}
	}
	if i := strings.IndexByte(s, ' '); i >= 0 {
		return s[:i], s[i+1:]
	}
	return s, ""
}

// TOCEntry is one line of `pg_restore -l`: "303; 1259 17248 TABLE public devices postgres".
// Schema is "" where the listing shows "-". A schema or owner name with a space in it
// is mis-split (the listing does not quote names); Name then holds the rest.
type TOCEntry struct {
	ID int
	// CatalogTable and OID are the source catalog's (table OID, object OID) of the entry's object:
	// 1259 and the index's OID for an INDEX, 2606 and the constraint's for a CONSTRAINT.
	CatalogTable, OID uint32
	Desc              string
	Schema            string
	Name              string
	Owner             string
	Line              string // as listed
}

// Object names the entry for a person: "TABLE DATA public.devices".
func (e TOCEntry) Object() string {
	name := e.Name
	if e.Schema != "" {
		name = e.Schema + "." + e.Name
	}
	return strings.TrimSpace(e.Desc + " " + name)
}

// TOC is an archive's table of contents.
type TOC struct {
	Header  []string // the ";" comment lines
	Entries []TOCEntry
	byID    map[int]int
}

var tocLine = regexp.MustCompile(`^(\d+); (\d+) (\d+) (.*)$`)

// ParseTOCLine reads one entry line of `pg_restore -l`.
func ParseTOCLine(s string) (TOCEntry, bool) {
	m := tocLine.FindStringSubmatch(s)
	if m == nil {
		return TOCEntry{}, false
	}
	id, ok := atoi(m[1])
	if !ok {
		return TOCEntry{}, false
	}
	desc, rest := splitDesc(m[4])
	e := TOCEntry{ID: id, Desc: desc, Line: s}
	if n, err := strconv.ParseUint(m[2], 10, 32); err == nil {
		e.CatalogTable = uint32(n)
	}
	if n, err := strconv.ParseUint(m[3], 10, 32); err == nil {
		e.OID = uint32(n)
	}
	fields := strings.SplitN(rest, " ", 2)
	if len(fields) < 2 {
		e.Schema = rest
	} else {
		e.Schema = fields[0]
		tag := fields[1]
		if i := strings.LastIndexByte(tag, ' '); i >= 0 {
			e.Name, e.Owner = tag[:i], tag[i+1:]
		} else {
			e.Name = tag
		}
	}
	if e.Schema == "-" {
		e.Schema = ""
	}
	if e.Owner == "-" {
		e.Owner = ""
	}
	return e, true
}

// ParseTOC reads the output of `pg_restore -l`.
func ParseTOC(r io.Reader) (*TOC, error) {
	t := &TOC{byID: map[int]int{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for sc.Scan() {
		s := sc.Text()
		if s == "" {
			continue
		}
		if strings.HasPrefix(s, ";") {
			t.Header = append(t.Header, s)
			continue
		}
		e, ok := ParseTOCLine(s)
		if !ok {
			return nil, fmt.Errorf("unreadable TOC line %q", s)
		}
		t.byID[e.ID] = len(t.Entries)
		t.Entries = append(t.Entries, e)
	}
	return t, sc.Err()
}

// Entry finds an entry by its dump ID.
func (t *TOC) Entry(id int) (TOCEntry, bool) {
	if t == nil {
		return TOCEntry{}, false
	}
	i, ok := t.byID[id]
	if !ok {
		return TOCEntry{}, false
	}
	return t.Entries[i], true
}

// WriteList writes a list file for `pg_restore -L` holding the entries keep accepts,
// in the TOC's order, never those of a live migration's publication (livePublication).
func (t *TOC) WriteList(path string, keep func(TOCEntry) bool) (int, error) {
	var b bytes.Buffer
	n := 0
	for _, e := range t.Entries {
		if !livePublication(e) && keep(e) {
			b.WriteString(e.Line)
			b.WriteByte('\n')
			n++
		}
	}
	return n, os.WriteFile(path, b.Bytes(), 0o600)
}

// livePublicationName: the name package live gives the publication of a live
// migration on the source: tsmigrate_ and 16 hex digits.
var livePublicationName = regexp.MustCompile(sqltext.LiveName)

// livePublication says whether e belongs to a live migration's publication (its
// PUBLICATION, PUBLICATION TABLE, PUBLICATION TABLES IN SCHEMA entries, whose name
// starts with the publication's): tsmigrate's own on the source, in a schema dump taken
// in the slot's snapshot, not the user's; and a target user that is no superuser could
// not make it (FOR TABLES IN SCHEMA).
func livePublication(e TOCEntry) bool {
	if !strings.HasPrefix(e.Desc, "PUBLICATION") {
		return false
	}
	name, _, _ := strings.Cut(e.Name, " ")
	return livePublicationName.MatchString(name)
}

// ReadTOC lists the TOC of an archive (a dump directory or a custom-format file).
func ReadTOC(ctx context.Context, tools *pgtools.Tools, archive string) (*TOC, error) {
	return listTOC(ctx, tools, archive)
}

// listTOC runs pg_restore -l with args (options, then the archive).
func listTOC(ctx context.Context, tools *pgtools.Tools, args ...string) (*TOC, error) {
	var out bytes.Buffer
	var stderr []string
	err := tools.Run(ctx, pgtools.Cmd{Program: "pg_restore", Args: append([]string{"-l"}, args...), Stdout: &out,
		Line: func(_ int, s string) { stderr = append(stderr, s) }})
	if err != nil {
		return nil, fmt.Errorf("list the dump's contents: %w: %s", err, strings.Join(stderr, " "))
	}
	return ParseTOC(&out)
}
