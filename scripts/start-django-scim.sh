#!/usr/bin/env bash
# Starts the second SCIM 2.0 test peer: django-scim2 (installed by scripts/install-django-scim.sh)
# in the Django project tests/django_scim, on a free loopback port with a bearer token and a
# fresh sqlite database in DIR. Runs `manage.py runserver` in the background (log
# DIR/django-scim.log, pid DIR/django-scim.pid); prints DJANGO_SCIM_BASE= (ending in /scim/v2),
# DJANGO_SCIM_TOKEN= and DJANGO_SCIM_PID=.
# Usage: bash scripts/start-django-scim.sh DIR
#        bash scripts/start-django-scim.sh --stop DIR
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--stop" ]; then
  dir="${2:?usage: start-django-scim.sh --stop DIR}"
  if [ -f "$dir/django-scim.pid" ]; then
    pid="$(cat "$dir/django-scim.pid")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/django-scim.pid"
  fi
  exit 0
fi

dir="${1:?usage: start-django-scim.sh DIR}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
py="$(bash scripts/install-django-scim.sh)"
token="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
manage=(env GATEHOUSE_DJANGO_SCIM_DIR="$dir" GATEHOUSE_DJANGO_SCIM_TOKEN="$token"
  PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 "$py" tests/django_scim/manage.py)

# A fresh database each start, as the other peers start empty.
rm -f "$dir/db.sqlite3"
if ! "${manage[@]}" migrate --noinput -v0 >"$dir/django-scim.log" 2>&1; then
  echo "django-scim2's migrations failed; log:" >&2
  tail -n 20 "$dir/django-scim.log" >&2 || true
  exit 1
fi

for try in 1 2 3; do
  port="$(free_port)"
  nohup "${manage[@]}" runserver "127.0.0.1:$port" --noreload --skip-checks \
    >>"$dir/django-scim.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$dir/django-scim.pid"
  for _ in $(seq 100); do
    if curl -fsS -o /dev/null -H "Authorization: Bearer $token" \
        "http://127.0.0.1:$port/scim/v2/ServiceProviderConfig" 2>/dev/null; then
      echo "DJANGO_SCIM_BASE=http://127.0.0.1:$port/scim/v2"
      echo "DJANGO_SCIM_TOKEN=$token"
      echo "DJANGO_SCIM_PID=$pid"
      exit 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill "$pid" 2>/dev/null || true
  echo "django-scim2 did not start on port $port (try $try); log:" >&2
  tail -n 20 "$dir/django-scim.log" >&2 || true
done
exit 1
