// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "alter",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "alter", targets: ["alter"]),
        .library(name: "SafeTensors", targets: ["SafeTensors"]),
        .library(name: "TensorCore", targets: ["TensorCore"]),
        .library(name: "StableDiffusion", targets: ["StableDiffusion"]),
        .library(name: "ALTER", targets: ["ALTER"]),
        .library(name: "ExpertBundle", targets: ["ExpertBundle"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        .systemLibrary(
            name: "CJSON", pkgConfig: "json-c",
            providers: [.apt(["libjson-c-dev"]), .brew(["json-c"])]),
        .systemLibrary(
            name: "COpenBLAS", pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"]), .brew(["openblas"])]),
        .systemLibrary(
            name: "CZlib", pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"]), .brew(["zlib"])]),
        .target(name: "CFileCopy"),
        .target(
            name: "SafeTensors", dependencies: ["CJSON", "CFileCopy"],
            // Optimised in debug builds too: tests hash and convert megabytes.
            swiftSettings: [.unsafeFlags(["-O"], .when(configuration: .debug))]),
        .target(
            name: "TensorCore", dependencies: ["COpenBLAS"],
            // Kernels are optimised in debug builds too, so that `swift test` runs them at speed.
            // Haswell (AVX2, FMA) and later: the vector kernels use 256-bit registers and fused multiply-add.
            swiftSettings: [
                .unsafeFlags(["-Ounchecked", "-target-cpu", "haswell"], .when(platforms: [.linux], configuration: .release)),
                .unsafeFlags(["-O", "-target-cpu", "haswell"], .when(platforms: [.linux], configuration: .debug)),
            ]),
        .target(name: "NN", dependencies: ["TensorCore"]),
        .target(name: "StableDiffusion", dependencies: ["SafeTensors", "NN"]),
        .target(name: "ALTER", dependencies: ["StableDiffusion", "NN", "SafeTensors"]),
        .target(name: "ExpertBundle", dependencies: ["ALTER", "StableDiffusion", "SafeTensors"]),
        .executableTarget(
            name: "alter",
            dependencies: [
                "SafeTensors", "StableDiffusion", "ALTER", "ExpertBundle",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .executableTarget(name: "SafeTensorsFuzz", dependencies: ["SafeTensors"]),
        .testTarget(name: "SafeTensorsTests", dependencies: ["SafeTensors"]),
        .testTarget(name: "TensorCoreTests", dependencies: ["TensorCore"]),
        .testTarget(name: "NNTests", dependencies: ["NN", "TensorCore"]),
        .testTarget(
            name: "StableDiffusionTests", dependencies: ["StableDiffusion", "SafeTensors"]),
        .testTarget(name: "ALTERTests", dependencies: ["ALTER", "StableDiffusion", "SafeTensors"]),
        .testTarget(name: "ExpertBundleTests", dependencies: ["ExpertBundle", "ALTER", "StableDiffusion", "SafeTensors"]),
    ]
)
