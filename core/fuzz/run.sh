#!/usr/bin/env bash
# Runs every fuzz target of tether-core for FUZZ_SECONDS seconds each (default 30: CI's short run;
# e.g. FUZZ_SECONDS=3600 for a long one). Installs cargo-fuzz (from crates.io) if it is missing.
# The corpus grows in core/fuzz/corpus/ (not committed); a crash fails the run and leaves its
# input in core/fuzz/artifacts/TARGET/. Copy such an input to core/fuzz/regressions/TARGET/ with the
# fix: `cargo test` replays the inbound ones, and this script replays all of them first.
set -euo pipefail
FUZZ="$(cd "$(dirname "$0")" && pwd)"
cd "$FUZZ/.."
secs="${FUZZ_SECONDS:-30}"
cache="${TETHER_CACHE:-$HOME/.cache/tether}"

if ! cargo fuzz --help >/dev/null 2>&1; then
  if [ -x "$cache/cargo-fuzz/bin/cargo-fuzz" ]; then
    export PATH="$cache/cargo-fuzz/bin:$PATH"
  else
    mkdir -p "$cache"
    cargo install cargo-fuzz --locked --version 0.13.2 --root "$cache/cargo-fuzz"
    export PATH="$cache/cargo-fuzz/bin:$PATH"
  fi
fi

# libFuzzer's instrumentation needs nightly flags. Use a nightly toolchain when one is installed;
# else let the stable compiler accept them.
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  export RUSTC_BOOTSTRAP=1
fi

# CI's short run builds without optimizations: the build is what costs there (a cold optimized
# build of the core was minutes; the run is 30 s a target either way, ~10x fewer inputs). A run
# longer than a minute builds optimized.
mode=()
[ "$secs" -le 60 ] && mode=(--dev)

target_dir=()
if mkdir -p "$cache/fuzz-target" 2>/dev/null && [ -w "$cache/fuzz-target" ]; then
  target_dir=(--target-dir "$cache/fuzz-target")
fi

# No sanitizer: the code under test is safe Rust (plus SQLite, which these targets do not reach);
# what the fuzzers look for are panics and broken invariants, and this way they run ~10x faster.
for target in sm_hostile inbound; do
  cargo "${toolchain[@]}" fuzz build -s none "${mode[@]}" "${target_dir[@]}" "$target"
  mkdir -p "fuzz/corpus/$target"
  seeds=()
  [ -d "fuzz/seeds/$target" ] && seeds=("fuzz/seeds/$target")
  # Every recorded crash first: each must pass now.
  for crash in fuzz/regressions/"$target"/*; do
    [ -f "$crash" ] || continue
    cargo "${toolchain[@]}" fuzz run -s none "${mode[@]}" "${target_dir[@]}" "$target" "$crash"
  done
  echo "fuzzing $target for ${secs}s"
  log="$(mktemp)"
  if ! cargo "${toolchain[@]}" fuzz run -s none "${mode[@]}" "${target_dir[@]}" "$target" \
      "fuzz/corpus/$target" "${seeds[@]}" -- -max_total_time="$secs" -print_final_stats=1 \
      >"$log" 2>&1; then
    tail -60 "$log" >&2
    echo "fuzz target $target failed: the input is in core/fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E '^(Done|stat::peak_rss_mb)' "$log" || true
  rm -f "$log"
done
