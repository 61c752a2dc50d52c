// swift-tools-version: 6.1
import PackageDescription

// SwiftMesh's benchmarks, a package of their own (as swift-nio's Benchmarks/ is) so that a package depending on
// SwiftMesh resolves none of their dependencies. From the repository's root:
//
//   swift package --package-path Benchmarks benchmark                    # every package-benchmark suite
//   swift package --package-path Benchmarks benchmark --target ProxyBenchmarks
//   swift run --package-path Benchmarks -c release TLSBenchmark          # the comparisons in Executables/
//
// package-benchmark runs every executable target whose folder sits directly in this one (Identity/, Balancer/,
// Proxy/); the plain executables live under Executables/ so that it leaves them alone.

/// The root package's settings: Swift 6 language mode and the same upcoming features.
let swiftSettings: [SwiftSetting] = [
  .swiftLanguageMode(.v6),
  .enableUpcomingFeature("ExistentialAny"),
  .enableUpcomingFeature("MemberImportVisibility"),
  .enableUpcomingFeature("InternalImportsByDefault"),
]

let benchmark = Target.PluginUsage.plugin(name: "BenchmarkPlugin", package: "benchmark")

/// SwiftMesh's products, by name.
func mesh(_ names: String...) -> [Target.Dependency] { names.map { .product(name: $0, package: "SwiftMesh") } }

let package = Package(
  name: "SwiftMeshBenchmarks",
  platforms: [.macOS(.v15)],
  dependencies: [
    .package(name: "SwiftMesh", path: ".."),
    .package(url: "https://github.com/ordo-one/benchmark.git", from: "1.38.1", traits: ["MallocInterposer"]),
    .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
    .package(url: "https://github.com/apple/swift-nio.git", from: "2.81.0"),
    .package(url: "https://github.com/apple/swift-certificates.git", from: "1.10.0"),
    .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
    .package(url: "https://github.com/apple/swift-asn1.git", from: "1.3.0"),
    .package(url: "https://github.com/grpc/grpc-swift-2.git", from: "2.0.0"),
    .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", from: "2.0.0"),
    .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
  ],
  targets: [
    // package-benchmark suites: `swift package --package-path Benchmarks benchmark --target <name>`.
    .executableTarget(
      name: "IdentityBenchmarks",
      dependencies: mesh("MeshCore", "MeshIdentity") + [
        .product(name: "Benchmark", package: "benchmark"),
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "SwiftASN1", package: "swift-asn1"),
        .product(name: "X509", package: "swift-certificates"),
      ],
      path: "Identity",
      swiftSettings: swiftSettings,
      plugins: [benchmark]
    ),
    .executableTarget(
      name: "BalancerBenchmarks",
      dependencies: mesh("MeshBalancer") + [
        .product(name: "Benchmark", package: "benchmark"),
      ],
      path: "Balancer",
      swiftSettings: swiftSettings,
      plugins: [benchmark]
    ),
    .executableTarget(
      name: "ProxyBenchmarks",
      dependencies: mesh("MeshCore", "MeshIdentity", "MeshTLS", "MeshProxy", "_MeshTestSupport") + [
        .product(name: "Benchmark", package: "benchmark"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "Logging", package: "swift-log"),
      ],
      path: "Proxy",
      swiftSettings: swiftSettings,
      plugins: [benchmark]
    ),

    // Plain executables that compare against independent implementations in the same run:
    // `swift run --package-path Benchmarks -c release <name>`.
    .executableTarget(
      name: "TLSBenchmark",
      dependencies: mesh("MeshCore", "MeshIdentity", "MeshTLS", "_MeshTestSupport") + [
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
      ],
      path: "Executables/TLS",
      swiftSettings: swiftSettings
    ),
    .executableTarget(
      name: "DiscoveryBenchmark",
      dependencies: mesh("MeshCore", "MeshAPI", "MeshDiscovery", "MeshDestination", "MeshKube", "MeshKubeLocal") + [
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "Logging", package: "swift-log"),
      ],
      path: "Executables/Discovery",
      swiftSettings: swiftSettings
    ),
    .executableTarget(
      name: "MirrorBenchmark",
      dependencies: mesh("MeshKube", "MeshKubeLocal", "MeshMulticluster") + [
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
      ],
      path: "Executables/MirrorBenchmark",
      swiftSettings: swiftSettings
    ),
    .executableTarget(
      name: "KubeInformerBenchmark",
      dependencies: mesh("MeshKube", "MeshKubeLocal") + [
        .product(name: "Logging", package: "swift-log"),
      ],
      path: "Executables/KubeInformer",
      swiftSettings: swiftSettings
    ),
  ]
)
