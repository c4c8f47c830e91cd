#!/usr/bin/env bash
# Compiles the Kotlin test app (Repl.kt) with the generated Kotlin bindings into one jar:
#
#   tests/ffi/build-kotlin.sh [FFI_DIR]     default FFI_DIR: $CARGO_TARGET_DIR/ffi (or target/ffi)
#
# Needs what bindings/generate.sh wrote, a JDK (17+), JNA (Debian: libjna-java) and kotlinc, which
# comes from npm's kotlin-compiler package (installed here on first use; no Gradle).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
FFI="${1:-${CARGO_TARGET_DIR:-$ROOT/target}/ffi}"
JNA=/usr/share/java/jna.jar

[[ -f "$FFI/kotlin/uniffi/tether_ffi/tether_ffi.kt" ]] || { echo "run bindings/generate.sh first" >&2; exit 1; }
[[ -f "$JNA" ]] || { echo "$JNA missing: apt-get install libjna-java" >&2; exit 1; }
if [[ ! -x "$HERE/node_modules/kotlin-compiler/bin/kotlinc" ]]; then
  (cd "$HERE" && npm install --no-audit --no-fund --loglevel=error)
fi
"$HERE/node_modules/kotlin-compiler/bin/kotlinc" -version 2>&1 | head -1
"$HERE/node_modules/kotlin-compiler/bin/kotlinc" \
  "$FFI/kotlin/uniffi/tether_ffi/tether_ffi.kt" "$HERE/Repl.kt" \
  -cp "$JNA" -include-runtime -nowarn -d "$FFI/kotlin/tether-repl.jar"
echo "built $FFI/kotlin/tether-repl.jar"
