#!/usr/bin/env bash
# Installs Samba's Active Directory domain controller (Debian's samba-ad-dc, samba,
# samba-ad-provision and ldb-tools) for the Active Directory tests (tests/active_directory.rs).
# Idempotent and non-interactive: nothing happens when samba and samba-tool are there. The
# package's own configuration is never used: scripts/start-samba.sh provisions a throw-away
# domain into a temporary directory. Samba's DC needs root (it binds 88, 389 and 636).
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }

if have samba && have samba-tool && have ldbsearch && have openssl && [ -d /usr/share/samba/setup ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "install-samba.sh: samba is missing and this is not a Debian-like system;" \
       "install Samba's AD DC (samba, samba-tool with the provision files, ldb-tools) and openssl by hand" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  samba-ad-dc samba samba-ad-provision ldb-tools openssl >/dev/null
# The packages may start their system daemons; the tests never use them and need the ports.
if command -v service >/dev/null; then
  for s in samba-ad-dc smbd nmbd winbind; do
    [ -x "/etc/init.d/$s" ] && $SUDO service "$s" stop >/dev/null 2>&1 || true
  done
fi
have samba && have samba-tool
