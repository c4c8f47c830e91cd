#!/usr/bin/env bash
# Tether's benchmark harness: prints the results as Markdown tables (BENCHMARKS.md holds a full run).
#   tests/bench/run.sh            full run (release build; a 1,000,000-message store, built once)
#   tests/bench/run.sh --smoke    a small, quick run (CI runs it so the harness cannot rot; no
#                                 figures from it mean anything)
# So far it measures the store; the network runs (raw limit, Tether, slixmpp, resume) are the
# open part of the performance issue.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
source scripts/common.sh
use_build_cache >/dev/null
target="${CARGO_TARGET_DIR:-$ROOT/target}"
if [ "${1:-}" = "--smoke" ]; then
  cargo build --locked -q -p tether-e2e --bin tether-bench-store
  dir="$(mktemp -d)"
  trap 'rm -rf "$dir"' EXIT
  "$target/debug/tether-bench-store" --messages 2000 --dir "$dir"
else
  cargo build --locked -q --release -p tether-e2e --bin tether-bench-store
  echo "## Store ($(nproc) cores, $(uname -m), $(date -u +%Y-%m-%d))"
  "$target/release/tether-bench-store" "$@"
fi
