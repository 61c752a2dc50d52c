// swift-tools-version: 6.1
import PackageDescription

/// One set of Swift settings for every target: Swift 6 language mode and the upcoming features below.
let swiftSettings: [SwiftSetting] = [
  .swiftLanguageMode(.v6),
  .enableUpcomingFeature("ExistentialAny"),
  .enableUpcomingFeature("MemberImportVisibility"),
  .enableUpcomingFeature("InternalImportsByDefault"),
]

/// What an HTTPS server of ours (the embedded API server, the injection webhook) is built from.
let httpsServerDependencies: [Target.Dependency] = [
  .product(name: "NIOCore", package: "swift-nio"),
  .product(name: "NIOHTTP1", package: "swift-nio"),
  .product(name: "NIOFoundationCompat", package: "swift-nio"),
  .product(name: "NIOSSL", package: "swift-nio-ssl"),
  .product(name: "Logging", package: "swift-log"),
  .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
]

let package = Package(
  name: "SwiftMesh",
  platforms: [.macOS(.v15)],
  products: [
    .library(name: "MeshCore", targets: ["MeshCore"]),
    .library(name: "MeshAPI", targets: ["MeshAPI"]),
    .library(name: "MeshIdentity", targets: ["MeshIdentity"]),
    .library(name: "MeshTLS", targets: ["MeshTLS"]),
    .library(name: "MeshBalancer", targets: ["MeshBalancer"]),
    .library(name: "MeshDiscovery", targets: ["MeshDiscovery"]),
    .library(name: "MeshDestination", targets: ["MeshDestination"]),
    .library(name: "MeshProxy", targets: ["MeshProxy"]),
    .library(name: "MeshKube", targets: ["MeshKube"]),
    .library(name: "MeshKubeLocal", targets: ["MeshKubeLocal"]),
    .library(name: "MeshMulticluster", targets: ["MeshMulticluster"]),
    .executable(name: "meshctl", targets: ["meshctl"]),
    .executable(name: "mesh-controller", targets: ["mesh-controller"]),
    .executable(name: "mesh-proxy", targets: ["mesh-proxy"]),
    .executable(name: "mesh-mirror", targets: ["mesh-mirror"]),
    .executable(name: "mesh-proxy-init", targets: ["mesh-proxy-init"]),
    .library(name: "MeshProxyInit", targets: ["MeshProxyInit"]),
    .library(name: "MeshInstall", targets: ["MeshInstall"]),
    .library(name: "MeshInject", targets: ["MeshInject"]),
    // Helpers for this package's tests, Benchmarks/ and Examples/' checks; not API (hence the underscore).
    .library(name: "_MeshTestSupport", targets: ["_MeshTestSupport"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
    .package(url: "https://github.com/apple/swift-nio.git", from: "2.81.0"),
    .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.29.0"),
    .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.24.0"),
    .package(url: "https://github.com/apple/swift-certificates.git", from: "1.10.0"),
    .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
    .package(url: "https://github.com/apple/swift-asn1.git", from: "1.3.0"),
    .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.28.0"),
    .package(url: "https://github.com/grpc/grpc-swift-2.git", from: "2.0.0"),
    .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", from: "2.0.0"),
    .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", from: "2.0.0"),
    .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
    .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
    .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.24.0"),
    .package(url: "https://github.com/jpsim/Yams.git", from: "5.0.1"),
    .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.35.0"),
    .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.0.0"),
    .package(url: "https://github.com/swiftlang/swift-docc-plugin.git", from: "1.4.0"),
  ],
  targets: [
    .target(
      name: "MeshCore",
      dependencies: [
        .product(name: "Logging", package: "swift-log"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
      ],
      swiftSettings: swiftSettings
    ),
    .target(
      name: "MeshAPI",
      dependencies: [
        "MeshCore",
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
      ],
      exclude: ["README.md"],
      swiftSettings: swiftSettings
    ),
    .target(
      name: "MeshIdentity",
      dependencies: [
        "MeshCore",
        "MeshAPI",
        .product(name: "X509", package: "swift-certificates"),
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "_CryptoExtras", package: "swift-crypto"),
        .product(name: "SwiftASN1", package: "swift-asn1"),
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOCertificateReloading", package: "swift-nio-extras"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
      ],
      swiftSettings: swiftSettings
    ),
    .target(
      name: "MeshTLS",
      dependencies: [
        "MeshCore",
        "MeshIdentity",
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "NIOTLS", package: "swift-nio"),
        .product(name: "X509", package: "swift-certificates"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
      ],
      swiftSettings: swiftSettings
    ),
    .target(
      name: "MeshDiscovery",
      dependencies: [
        "MeshCore", "MeshAPI",
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
      ],
      swiftSettings: swiftSettings
    ),
    // The destination service: informers, translators and the gRPC server. Apart from MeshDiscovery (the
    // model and the Resolver a proxy needs) so that mesh-proxy links no Kubernetes client.
    .target(
      name: "MeshDestination",
      dependencies: [
        "MeshCore", "MeshAPI", "MeshDiscovery", "MeshKube",
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
      ],
      swiftSettings: swiftSettings
    ),
    .target(
      name: "MeshBalancer",
      swiftSettings: swiftSettings
    ),
    .target(
      name: "MeshProxy",
      dependencies: [
        "MeshCore", "MeshTLS", "MeshBalancer", "MeshDiscovery", "MeshAPI", "MeshAdminHTTP", "CMeshMalloc",
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "NIOHTTP2", package: "swift-nio-http2"),
        .product(name: "NIOHPACK", package: "swift-nio-http2"),
        .product(name: "Prometheus", package: "swift-prometheus"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
      ],
      swiftSettings: swiftSettings
    ),
    .target(
      name: "MeshAdminHTTP",
      dependencies: [
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
      ],
      swiftSettings: swiftSettings
    ),
    .target(
      name: "MeshKube",
      dependencies: [
        "MeshCore",
        .product(name: "AsyncHTTPClient", package: "async-http-client"),
        .product(name: "Yams", package: "Yams"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "NIOFoundationCompat", package: "swift-nio"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
      ],
      swiftSettings: swiftSettings
    ),
    .target(
      name: "MeshInject",
      dependencies: [
        "MeshCore",
        "MeshKube",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "Crypto", package: "swift-crypto"),
      ] + httpsServerDependencies,
      swiftSettings: swiftSettings
    ),
    .target(
      name: "MeshKubeLocal",
      dependencies: [
        "MeshCore",
        "MeshKube",
        "MeshIdentity",
        .product(name: "X509", package: "swift-certificates"),
        .product(name: "NIOPosix", package: "swift-nio"),
      ] + httpsServerDependencies,
      swiftSettings: swiftSettings
    ),
    .target(
      name: "MeshMulticluster",
      dependencies: [
        "MeshCore", "MeshKube", "MeshIdentity", "MeshTLS", "MeshAdminHTTP",
        .product(name: "Yams", package: "Yams"),
        .product(name: "X509", package: "swift-certificates"),
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "Prometheus", package: "swift-prometheus"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
      ],
      swiftSettings: swiftSettings
    ),
    .target(
      name: "MeshDemo",
      dependencies: [
        "MeshCore", "MeshIdentity", "MeshTLS", "MeshKube", "MeshKubeLocal", "MeshDiscovery", "MeshDestination", "MeshProxy",
        "MeshMulticluster", "MeshAPI",
        .product(name: "AsyncHTTPClient", package: "async-http-client"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
      ],
      swiftSettings: swiftSettings
    ),
    .executableTarget(
      name: "meshctl",
      dependencies: [
        "MeshCore",
        "MeshDemo",
        "MeshIdentity",
        "MeshDiscovery",
        "MeshKube",
        "MeshKubeLocal",
        "MeshMulticluster",
        "MeshProxy",
        "MeshAPI",
        "MeshInstall",
        "MeshInject",
        .product(name: "AsyncHTTPClient", package: "async-http-client"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "X509", package: "swift-certificates"),
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "UnixSignals", package: "swift-service-lifecycle"),
      ],
      swiftSettings: swiftSettings
    ),
    .executableTarget(
      name: "mesh-controller",
      dependencies: [
        "MeshCore",
        "MeshIdentity",
        "MeshDiscovery", "MeshDestination",
        "MeshKube",
        "MeshKubeLocal",
        "MeshInject",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "UnixSignals", package: "swift-service-lifecycle"),
      ],
      swiftSettings: swiftSettings
    ),
    .executableTarget(
      name: "mesh-proxy",
      dependencies: [
        "MeshCore", "MeshIdentity", "MeshTLS", "MeshDiscovery", "MeshProxy",
        .product(name: "X509", package: "swift-certificates"),
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "UnixSignals", package: "swift-service-lifecycle"),
      ],
      swiftSettings: swiftSettings
    ),
    .target(name: "MeshProxyInit", swiftSettings: swiftSettings),
    .target(
      name: "MeshInstall",
      dependencies: [
        "MeshCore", "MeshIdentity",
        .product(name: "X509", package: "swift-certificates"),
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "SwiftASN1", package: "swift-asn1"),
      ],
      swiftSettings: swiftSettings
    ),
    .executableTarget(
      name: "mesh-proxy-init",
      dependencies: ["MeshProxyInit", .product(name: "ArgumentParser", package: "swift-argument-parser")],
      swiftSettings: swiftSettings
    ),
    .executableTarget(
      name: "mesh-mirror",
      dependencies: [
        "MeshCore", "MeshIdentity", "MeshTLS", "MeshKube", "MeshMulticluster",
        .product(name: "X509", package: "swift-certificates"),
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "UnixSignals", package: "swift-service-lifecycle"),
      ],
      swiftSettings: swiftSettings
    ),
    .target(
      name: "_MeshTestSupport",
      dependencies: [
        "MeshCore", "MeshIdentity", "MeshTLS", "MeshProxy", "CMeshMalloc",
        .product(name: "Logging", package: "swift-log"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
      ],
      swiftSettings: swiftSettings
    ),
    // What the C library can say about the heap and give back (glibc's mallinfo2, malloc_trim): the proxy's
    // memory trimmer, memory tests and benchmarks.
    .target(name: "CMeshMalloc"),
    .testTarget(
      name: "MeshKubeTests",
      dependencies: [
        "MeshCore", "MeshKube", "MeshKubeLocal", "MeshIdentity", "MeshInstall", "_MeshTestSupport",
        .product(name: "Yams", package: "Yams"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "MeshDiscoveryTests",
      dependencies: [
        "MeshCore", "MeshAPI", "MeshDiscovery", "MeshDestination", "MeshKube", "MeshKubeLocal", "_MeshTestSupport",
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
      ],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "MeshMulticlusterTests",
      dependencies: [
        "MeshCore", "MeshIdentity", "MeshTLS", "MeshKube", "MeshKubeLocal", "MeshMulticluster", "MeshDiscovery", "MeshDestination",
        "_MeshTestSupport",
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "AsyncHTTPClient", package: "async-http-client"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
      ],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "MeshInjectTests",
      dependencies: [
        "MeshCore", "MeshIdentity", "MeshInject", "MeshKube", "MeshKubeLocal", "_MeshTestSupport",
        .product(name: "AsyncHTTPClient", package: "async-http-client"),
      ] + httpsServerDependencies,
      exclude: ["Golden"],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "MeshBalancerTests",
      dependencies: ["MeshBalancer"],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "MeshDemoTests",
      dependencies: [
        "MeshDemo", "MeshMulticluster", "MeshKube", "_MeshTestSupport",
        .product(name: "Yams", package: "Yams"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "MeshProxyTests",
      dependencies: [
        "MeshCore", "MeshIdentity", "MeshTLS", "MeshProxy", "MeshBalancer", "MeshDiscovery", "MeshDestination", "MeshKube", "MeshKubeLocal", "MeshAPI", "MeshInject", "_MeshTestSupport", .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "NIOEmbedded", package: "swift-nio"),
        .product(name: "NIOHTTP2", package: "swift-nio-http2"),
        .product(name: "NIOHPACK", package: "swift-nio-http2"),
        .product(name: "Prometheus", package: "swift-prometheus"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
      ],
      exclude: ["Peers"],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "MeshTLSTests",
      dependencies: [
        "MeshCore", "MeshIdentity", "MeshTLS", "_MeshTestSupport",
        .product(name: "Logging", package: "swift-log"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOEmbedded", package: "swift-nio"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "X509", package: "swift-certificates"),
      ],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "MeshInstallTests",
      dependencies: [
        "MeshCore", "MeshIdentity", "MeshInstall", "_MeshTestSupport",
        .product(name: "Yams", package: "Yams"),
      ],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "MeshProxyInitTests",
      dependencies: ["MeshProxyInit", "_MeshTestSupport"],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "MeshCoreTests",
      dependencies: [
        "MeshCore",
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
      ],
      swiftSettings: swiftSettings
    ),
    .testTarget(
      name: "MeshIdentityTests",
      dependencies: [
        "MeshCore", "MeshIdentity", "MeshAPI", "_MeshTestSupport",
        .product(name: "X509", package: "swift-certificates"),
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "GRPCCore", package: "grpc-swift-2"),
      ],
      swiftSettings: swiftSettings
    ),
  ]
)
