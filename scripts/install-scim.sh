#!/usr/bin/env bash
# Installs the SCIM 2.0 test peer, python-scim's scim2-server (PyPI, pinned), into a virtual
# environment under ${GATEHOUSE_CACHE:-~/.cache/gatehouse}/scim-venv-VERSION. Idempotent and
# non-interactive; prints the path of the scim2-server executable.
# Usage: bash scripts/install-scim.sh
set -euo pipefail

VERSION="0.8.3"
CACHE="${GATEHOUSE_CACHE:-$HOME/.cache/gatehouse}"
VENV="$CACHE/scim-venv-$VERSION"
BIN="$VENV/bin/scim2-server"

MARK="$VENV/.gatehouse-installed"

if [ -f "$MARK" ] && [ -x "$BIN" ]; then
  echo "$BIN"
  exit 0
fi
command -v python3 >/dev/null || { echo "python3 is required for the SCIM test peer" >&2; exit 1; }
if ! python3 -c "import venv, ensurepip" 2>/dev/null; then
  if command -v apt-get >/dev/null; then
    echo "installing python3-venv" >&2
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv >&2
  else
    echo "python3 lacks the venv module; install python3-venv" >&2; exit 1
  fi
fi
mkdir -p "$CACHE"
# Built in place; the marker is written last, so an interrupted install is redone.
rm -rf "$VENV"
python3 -m venv "$VENV" >&2
"$VENV/bin/pip" install --quiet --disable-pip-version-check "scim2-server==$VERSION" >&2
"$VENV/bin/python" -c "import scim2_server" || { echo "scim2-server did not install" >&2; exit 1; }
touch "$MARK"
echo "$BIN"
