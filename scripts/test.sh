#!/usr/bin/env bash
# The whole test suite: unit, table and property tests of the engine and planner, CLI tests
# against real files and real Git repositories, and the CRD drift check.
# Usage: bash scripts/test.sh   (the same command CI runs through .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
command -v git >/dev/null || { echo "git is required (the CLI tests build real repositories)" >&2; exit 1; }

# Benches and binaries are built too, so a broken benchmark fails here rather than later.
cargo test --locked --all-targets
# Doc examples.
cargo test --locked --doc
