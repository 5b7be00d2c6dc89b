#!/usr/bin/env bash
# Installs the second SCIM 2.0 test peer, the django-scim2 library (PyPI, pinned) with the
# Django it runs on (pinned), into a virtual environment under
# ${GATEHOUSE_CACHE:-~/.cache/gatehouse}/django-scim-venv-VERSION-djangoDJANGO. Idempotent and
# non-interactive; prints the path of the venv's python (which runs tests/django_scim/manage.py)
# on stdout, everything else on stderr.
# Usage: bash scripts/install-django-scim.sh
set -euo pipefail

VERSION="0.23.0"
DJANGO="5.2.20"
# django-scim2 asks only for scim2-filter-parser>=0.5.0, and that parser decides which PATCH
# paths and filters the peer understands: pinned too, so tests/django_scim/BEHAVIOUR.md holds.
FILTER_PARSER="0.7.0"
CACHE="${GATEHOUSE_CACHE:-$HOME/.cache/gatehouse}"
VENV="$CACHE/django-scim-venv-$VERSION-django$DJANGO"
PY="$VENV/bin/python"

MARK="$VENV/.gatehouse-installed"

if [ -f "$MARK" ] && [ -x "$PY" ]; then
  echo "$PY"
  exit 0
fi
command -v python3 >/dev/null || { echo "python3 is required for the django-scim2 test peer" >&2; exit 1; }
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
"$VENV/bin/pip" install --quiet --disable-pip-version-check \
  "django-scim2==$VERSION" "Django==$DJANGO" "scim2-filter-parser==$FILTER_PARSER" >&2
"$PY" -c "
import django, django_scim
from importlib.metadata import version
assert (django.get_version(), version('django-scim2')) == ('$DJANGO', '$VERSION')
" >&2 || { echo "django-scim2 $VERSION with Django $DJANGO did not install" >&2; exit 1; }
touch "$MARK"
echo "$PY"
