import ArgumentParser
import Foundation
import Logging
import MeshCore
import MeshDiscovery
import MeshIdentity
import MeshProxy
import MeshTLS
import ServiceLifecycle
import UnixSignals

@main
struct MeshProxyCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "mesh-proxy",
    abstract: "The SwiftMesh data-plane proxy: outbound, inbound (mutual TLS) and admin listeners.",
    discussion: """
      The admin listener starts first: /live answers 200 at once, /ready 503 with the reason until the proxy \
      serves. The proxy asks the identity service for its certificate until it gets one (jittered back-off while \
      the service cannot be reached, every 30 s while it refuses the identity), then opens the outbound and \
      inbound listeners. An --identity that is not an identity name or an unreadable --ca file stops it at once.
      """)

  @Option(help: "Identity to ask for, e.g. web.default.serviceaccount.identity.swiftmesh.cluster.local.")
  var identity: String
  @Option(help: "Identity service address, HOST:PORT.")
  var identityServer: String = "127.0.0.1:8080"
  @Option(help: "Trust anchor PEM file (ca.crt).")
  var ca: String
  @Option(help: "File holding the service-account token.")
  var token: String
  @Option(help: "Destination service address, HOST:PORT.")
  var destination: String = "127.0.0.1:8086"
  @Option(help: "Outbound listener, HOST:PORT.")
  var outbound: String = "127.0.0.1:4140"
  @Option(help: "Inbound listener, HOST:PORT.")
  var inbound: String = "0.0.0.0:4143"
  @Option(help: "Admin listener (/metrics, /ready, /live), HOST:PORT.")
  var admin: String = "0.0.0.0:4191"
  @Option(help: "The local application the inbound side forwards to, HOST:PORT.")
  var app: String = "127.0.0.1:8080"
  @Option(help: "Seconds a request waits for endpoints before a 503.")
  var failfastTimeout: Double = 3
  @Option(help: "Seconds graceful shutdown waits for in-flight requests.")
  var shutdownGracePeriod: Double = 30
  @Flag(help: "Refuse inbound clients without a mesh certificate.")
  var requireIdentity = false
  @Flag(
    help: ArgumentHelp(
      "Run as the cluster's multi-cluster gateway: no outbound listener; the inbound listener admits mesh callers "
        + "(mutual TLS) only and forwards each request to the local service its authority names."))
  var gateway = false
  @Option(help: "The cluster's DNS domain; the gateway serves <service>.<namespace>.svc.<domain> only.")
  var clusterDomain: String = "cluster.local"
  @Option(
    help: ArgumentHelp(
      "Serve the tap API (gRPC, plaintext: keep it on loopback), HOST:PORT; the conventional port is 4190.",
      discussion: "`meshctl tap --proxy HOST:PORT` streams the proxy's requests live."))
  var tap: String?
  @Option(
    help: ArgumentHelp(
      "The zone of this proxy's node (its topology.kubernetes.io/zone label), e.g. from the downward API.",
      discussion: "Sent to the destination service in each request's context token, so it honours EndpointSlice "
        + "topology hints (hints.forZones); without it hints are ignored."))
  var zone: String?
  @Flag(
    help: ArgumentHelp(
      "Transparent proxying, behind mesh-proxy-init's iptables rules: each connection goes where it was going "
        + "(SO_ORIGINAL_DST).",
      discussion: "Outbound, a Service's ClusterIP or a pod IP is resolved through the destination service and "
        + "anything the mesh does not know is forwarded as is; inbound, the application is reached on the "
        + "original port on 127.0.0.1 (--app is not used). Non-HTTP connections are carried as opaque TCP, over "
        + "mutual TLS between proxies."))
  var transparent = false
  @Option(
    help: ArgumentHelp(
      "Ports whose connections are opaque TCP without protocol detection (server-speaks-first protocols), "
        + "e.g. 25,3306,4000-4100.",
      discussion: "Inbound, the pod's opaque ports (the injector passes config.swiftmesh.io/opaque-ports); "
        + "outbound, for destinations the destination service does not know (it says so for Services)."))
  var opaquePorts: String = PortSet.defaultOpaquePorts.description
  @Option(help: "Seconds protocol detection waits for a connection's first bytes before it carries it as opaque TCP.")
  var detectTimeout: Double = 10
  @Option(
    help: ArgumentHelp(
      "Event loops (threads) serving requests; default: one per core.",
      discussion: "A sidecar beside a small workload may run with 1: fewer threads and less memory."))
  var eventLoops: Int?
  @Option(help: "Seconds an idle upstream HTTP/1.1 connection is kept for reuse (it closes after one to two of these).")
  var upstreamIdleTimeout: Double = 10
  @Option(help: "Log level (trace, debug, info, notice, warning, error).")
  var logLevel: String = "info"

  func validate() throws {
    do { _ = try PortSet(parsing: opaquePorts) } catch { throw ValidationError("--opaque-ports: \(error.message)") }
    guard detectTimeout > 0 else { throw ValidationError("--detect-timeout must be positive, got \(detectTimeout)") }
    guard upstreamIdleTimeout > 0 else {
      throw ValidationError("--upstream-idle-timeout must be positive, got \(upstreamIdleTimeout)")
    }
    if let eventLoops, !(1...256).contains(eventLoops) {
      throw ValidationError("--event-loops must be between 1 and 256, got \(eventLoops)")
    }
    if let tap {
      do { _ = try Authority(tap) } catch { throw ValidationError("--tap: \(error.message)") }
    }
  }

  func run() async throws {
    MeshProxyAllocator.limitArenas()
    LoggingSystem.bootstrap(StreamLogHandler.standardError)
    var logger = Logger(label: "mesh-proxy")
    logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info

    // What no retry can fix fails at once: addresses, the identity name, the trust anchors.
    func address(_ flag: String, _ value: String) throws -> Authority {
      do { return try Authority(value) } catch { throw ValidationError("\(flag): \(error.message)") }
    }
    let outboundAddress = try address("--outbound", outbound)
    let inboundAddress = try address("--inbound", inbound)
    let adminAddress = try address("--admin", admin)
    let appAddress = try address("--app", app)
    let destinationAddress = try address("--destination", destination)
    let certifier = try WorkloadCertifier(identity: identity, identityServer: identityServer, caFile: ca, tokenFile: token)
    let configuration = ProxyConfiguration.defaults {
      $0.outboundAddress = outboundAddress
      $0.inboundAddress = inboundAddress
      $0.adminAddress = adminAddress
      $0.applicationAddress = appAddress
      $0.failfastTimeout = .milliseconds(Int64(failfastTimeout * 1000))
      $0.shutdownGracePeriod = .milliseconds(Int64(shutdownGracePeriod * 1000))
      $0.requireIdentityOnInbound = requireIdentity
      $0.gatewayMode = gateway
      $0.clusterDomain = clusterDomain
      $0.transparent = transparent
      $0.opaquePorts = (try? PortSet(parsing: opaquePorts)) ?? .defaultOpaquePorts
      $0.detectTimeout = .milliseconds(Int64(detectTimeout * 1000))
      $0.eventLoops = eventLoops
      $0.upstreamIdleTimeout = .milliseconds(Int64(upstreamIdleTimeout * 1000))
    }
    let tapAddress = try tap.map { try Authority($0) }

    // The admin port answers first: /live at once, /ready (503, with the reason) until the proxy serves.
    let readiness = Readiness(notReady: "waiting for a certificate from the identity service at \(identityServer)")
    let adminListener = try await AdminListener.bind(configuration.adminAddress, readiness: readiness)
    logger.notice(
      "admin listening; getting a certificate",
      metadata: [
        "admin": "\(configuration.adminAddress.host):\(adminListener.port)", "identity": "\(certifier.identity)",
        "identity_server": "\(certifier.identityServer)",
      ])
    let launcher = ProxyLauncher(
      certifier: certifier, admin: adminListener, configuration: configuration,
      destination: destinationAddress, zone: zone, tap: tapAddress, logger: logger)
    let group = ServiceGroup(
      configuration: .init(
        services: [.init(service: launcher, successTerminationBehavior: .gracefullyShutdownGroup)],
        gracefulShutdownSignals: [.sigterm, .sigint],
        logger: logger))
    try await group.run()
  }
}

