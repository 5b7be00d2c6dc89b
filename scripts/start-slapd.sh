#!/usr/bin/env bash
# A private OpenLDAP slapd for the LDAP connector's tests and benchmark, on loopback.
#
#   start-slapd.sh DIR          build DIR (CA and server certificate, cn=config with the
#                               memberof, refint and ppolicy overlays, base data) unless it
#                               exists, start slapd in the background, print its endpoints
#   start-slapd.sh --stop DIR   stop it by PID (DIR/slapd.pid), keeping DIR for a restart
#
# The configuration is built offline with `slapadd -n0` and the data with `slapadd -n1`;
# nothing touches the system's /etc/ldap or its slapd. A restart of an existing DIR reuses
# its ports and data. Printed on success (one KEY=VALUE per line):
#   LDAP_URL=ldap://127.0.0.1:P  LDAPS_URL=ldaps://127.0.0.1:Q  CA=DIR/tls/ca.crt
#   BASE_DN=dc=acme,dc=example   ADMIN_DN=cn=admin,dc=acme,dc=example  ADMIN_PASSWORD=...
#   BIND_DN=cn=gatehouse,ou=services,dc=acme,dc=example  BIND_PASSWORD=...  PID=...
set -euo pipefail

SBIN=/usr/sbin
MODULES=/usr/lib/ldap
SCHEMA=/etc/ldap/schema
BASE_DN="dc=acme,dc=example"
ADMIN_DN="cn=admin,$BASE_DN"
ADMIN_PASSWORD="admin-secret"
BIND_DN="cn=gatehouse,ou=services,$BASE_DN"
BIND_PASSWORD="gatehouse-secret"
# The member a groupOfNames keeps when its last real member goes (refint uses it too).
PLACEHOLDER="cn=nobody,$BASE_DN"

