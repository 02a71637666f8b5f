package schema

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// ErrCatalogVersions is why TimescaleDB's catalog is not restored across versions.
var ErrCatalogVersions = errors.New("TimescaleDB's catalog fits only the version that wrote it (timescaledb_post_restore() checks it), so it is not restored across versions")

// CompareVersions compares two extension versions as pg_extension.extversion writes
// them ("2.19.3", "2.20.0-dev", "1.0") by their numbers (major, minor, patch): -1, 0 or
// 1. ok is false when either does not start with a number.
func CompareVersions(a, b string) (cmp int, ok bool) {
	x, okA := versionNumbers(a)
	y, okB := versionNumbers(b)
	if !okA || !okB {
		return 0, false
	}
	return slices.Compare(x, y), true
}

// versionNumbers reads major, minor and patch (missing ones are 0); what follows the
// numbers ("-dev", "-rc1") is not compared.
func versionNumbers(v string) ([]int, bool) {
	out := make([]int, 3)
	for i, p := range strings.SplitN(v, ".", 3) {
		end := strings.IndexFunc(p, func(r rune) bool { return r < '0' || r > '9' })
		if end < 0 {
			end = len(p)
		}
		n, err := strconv.Atoi(p[:end])
		if err != nil {
			return out, i > 0
		}
		out[i] = n
		if end < len(p) {
			break
		}
	}
	return out, true
}

// sameMajor says whether a and b are of the same TimescaleDB major version (2.x).
func sameMajor(a, b string) bool {
	x, okA := versionNumbers(a)
	y, okB := versionNumbers(b)
	return okA && okB && x[0] == y[0]
}

// TimescaleDBTarget is the TimescaleDB a migration has in the target database, given
// the source's version: the one installed there; else the target server's default
// version (what CREATE EXTENSION timescaledb installs, as the services have it), when it
// is the source's or newer within the same major; else the source's, when the target
// offers it. A newer version is an upgrade on the way: TimescaleDB's catalog, which fits
// only the version that wrote it, cannot be restored, and the migration goes through
// TimescaleDB's API (PathAPI). An older version or another major is refused: Problem
// says why, naming both versions, Do what to do.
type TimescaleDBTarget struct {
	Source    string // the source's version
	Version   string // the target's, "" when Problem is set
	Installed bool   // already installed in the target database
	Problem   string
	Do        string
}

// Upgrade says whether the target's TimescaleDB is newer than the source's.
func (t TimescaleDBTarget) Upgrade() bool {
	c, ok := CompareVersions(t.Version, t.Source)
	return t.Problem == "" && ok && c > 0
}

// PlanTimescaleDB picks the target's TimescaleDB for a source at version source:
// installed is the version installed in the target database ("" when none),
// defaultVersion the target server's default ("" when it offers none), available the
// versions it offers.
func PlanTimescaleDB(source, installed, defaultVersion string, available []string) TimescaleDBTarget {
	t := TimescaleDBTarget{Source: source}
	newer := func(v string) bool {
		c, ok := CompareVersions(v, source)
		return ok && c >= 0 && sameMajor(v, source)
	}
	switch {
	case installed != "":
		t.Installed = true
		if installed == source || newer(installed) {
			t.Version = installed
			return t
		}
		t.Problem = fmt.Sprintf("source uses TimescaleDB %s; the target database has %s installed: %s", source, installed, downgrade(source, installed))
		t.Do = fmt.Sprintf("on the empty target database run DROP EXTENSION timescaledb, then migrate again (tsmigrate creates TimescaleDB %s or the newest the target offers), or pick a target with TimescaleDB %s or newer", source, source)
	case defaultVersion == "" && len(available) == 0:
		t.Problem = fmt.Sprintf("source uses TimescaleDB %s; the target server does not offer TimescaleDB at all", source)
		t.Do = fmt.Sprintf("install TimescaleDB %s or newer on the target server (shared_preload_libraries = 'timescaledb'), or pick a target that has it", source)
	case defaultVersion == source || (defaultVersion != "" && newer(defaultVersion)):
		t.Version = defaultVersion
	case slices.Contains(available, source):
		t.Version = source
	default:
		offered := defaultVersion
		if len(available) > 0 {
			offered = strings.Join(available, ", ")
		}
		t.Problem = fmt.Sprintf("source uses TimescaleDB %s; the target server offers only %s: %s", source, offered, downgrade(source, defaultVersion))
		t.Do = fmt.Sprintf("install TimescaleDB %s or newer (of the same major) on the target server, or pick a target that has it", source)
	}
	return t
}

// downgrade says why target cannot take a source at version source.
func downgrade(source, target string) string {
	if target != "" && !sameMajor(source, target) {
		return "another major version, which a migration does not cross"
	}
	return "a migration cannot make TimescaleDB older"
}

// sqlTimescaleDBOffer is what the connected server offers of TimescaleDB: its default
// version ("" when it offers none) and every version it can install.
const sqlTimescaleDBOffer = `SELECT coalesce((SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'), ''),
	coalesce((SELECT array_agg(version::text ORDER BY version) FROM pg_available_extension_versions WHERE name = 'timescaledb'), '{}')`

// ReadTimescaleDBTarget plans the TimescaleDB of the database conn is connected to (the
// target's) for a source at version source (PlanTimescaleDB), and reads the schema it
// is installed in ("" when it is not).
func ReadTimescaleDBTarget(ctx context.Context, conn *pgx.Conn, source string) (TimescaleDBTarget, string, error) {
	installed, extSchema, _, err := installedTimescaleDB(ctx, conn)
	if err != nil {
		return TimescaleDBTarget{}, "", err
	}
	var def string
	var available []string
	if err := conn.QueryRow(ctx, sqlTimescaleDBOffer).Scan(&def, &available); err != nil {
		return TimescaleDBTarget{}, "", fmt.Errorf("read the target's TimescaleDB versions: %w", err)
	}
	return PlanTimescaleDB(source, installed, def, available), extSchema, nil
}
