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
    abstract: "The SwiftMesh data-plane proxy: outbound, inbound (mutual TLS) and admin listeners.")

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
  @Option(help: "Log level (trace, debug, info, notice, warning, error).")
  var logLevel: String = "info"

  func validate() throws {
    if let tap {
      do { _ = try Authority(tap) } catch { throw ValidationError("--tap: \(error.message)") }
    }
  }

  func run() async throws {
    LoggingSystem.bootstrap(StreamLogHandler.standardError)
    var logger = Logger(label: "mesh-proxy")
    logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info

    let workload = try await CertifiedWorkload.certify(
      identity: identity, identityServer: identityServer, caFile: ca, tokenFile: token, logger: logger)
    let tls = workload.tls
    let destinationAddress = try Authority(destination)
    let resolver = try Resolver(
      configuration: .defaults {
        $0.host = destinationAddress.host
        $0.port = destinationAddress.port
        if let zone, !zone.isEmpty { $0.contextToken = ContextToken(zone: zone).encoded }
      }, logger: logger)
    let configuration = ProxyConfiguration.defaults {
      $0.outboundAddress = (try? Authority(outbound)) ?? $0.outboundAddress
      $0.inboundAddress = (try? Authority(inbound)) ?? $0.inboundAddress
      $0.adminAddress = (try? Authority(admin)) ?? $0.adminAddress
      $0.applicationAddress = (try? Authority(app)) ?? $0.applicationAddress
      $0.failfastTimeout = .milliseconds(Int64(failfastTimeout * 1000))
      $0.shutdownGracePeriod = .milliseconds(Int64(shutdownGracePeriod * 1000))
      $0.requireIdentityOnInbound = requireIdentity
      $0.gatewayMode = gateway
      $0.clusterDomain = clusterDomain
    }
    for (flag, value) in [("--outbound", outbound), ("--inbound", inbound), ("--admin", admin), ("--app", app)] {
      do { _ = try Authority(value) } catch { throw ValidationError("\(flag): \(error.message)") }
    }
    let proxy = MeshProxy(
      configuration: configuration, tls: tls, discovery: ResolverDiscovery(resolver: resolver, logger: logger),
      logger: logger)
    let tapServer = try tap.map { TapServer(address: try Authority($0), hub: proxy.tap, logger: logger) }
    let group = ServiceGroup(
      configuration: .init(
        services: workload.services.map { .init(service: $0) } + (tapServer.map { [.init(service: $0)] } ?? []) + [
          .init(service: resolver),
          .init(service: proxy, successTerminationBehavior: .gracefullyShutdownGroup),
        ],
        gracefulShutdownSignals: [.sigterm, .sigint],
        logger: logger))
    try await group.run()
  }
}