stop() {
  local dir=$1
  [ -f "$dir/slapd.pid" ] || return 0
  local pid
  pid=$(cat "$dir/slapd.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/slapd.pid"
}

if [ "${1:-}" = "--stop" ]; then
  stop "$2"
  exit 0
fi

DIR=${1:?usage: start-slapd.sh DIR | --stop DIR}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

if [ ! -f "$DIR/ready" ]; then
  command -v openssl >/dev/null || { echo "openssl is required" >&2; exit 1; }
  [ -x "$SBIN/slapd" ] || { echo "slapd is missing: run scripts/install-ldap.sh" >&2; exit 1; }
  rm -rf "$DIR/config" "$DIR/data" "$DIR/tls"
  mkdir -p "$DIR/config" "$DIR/data" "$DIR/tls"

  # A throwaway CA and a server certificate for 127.0.0.1 and localhost.
  (
    cd "$DIR/tls"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 \
      -subj "/CN=gatehouse test CA" >/dev/null 2>&1
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
      -subj "/CN=localhost" >/dev/null 2>&1
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' > ext.cnf
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -out server.crt -days 2 -extfile ext.cnf >/dev/null 2>&1
    # A second, unrelated CA: what a client trusting the wrong CA has.
    openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.crt -days 2 \
      -subj "/CN=some other CA" >/dev/null 2>&1
    chmod 600 ./*.key
  )

  cat > "$DIR/config.ldif" <<LDIF
dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: $DIR/slapd.pid
olcArgsFile: $DIR/slapd.args
olcTLSCACertificateFile: $DIR/tls/ca.crt
olcTLSCertificateFile: $DIR/tls/server.crt
olcTLSCertificateKeyFile: $DIR/tls/server.key

dn: cn=module{0},cn=config
objectClass: olcModuleList
cn: module{0}
olcModulePath: $MODULES
olcModuleLoad: back_mdb
olcModuleLoad: memberof
olcModuleLoad: refint
olcModuleLoad: ppolicy

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

include: file://$SCHEMA/core.ldif

include: file://$SCHEMA/cosine.ldif

include: file://$SCHEMA/inetorgperson.ldif

dn: olcDatabase={-1}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {-1}frontend
olcSizeLimit: 500

dn: olcDatabase={0}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {0}config
olcAccess: {0}to * by * none

dn: olcDatabase={1}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {1}mdb
olcSuffix: $BASE_DN
olcRootDN: $ADMIN_DN
olcRootPW: $ADMIN_PASSWORD
olcDbDirectory: $DIR/data
olcDbNoSync: TRUE
olcDbMaxSize: 1073741824
olcDbIndex: objectClass eq
olcDbIndex: uid eq
olcDbIndex: cn eq
olcDbIndex: member eq
olcDbIndex: memberOf eq
olcDbMultival: member 100,10
olcLimits: dn.exact="$BIND_DN" size=unlimited time=unlimited
olcAccess: {0}to attrs=userPassword by dn.exact="$BIND_DN" manage by self write by anonymous auth by * none
olcAccess: {1}to * by dn.exact="$BIND_DN" manage by users read by * none

dn: olcOverlay={0}memberof,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcMemberOf
olcOverlay: {0}memberof
olcMemberOfRefint: TRUE
olcMemberOfGroupOC: groupOfNames
olcMemberOfMemberAD: member
olcMemberOfMemberOfAD: memberOf

dn: olcOverlay={1}refint,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcRefintConfig
olcOverlay: {1}refint
olcRefintAttribute: member
olcRefintNothing: $PLACEHOLDER

dn: olcOverlay={2}ppolicy,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcPPolicyConfig
olcOverlay: {2}ppolicy
olcPPolicyDefault: cn=default,ou=policies,$BASE_DN
LDIF

  cat > "$DIR/data.ldif" <<LDIF
dn: $BASE_DN
objectClass: dcObject
objectClass: organization
dc: acme
o: Acme

dn: ou=policies,$BASE_DN
objectClass: organizationalUnit
ou: policies

dn: cn=default,ou=policies,$BASE_DN
objectClass: organizationalRole
objectClass: pwdPolicy
cn: default
pwdAttribute: userPassword
# Without pwdLockout, slapd 2.5 ignores pwdAccountLockedTime at bind.
pwdLockout: TRUE

dn: ou=services,$BASE_DN
objectClass: organizationalUnit
ou: services

dn: $BIND_DN
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: gatehouse
userPassword: $BIND_PASSWORD
LDIF

  "$SBIN/slapadd" -n0 -F "$DIR/config" -l "$DIR/config.ldif" >"$DIR/slapadd.log" 2>&1 \
    || { cat "$DIR/slapadd.log" >&2; exit 1; }
  "$SBIN/slapadd" -n1 -F "$DIR/config" -l "$DIR/data.ldif" >>"$DIR/slapadd.log" 2>&1 \
    || { cat "$DIR/slapadd.log" >&2; exit 1; }
  echo "$(free_port) $(free_port)" > "$DIR/ports"
  touch "$DIR/ready"
fi

read -r PORT TLS_PORT < "$DIR/ports"
stop "$DIR"
# -d 0 keeps slapd in the foreground (so it is our child and its PID is $!), logging nothing.
setsid "$SBIN/slapd" -F "$DIR/config" -h "ldap://127.0.0.1:$PORT/ ldaps://127.0.0.1:$TLS_PORT/" \
  -d 0 </dev/null >>"$DIR/slapd.log" 2>&1 &
PID=$!
echo "$PID" > "$DIR/slapd.pid"
for _ in $(seq 1 200); do
  if ! kill -0 "$PID" 2>/dev/null; then
    echo "slapd exited at start-up; its log:" >&2
    cat "$DIR/slapd.log" >&2
    exit 1
  fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    break
  fi
  sleep 0.05
done

cat <<OUT
LDAP_URL=ldap://127.0.0.1:$PORT
LDAPS_URL=ldaps://127.0.0.1:$TLS_PORT
CA=$DIR/tls/ca.crt
OTHER_CA=$DIR/tls/other-ca.crt
BASE_DN=$BASE_DN
ADMIN_DN=$ADMIN_DN
ADMIN_PASSWORD=$ADMIN_PASSWORD
BIND_DN=$BIND_DN
BIND_PASSWORD=$BIND_PASSWORD
PLACEHOLDER=$PLACEHOLDER
PID=$PID
OUT
