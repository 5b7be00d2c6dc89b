#!/usr/bin/env bash
# The whole test suite: unit, table and property tests of the engine and planner, CLI tests
# against real files and real Git repositories, the CRD drift checks, and one smoke run of
# each benchmark.
# Usage: bash scripts/test.sh   (the same command CI runs through .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
command -v git >/dev/null || { echo "git is required (the CLI tests build real repositories)" >&2; exit 1; }

# Each benchmark once, on a small organisation, so a broken benchmark fails here.
cargo test --locked --benches
# Every test.
cargo test --locked --lib --bins --tests
