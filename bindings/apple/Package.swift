// swift-tools-version:5.9
// Tether's core for Apple platforms: the generated Swift API (`TetherFFI`) over the Rust static
// library, packaged as an XCFramework (`TetherFFIFFI`). Build both first, on macOS with Xcode:
//
//     bindings/apple/build-xcframework.sh
//
// which writes build/TetherFFIFFI.xcframework and build/Sources/TetherFFI/TetherFFI.swift.
import PackageDescription

let package = Package(
    name: "Tether",
    platforms: [.iOS(.v15), .macOS(.v12)],
    products: [
        .library(name: "TetherFFI", targets: ["TetherFFI"]),
    ],
    targets: [
        .binaryTarget(name: "TetherFFIFFI", path: "build/TetherFFIFFI.xcframework"),
        .target(
            name: "TetherFFI",
            dependencies: ["TetherFFIFFI"],
            path: "build/Sources/TetherFFI"
        ),
    ]
)
