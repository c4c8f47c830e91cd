#!/usr/bin/env bash
# The .deb installer: build it with the Tauri bundler (offline, from the npm CLI), unpack it with
# dpkg -x, and check that its binary starts and opens its window under Xvfb.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
cd "$ROOT"
# The binary of the test run's one build (scripts/common.sh; a no-op inside it), then only the
# bundler: `tauri build` would compile the app again on its own, with the desktop crate's features
# alone (~140 crates a second time on a cold machine).
source "$ROOT/scripts/common.sh"
build_workspace
ui/node_modules/.bin/tauri bundle --debug --bundles deb --ci
DEB=$(ls -t "$TARGET"/debug/bundle/deb/*.deb | head -1)
echo "built $DEB ($(du -h "$DEB" | cut -f1))"
dpkg-deb --info "$DEB" | grep -E 'Package|Version|Depends'
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
dpkg -x "$DEB" "$WORK/root"
BIN="$WORK/root/usr/bin/tether-desktop"
test -x "$BIN" || { echo "no binary in the package"; exit 1; }
test -f "$WORK/root/usr/share/applications/Tether.desktop" || { echo "no desktop entry"; exit 1; }
# Start it on a fresh database (first run: the sign-in screen) and look for its window.
export TETHER_DB="$WORK/first-run.db"
xvfb-run -a -s "-screen 0 1200x800x24" bash -c '
  "$0" > "$1/app.log" 2>&1 & APP=$!
  for i in $(seq 1 60); do
    if xwininfo -root -tree 2>/dev/null | grep -q "\"Tether\""; then
      echo "window up after $((i / 2)) s"; kill $APP; wait $APP 2>/dev/null; exit 0
    fi
    kill -0 $APP 2>/dev/null || { echo "the app exited:"; cat "$1/app.log"; exit 1; }
    sleep 0.5
  done
  echo "no window after 30 s"; cat "$1/app.log"; kill $APP; exit 1
' "$BIN" "$WORK"
echo "deb smoke: 1 passed, 0 failed"
