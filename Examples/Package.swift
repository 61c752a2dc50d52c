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

/// SwiftMesh's products, by name.
func mesh(_ names: String...) -> [Target.Dependency] { names.map { .product(name: $0, package: "SwiftMesh") } }

/// What both executables are built on: argument parsing, logging, services and signals.
let commandLine: [Target.Dependency] = [
  .product(name: "ArgumentParser", package: "swift-argument-parser"),
  .product(name: "Logging", package: "swift-log"),
  .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
  .product(name: "UnixSignals", package: "swift-service-lifecycle"),
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
      dependencies: mesh("MeshCore", "MeshDiscovery", "MeshProxy", "MeshTLS") + commandLine,
      swiftSettings: swiftSettings
    ),
    .executableTarget(
      name: "example-mirror",
      dependencies: mesh("MeshKube", "MeshMulticluster") + commandLine,
      swiftSettings: swiftSettings
    ),
  ]
)