/// Certifies the workload (retrying while the identity service is away or refuses, as `/ready` tells),
/// then runs the proxy with its rotation, resolver and tap beside it, until graceful shutdown. A shutdown
/// while it still waits for the certificate ends it quietly.
struct ProxyLauncher: Service {
  let certifier: WorkloadCertifier
  let admin: AdminListener
  let configuration: ProxyConfiguration
  let destination: Authority
  let zone: String?
  let tap: Authority?
  let logger: Logger

  func run() async throws {
    let readiness = admin.readiness
    let workload: CertifiedWorkload
    do {
      workload = try await cancelWhenGracefulShutdown {
        try await certifier.certify(logger: logger) { waiting in readiness.setNotReady("\(waiting)") }
      }
    } catch is CancellationError {
      logger.notice("stopped before the workload was certified")
      await admin.close()
      return
    } catch {
      await admin.close()
      throw error
    }
    readiness.setNotReady("certified; starting the listeners")
    let resolver = try Resolver(
      configuration: .defaults {
        $0.host = destination.host
        $0.port = destination.port
        if let zone, !zone.isEmpty { $0.contextToken = ContextToken(zone: zone).encoded }
      }, logger: logger)
    // The proxy runs the resolver itself.
    let proxy = MeshProxy(configuration: configuration, tls: workload.tls, resolver: resolver, admin: admin, logger: logger)
    let tapServer = tap.map { TapServer(address: $0, hub: proxy.tap, logger: logger) }
    if let tap { proxy.addLocalListener(tap) }
    let group = ServiceGroup(
      configuration: .init(
        services: workload.services.map { .init(service: $0) } + (tapServer.map { [.init(service: $0)] } ?? []) + [
          .init(service: proxy, successTerminationBehavior: .gracefullyShutdownGroup),
        ],
        logger: logger))
    try await group.run()
  }
}
