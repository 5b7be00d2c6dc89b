#!/usr/bin/env bash
# Install the PostgreSQL server binaries (initdb, pg_ctl, postgres) the PostgreSQL connector's
# tests and benchmark run. Idempotent and non-interactive: does nothing when a server is already
# installed under /usr/lib/postgresql/*/bin (or $PG_BIN), else installs Debian's postgresql-15
# without letting the package create and start its own cluster (the tests start their own).
set -euo pipefail
log() { echo "install-postgres: $*" >&2; }

have() {
  local dir
  [[ -n "${PG_BIN:-}" && -x "${PG_BIN}/initdb" && -x "${PG_BIN}/pg_ctl" ]] && return 0
  for dir in /usr/lib/postgresql/*/bin; do
    [[ -x "$dir/initdb" && -x "$dir/pg_ctl" && -x "$dir/postgres" ]] && return 0
  done
  return 1
}

if have; then
  log "PostgreSQL server binaries present"
  exit 0
fi
command -v apt-get >/dev/null || { log "no PostgreSQL server found and no apt-get: install PostgreSQL 15 (initdb, pg_ctl) or set PG_BIN" >&2; exit 1; }
[[ "$(id -u)" == 0 ]] || { log "installing PostgreSQL needs root (apt-get)" >&2; exit 1; }

# No default cluster: the package's postinst would otherwise create and start one on 5432.
mkdir -p /etc/postgresql-common/createcluster.d
echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/gatehouse-no-main.conf
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql-15 openssl >/dev/null
have || { log "postgresql-15 installed but initdb/pg_ctl not found under /usr/lib/postgresql/*/bin" >&2; exit 1; }
log "installed postgresql-15"
