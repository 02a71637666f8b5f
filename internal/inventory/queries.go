package inventory

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/tsmigrate/tsmigrate/internal/sqltext"
)

// The SQL below was checked against PostgreSQL 15, 16 and 17 and TimescaleDB 2.19.3.
// It reads catalogs and TimescaleDB's information views only (their columns are stable
// across 2.x), never _timescaledb_catalog tables, whose shape changes between releases.
// Sizes come from pg_class statistics: pg_relation_size and friends lock every relation
// they measure, and one statement measuring 10 000 chunks would exhaust the lock table.

// userSchema is true for a namespace n that is neither PostgreSQL's own nor an
// extension's (TimescaleDB's schemas are its members). tsmigrate's journal schema is
// listed: a target holding one is not empty.
var userSchema = `NOT ` + sqltext.SystemSchema("n.nspname") + `
	AND NOT ` + sqltext.ExtensionMember(sqltext.Catalog("pg_namespace"), "n.oid")

// notExtension* are true for an object that no extension owns.
var (
	notExtensionRel  = `NOT ` + sqltext.ExtensionMember(sqltext.Catalog("pg_class"), "c.oid")
	notExtensionProc = `NOT ` + sqltext.ExtensionMember(sqltext.Catalog("pg_proc"), "p.oid")
	notExtensionType = `NOT ` + sqltext.ExtensionMember(sqltext.Catalog("pg_type"), "t.oid")
)

// relBytes estimates a relation c's heap, TOAST and index bytes from relpages.
const relBytes = `(c.relpages::bigint + coalesce(t.relpages, 0)
	+ coalesce((SELECT sum(i.relpages)::bigint FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
		WHERE x.indrelid = c.oid), 0)) * current_setting('block_size')::bigint`

const serverSQL = `SELECT current_database(), pg_database_size(current_database()),
	current_setting('server_version'), current_setting('server_version_num')::int, pg_is_in_recovery(),
	current_setting('max_locks_per_transaction')::int, current_setting('max_connections')::int,
	current_setting('max_prepared_transactions')::int`

// connectionsSQL: how many of max_connections only superusers
// (superuser_reserved_connections) or members of pg_use_reserved_connections
// (reserved_connections, PostgreSQL 16+) may take, whether the user is such a member,
// and the client sessions connected now, on the server and to this database (this
// session included). pg_stat_activity shows every session's backend_type and datname
// to every role (PostgreSQL 15, 17).
const connectionsSQL = `SELECT current_setting('superuser_reserved_connections')::int,
	coalesce(current_setting('reserved_connections', true), '0')::int,
	EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pg_use_reserved_connections' AND pg_has_role(current_user, oid, 'MEMBER')),
	count(*), count(*) FILTER (WHERE datname = current_database())
FROM pg_stat_activity WHERE backend_type = 'client backend'`

const userSQL = `SELECT r.rolname, r.rolsuper, r.rolcreatedb, r.rolcreaterole, r.rolreplication, r.rolbypassrls,
	pg_has_role(current_user, d.datdba, 'USAGE'), pg_get_userbyid(d.datdba),
	has_database_privilege(current_database(), 'CREATE'),
	coalesce((SELECT has_schema_privilege(oid, 'CREATE') FROM pg_namespace WHERE nspname = 'public'), false),
	pg_has_role(current_user, 'pg_signal_backend', 'MEMBER')
FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = current_database()`

const extensionsSQL = `SELECT e.extname, e.extversion, n.nspname
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace ORDER BY 1`

const availableSQL = `SELECT a.name, coalesce(a.default_version, ''), coalesce(a.installed_version, ''),
	array_agg(v.version::text ORDER BY v.version)
FROM pg_available_extensions a JOIN pg_available_extension_versions v ON v.name = a.name
GROUP BY 1, 2, 3 ORDER BY 1`

