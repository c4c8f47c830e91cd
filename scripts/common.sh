# Shared setup for scripts/test.sh and scripts/demo.sh: system packages and the build cache.
# Sourced, not run.

need_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_toolchain() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install a Rust toolchain (1.89 or newer, e.g. with rustup) and retry" >&2
    exit 1
  fi
}

# Debian packages: Prosody 13 (bookworm-backports) for the local server, openssl for nothing but
# humans' inspection, build tools for the bundled SQLite.
ensure_packages() {
  bash "$ROOT/tests/install-prosody.sh"
  # Build tools, the desktop app's GTK/WebKit libraries, and Xvfb for its window tests; Python,
  # a Java runtime and JNA for the mobile bindings' test apps.
  local want=(build-essential pkg-config libwebkit2gtk-4.1-dev libgtk-3-dev librsvg2-dev
              libsoup-3.0-dev webkit2gtk-driver xvfb xauth x11-utils nodejs npm
              python3 python3-venv libjna-java default-jre-headless)
  local missing=()
  for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  # Node may come from another source than Debian's package; it only has to be there. Likewise a
  # Java runtime (17 or newer) and Python 3 from elsewhere will do (names matched exactly).
  local skip=()
  if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    skip+=(nodejs npm)
  fi
  command -v java >/dev/null 2>&1 && skip+=(default-jre-headless)
  command -v python3 >/dev/null 2>&1 && skip+=(python3)
  # python3-venv is only wanted when this python3 cannot make a virtualenv.
  python3 -c "import ensurepip, venv" >/dev/null 2>&1 && skip+=(python3-venv)
  local todo=()
  for p in "${missing[@]}"; do
    local s keep=1
    for s in "${skip[@]}"; do [ "$p" = "$s" ] && keep=0; done
    [ "$keep" = 1 ] && todo+=("$p")
  done
  if [ ${#todo[@]} -gt 0 ]; then
    need_root apt-get update
    DEBIAN_FRONTEND=noninteractive need_root apt-get install -y --no-install-recommends "${todo[@]}"
  fi
}

# The desktop UI: npm packages from the lock file, then the Vite build the app embeds.
# Vite 7 and selenium-webdriver need Node.js 20 or newer (Debian 12's own nodejs is 18).
build_ui() {
  local major
  major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
  if [ "$major" -lt 20 ]; then
    echo "Node.js $(node --version 2>/dev/null || echo missing) found; the desktop UI needs Node.js 20 or newer" >&2
    exit 1
  fi
  (cd "$ROOT/ui" && npm install --no-audit --no-fund && npm run build)
}

# Builds go to a cache outside the clone when one can be made (CI reuses it between runs); nothing
# depends on it: without it, cargo builds into ./target.
use_build_cache() {
  local cache="${TETHER_BUILD_CACHE:-$HOME/.cache/tether/target}"
  if mkdir -p "$cache" 2>/dev/null && [ -w "$cache" ]; then
    export CARGO_TARGET_DIR="$cache"
  fi
  echo "build directory: ${CARGO_TARGET_DIR:-$ROOT/target}"
  # Cargo judges a workspace crate fresh when its build is newer than its sources (paths relative
  # to the crate): a cache filled from another clone after this checkout's files were written
  # would pass that clone's code off as this one's. The dependencies are what the cache is for;
  # this workspace's own crates are always rebuilt.
  if [ -n "${CARGO_TARGET_DIR:-}" ]; then
    cargo clean --quiet -p tether-core -p tether-e2e -p tether-desktop -p tether-ffi 2>/dev/null || true
  fi
}

# The one feature set every build of the test run uses. Cargo unifies features over the packages a
# command selects, so `-p tether-desktop` alone and `--workspace` build the same crates twice with
# different features (a cold run compiled ~1,190 units where ~770 are needed). Every script of the
# test run builds with these flags, so the later builds are no-ops: the whole workspace, every
# target, and the bindings generator (tether-ffi's `bindgen` feature) in the same graph.
# `--features` is per command, so the test command uses the same list (CARGO_TEST_FLAGS).
CARGO_ALL_FLAGS=(--locked --workspace --all-targets --features tether-ffi/bindgen)
CARGO_TEST_FLAGS=(--locked --workspace --features tether-ffi/bindgen)

build_workspace() {
  cargo build "${CARGO_ALL_FLAGS[@]}" "$@"
}

# Every test of the workspace. With cargo-nextest (on the CI machines), each test is a process of
# its own and four run at once across all test binaries: the end-to-end tests mostly wait on their
# servers (a run of 257 tests took 157 s this way, the tests' own times add up to 562 s). A test
# still running after 5 minutes is killed and fails (.config/nextest.toml). Without nextest, cargo
# test runs the binaries one after another, two tests at a time. The crates have no doc tests
# (`doctest = false`: nextest runs none, and their build has a feature set of its own).
run_tests() {
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run "${CARGO_TEST_FLAGS[@]}" --no-fail-fast -j "${TETHER_TEST_JOBS:-4}"
  else
    cargo test "${CARGO_TEST_FLAGS[@]}" --no-fail-fast -- --test-threads=2
  fi
}

# Runs one step of the test run and says how long it took (CI's limit is on the whole run: the
# summary, printed on exit, says where the time went and which step failed). The step runs in the
# caller's errexit context: a failure ends the run there.
STEP_LOG=""
RUN_START="$(date +%s)"
CURRENT_STEP=""
step() {
  local t0
  CURRENT_STEP="$1"
  shift
  [ -n "$STEP_LOG" ] || STEP_LOG="$(mktemp)"
  t0=$(date +%s)
  echo "== step: $CURRENT_STEP (at $(( t0 - RUN_START )) s)"
  "$@"
  printf '%6d s  %s\n' "$(( $(date +%s) - t0 ))" "$CURRENT_STEP" >> "$STEP_LOG"
  CURRENT_STEP=""
}
step_summary() {
  local rc=$?
  echo "== steps (total $(( $(date +%s) - RUN_START )) s, exit $rc):"
  [ -z "$STEP_LOG" ] || cat "$STEP_LOG"
  [ -z "$CURRENT_STEP" ] || echo "  failed in: $CURRENT_STEP"
  [ -z "$STEP_LOG" ] || rm -f "$STEP_LOG"
}

# slixmpp 1.17.0 from PyPI in a virtualenv (kept outside the clone when it can be): the
# benchmark's peer client, and the end-to-end tests' push app server
# (tests/push/app_server.py). Prints the virtualenv's python.
slix_python() {
  local venv="${TETHER_BENCH_VENV:-$HOME/.cache/tether/bench-venv}"
  if ! mkdir -p "$(dirname "$venv")" 2>/dev/null; then
    venv="$(mktemp -d)/venv"
  fi
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv" >&2
  "$venv/bin/python" -c "import slixmpp" 2>/dev/null \
    || "$venv/bin/pip" install -q --disable-pip-version-check "slixmpp==1.17.0" >&2
  echo "$venv/bin/python"
}
