// swift-tools-version:5.9
// The Converge client library for Swift: the generated bindings over the static library that
// scripts/build-xcframework.sh builds (macOS with Xcode only) into ConvergeFFI.xcframework here.
import PackageDescription

let package = Package(
    name: "Converge",
    platforms: [.iOS(.v17), .macOS(.v14)],
    products: [.library(name: "Converge", targets: ["Converge"])],
    targets: [
        .binaryTarget(name: "converge_ffiFFI", path: "ConvergeFFI.xcframework"),
        .target(
            name: "Converge",
            dependencies: ["converge_ffiFFI"],
            path: ".",
            exclude: ["converge_ffiFFI.h", "converge_ffiFFI.modulemap"],
            sources: ["converge_ffi.swift", "ConvergeObservable.swift"]
        ),
    ]
)