var schemasSQL = `SELECT n.nspname, pg_get_userbyid(n.nspowner) FROM pg_namespace n
WHERE ` + userSchema + ` ORDER BY 1`

// The row security column: the table's policies apply to the connected user, unless it
// is a superuser or has BYPASSRLS (see User): row security is on and the user does not
// own the table (directly or through a role), or the owner is subject too (FORCE).
var tablesSQL = `SELECT n.nspname, c.relname, c.relkind::text, pg_get_userbyid(c.relowner),
	c.relpersistence = 'u', has_table_privilege(c.oid, 'SELECT'), c.reltuples::bigint, ` + relBytes + `,
	c.relrowsecurity AND (c.relforcerowsecurity OR NOT pg_has_role(c.relowner, 'USAGE'))
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_class t ON t.oid = c.reltoastrelid
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND ` + userSchema + `
	AND ` + notExtensionRel + `
ORDER BY 1, 2`

var sequencesSQL = `SELECT n.nspname, c.relname, has_sequence_privilege(c.oid, 'SELECT'),
	coalesce((SELECT format('%s.%I', d.refobjid::regclass, a.attname) FROM pg_depend d
		JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
		WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass
			AND d.deptype IN ('a', 'i') LIMIT 1), '')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'S' AND ` + userSchema + ` AND ` + notExtensionRel + `
ORDER BY 1, 2`

// objectsSQL lists user routines and types; a type is left out when it is the row type
// of a table or view, an array type, or a multirange made for a range type.
var objectsSQL = `SELECT n.nspname, p.proname::text, CASE p.prokind WHEN 'p' THEN 'procedure'
		WHEN 'a' THEN 'aggregate' WHEN 'w' THEN 'window function' ELSE 'function' END
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE ` + userSchema + ` AND ` + notExtensionProc + `
UNION ALL
SELECT n.nspname, t.typname::text, 'type'
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE ` + userSchema + ` AND ` + notExtensionType + `
	AND t.typtype <> 'm'
	AND (t.typrelid = 0 OR (SELECT c.relkind = 'c' FROM pg_class c WHERE c.oid = t.typrelid))
	AND NOT EXISTS (SELECT 1 FROM pg_type el WHERE el.oid = t.typelem AND el.typarray = t.oid)
ORDER BY 3, 1, 2`

const largeObjectsSQL = `SELECT count(*) FROM pg_largeobject_metadata`

const sessionsSQL = `SELECT pid, coalesce(usename, ''), coalesce(application_name, ''), coalesce(state, ''),
	xact_start, coalesce(extract(epoch FROM now() - xact_start), 0)::float8, backend_xid IS NOT NULL
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
ORDER BY xact_start NULLS LAST, pid`

const preparedSQL = `SELECT gid, database::text, owner::text, prepared FROM pg_prepared_xacts ORDER BY prepared`

// subscriptionsSQL lists the database's subscriptions: columns every role may read
// (subconninfo is not one of them). PostgreSQL 15, 17.
const subscriptionsSQL = `SELECT subname::text, subenabled FROM pg_subscription
WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY 1`

const slotsSQL = `SELECT slot_name::text, slot_type, coalesce(plugin::text, ''), coalesce(database::text, ''), active
FROM pg_replication_slots ORDER BY 1`

// licenseSQL: the GUC exists once the extension's library is loaded in this database.
const licenseSQL = `SELECT coalesce(current_setting('timescaledb.license', true), '')`

const hypertablesSQL = `SELECT hypertable_schema::text, hypertable_name::text, coalesce(owner::text, ''),
	num_dimensions, num_chunks, coalesce(compression_enabled, false)
FROM timescaledb_information.hypertables ORDER BY 1, 2`

