#!/usr/bin/env bash
# The desktop app in a real window: tauri-driver + WebKitWebDriver under Xvfb, against a real
# Prosody behind the fault proxy. Screenshots land in tests/artifacts/.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
cd "$ROOT"
# tauri-driver comes from the Rust registry; it is installed next to the build cache.
TOOLS="${TETHER_TOOLS:-$(dirname "$TARGET")/tools}"
if ! [ -x "$TOOLS/bin/tauri-driver" ]; then
  cargo install --locked --root "$TOOLS" tauri-driver@2.0.6
fi
export PATH="$TOOLS/bin:$PATH"
# The build of the test run (scripts/common.sh: one feature set for every step).
source "$ROOT/scripts/common.sh"
build_workspace
export TETHER_BIN_DIR="$TARGET/debug"
export TETHER_ARTIFACTS="$ROOT/tests/artifacts"
cd ui
# A hung window (a WebDriver call that never returns) fails the step after 15 minutes instead of
# eating CI's limit (node's --test-timeout would also cut the whole file, which takes 40-80 s).
timeout --kill-after=10 900 xvfb-run -a -s "-screen 0 1280x800x24" \
  node --test --test-concurrency=1 e2e/window.test.mjs
