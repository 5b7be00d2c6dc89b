#!/usr/bin/env bash
# Installs GnuPG (Debian's `gnupg`): the tests sign commits with real gpg keys made in
# throw-away GNUPGHOMEs (tests/gitrepo). gatehouse itself never runs gpg: it checks OpenPGP
# signatures in Rust. Idempotent and non-interactive: nothing happens when gpg is there.
set -euo pipefail

if command -v gpg >/dev/null && command -v gpgconf >/dev/null; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "install-gnupg.sh: gpg is missing and this is not a Debian-like system; install GnuPG by hand" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends gnupg >/dev/null
command -v gpg >/dev/null
