#!/usr/bin/env bash
# Build (once) the kube-apiserver and etcd binaries the integration tests run, into a cache
# outside the repo:
#
#   ${GATEHOUSE_CACHE:-$HOME/.cache/gatehouse}/bin/kube-apiserver-<version>
#   ${GATEHOUSE_CACHE:-$HOME/.cache/gatehouse}/bin/etcd-<version>
#
# The versions come from the wrapper modules tests/controlplane/{kube-apiserver,etcd}/go.mod
# (go.sum is committed, builds run with -mod=readonly). A cached binary that answers --version
# with the right version is reused; nothing is rebuilt.
#
# Usage:
#   scripts/build-control-plane.sh                 build what is missing; log to stderr, then print
#                                                  KUBE_APISERVER=<path> and ETCD=<path> on stdout
#   scripts/build-control-plane.sh --print-paths   same stdout; stderr stays quiet unless it builds
#   scripts/build-control-plane.sh --force         rebuild even if cached
#   eval "$(scripts/build-control-plane.sh --print-paths)"
#
# Environment:
#   GATEHOUSE_CACHE     cache root (default $HOME/.cache/gatehouse)
#   GATEHOUSE_GO_JOBS   go build -p (default 1, so other builds on a 2-core machine keep the CPU)
#   GATEHOUSE_GO_NICE   nice level for go builds (default 19)
# Cold build on 2 cores at -p 1: ~5.5 min kube-apiserver + ~1 min etcd; Go caches grow ~3.2 GB.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cp_dir="$repo_root/tests/controlplane"
cache_bin="${GATEHOUSE_CACHE:-$HOME/.cache/gatehouse}/bin"
jobs="${GATEHOUSE_GO_JOBS:-1}"
nice_level="${GATEHOUSE_GO_NICE:-19}"

print_only=0
force=0
for arg in "$@"; do
  case "$arg" in
    --print-paths) print_only=1 ;;
    --force) force=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-control-plane: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

log() { if (( ! print_only )) || (( building )); then echo "build-control-plane: $*" >&2; fi; }
die() { echo "build-control-plane: ERROR: $*" >&2; exit 1; }
building=0
trap 'exit 143' INT TERM HUP
trap 'echo "build-control-plane: FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR

command -v go >/dev/null || die "go is not on PATH (need Go >= 1.26 for etcd 3.6.16's go.mod)"

# Version of module $2 as required by the go.mod in directory $1.
required_version() {
  local v
  v="$(awk -v m="$2" '$1 ~ /^\/\// || /=>/ { next }
                      $1 == m { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$1/go.mod")"
  [[ -n "$v" ]] || die "$1/go.mod does not require $2"
  echo "$v"
}

# is_good BINARY EXPECTED_SUBSTRING: the binary exists, runs --version and names the version.
is_good() {
  [[ -x "$1" ]] || return 1
  local out
  out="$(timeout 30 "$1" --version 2>&1)" || return 1
  [[ "$out" == *"$2"* ]]
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# go_build DIR OUT PKG [go build flags...]: build into a temp file, check it, move it into place.
go_build() {
  local dir="$1" out="$2" pkg="$3"; shift 3
  local tmp="$out.tmp.$$"
  rm -f "$tmp"
  trap 'rm -f "'"$tmp"'"' EXIT
  log "go build $pkg (in ${dir#"$repo_root"/}, -p $jobs, nice $nice_level) -> $out"
  if ! (cd "$dir" && CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false -p=$jobs" \
        nice -n "$nice_level" go build -p "$jobs" -trimpath -o "$tmp" "$@" "$pkg" >&2); then
    rm -f "$tmp"
    die "go build $pkg failed (see the output above)"
  fi
  mv -f "$tmp" "$out"
}

mkdir -p "$cache_bin"

# One build at a time per cache (parallel test runs may all call this script).
if command -v flock >/dev/null; then
  exec 9>"$cache_bin/.build.lock"
  flock 9
fi

total_start="$(now)"

# --- kube-apiserver -------------------------------------------------------------------------
kube_dir="$cp_dir/kube-apiserver"
kube_version="$(required_version "$kube_dir" k8s.io/kubernetes)"
[[ "$kube_version" =~ ^v([0-9]+)\.([0-9]+)\.[0-9]+$ ]] || die "unexpected k8s.io/kubernetes version '$kube_version'"
kube_major="${BASH_REMATCH[1]}" kube_minor="${BASH_REMATCH[2]}"
kube_bin="$cache_bin/kube-apiserver-$kube_version"

if (( ! force )) && is_good "$kube_bin" "Kubernetes $kube_version"; then
  log "cached: $kube_bin"
else
  building=1
  start="$(now)"
  # buildDate = the tag's time as the module proxy reports it, so rebuilds are byte-identical.
  info="$(cd "$kube_dir" && go mod download -json "k8s.io/kubernetes@$kube_version" \
          | sed -n 's/^[[:space:]]*"Info": "\(.*\)",$/\1/p' || true)"
  build_date="$(sed -n 's/.*"Time":"\([0-9T:-]*\).*/\1Z/p' "$info" 2>/dev/null || true)"
  build_date="${build_date:-1970-01-01T00:00:00Z}"
  ldflags="-s -w"
  # Same keys as kubernetes' hack/lib/version.sh, under both version packages.
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=$kube_major -X $pkg.gitMinor=$kube_minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date -X $pkg.gitCommit="
  done
  go_build "$kube_dir" "$kube_bin" k8s.io/kubernetes/cmd/kube-apiserver \
    -tags=selinux,notest,grpcnotrace -ldflags "$ldflags"
  is_good "$kube_bin" "Kubernetes $kube_version" \
    || die "$kube_bin --version does not print 'Kubernetes $kube_version': $(timeout 30 "$kube_bin" --version 2>&1 || true)"
  log "built $kube_bin in $(elapsed "$start") s ($(du -h "$kube_bin" | cut -f1))"
fi

# --- etcd -----------------------------------------------------------------------------------
etcd_dir="$cp_dir/etcd"
etcd_version="$(required_version "$etcd_dir" go.etcd.io/etcd/server/v3)"
# server/v3 must be built with api, client and pkg of the same release (the version it prints
# comes from api/v3): the committed go.mod pins them all; refuse a skewed one.
for m in go.etcd.io/etcd/api/v3 go.etcd.io/etcd/client/pkg/v3 go.etcd.io/etcd/client/v3 go.etcd.io/etcd/pkg/v3; do
  v="$(required_version "$etcd_dir" "$m")"
  [[ "$v" == "$etcd_version" ]] || die "$etcd_dir/go.mod: $m is $v but server/v3 is $etcd_version"
done
etcd_bin="$cache_bin/etcd-$etcd_version"

if (( ! force )) && is_good "$etcd_bin" "etcd Version: ${etcd_version#v}"; then
  log "cached: $etcd_bin"
else
  building=1
  start="$(now)"
  # What etcd's scripts/build_lib.sh stamps (there: the git SHA; here: the module version).
  go_build "$etcd_dir" "$etcd_bin" . \
    -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=module-$etcd_version"
  is_good "$etcd_bin" "etcd Version: ${etcd_version#v}" \
    || die "$etcd_bin --version does not print 'etcd Version: ${etcd_version#v}': $(timeout 30 "$etcd_bin" --version 2>&1 || true)"
  log "built $etcd_bin in $(elapsed "$start") s ($(du -h "$etcd_bin" | cut -f1))"
fi

log "done in $(elapsed "$total_start") s"
echo "KUBE_APISERVER=$kube_bin"
echo "ETCD=$etcd_bin"
