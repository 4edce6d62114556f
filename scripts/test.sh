#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and the end-to-end tests (which
# start real berthd daemons on temporary data roots and sockets; they need root and skip
# with a message without it).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked -- --test-threads=4
