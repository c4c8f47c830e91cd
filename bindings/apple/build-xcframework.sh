#!/usr/bin/env bash
# Builds the XCFramework for iOS devices, the iOS simulator (arm64 + x86_64) and macOS, and the
# Swift source that goes with it. macOS with Xcode and rustup only; see bindings/README.md.
#
#   bindings/apple/build-xcframework.sh
#
# Output (next to Package.swift): build/TetherFFIFFI.xcframework, build/Sources/TetherFFI/.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BUILD="$HERE/build"

[[ "$(uname -s)" == Darwin ]] || { echo "build-xcframework.sh needs macOS with Xcode" >&2; exit 1; }
command -v xcodebuild >/dev/null || { echo "xcodebuild not found: install Xcode" >&2; exit 1; }

targets=(aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios aarch64-apple-darwin x86_64-apple-darwin)
rustup target add "${targets[@]}"
for t in "${targets[@]}"; do
  cargo build --locked --release -p tether-ffi --lib --target "$t"
done

# Swift source, C header and module map, from the host library's uniffi metadata.
cargo build --locked --release -p tether-ffi --features bindgen --bin uniffi-bindgen
gen="$BUILD/generated"
rm -rf "$BUILD"
mkdir -p "$gen" "$BUILD/Sources/TetherFFI" "$BUILD/headers"
"$TARGET/release/uniffi-bindgen" generate --no-format --library \
  "$TARGET/aarch64-apple-darwin/release/libtether_ffi.a" --language swift --out-dir "$gen"
cp "$gen/TetherFFI.swift" "$BUILD/Sources/TetherFFI/"
cp "$gen/TetherFFIFFI.h" "$BUILD/headers/"
cp "$gen/TetherFFIFFI.modulemap" "$BUILD/headers/module.modulemap"

# One library per platform: fat simulator and macOS libraries.
mkdir -p "$BUILD/ios-sim" "$BUILD/macos"
lipo -create "$TARGET/aarch64-apple-ios-sim/release/libtether_ffi.a" \
  "$TARGET/x86_64-apple-ios/release/libtether_ffi.a" -output "$BUILD/ios-sim/libtether_ffi.a"
lipo -create "$TARGET/aarch64-apple-darwin/release/libtether_ffi.a" \
  "$TARGET/x86_64-apple-darwin/release/libtether_ffi.a" -output "$BUILD/macos/libtether_ffi.a"

xcodebuild -create-xcframework \
  -library "$TARGET/aarch64-apple-ios/release/libtether_ffi.a" -headers "$BUILD/headers" \
  -library "$BUILD/ios-sim/libtether_ffi.a" -headers "$BUILD/headers" \
  -library "$BUILD/macos/libtether_ffi.a" -headers "$BUILD/headers" \
  -output "$BUILD/TetherFFIFFI.xcframework"
echo "built $BUILD/TetherFFIFFI.xcframework; add bindings/apple as a Swift package"
