#!/usr/bin/env bash
# Start a throw-away etcd + kube-apiserver on loopback, for tests and by hand.
#
#   scripts/start-control-plane.sh DIR          start; DIR (created, should be empty) gets the
#                                               certs, data, logs, pid files and a kubeconfig
#   scripts/start-control-plane.sh --stop DIR   stop what a start in DIR started (by pid file)
#
# On success prints, on stdout, lines for `eval`:
#   KUBECONFIG=DIR/kubeconfig  APISERVER_URL=https://127.0.0.1:PORT  ETCD_URL=http://127.0.0.1:PORT
#   CA_CERT=... ADMIN_CERT=... ADMIN_KEY=... ETCD_PID=... KUBE_APISERVER_PID=...
# Binaries come from scripts/build-control-plane.sh (built first if missing), or from $ETCD and
# $KUBE_APISERVER if both are set. tests/controlplane/README.md lists the flags and why.
# Start-up budget: $GATEHOUSE_APISERVER_TIMEOUT seconds (default 120) for /readyz.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { echo "start-control-plane: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

stop() {
  local dir="$1" name pid
  for name in kube-apiserver etcd; do
    [[ -f "$dir/$name.pid" ]] || continue
    pid="$(cat "$dir/$name.pid")"
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/$name.pid"
  done
}

if [[ "${1:-}" == "--stop" ]]; then
  stop "${2:?usage: $0 --stop DIR}"
  exit 0
fi
dir="${1:?usage: $0 DIR | --stop DIR}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
[[ ! -f "$dir/etcd.pid" && ! -f "$dir/kube-apiserver.pid" ]] || die "$dir already has a running control plane (use --stop)"

ok=0
trap '(( ok )) || stop "$dir"' EXIT   # a failed start leaves nothing running
trap 'exit 143' INT TERM HUP

if [[ -z "${ETCD:-}" || -z "${KUBE_APISERVER:-}" ]]; then
  eval "$("$here/build-control-plane.sh" --print-paths)"
fi

# A free loopback port (the kernel picks it; a tiny race with other processes remains).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- certificates -----------------------------------------------------------------------------
pki="$dir/pki"
mkdir -p "$pki"
t0="$(date +%s.%N)"
(
  cd "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=gatehouse-test-ca" \
    -keyout ca.key -out ca.crt \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  # sign NAME SUBJECT EXTENSIONS
  sign() {
    openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -out "$1.crt" -extfile <(printf '%b' "$3") 2>/dev/null
    rm -f "$1.csr"
  }
  sign serving "/CN=kube-apiserver" \
    'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost'
  sign admin "/O=system:masters/CN=admin" \
    'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth'
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
)
log "certificates in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}') s"

# --- etcd -------------------------------------------------------------------------------------
etcd_port="$(free_port)"
t0="$(date +%s.%N)"
"$ETCD" --name=test --data-dir="$dir/etcd-data" \
  --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
  --listen-peer-urls="http://127.0.0.1:0" --unsafe-no-fsync --log-level=warn \
  >"$dir/etcd.log" 2>&1 </dev/null &
echo $! >"$dir/etcd.pid"
for _ in $(seq 300); do
  curl -fsS "http://127.0.0.1:$etcd_port/health" 2>/dev/null | grep -q '"health":"true"' && break
  kill -0 "$(cat "$dir/etcd.pid")" 2>/dev/null || die "etcd exited; see $dir/etcd.log: $(tail -5 "$dir/etcd.log")"
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$etcd_port/health" | grep -q '"health":"true"' || die "etcd not healthy after 30 s; see $dir/etcd.log"
log "etcd healthy on 127.0.0.1:$etcd_port in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}') s"

# --- kube-apiserver ---------------------------------------------------------------------------
api_port="$(free_port)"
t0="$(date +%s.%N)"
"$KUBE_APISERVER" \
  --etcd-servers="http://127.0.0.1:$etcd_port" \
  --secure-port="$api_port" --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
  --endpoint-reconciler-type=none \
  --cert-dir="$dir/apiserver-certs" \
  --tls-cert-file="$pki/serving.crt" --tls-private-key-file="$pki/serving.key" \
  --client-ca-file="$pki/ca.crt" \
  --authorization-mode=RBAC \
  --service-account-issuer=https://127.0.0.1 \
  --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
  --service-cluster-ip-range=10.0.0.0/24 \
  --disable-admission-plugins=ServiceAccount \
  >"$dir/kube-apiserver.log" 2>&1 </dev/null &
echo $! >"$dir/kube-apiserver.pid"
curl_admin=(curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key")
deadline=$(( $(date +%s) + ${GATEHOUSE_APISERVER_TIMEOUT:-120} ))
until [[ "$("${curl_admin[@]}" "https://127.0.0.1:$api_port/readyz" 2>/dev/null)" == ok ]]; do
  kill -0 "$(cat "$dir/kube-apiserver.pid")" 2>/dev/null \
    || die "kube-apiserver exited; see $dir/kube-apiserver.log: $(tail -5 "$dir/kube-apiserver.log")"
  (( $(date +%s) < deadline )) || die "kube-apiserver not ready in time; see $dir/kube-apiserver.log"
  sleep 0.2
done
log "kube-apiserver ready on 127.0.0.1:$api_port in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}') s"

cat >"$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority: $pki/ca.crt
users:
- name: admin
  user:
    client-certificate: $pki/admin.crt
    client-key: $pki/admin.key
contexts:
- name: test
  context: {cluster: test, user: admin}
current-context: test
EOF

ok=1
cat <<EOF
KUBECONFIG=$dir/kubeconfig
APISERVER_URL=https://127.0.0.1:$api_port
ETCD_URL=http://127.0.0.1:$etcd_port
CA_CERT=$pki/ca.crt
ADMIN_CERT=$pki/admin.crt
ADMIN_KEY=$pki/admin.key
ETCD_PID=$(cat "$dir/etcd.pid")
KUBE_APISERVER_PID=$(cat "$dir/kube-apiserver.pid")
EOF