// chunksSQL: MissingDefaults counts a compressed chunk's columns whose value its rows
// read from the chunk's catalog (pg_attribute.attmissingval: a column added with a
// default after the chunk was compressed), by the index on attrelid.
const chunksSQL = `SELECT ch.hypertable_schema::text, ch.hypertable_name::text, ch.chunk_schema::text, ch.chunk_name::text,
	ch.range_start, ch.range_end, ch.range_start_integer, ch.range_end_integer, coalesce(ch.is_compressed, false),
	coalesce(has_table_privilege(c.oid, 'SELECT'), false), coalesce(c.reltuples::bigint, -1), coalesce(` + relBytes + `, 0),
	CASE WHEN ch.is_compressed THEN (SELECT count(*) FROM pg_attribute a
		WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.atthasmissing) ELSE 0 END
FROM timescaledb_information.chunks ch
	LEFT JOIN pg_namespace n ON n.nspname = ch.chunk_schema
	LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = ch.chunk_name
	LEFT JOIN pg_class t ON t.oid = c.reltoastrelid
ORDER BY 1, 2, ch.range_start NULLS LAST, ch.range_start_integer NULLS LAST, 4`

const caggsSQL = `SELECT view_schema::text, view_name::text, hypertable_schema::text, hypertable_name::text,
	coalesce(materialized_only, false), materialization_hypertable_schema::text, materialization_hypertable_name::text
FROM timescaledb_information.continuous_aggregates ORDER BY 1, 2`

// jobsSQL: next_start is -infinity for a job the scheduler has not planned yet (seen on
// TimescaleDB 2.19.3 right after CREATE EXTENSION); that reads as "no next start".
const jobsSQL = `SELECT job_id, coalesce(application_name::text, ''), coalesce(proc_schema || '.' || proc_name, ''),
	coalesce(owner::text, ''), coalesce(scheduled, false), coalesce(schedule_interval::text, ''),
	coalesce(hypertable_schema::text, ''), coalesce(hypertable_name::text, ''),
	CASE WHEN isfinite(next_start) THEN next_start END
FROM timescaledb_information.jobs ORDER BY 1`

type loader struct {
	conn *pgx.Conn
	d    *Database
}

