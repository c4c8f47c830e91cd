#!/usr/bin/env bash
# What can be checked of the Swift side without a Swift toolchain (Linux CI): the generated Swift
# imports the C module that Package.swift and build-xcframework.sh name, the module map declares
# it, and the scripts parse.   bindings/apple/check.sh [FFI_DIR]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FFI="${1:-${CARGO_TARGET_DIR:-$HERE/../../target}/ffi}"
swift="$FFI/swift/TetherFFI.swift"
fail() { echo "apple check: $*" >&2; exit 1; }
[[ -f "$swift" ]] || fail "$swift missing: run bindings/generate.sh"
grep -q "canImport(TetherFFIFFI)" "$swift" || fail "the Swift source does not import TetherFFIFFI"
grep -q "^module TetherFFIFFI" "$FFI/swift/TetherFFIFFI.modulemap" || fail "module map does not declare TetherFFIFFI"
grep -q 'header "TetherFFIFFI.h"' "$FFI/swift/TetherFFIFFI.modulemap" || fail "module map does not name TetherFFIFFI.h"
grep -q 'binaryTarget(name: "TetherFFIFFI"' "$HERE/Package.swift" || fail "Package.swift names another binary target"
for api in "func suspend() throws" "func resume()" "func networkChanged()" "func close()" \
           "func resend(ids: \[String\]) throws" "protocol EventListener"; do
  grep -q "$api" "$swift" || fail "the Swift API lacks '$api'"
done
bash -n "$HERE/build-xcframework.sh"
echo "apple check: Swift source, module map, Package.swift and build script agree (not compiled: no Swift toolchain here)"
