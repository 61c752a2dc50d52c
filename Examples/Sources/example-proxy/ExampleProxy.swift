// SwiftMesh as a library: a meshed proxy (certified by the identity service, resolving through the destination
// service) or, with `static`, a plaintext proxy whose routes are given on the command line and no control plane.
import ArgumentParser
import Logging
import MeshCore
import MeshDiscovery
import MeshProxy
import MeshTLS
import ServiceLifecycle
import UnixSignals

@main
struct ExampleProxy: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "example-proxy", abstract: "A SwiftMesh proxy built from the library.",
    subcommands: [Meshed.self, Static.self], defaultSubcommand: Meshed.self)
}

/// Certify a workload, resolve through the destination service, serve (outbound, inbound over mutual TLS, admin).
struct Meshed: AsyncParsableCommand {
  @Option(help: "The workload's identity name.") var identity: String
  @Option(help: "Identity service, HOST:PORT.") var identityServer = "127.0.0.1:8080"
  @Option(help: "Trust anchor PEM file (ca.crt).") var ca: String
  @Option(help: "File holding the workload's token.") var token: String
  @Option(help: "Destination service, HOST:PORT.") var destination = "127.0.0.1:8086"
  @OptionGroup var listeners: Listeners

  func run() async throws {
    let logger = Logger(label: "example-proxy")
    // Certify the workload with the identity service (retrying while it is away).
    let workload = try await WorkloadCertifier(
      identity: identity, identityServer: identityServer, caFile: ca, tokenFile: token
    ).certify(logger: logger)
    // Resolve through the destination service: the proxy runs its resolver itself.
    let destination = try Authority(destination)
    let resolver = try Resolver(
      configuration: .defaults { $0.host = destination.host; $0.port = destination.port }, logger: logger)
    let proxy = MeshProxy(configuration: try listeners.configuration(), tls: workload.tls, resolver: resolver, logger: logger)
    // Serve, with the certificate's renewal beside the proxy, until SIGTERM or SIGINT.
    try await ServiceGroup(
      services: workload.services + [proxy], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger
    ).run()
  }
}

/// No control plane: plaintext, routes from `--route AUTHORITY=ADDRESS` (repeatable), held in memory.
struct Static: AsyncParsableCommand {
  @Option(help: "A route, e.g. backend.default.svc.cluster.local:80=127.0.0.1:8000.") var route: [String] = []
  @OptionGroup var listeners: Listeners

  func run() async throws {
    let logger = Logger(label: "example-proxy")
    let discovery = InMemoryDiscovery()
    for route in route {
      let parts = route.split(separator: "=", maxSplits: 1).map(String.init)
      guard parts.count == 2 else { throw ValidationError("--route \(route): expected AUTHORITY=HOST:PORT") }
      let endpoint = Endpoint(address: try Authority(parts[1]))
      discovery.set(EndpointSet(exists: true, endpoints: [endpoint]), for: try Authority(parts[0], defaultPort: 80))
    }
    let proxy = MeshProxy(configuration: try listeners.configuration(), tls: nil, discovery: discovery, logger: logger)
    async let serving: Void = ServiceGroup(
      services: [proxy], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger
    ).run()
    // `listening` returns once the listeners are bound: with port 0, this is where to learn the ports.
    let ports = try await proxy.listening
    logger.notice("bound", metadata: ["outbound": "\(ports.outbound)", "inbound": "\(ports.inbound)", "admin": "\(ports.admin)"])
    try await serving
  }
}

/// The listener flags both variants share.
struct Listeners: ParsableArguments {
  @Option(help: "Outbound listener (the application's requests), HOST:PORT.") var outbound = "127.0.0.1:4140"
  @Option(help: "Inbound listener (other proxies' requests), HOST:PORT.") var inbound = "127.0.0.1:4143"
  @Option(help: "Admin listener (/metrics, /ready, /live), HOST:PORT.") var admin = "127.0.0.1:4191"
  @Option(help: "The local application, HOST:PORT.") var app = "127.0.0.1:8080"

  func configuration() throws -> ProxyConfiguration {
    let (outbound, inbound, admin, app) = try (Authority(outbound), Authority(inbound), Authority(admin), Authority(app))
    return .defaults {
      $0.outboundAddress = outbound
      $0.inboundAddress = inbound
      $0.adminAddress = admin
      $0.applicationAddress = app
    }
  }
}