// each runs sql and calls scan for every row.
func (l *loader) each(ctx context.Context, sql string, scan func(pgx.Rows) error) error {
	l.d.Queries++
	rows, err := l.conn.Query(ctx, sql)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// collect runs sql and appends each row, read by scan, to dst.
func collect[T any](ctx context.Context, l *loader, sql string, dst *[]T, scan func(pgx.Rows, *T) error) error {
	return l.each(ctx, sql, func(r pgx.Rows) error {
		var v T
		if err := scan(r, &v); err != nil {
			return err
		}
		*dst = append(*dst, v)
		return nil
	})
}

func (l *loader) row(ctx context.Context, sql string, dest ...any) error {
	l.d.Queries++
	return l.conn.QueryRow(ctx, sql).Scan(dest...)
}

func (l *loader) server(ctx context.Context) error {
	s := &l.d.Server
	if err := l.row(ctx, serverSQL, &l.d.Name, &l.d.Bytes, &s.Version, &s.VersionNum, &s.InRecovery,
		&s.MaxLocksPerTransaction, &s.MaxConnections, &s.MaxPreparedXacts); err != nil {
		return err
	}
	s.Major = s.VersionNum / 10000
	return nil
}

func (l *loader) identity(ctx context.Context) (err error) {
	l.d.Queries++
	l.d.Identity, err = ReadIdentity(ctx, l.conn)
	return err
}

func (l *loader) connections(ctx context.Context) error {
	s := &l.d.Server
	return l.row(ctx, connectionsSQL, &s.SuperuserReserved, &s.Reserved, &l.d.User.UseReserved, &s.ClientSessions, &s.ClientSessionsHere)
}

func (l *loader) user(ctx context.Context) error {
	u := &l.d.User
	return l.row(ctx, userSQL, &u.Name, &u.Superuser, &u.CreateDB, &u.CreateRole, &u.Replication, &u.BypassRLS,
		&u.OwnsDatabase, &u.DatabaseOwner, &u.CanCreate, &u.CanCreateInPublic, &u.SignalBackend)
}

func (l *loader) extensions(ctx context.Context) error {
	return l.each(ctx, extensionsSQL, func(r pgx.Rows) error {
		var e Extension
		if err := r.Scan(&e.Name, &e.Version, &e.Schema); err != nil {
			return err
		}
		l.d.Extensions = append(l.d.Extensions, e)
		if e.Name == "timescaledb" {
			l.d.TimescaleDB = &TimescaleDB{Version: e.Version, Schema: e.Schema}
		}
		return nil
	})
}

func (l *loader) available(ctx context.Context) error {
	return collect(ctx, l, availableSQL, &l.d.Available, func(r pgx.Rows, a *AvailableExtension) error {
		return r.Scan(&a.Name, &a.DefaultVersion, &a.Installed, &a.Versions)
	})
}

func (l *loader) schemas(ctx context.Context) error {
	return collect(ctx, l, schemasSQL, &l.d.Schemas, func(r pgx.Rows, s *Schema) error {
		return r.Scan(&s.Name, &s.Owner)
	})
}

var relKinds = map[string]string{
	"r": "table", "p": "partitioned table", "v": "view", "m": "materialized view", "f": "foreign table",
}

func (l *loader) tables(ctx context.Context) error {
	return collect(ctx, l, tablesSQL, &l.d.Tables, func(r pgx.Rows, t *Table) error {
		var kind string
		err := r.Scan(&t.Schema, &t.Name, &kind, &t.Owner, &t.Unlogged, &t.Readable, &t.EstRows, &t.EstBytes, &t.RowSecurity)
		t.Kind = relKinds[kind]
		return err
	})
}

func (l *loader) sequences(ctx context.Context) error {
	return collect(ctx, l, sequencesSQL, &l.d.Sequences, func(r pgx.Rows, s *Sequence) error {
		return r.Scan(&s.Schema, &s.Name, &s.Readable, &s.OwnedBy)
	})
}

func (l *loader) objects(ctx context.Context) error {
	return l.each(ctx, objectsSQL, func(r pgx.Rows) error {
		var o Object
		if err := r.Scan(&o.Schema, &o.Name, &o.Kind); err != nil {
			return err
		}
		if o.Kind == "type" {
			l.d.Types = append(l.d.Types, o)
		} else {
			l.d.Routines = append(l.d.Routines, o)
		}
		return nil
	})
}

func (l *loader) largeObjects(ctx context.Context) error {
	return l.row(ctx, largeObjectsSQL, &l.d.LargeObjects)
}

func (l *loader) sessions(ctx context.Context) error {
	return collect(ctx, l, sessionsSQL, &l.d.Activity.Sessions, func(r pgx.Rows, s *Session) error {
		return r.Scan(&s.PID, &s.User, &s.Application, &s.State, &s.XactStart, &s.XactSeconds, &s.HoldsXID)
	})
}

func (l *loader) prepared(ctx context.Context) error {
	return collect(ctx, l, preparedSQL, &l.d.Activity.PreparedTransactions, func(r pgx.Rows, p *PreparedTransaction) error {
		return r.Scan(&p.GID, &p.Database, &p.Owner, &p.Prepared)
	})
}

func (l *loader) slots(ctx context.Context) error {
	return collect(ctx, l, slotsSQL, &l.d.Activity.ReplicationSlots, func(r pgx.Rows, s *ReplicationSlot) error {
		return r.Scan(&s.Name, &s.Type, &s.Plugin, &s.Database, &s.Active)
	})
}

func (l *loader) subscriptions(ctx context.Context) error {
	return collect(ctx, l, subscriptionsSQL, &l.d.Activity.Subscriptions, func(r pgx.Rows, s *Subscription) error {
		return r.Scan(&s.Name, &s.Enabled)
	})
}

func (l *loader) license(ctx context.Context) error {
	return l.row(ctx, licenseSQL, &l.d.TimescaleDB.License)
}

func (l *loader) hypertables(ctx context.Context) error {
	return collect(ctx, l, hypertablesSQL, &l.d.Hypertables, func(r pgx.Rows, h *Hypertable) error {
		return r.Scan(&h.Schema, &h.Name, &h.Owner, &h.Dimensions, &h.Chunks, &h.CompressionEnabled)
	})
}

func (l *loader) chunks(ctx context.Context) error {
	return collect(ctx, l, chunksSQL, &l.d.Chunks, func(r pgx.Rows, c *Chunk) error {
		return r.Scan(&c.HypertableSchema, &c.HypertableName, &c.Schema, &c.Name, &c.RangeStart, &c.RangeEnd,
			&c.RangeStartInt, &c.RangeEndInt, &c.Compressed, &c.Readable, &c.EstRows, &c.EstBytes, &c.MissingDefaults)
	})
}

func (l *loader) caggs(ctx context.Context) error {
	return collect(ctx, l, caggsSQL, &l.d.ContinuousAggregates, func(r pgx.Rows, c *ContinuousAggregate) error {
		return r.Scan(&c.Schema, &c.Name, &c.HypertableSchema, &c.HypertableName, &c.MaterializedOnly,
			&c.MaterializationSchema, &c.MaterializationTable)
	})
}

func (l *loader) jobs(ctx context.Context) error {
	return collect(ctx, l, jobsSQL, &l.d.Jobs, func(r pgx.Rows, j *Job) error {
		return r.Scan(&j.ID, &j.Application, &j.Proc, &j.Owner, &j.Scheduled, &j.ScheduleInterval,
			&j.HypertableSchema, &j.HypertableName, &j.NextStart)
	})
}

// markHypertables flags the tables that are hypertables, counts compressed chunks, and
// drops chunks from Tables (they are listed in Chunks; most live in TimescaleDB's own
// schema and never reach Tables, but a hypertable may put them in a user schema).
func (l *loader) markHypertables() {
	key := func(schema, name string) string { return schema + "\x00" + name }
	hyper := make(map[string]int, len(l.d.Hypertables))
	for i, h := range l.d.Hypertables {
		hyper[key(h.Schema, h.Name)] = i
	}
	chunk := make(map[string]bool, len(l.d.Chunks))
	for _, c := range l.d.Chunks {
		chunk[key(c.Schema, c.Name)] = true
		i, ok := hyper[key(c.HypertableSchema, c.HypertableName)]
		if !ok {
			continue
		}
		h := &l.d.Hypertables[i]
		if c.Compressed {
			h.CompressedChunks++
		}
		h.EstBytes += c.EstBytes
		if c.EstRows > 0 {
			h.EstRows += c.EstRows
		}
	}
	tables := l.d.Tables[:0]
	for _, t := range l.d.Tables {
		k := key(t.Schema, t.Name)
		if chunk[k] {
			continue
		}
		_, t.Hypertable = hyper[k]
		tables = append(tables, t)
	}
	l.d.Tables = tables
}

// DisplayName is schema.name as a user would type it, quoted only where needed.
func DisplayName(schema, name string) string {
	return Ident(schema) + "." + Ident(name)
}

// Ident is an identifier (a role, a database) as a user would type it in SQL: bare when
// it is lower case ASCII letters, digits, _ and $, double-quoted otherwise. Reserved
// words are not recognised: a role named "user" comes out bare.
func Ident(s string) string {
	if s == "" {
		return `""`
	}
	for i, r := range s {
		if !(r == '_' || (r >= 'a' && r <= 'z') || (i > 0 && (r == '$' || (r >= '0' && r <= '9')))) {
			return pgx.Identifier{s}.Sanitize()
		}
	}
	return s
}
