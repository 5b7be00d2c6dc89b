#!/usr/bin/env bash
# A throw-away Active Directory domain (Samba's AD DC) on loopback, for the Active Directory
# tests.
#
#   start-samba.sh DIR          provision the domain into DIR unless it exists (from a cached
#                               template when there is one), start samba in the background,
#                               wait until LDAPS answers, print the connection facts
#   start-samba.sh --stop DIR   stop it by PID (DIR/samba.pid), keeping DIR
#
# Samba needs root and the fixed ports 88 (kdc), 389 and 636 (ldap): one domain controller
# per machine at a time, so a test binary shares one and gives each test its own OU.
# Provisioning takes ~4 s on two cores; the provisioned domain is cached as a template under
# ${GATEHOUSE_CACHE:-~/.cache/gatehouse}/samba-template and copied per run (paths inside
# smb.conf are rewritten). TLS uses a throw-away CA whose server certificate names 127.0.0.1
# and localhost (Samba's own self-signed certificate names only the host name).
# Printed on success (one KEY=VALUE per line):
#   LDAPS_URL=ldaps://127.0.0.1:636  LDAP_URL=ldap://127.0.0.1:389  CA=DIR/tls/ca.crt
#   BASE_DN=DC=gatehouse,DC=test  REALM=GATEHOUSE.TEST  DOMAIN=GATEHOUSE
#   ADMIN_DN=CN=Administrator,CN=Users,DC=gatehouse,DC=test  ADMIN_PASSWORD=...  PID=...
set -euo pipefail

REALM=GATEHOUSE.TEST
DOMAIN=GATEHOUSE
BASE_DN="DC=gatehouse,DC=test"
ADMIN_DN="CN=Administrator,CN=Users,$BASE_DN"
ADMIN_PASSWORD='Adm1n-Secret!gh'
CACHE="${GATEHOUSE_CACHE:-$HOME/.cache/gatehouse}"
TEMPLATE="$CACHE/samba-template"

stop() {
  local dir=$1
  [ -f "$dir/samba.pid" ] || return 0
  local pid
  pid=$(cat "$dir/samba.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/samba.pid"
}

if [ "${1:-}" = "--stop" ]; then
  stop "$2"
  exit 0
fi

DIR=${1:?usage: start-samba.sh DIR | --stop DIR}
[ "$(id -u)" -eq 0 ] || { echo "start-samba.sh: Samba's AD DC needs root (ports 88/389/636)" >&2; exit 1; }
command -v samba-tool >/dev/null || { echo "samba-tool is missing: run scripts/install-samba.sh" >&2; exit 1; }
command -v openssl >/dev/null || { echo "openssl is required" >&2; exit 1; }
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A provisioned domain under $1, with paths that say $1.
provision() {
  local into=$1
  rm -rf "$into"
  mkdir -p "$into"
  samba-tool domain provision --realm="$REALM" --domain="$DOMAIN" --server-role=dc \
    --adminpass="$ADMIN_PASSWORD" --dns-backend=NONE --use-rfc2307 --targetdir="$into" \
    --option="interfaces=lo" --option="bind interfaces only=yes" \
    --option="server services=ldap cldap kdc drepl" >"$into/provision.log" 2>&1 \
    || { cat "$into/provision.log" >&2; return 1; }
}

if [ ! -f "$DIR/ready" ]; then
  if [ ! -f "$TEMPLATE/ready" ]; then
    mkdir -p "$CACHE"
    start=$(date +%s)
    provision "$TEMPLATE.new"
    echo "start-samba.sh: provisioned the template domain in $(( $(date +%s) - start )) s" >&2
    touch "$TEMPLATE.new/ready"
    rm -rf "$TEMPLATE"
    mv "$TEMPLATE.new" "$TEMPLATE"
    # The template's files name $TEMPLATE.new; the copy below rewrites them.
    echo "$TEMPLATE.new" > "$TEMPLATE/origin"
  fi
  rm -rf "$DIR"
  cp -a "$TEMPLATE" "$DIR"
  rm -f "$DIR/ready"
  ORIGIN=$(cat "$DIR/origin")
  sed -i "s#$ORIGIN#$DIR#g" "$DIR/etc/smb.conf"
  mkdir -p "$DIR/tls" "$DIR/log"
  (
    cd "$DIR/tls"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 \
      -subj "/CN=gatehouse test CA" >/dev/null 2>&1
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
      -subj "/CN=localhost" >/dev/null 2>&1
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' > ext.cnf
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -out server.crt -days 2 -extfile ext.cnf >/dev/null 2>&1
    chmod 600 ./*.key
  )
  # Logs and the PID file into DIR; our certificate; simple binds on 389 allowed (the
  # tests still use LDAPS: unicodePwd needs it).
  python3 - "$DIR" <<'PY'
import sys
d = sys.argv[1]
p = f"{d}/etc/smb.conf"
s = open(p).read()
extra = (
    f"\tlog file = {d}/log/log.%m\n\tpid directory = {d}\n"
    f"\ttls enabled = yes\n\ttls keyfile = {d}/tls/server.key\n"
    f"\ttls certfile = {d}/tls/server.crt\n\ttls cafile = {d}/tls/ca.crt\n"
    "\tldap server require strong auth = no\n"
)
lines = [l for l in s.splitlines(keepends=True) if not l.strip().startswith("log file")]
out = []
for l in lines:
    out.append(l)
    if l.strip() == "[global]":
        out.append(extra)
open(p, "w").write("".join(out))
PY
  touch "$DIR/ready"
fi

stop "$DIR"
# The previous test binary's domain controller is stopped by a watcher up to half a second
# after that binary exits: give its ports a moment before calling them taken.
for port in 389 636 88; do
  for _ in $(seq 1 40); do
    port_busy "$port" || break
    sleep 0.5
  done
  if port_busy "$port"; then
    echo "start-samba.sh: port $port on 127.0.0.1 is taken (another domain controller or slapd on the fixed ports?)" >&2
    exit 1
  fi
done
# -F keeps samba in the foreground, so it is our child and its PID is $!.
setsid samba -F -s "$DIR/etc/smb.conf" --debug-stdout </dev/null >>"$DIR/samba.log" 2>&1 &
PID=$!
echo "$PID" > "$DIR/samba.pid"
for _ in $(seq 1 300); do
  if ! kill -0 "$PID" 2>/dev/null; then
    echo "samba exited at start-up; its log:" >&2
    tail -50 "$DIR/samba.log" >&2
    exit 1
  fi
  if port_busy 636 && port_busy 389; then
    break
  fi
  sleep 0.1
done
# Up when an LDAPS bind as the administrator answers.
for _ in $(seq 1 100); do
  if LDAPTLS_CACERT="$DIR/tls/ca.crt" ldapsearch -H ldaps://127.0.0.1 -x -D "$ADMIN_DN" \
      -w "$ADMIN_PASSWORD" -b "$BASE_DN" -s base dn >/dev/null 2>&1; then
    break
  fi
  sleep 0.1
done

cat <<OUT
LDAPS_URL=ldaps://127.0.0.1:636
LDAP_URL=ldap://127.0.0.1:389
CA=$DIR/tls/ca.crt
BASE_DN=$BASE_DN
REALM=$REALM
DOMAIN=$DOMAIN
ADMIN_DN=$ADMIN_DN
ADMIN_PASSWORD=$ADMIN_PASSWORD
PID=$PID
OUT
