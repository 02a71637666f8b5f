package schema

import "slices"

// platformExtensions are extensions that managed services install in every database
// they give their users, and that hold no data of the user's: statistics of queries
// and waits, auditing, and Timescale's toolkit (pg_stat_statements and
// timescaledb_toolkit come with a Timescale Cloud service's defaultdb). Found in a
// target database that the source's lacks, one is the target's own: pre-flight does
// not block on it and verify does not count it, nor its version, as a difference.
var platformExtensions = []string{
	"pg_stat_statements", "pg_stat_kcache", "pg_stat_monitor", "pg_wait_sampling", "pg_qualstats",
	"pgaudit", "timescaledb_toolkit",
}

// PlatformExtension says whether extension name is one a managed service may have
// installed in the target database before the migration (see platformExtensions).
func PlatformExtension(name string) bool { return slices.Contains(platformExtensions, name) }
