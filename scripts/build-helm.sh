#!/usr/bin/env bash
# Build (once) the helm CLI that tests/chart.rs and scripts/render-manifests.sh run, from the Go
# module helm.sh/helm/v3, into the same cache outside the repo as the control plane:
#
#   ${GATEHOUSE_CACHE:-$HOME/.cache/gatehouse}/bin/helm-<version>
#
# The version is pinned below (HELM_VERSION); `go install helm.sh/helm/v3/cmd/helm@<version>`
# builds it with the module's own go.mod and go.sum, checked against the Go checksum database.
# The ldflags are those of helm's Makefile: the version, and the Kubernetes version helm assumes
# offline (`helm template`, `helm lint`) taken from the client-go the release requires. A cached
# binary that answers `version` with the right version is reused; nothing is rebuilt.
#
# Usage:
#   scripts/build-helm.sh                 build what is missing; log to stderr, then print
#                                         HELM=<path> on stdout
#   scripts/build-helm.sh --print-paths   same stdout; stderr stays quiet unless it builds
#   scripts/build-helm.sh --force         rebuild even if cached
#   eval "$(scripts/build-helm.sh --print-paths)"
#
# Environment:
#   GATEHOUSE_CACHE     cache root (default $HOME/.cache/gatehouse)
#   GATEHOUSE_GO_JOBS   go build -p (default 1, so other builds on a 2-core machine keep the CPU)
#   GATEHOUSE_GO_NICE   nice level for go builds (default 19)
# Cold build on 2 cores: about 2-3 minutes; nothing afterwards.
set -euo pipefail

HELM_VERSION=v3.22.0

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
    *) echo "build-helm: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

building=0
log() { if (( ! print_only )) || (( building )); then echo "build-helm: $*" >&2; fi; }
die() { echo "build-helm: ERROR: $*" >&2; exit 1; }
trap 'exit 143' INT TERM HUP
trap 'echo "build-helm: FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR

command -v go >/dev/null || die "go is not on PATH (helm $HELM_VERSION's go.mod needs Go >= 1.26)"

helm_bin="$cache_bin/helm-$HELM_VERSION"

# is_good BINARY: the binary exists, runs `version` and names HELM_VERSION.
is_good() {
  [[ -x "$1" ]] || return 1
  local out
  out="$(timeout 30 "$1" version --template '{{.Version}}' 2>&1)" || return 1
  [[ "$out" == "$HELM_VERSION" ]]
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

mkdir -p "$cache_bin"

# One build at a time per cache (parallel test runs may all call this script).
if command -v flock >/dev/null; then
  exec 9>"$cache_bin/.build-helm.lock"
  flock 9
fi

if (( ! force )) && is_good "$helm_bin"; then
  log "cached: $helm_bin"
else
  building=1
  start="$(now)"
  # The Kubernetes version helm reports offline = client-go's minor + 1.x, as helm's Makefile does.
  mod_file="$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" \
              | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  [[ -f "$mod_file" ]] || die "go mod download helm.sh/helm/v3@$HELM_VERSION gave no go.mod"
  client_go="$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$mod_file")"
  [[ "$client_go" =~ ^v0\.([0-9]+)\.[0-9]+$ ]] || die "unexpected k8s.io/client-go version '$client_go' in $mod_file"
  k8s_major=1 k8s_minor="${BASH_REMATCH[1]}"
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $pkg.k8sVersionMajor=$k8s_major -X $pkg.k8sVersionMinor=$k8s_minor"
  done
  gobin="$(mktemp -d "$cache_bin/.helm-build.XXXXXX")"
  trap 'rm -rf "'"$gobin"'"' EXIT
  log "go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION (-p $jobs, nice $nice_level) -> $helm_bin"
  # Outside any module, so the repository's state cannot influence the build.
  if ! (cd "$gobin" && GOBIN="$gobin" CGO_ENABLED=0 GOFLAGS="-buildvcs=false" \
        nice -n "$nice_level" go install -p "$jobs" -trimpath -ldflags "$ldflags" \
        "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2); then
    die "go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION failed (see the output above)"
  fi
  mv -f "$gobin/helm" "$helm_bin"
  is_good "$helm_bin" \
    || die "$helm_bin version does not print $HELM_VERSION: $(timeout 30 "$helm_bin" version 2>&1 || true)"
  log "built $helm_bin in $(elapsed "$start") s ($(du -h "$helm_bin" | cut -f1))"
fi

echo "HELM=$helm_bin"
