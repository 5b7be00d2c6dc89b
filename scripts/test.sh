#!/usr/bin/env bash
# The whole test suite: unit, table and property tests of the engine and planner, CLI tests
# against real files and real Git repositories, the CRD drift checks, the CRDs and their CEL
# rules against a real kube-apiserver, and one smoke run of each benchmark.
# Usage: bash scripts/test.sh   (the same command CI runs through .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
command -v git >/dev/null || { echo "git is required (the CLI tests build real repositories)" >&2; exit 1; }
command -v go >/dev/null || { echo "go is required (kube-apiserver and etcd are built from Go modules)" >&2; exit 1; }
for tool in openssl curl python3; do
  command -v "$tool" >/dev/null || { echo "$tool is required by scripts/start-control-plane.sh" >&2; exit 1; }
done

# Real peers: kube-apiserver and etcd, built once from Go modules into a cache outside the
# repository (${GATEHOUSE_CACHE:-~/.cache/gatehouse}); several minutes the first time.
GATEHOUSE_GO_JOBS="${GATEHOUSE_GO_JOBS:-2}" bash scripts/build-control-plane.sh
# helm, built once from its Go module into the same cache, for the chart tests (tests/chart.rs).
GATEHOUSE_GO_JOBS="${GATEHOUSE_GO_JOBS:-2}" bash scripts/build-helm.sh >/dev/null
# PostgreSQL server binaries (Debian's postgresql-15) for tests/postgres.rs and benches/postgres.rs.
bash scripts/install-postgres.sh

# OpenLDAP slapd and ldap-utils (Debian packages) for the LDAP connector's tests.
bash scripts/install-ldap.sh

# Samba's Active Directory domain controller (Debian packages) for tests/active_directory.rs.
bash scripts/install-samba.sh

# OpenSSH's server (Debian package) for the PolicySource SSH transport test.
bash scripts/install-sshd.sh

# GnuPG (Debian package) to sign the OpenPGP test commits (tests/source_openpgp.rs and others).
bash scripts/install-gnupg.sh

# The SCIM peer: python-scim's scim2-server from PyPI, pinned, in a venv in the same cache.
bash scripts/install-scim.sh >/dev/null
# The second SCIM peer: django-scim2 on Django (PyPI, pinned), in its own venv in the cache.
bash scripts/install-django-scim.sh >/dev/null

# Each benchmark once, on a small organisation, so a broken benchmark fails here.
cargo test --locked --benches
# Every test.
cargo test --locked --lib --bins --tests
