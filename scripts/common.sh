# Shared setup for scripts/test.sh and scripts/demo.sh: system packages and the build cache.
# Sourced, not run.

need_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_toolchain() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install a Rust toolchain (1.85 or newer, e.g. with rustup) and retry" >&2
    exit 1
  fi
}

# Debian packages: Prosody 13 (bookworm-backports) for the local server, openssl for nothing but
# humans' inspection, build tools for the bundled SQLite.
ensure_packages() {
  bash "$ROOT/tests/install-prosody.sh"
  local missing=()
  for p in gcc make pkg-config; do
    command -v "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    need_root apt-get install -y --no-install-recommends build-essential pkg-config
  fi
}

# Builds go to a cache outside the clone when one can be made (CI reuses it between runs); nothing
# depends on it: without it, cargo builds into ./target.
use_build_cache() {
  local cache="${TETHER_BUILD_CACHE:-$HOME/.cache/tether/target}"
  if mkdir -p "$cache" 2>/dev/null && [ -w "$cache" ]; then
    export CARGO_TARGET_DIR="$cache"
  fi
  echo "build directory: ${CARGO_TARGET_DIR:-$ROOT/target}"
}
