#!/usr/bin/env bash
# The installer people get: the release build, bundled as a .deb by Tauri's bundler (offline,
# from the npm CLI), its control file completed (Depends as dpkg-shlibdeps finds them for the
# binary, which is stripped), checked (a maintainer with an address, the workspace's version, a
# desktop entry and icons), installed with `apt-get install ./<file>.deb`, started from its
# installed path in a window under Xvfb, and removed cleanly (no file of it left).
# Installing needs root (or sudo): it changes the machine, as the package is meant to.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
source "$ROOT/scripts/common.sh"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"

# The release build of the app alone (its own feature set: the test build's unified one is for
# debug), then only the bundler (`tauri build` would build it once more).
cargo build --locked --release -p tether-desktop
ui/node_modules/.bin/tauri bundle --bundles deb --ci
BUNDLED=$(ls -t "$TARGET"/release/bundle/deb/*.deb | head -1)
VERSION=$(cargo metadata --locked --no-deps --format-version 1 | python3 -c \
  'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "tether-desktop"))')

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
dpkg-deb -R "$BUNDLED" "$WORK/pkg"
BIN=usr/bin/tether-desktop
strip --strip-unneeded "$WORK/pkg/$BIN"
# dpkg-shlibdeps reads the package's name from a debian/control of its own.
mkdir -p "$WORK/src/debian"
printf 'Source: tether\n\nPackage: tether\nArchitecture: any\n' > "$WORK/src/debian/control"
DEPENDS=$(cd "$WORK/src" && dpkg-shlibdeps -O -e"$WORK/pkg/$BIN" | sed -n 's/^shlibs:Depends=//p')
[ -n "$DEPENDS" ] || { echo "dpkg-shlibdeps found no dependency"; exit 1; }
SIZE=$(du -sk --exclude=DEBIAN "$WORK/pkg" | cut -f1)
sed -i -e "s|^Depends: .*|Depends: $DEPENDS|" -e "s|^Installed-Size: .*|Installed-Size: $SIZE|" \
  "$WORK/pkg/DEBIAN/control"
(cd "$WORK/pkg" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum > DEBIAN/md5sums)
DEB="$TARGET/release/bundle/deb/tether_${VERSION}_amd64.deb"
dpkg-deb --root-owner-group --build "$WORK/pkg" "$DEB" >/dev/null
echo "built $DEB ($(du -h "$DEB" | cut -f1))"
dpkg-deb --info "$DEB" | sed -n '/Package:/,$p'

fail() { echo "deb: $*"; exit 1; }
field() { dpkg-deb -f "$DEB" "$1"; }
[ "$(field Package)" = tether ] || fail "package name $(field Package)"
[ "$(field Version)" = "$VERSION" ] || fail "version $(field Version), the workspace's is $VERSION"
field Maintainer | grep -Eq '^[^<]+ <[^@ ]+@[^> ]+>$' || fail "maintainer without an address: $(field Maintainer)"
field Depends | grep -q 'libwebkit2gtk-4.1-0' || fail "Depends lacks WebKitGTK: $(field Depends)"
field Depends | grep -q 'libc6' || fail "Depends is not dpkg-shlibdeps': $(field Depends)"
[ -n "$(field Description)" ] && [ -n "$(field Section)" ] || fail "no description or section"
CONTENTS=$(dpkg-deb -c "$DEB")
for f in "./$BIN" ./usr/share/applications/Tether.desktop ./usr/share/icons/hicolor/128x128/apps/tether-desktop.png; do
  grep -q " $f$" <<<"$CONTENTS" || fail "the package has no $f"
done

# A tether package left by an earlier run goes first; then the install, as a user would do it.
if dpkg -s tether >/dev/null 2>&1; then need_root apt-get remove -y --purge tether; fi
DEBIAN_FRONTEND=noninteractive need_root apt-get install -y --no-install-recommends "$DEB"
dpkg -s tether | grep -q "^Status: install ok installed" || fail "not installed"
[ "$(dpkg-query -W -f='${Version}' tether)" = "$VERSION" ] || fail "installed version"
test -x "/$BIN" || fail "no /$BIN after the install"
grep -q "^Exec=tether-desktop" /usr/share/applications/Tether.desktop || fail "the desktop entry does not start the app"

# The installed app, on a fresh database (first run: the sign-in screen), in a window.
export TETHER_DB="$WORK/first-run.db"
xvfb-run -a -s "-screen 0 1200x800x24" bash -c '
  "$0" > "$1/app.log" 2>&1 & APP=$!
  for i in $(seq 1 60); do
    if xwininfo -root -tree 2>/dev/null | grep -q "\"Tether\""; then
      echo "the installed app opened its window after $((i / 2)) s"; kill $APP; wait $APP 2>/dev/null; exit 0
    fi
    kill -0 $APP 2>/dev/null || { echo "the app exited:"; cat "$1/app.log"; exit 1; }
    sleep 0.5
  done
  echo "no window after 30 s"; cat "$1/app.log"; kill $APP; exit 1
' "/$BIN" "$WORK"

# Removed cleanly: no package, and none of its files left.
FILES=$(dpkg -L tether | while read -r f; do [ -f "$f" ] && echo "$f"; done)
need_root apt-get remove -y --purge tether
if dpkg -s tether >/dev/null 2>&1; then fail "still installed after the removal"; fi
for f in $FILES; do [ ! -e "$f" ] || fail "$f is left after the removal"; done
echo "deb install: 1 passed, 0 failed"
