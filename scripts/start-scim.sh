#!/usr/bin/env bash
# Starts python-scim's scim2-server (installed by scripts/install-scim.sh) on a free loopback
# port with a bearer token and dynamic tenants: every `/<tenant>/v2` prefix is its own
# in-memory store. Runs in the background; prints SCIM_BASE=, SCIM_TOKEN= and SCIM_PID=.
# Usage: bash scripts/start-scim.sh DIR [SERVICE_PROVIDER_CONFIG.json]
#        bash scripts/start-scim.sh --stop DIR
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--stop" ]; then
  dir="${2:?usage: start-scim.sh --stop DIR}"
  if [ -f "$dir/scim.pid" ]; then
    pid="$(cat "$dir/scim.pid")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/scim.pid"
  fi
  exit 0
fi

dir="${1:?usage: start-scim.sh DIR [SERVICE_PROVIDER_CONFIG.json]}"
spc="${2:-}"
mkdir -p "$dir"
bin="$(bash scripts/install-scim.sh)"
token="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

for try in 1 2 3; do
  port="$(free_port)"
  args=(--hostname 127.0.0.1 --port "$port" --bearer-token "$token" --dynamic-tenants)
  [ -n "$spc" ] && args+=(--service-provider-config "$spc")
  nohup "$bin" "${args[@]}" >"$dir/scim.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$dir/scim.pid"
  for _ in $(seq 100); do
    if curl -fsS -o /dev/null -H "Authorization: Bearer $token" \
        "http://127.0.0.1:$port/probe/v2/ServiceProviderConfig" 2>/dev/null; then
      echo "SCIM_BASE=http://127.0.0.1:$port"
      echo "SCIM_TOKEN=$token"
      echo "SCIM_PID=$pid"
      exit 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill "$pid" 2>/dev/null || true
  echo "scim2-server did not start on port $port (try $try); log:" >&2
  tail -n 20 "$dir/scim.log" >&2 || true
done
exit 1
