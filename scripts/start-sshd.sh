#!/usr/bin/env bash
# Start a throw-away OpenSSH server on loopback, serving Git over SSH to one client key.
#
#   scripts/start-sshd.sh DIR          start; DIR (created) gets the host key, a client key
#                                      pair, authorized_keys, known_hosts, the config and log
#   scripts/start-sshd.sh --stop DIR   stop what a start in DIR started (by pid file)
#
# On success prints, on stdout:
#   SSHD_PORT=PORT SSH_USER=<the current user> SSH_IDENTITY=DIR/client_ed25519 (private key,
#   no passphrase) SSH_KNOWN_HOSTS=DIR/known_hosts ("[127.0.0.1]:PORT ssh-ed25519 ...") SSHD_PID=...
# Only the current user can log in (sshd run by a non-root user serves that user only).
set -euo pipefail

log() { echo "start-sshd: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

stop() {
  local dir="$1" pid
  [[ -f "$dir/sshd.pid" ]] || return 0
  pid="$(cat "$dir/sshd.pid")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$dir/sshd.pid"
}

if [[ "${1:-}" == "--stop" ]]; then
  stop "${2:?usage: $0 --stop DIR}"
  exit 0
fi
dir="${1:?usage: $0 DIR | --stop DIR}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
sshd=/usr/sbin/sshd
[[ -x "$sshd" ]] || die "$sshd is missing: run scripts/install-sshd.sh"
user="$(id -un)"

rm -f "$dir/host_ed25519" "$dir/host_ed25519.pub" "$dir/client_ed25519" "$dir/client_ed25519.pub"
ssh-keygen -q -t ed25519 -N '' -C gatehouse-test-host -f "$dir/host_ed25519"
ssh-keygen -q -t ed25519 -N '' -C gatehouse-test-client -f "$dir/client_ed25519"
cp "$dir/client_ed25519.pub" "$dir/authorized_keys"
chmod 600 "$dir/authorized_keys" "$dir/host_ed25519" "$dir/client_ed25519"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
# Privilege separation needs its empty directory when sshd runs as root.
if [[ "$(id -u)" -eq 0 ]]; then mkdir -p /run/sshd && chmod 755 /run/sshd; fi
cat >"$dir/sshd_config" <<CONF
Port $port
ListenAddress 127.0.0.1
HostKey $dir/host_ed25519
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
AllowUsers $user
LogLevel VERBOSE
CONF
"$sshd" -t -f "$dir/sshd_config" || die "sshd rejects $dir/sshd_config"
"$sshd" -f "$dir/sshd_config" -E "$dir/sshd.log"
for _ in $(seq 50); do
  [[ -s "$dir/sshd.pid" ]] && python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
  sleep 0.1
done
[[ -s "$dir/sshd.pid" ]] || die "sshd did not start; see $dir/sshd.log: $(tail -5 "$dir/sshd.log" 2>/dev/null)"
echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$dir/host_ed25519.pub")" >"$dir/known_hosts"
log "sshd on 127.0.0.1:$port for user $user"
cat <<VARS
SSHD_PORT=$port
SSH_USER=$user
SSH_IDENTITY=$dir/client_ed25519
SSH_KNOWN_HOSTS=$dir/known_hosts
SSHD_PID=$(cat "$dir/sshd.pid")
VARS
