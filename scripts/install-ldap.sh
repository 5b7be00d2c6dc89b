#!/usr/bin/env bash
# Installs the OpenLDAP server and client tools the LDAP connector's tests and benchmark run
# against (Debian's `slapd` and `ldap-utils`). Idempotent and non-interactive: it does
# nothing when slapd, slapadd and ldapsearch are already there. The packages' own default
# database is never used: the harness builds a private cn=config in a temporary directory.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

if have slapd && have slapadd && have ldapsearch && have openssl; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "install-ldap.sh: slapd/ldap-utils are missing and this is not a Debian-like system;" \
       "install OpenLDAP (slapd, slapadd, ldapsearch) and openssl by hand" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
# slapd's postinst asks debconf questions: answer "omit the default configuration", so the
# package leaves no database or running daemon behind.
echo "slapd slapd/no_configuration boolean true" | $SUDO debconf-set-selections
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends slapd ldap-utils openssl >/dev/null
# The package may start its (empty) system daemon; the tests never use it.
if command -v service >/dev/null && [ -x /etc/init.d/slapd ]; then
  $SUDO service slapd stop >/dev/null 2>&1 || true
fi
have slapd && have slapadd && have ldapsearch
