#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and the end-to-end tests (which
# start real berthd daemons on temporary data roots and sockets; they need root and skip
# with a message without it). Ends with one line counting every test that ran.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked --no-fail-fast -- --test-threads=4 2>&1 | tee "$log" || status=$?
passed=$(grep -Eo '^test result: .*\. ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '; ([0-9]+) failed' "$log" | grep -Eo '[0-9]+' | awk '{s+=$1} END {print s+0}')
echo
echo "${passed} passed, ${failed} failed"
exit $status
