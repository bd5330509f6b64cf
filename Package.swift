// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "alter",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "alter", targets: ["alter"]),
        .library(name: "SafeTensors", targets: ["SafeTensors"]),
        .library(name: "TensorCore", targets: ["TensorCore"]),
        .library(name: "NN", targets: ["NN"]),
        .library(name: "StableDiffusion", targets: ["StableDiffusion"]),
        .library(name: "Experts", targets: ["Experts"]),
        .library(name: "ALTER", targets: ["ALTER"]),
        .library(name: "ExpertBundle", targets: ["ExpertBundle"]),
        .library(name: "RunExport", targets: ["RunExport"]),
        .library(name: "ALTERBench", targets: ["ALTERBench"]),
        .library(name: "TextToImage", targets: ["TextToImage"]),
        .library(name: "Images", targets: ["Images"]),
        .library(name: "DataEncoding", targets: ["DataEncoding"]),
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
        .systemLibrary(
            name: "CPNG", pkgConfig: "libpng",
            providers: [.apt(["libpng-dev"]), .brew(["libpng"])]),
        .systemLibrary(
            name: "CJPEG", pkgConfig: "libjpeg",
            providers: [.apt(["libjpeg-dev"]), .brew(["jpeg-turbo"])]),
        // PNG and JPEG through libpng and libjpeg, their longjmp error handling kept inside C.
        .target(name: "CImageIO", dependencies: ["CPNG", "CJPEG"]),
        .target(
            name: "SafeTensors", dependencies: ["CJSON", "CFileCopy", "CZlib"],
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
        .target(name: "StableDiffusion", dependencies: ["SafeTensors", "TensorCore", "NN"]),
        // Expert decisions, the routing rule, skip sets and their MACs: shared by the trainer and the bundle.
        .target(name: "Experts", dependencies: ["StableDiffusion"]),
        .target(name: "ALTER", dependencies: ["Experts", "StableDiffusion", "NN", "TensorCore", "SafeTensors"]),
        .target(name: "ExpertBundle", dependencies: ["Experts", "StableDiffusion", "NN", "TensorCore", "SafeTensors"]),
        // Reads a finished run directory (ALTER) and writes its bundle (ExpertBundle).
        .target(name: "RunExport", dependencies: ["ALTER", "ExpertBundle", "StableDiffusion", "SafeTensors"]),
        // From prompts to images: tokenizer, text encoder, routed or dense denoising, VAE decode.
        .target(name: "TextToImage", dependencies: ["ExpertBundle", "Images", "StableDiffusion", "SafeTensors", "TensorCore"]),
        // The studies behind `alter bench`.
        .target(
            name: "ALTERBench",
            dependencies: ["ALTER", "Experts", "ExpertBundle", "RunExport", "StableDiffusion", "NN", "TensorCore"]),
        // PNG/JPEG reading, PNG writing, Pillow-exact resizing and cropping, image <-> tensor.
        .target(
            name: "Images", dependencies: ["CImageIO", "SafeTensors", "TensorCore"],
            // Resampling loops are optimised in debug builds too.
            swiftSettings: [.unsafeFlags(["-O"], .when(configuration: .debug))]),
        // Images and captions to a training-data file through a pipeline's tokenizer, text encoder and VAE.
        .target(name: "DataEncoding", dependencies: ["TextToImage", "Images", "ALTER", "StableDiffusion", "SafeTensors", "TensorCore"]),
        .executableTarget(
            name: "alter",
            dependencies: [
                "SafeTensors", "TensorCore", "NN", "StableDiffusion", "Experts", "ALTER", "ExpertBundle", "RunExport", "ALTERBench",
                "Images", "TextToImage", "DataEncoding",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .executableTarget(name: "SafeTensorsFuzz", dependencies: ["SafeTensors"]),
        // libFuzzer target for the bundle manifest readers (plain build: a corpus replayer).
        .executableTarget(name: "BundleManifestFuzz", dependencies: ["ExpertBundle", "StableDiffusion", "SafeTensors"]),
        // The example model and data for tests of every target.
        .target(name: "ExampleSupport", dependencies: ["ALTER", "StableDiffusion", "TensorCore"], path: "Tests/ExampleSupport"),
        .testTarget(name: "SafeTensorsTests", dependencies: ["SafeTensors"]),
        .testTarget(name: "TensorCoreTests", dependencies: ["TensorCore"]),
        .testTarget(name: "NNTests", dependencies: ["NN", "TensorCore"]),
        .testTarget(name: "ImagesTests", dependencies: ["Images", "SafeTensors", "TensorCore"]),
        .testTarget(
            name: "StableDiffusionTests", dependencies: ["ExampleSupport", "StableDiffusion", "SafeTensors", "NN", "TensorCore"]),
        .testTarget(name: "ALTERTests", dependencies: ["ExampleSupport", "ALTERBench", "ALTER", "Experts", "StableDiffusion", "SafeTensors", "TensorCore"]),
        .testTarget(
            name: "ExpertBundleTests",
            dependencies: ["ExampleSupport", "ExpertBundle", "Experts", "ALTER", "RunExport", "StableDiffusion", "SafeTensors", "TensorCore"]),
        // The command line, run as a process (the `alter` executable is built for it).
        .testTarget(name: "CLITests", dependencies: ["alter", "ExampleSupport", "TextToImage", "Images", "ExpertBundle", "StableDiffusion", "SafeTensors"]),
        .testTarget(name: "TextToImageTests", dependencies: ["TextToImage", "ExpertBundle", "Experts", "StableDiffusion", "SafeTensors", "TensorCore"]),
        .testTarget(
            name: "DataEncodingTests",
            dependencies: ["DataEncoding", "TextToImage", "Images", "ALTER", "StableDiffusion", "SafeTensors", "TensorCore"]),
        .testTarget(
            name: "ALTERBenchTests",
            dependencies: ["ExampleSupport", "ALTERBench", "ALTER", "Experts", "StableDiffusion", "TensorCore"]),
    ]
)
