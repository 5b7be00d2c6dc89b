#!/usr/bin/env bash
# Start a throw-away PostgreSQL server on loopback, for tests, benchmarks and by hand.
#
#   scripts/start-postgres.sh DIR          start; DIR (created, should be empty) gets the TLS
#                                          certificates, the data directory, the socket, the log
#                                          and a pid file
#   scripts/start-postgres.sh --stop DIR   stop what a start in DIR started (by pid file)
#
# On success prints, on stdout, lines for `eval`:
#   PGHOST=127.0.0.1 PGPORT=PORT PGUSER=postgres PGPASSWORD=... (the superuser, SCRAM over TCP)
#   PG_CA_CERT=DIR/pki/ca.crt (the CA of the server certificate, for sslmode=verify-full with host
#   127.0.0.1 or localhost) PG_SOCKET_DIR=DIR/sock PG_VERSION=15 POSTGRES_PID=...
# Binaries: $PG_BIN, else the newest /usr/lib/postgresql/*/bin (scripts/install-postgres.sh).
# initdb and the server refuse to run as root: as root they run as the `postgres` OS user.
# Durability is off (fsync=off, synchronous_commit=off): a test server; extra server settings
# can be passed as "-c name=value ..." in $GATEHOUSE_PG_OPTIONS.
set -euo pipefail

log() { echo "start-postgres: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

stop() {
  local dir="$1" pid
  [[ -f "$dir/postgres.pid" ]] || return 0
  pid="$(cat "$dir/postgres.pid")"
  # SIGINT is PostgreSQL's "fast" shutdown: sessions are ended, the server exits cleanly.
  if kill -INT "$pid" 2>/dev/null; then
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/postgres.pid"
}

if [[ "${1:-}" == "--stop" ]]; then
  stop "${2:?usage: $0 --stop DIR}"
  exit 0
fi
dir="${1:?usage: $0 DIR | --stop DIR}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
[[ ! -f "$dir/postgres.pid" ]] || die "$dir already has a running server (use --stop)"

ok=0
trap '(( ok )) || stop "$dir"' EXIT   # a failed start leaves nothing running
trap 'exit 143' INT TERM HUP

bin="${PG_BIN:-}"
if [[ -z "$bin" ]]; then
  bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
fi
[[ -n "$bin" && -x "$bin/initdb" && -x "$bin/pg_ctl" ]] \
  || die "no PostgreSQL server binaries (run scripts/install-postgres.sh, or set PG_BIN)"
version="$("$bin/pg_ctl" --version | sed -E 's/.* ([0-9]+)(\.[0-9]+)*.*/\1/')"

# As root, run the server's tools as the postgres OS user, which must own the directory.
as_pg=()
if [[ "$(id -u)" == 0 ]]; then
  id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' OS user (install postgresql, or run as a normal user)"
  as_pg=(runuser -u postgres --)
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- certificates -----------------------------------------------------------------------------
pki="$dir/pki"
mkdir -p "$pki" "$dir/sock"
(
  cd "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=gatehouse-test-postgres-ca" \
    -keyout ca.key -out ca.crt \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
  openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -out server.crt \
    -extfile <(printf '%b' 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost') 2>/dev/null
  rm -f server.csr ca.key
  chmod 600 server.key
)

password="$(openssl rand -hex 16)"
printf '%s\n' "$password" >"$dir/superuser.pw"
chmod 600 "$dir/superuser.pw"
if (( ${#as_pg[@]} )); then
  chown -R postgres: "$dir"
  "${as_pg[@]}" test -w "$dir" || die "the postgres OS user cannot reach $dir (is a parent directory private?); use a directory under /tmp"
fi

# --- initdb and start -------------------------------------------------------------------------
t0="$(date +%s.%N)"
"${as_pg[@]}" "$bin/initdb" -D "$dir/data" -U postgres --pwfile="$dir/superuser.pw" \
  --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C --no-sync --no-instructions \
  >"$dir/initdb.log" 2>&1 || die "initdb failed; see $dir/initdb.log: $(tail -5 "$dir/initdb.log")"
rm -f "$dir/superuser.pw"
port="$(free_port)"
# shellcheck disable=SC2086 # GATEHOUSE_PG_OPTIONS is a list of "-c name=value" words
"${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
  -o "-p $port -k $dir/sock -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file=$pki/server.crt -c ssl_key_file=$pki/server.key -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 ${GATEHOUSE_PG_OPTIONS:-}" \
  start >"$dir/pg_ctl.log" 2>&1 || die "pg_ctl start failed; see $dir/postgres.log: $(tail -5 "$dir/postgres.log" 2>/dev/null)"
head -1 "$dir/data/postmaster.pid" >"$dir/postgres.pid"
log "PostgreSQL $version ready on 127.0.0.1:$port in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}') s"

ok=1
cat <<OUT
PGHOST=127.0.0.1
PGPORT=$port
PGUSER=postgres
PGPASSWORD=$password
PG_CA_CERT=$pki/ca.crt
PG_SOCKET_DIR=$dir/sock
PG_VERSION=$version
POSTGRES_PID=$(cat "$dir/postgres.pid")
OUT
