// swift-tools-version: 6.1
import PackageDescription

// SwiftMesh used as a library, by path, through its public products only: `example-proxy` (a meshed proxy, or a
// static one with no control plane) and `example-mirror` (a service mirror between two clusters). See README.md.
//
//   swift run --package-path Examples example-proxy --help
//   swift run --package-path Examples example-mirror --help

let swiftSettings: [SwiftSetting] = [
  .swiftLanguageMode(.v6),
  .enableUpcomingFeature("ExistentialAny"),
  .enableUpcomingFeature("MemberImportVisibility"),
  .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
  name: "SwiftMeshExamples",
  platforms: [.macOS(.v15)],
  dependencies: [
    .package(name: "SwiftMesh", path: ".."),
    .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
    .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
    .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
  ],
  targets: [
    .executableTarget(
      name: "example-proxy",
      dependencies: [
        .product(name: "MeshCore", package: "SwiftMesh"),
        .product(name: "MeshDiscovery", package: "SwiftMesh"),
        .product(name: "MeshProxy", package: "SwiftMesh"),
        .product(name: "MeshTLS", package: "SwiftMesh"),
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "UnixSignals", package: "swift-service-lifecycle"),
      ],
      swiftSettings: swiftSettings
    ),
    .executableTarget(
      name: "example-mirror",
      dependencies: [
        .product(name: "MeshKube", package: "SwiftMesh"),
        .product(name: "MeshMulticluster", package: "SwiftMesh"),
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "UnixSignals", package: "swift-service-lifecycle"),
      ],
      swiftSettings: swiftSettings
    ),
  ]
)
