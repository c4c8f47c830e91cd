#!/usr/bin/env bash
# Builds tether-ffi and generates its Swift, Kotlin and Python bindings from the built library
# (uniffi "library mode": the metadata comes from the .so itself, so code and library match).
#
#   bindings/generate.sh [OUT_DIR]      default OUT_DIR: $CARGO_TARGET_DIR/ffi (or target/ffi)
#
# Writes OUT_DIR/{swift,kotlin,kotlin-android,python}/ and copies the library next to the Kotlin and Python
# code. Generated code is never committed. Release builds: PROFILE=release.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
PROFILE="${PROFILE:-debug}"
OUT="${1:-$TARGET/ffi}"

flags=(--locked -p tether-ffi --features bindgen)
[[ "$PROFILE" == release ]] && flags+=(--release)
if [[ "${TETHER_UNIFIED_BUILD:-}" == 1 && "$PROFILE" == debug ]]; then
  # Inside the test run: the same build as every other step (scripts/common.sh), a no-op by now.
  source "$ROOT/scripts/common.sh"
  build_workspace
else
  cargo build "${flags[@]}"
fi

case "$(uname -s)" in
  Darwin) lib="$TARGET/$PROFILE/libtether_ffi.dylib" ;;
  *) lib="$TARGET/$PROFILE/libtether_ffi.so" ;;
esac
bindgen="$TARGET/$PROFILE/uniffi-bindgen"

rm -rf "$OUT"
for lang in swift kotlin python; do
  mkdir -p "$OUT/$lang"
  "$bindgen" generate --no-format --library "$lib" --language "$lang" --out-dir "$OUT/$lang"
done
# Kotlin for Android apps: the same, with the Android-compatible cleaner.
mkdir -p "$OUT/kotlin-android"
"$bindgen" generate --no-format --config "$ROOT/bindings/uniffi-android.toml" --library "$lib" \
  --language kotlin --out-dir "$OUT/kotlin-android"
grep -q "android.system.SystemCleaner" "$OUT/kotlin-android/uniffi/tether_ffi/tether_ffi.kt" \
  || { echo "the Android Kotlin lacks the Android cleaner" >&2; exit 1; }
cp "$lib" "$OUT/kotlin/"
cp "$lib" "$OUT/python/"
echo "bindings generated in $OUT:"
(cd "$OUT" && find . -type f | sort)
