#!/usr/bin/env bash
# Tether's benchmark harness: prints the results as Markdown tables (BENCHMARKS.md holds a full run).
#   tests/bench/run.sh            full run (release build): the store (a 1,000,000-message store,
#                                 built once), then the network runs against a local Prosody with
#                                 its archive off (the limit, Tether, slixmpp, resume), with the
#                                 server on a core of its own (--pin, on 2 cores or more) and again
#                                 with server and clients sharing the cores, and once more with the
#                                 archive on (2,000 messages: Prosody's archive on its internal
#                                 storage is the bottleneck there, at 100% of a core)
#   (and the files benchmark: a 50 MB upload, a 10,000-message archive catch-up; the mobile
#   benchmark: reconnect paths and wake at 100 ms RTT, idle wake-ups; the mobile library's size)
#   tests/bench/run.sh --smoke    a small, quick run of all of it (CI runs it so the harness cannot
#                                 rot; no figure from it means anything, and none is asserted)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
source scripts/common.sh
use_build_cache >/dev/null
target="${CARGO_TARGET_DIR:-$ROOT/target}"

python="$(slix_python)"
pin=()
[ "$(nproc)" -ge 2 ] && pin=(--pin)
if [ "${1:-}" = "--smoke" ]; then
  # The build of the test run (scripts/common.sh), a no-op inside it.
  build_workspace -q
  dir="$(mktemp -d)"
  trap 'rm -rf "$dir"' EXIT
  "$target/debug/tether-bench-store" --messages 2000 --dir "$dir"
  "$target/debug/tether-bench-store" --accounts 5000 --dir "$dir"
  TETHER_BIN="$target/debug/tether" "$target/debug/tether-bench-net" \
    --messages 200 --rounds 1 --resume 100 "${pin[@]}" --python "$python"
  TETHER_BIN="$target/debug/tether" "$target/debug/tether-bench-files" --mb 2 --rounds 1 --archive 200
  TETHER_BIN="$target/debug/tether" "$target/debug/tether-bench-mobile" --rounds 1 --idle-secs 5 \
    --wake-messages 10
  # The criterion benches, each run once (criterion's test mode; a debug build, as the tests').
  cargo test "${CARGO_TEST_FLAGS[@]}" -q --benches
else
  cargo build --locked -q --release -p tether-core --bin tether \
    -p tether-e2e --bin tether-bench-store --bin tether-bench-net --bin tether-bench-files \
    --bin tether-bench-mobile
  echo "# Benchmarks ($(nproc) cores, $(uname -m), $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
  echo
  echo "## Store"
  echo
  "$target/release/tether-bench-store" "$@"
  echo
  "$target/release/tether-bench-store" --accounts 10000000
  echo
  echo "## Core micro-benchmarks (criterion: time per iteration [low, estimate, high])"
  echo
  cargo bench --locked -q -p tether-core --bench sm --bench group_commit 2>/dev/null \
    | awk '/^[^ ]/ && !/^Found/ { name = $0; want = 1 }
           /^ *time:/ && want { sub(/^ *time: */, ""); print "- " name ": " $0; want = 0 }'
  echo
  TETHER_BIN="$target/release/tether" "$target/release/tether-bench-net" \
    --messages 10000 --rounds 3 --resume 1000 "${pin[@]}" --python "$python"
  echo
  TETHER_BIN="$target/release/tether" "$target/release/tether-bench-net" \
    --messages 10000 --rounds 3 --resume 0 --python "$python"
  echo
  TETHER_BIN="$target/release/tether" "$target/release/tether-bench-net" \
    --messages 2000 --rounds 1 --resume 0 --mam "${pin[@]}" --python "$python"
  echo
  # Files (issue 14): a 50 MB upload against a plain PUT, and a 10,000-message archive catch-up
  # (text, corrections, reactions) against a raw pager.
  TETHER_BIN="$target/release/tether" "$target/release/tether-bench-files" \
    --mb 50 --rounds 3 --archive 10000
  echo
  # A phone's life (issue 15): reconnect and wake at 100 ms RTT, and ten idle minutes per profile.
  TETHER_BIN="$target/release/tether" "$target/release/tether-bench-mobile" \
    --rtt-ms 100 --rounds 5 --idle-secs 600 --wake-messages 100
  echo
  # The mobile library as apps ship it (goal: under 8 MB), against the plain release build.
  cargo build --locked -q --release -p tether-ffi
  cargo build --locked -q --profile mobile -p tether-ffi
  rel=$(stat -c %s "$target/release/libtether_ffi.so")
  mob=$(stat -c %s "$target/mobile/libtether_ffi.so")
  echo "### The mobile library (x86_64 libtether_ffi.so)"
  echo
  echo "| build | bytes | against release |"
  echo "|---|---:|---:|"
  echo "| --release (not stripped) | $rel | 1.00x |"
  echo "| --profile mobile | $mob | $(awk -v a="$mob" -v b="$rel" 'BEGIN { printf "%.2fx", a / b }') |"
fi
