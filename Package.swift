// swift-tools-version:6.0
import PackageDescription

// Dependencies run one way, and no service imports another:
//
//   legato (the command line)
//     -> services:          LegatoAgent   LegatoMemoryNode   LegatoLogNode   LegatoCoordinator
//     -> shared libraries:  LegatoImage (checkpoint formats)  LegatoClients (every service's client,
//                           the replicated log's writer and reader, the cluster's records)
//                           LegatoSegmentLog (the segment and entry format)
//     -> LegatoWire (frames, handshake, RPC), LegatoMetrics (/metrics) -> LegatoCore -> LegatoSystem -> CShims
let package = Package(
    name: "Legato",
    products: [
        .executable(name: "legato", targets: ["legato"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        .target(
            name: "CShims",
            path: "CShims",
            linkerSettings: [.linkedLibrary("seccomp"), .linkedLibrary("crypto"), .linkedLibrary("sqlite3")]
        ),
        .target(name: "LegatoSystem", dependencies: ["CShims"]),
        .target(name: "LegatoCore", dependencies: [
            "LegatoSystem",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "LegatoWire", dependencies: ["LegatoCore", "LegatoSystem"]),
        .target(name: "LegatoMetrics", dependencies: [
            "LegatoCore", "LegatoSystem",
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ]),

        // Shared libraries: formats and clients, used by services and the command line alike.
        .target(name: "LegatoSegmentLog", dependencies: ["LegatoSystem"]),
        .target(name: "LegatoClients", dependencies: ["LegatoSegmentLog", "LegatoWire", "LegatoCore", "LegatoSystem"]),
        .target(name: "LegatoImage", dependencies: ["LegatoCore", "LegatoSystem"]),

        // Services: each answers or drives one part of the cluster; none imports another.
        .target(name: "LegatoCoordinator", dependencies: ["LegatoClients", "LegatoMetrics", "LegatoWire", "LegatoCore", "LegatoSystem"]),
        .target(name: "LegatoLogNode", dependencies: ["LegatoClients", "LegatoMetrics", "LegatoSegmentLog", "LegatoWire", "LegatoCore", "LegatoSystem"]),
        .target(name: "LegatoMemoryNode", dependencies: ["LegatoClients", "LegatoMetrics", "LegatoImage", "LegatoSegmentLog", "LegatoWire", "LegatoCore", "LegatoSystem"]),
        .target(name: "LegatoAgent", dependencies: [
            "LegatoClients", "LegatoMetrics", "LegatoImage", "LegatoSegmentLog", "LegatoWire", "LegatoCore", "LegatoSystem",
            .product(name: "Metrics", package: "swift-metrics"),
        ]),

        .executableTarget(name: "legato", dependencies: [
            "LegatoAgent", "LegatoMemoryNode", "LegatoLogNode", "LegatoCoordinator",
            "LegatoClients", "LegatoSegmentLog", "LegatoMetrics", "LegatoWire", "LegatoCore", "LegatoSystem",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // Tests: unit tests need no root and start no process; end-to-end tests run `legato` itself.
        .target(name: "LegatoTestSupport", dependencies: ["LegatoCore", "LegatoSystem", "LegatoWire"], path: "Tests/LegatoTestSupport"),
        .testTarget(name: "LegatoUnitTests", dependencies: [
            "LegatoAgent", "LegatoMemoryNode", "LegatoLogNode", "LegatoCoordinator", "LegatoClients", "LegatoSegmentLog", "LegatoMetrics", "LegatoImage",
            "LegatoWire", "LegatoCore", "LegatoSystem", "LegatoTestSupport",
        ]),
        .testTarget(name: "LegatoEndToEndTests", dependencies: [
            "LegatoClients", "LegatoImage", "LegatoLogNode", "LegatoSegmentLog", "LegatoWire", "LegatoCore", "LegatoSystem",
            "LegatoTestSupport", "legato",
        ]),
    ],
    swiftLanguageModes: [.v5]
)
