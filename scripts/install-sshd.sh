#!/usr/bin/env bash
# Installs the OpenSSH server (Debian's `openssh-server`) the PolicySource SSH transport test
# runs against. Idempotent and non-interactive: nothing happens when sshd is already there.
# The package's own daemon and configuration are never used: scripts/start-sshd.sh runs a
# private sshd on loopback with its own host key and authorized keys.
set -euo pipefail

if [ -x /usr/sbin/sshd ] && command -v ssh-keygen >/dev/null; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "install-sshd.sh: sshd is missing and this is not a Debian-like system; install OpenSSH's server by hand" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends openssh-server >/dev/null
# The package may start its system daemon on port 22; the tests never use it.
if command -v service >/dev/null && [ -x /etc/init.d/ssh ]; then
  $SUDO service ssh stop >/dev/null 2>&1 || true
fi
[ -x /usr/sbin/sshd ]
