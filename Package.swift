// swift-tools-version:6.0
import PackageDescription

// Dependencies run one way:
//   legato (CLI) -> LegatoAgent -> LegatoMemoryNode -> LegatoLog -> LegatoCoordinator -> LegatoWire
//   -> LegatoCore -> LegatoSystem -> CShims
let package = Package(
    name: "Legato",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "legato", targets: ["legato"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        .target(
            name: "CShims",
            path: "CShims",
            cSettings: [.unsafeFlags(["-O2"])],
            linkerSettings: [.linkedLibrary("seccomp"), .linkedLibrary("crypto"), .linkedLibrary("sqlite3")]
        ),
        .target(name: "LegatoSystem", dependencies: ["CShims"]),
        .target(name: "LegatoCore", dependencies: [
            "LegatoSystem",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "LegatoWire", dependencies: ["LegatoCore", "LegatoSystem"]),
        .target(name: "LegatoCoordinator", dependencies: ["LegatoWire", "LegatoCore", "LegatoSystem"]),
        .target(name: "LegatoMemoryNode", dependencies: ["LegatoWire", "LegatoCore", "LegatoSystem", "LegatoCoordinator", "LegatoLog"]),
        .target(name: "LegatoLog", dependencies: ["LegatoWire", "LegatoCore", "LegatoSystem", "LegatoCoordinator"]),
        .target(name: "LegatoAgent", dependencies: ["LegatoWire", "LegatoCore", "LegatoSystem", "LegatoMemoryNode", "LegatoCoordinator", "LegatoLog"]),
        .executableTarget(name: "legato", dependencies: [
            "LegatoAgent", "LegatoMemoryNode", "LegatoLog", "LegatoCoordinator", "LegatoWire", "LegatoCore", "LegatoSystem",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .testTarget(name: "LegatoTests", dependencies: [
            "LegatoAgent", "LegatoMemoryNode", "LegatoLog", "LegatoCoordinator", "LegatoWire", "LegatoCore", "LegatoSystem", "legato",
        ]),
    ],
    swiftLanguageModes: [.v5]
)
