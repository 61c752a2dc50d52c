import ArgumentParser
import Foundation
import Logging
import MeshCore
import MeshIdentity
import MeshKube
import MeshMulticluster
import MeshTLS
import ServiceLifecycle
import Synchronization
import UnixSignals

@main
struct MeshMirrorCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "mesh-mirror",
    abstract: "The SwiftMesh service mirror: one controller per Link, mirroring exported services of target clusters.",
    discussion: """
      Identity for the gateway probe (mutual TLS, the gateway's identity checked), one of:
        --identity NAME --identity-server HOST:PORT --ca ca.crt --token FILE   (certified and renewed, like mesh-proxy)
        --cert tls.crt --key tls.key --ca ca.crt                              (fixed PEM material)
      Without either, gateways are not probed and count as alive (the Links' GatewayAlive condition says so).
      """)

  @Option(help: "Kubeconfig of the source (local) cluster; default: KUBECONFIG, ~/.kube/config, in-cluster.")
  var kubeconfig: String?
  @Option(help: "Kubeconfig context.")
  var context: String?
  @Option(help: "Follow only this Link (default: every Link of the namespace).")
  var link: String?
  @Option(help: "Namespace of the Links and their credentials Secrets.")
  var namespace: String = MirrorMetadata.multiclusterNamespace
  @Option(help: "Admin listener (/metrics, /gateways, /ready, /live), HOST:PORT.")
  var admin: String = "127.0.0.1:9999"
  @Option(help: "Identity to ask the identity service for (gateway probe).")
  var identity: String?
  @Option(help: "Identity service address, HOST:PORT.")
  var identityServer: String = "127.0.0.1:8080"
  @Option(help: "File holding the service-account token for the identity service.")
  var token: String?
  @Option(help: "Trust anchor PEM file (ca.crt).")
  var ca: String?
  @Option(help: "Workload certificate chain PEM file (instead of --identity).")
  var cert: String?
  @Option(help: "Workload private key PEM file (with --cert).")
  var key: String?
  @Option(help: "Seconds between full repairs of every mirror.")
  var repairInterval: Double = 60
  @Option(help: "Seconds between checks of the target's API server.")
  var targetCheckInterval: Double = 10
  @Option(help: "Seconds between resolutions of gateway names (a failed probe resolves at once).")
  var gatewayResolveInterval: Double = 30
  @Option(help: "Seconds between renewals of each Link's heartbeat Lease (read by meshctl multicluster check).")
  var heartbeatInterval: Double = 10
  @Option(
    help: """
      How mirrors' endpoints are written and the target's read: 'endpointslices' (discovery.k8s.io/v1; a \
      cluster that does not serve it gets 'endpoints') or 'endpoints' (v1 Endpoints, for old clusters).
      """)
  var endpointsAPI: String = EndpointsAPI.endpointSlices.rawValue
  @Option(help: "Log level (trace, debug, info, notice, warning, error).")
  var logLevel: String = "info"

  func validate() throws {
    if identity != nil && cert != nil { throw ValidationError("give either --identity or --cert/--key, not both") }
    if (cert == nil) != (key == nil) { throw ValidationError("--cert and --key go together") }
    if (identity != nil || cert != nil) && ca == nil { throw ValidationError("--ca is needed to verify gateways") }
    if identity != nil && token == nil { throw ValidationError("--identity needs --token") }
    guard repairInterval > 0, targetCheckInterval > 0, gatewayResolveInterval > 0, heartbeatInterval > 0 else { throw ValidationError("intervals must be positive") }
    guard EndpointsAPI(argument: endpointsAPI) != nil else {
      throw ValidationError("--endpoints-api '\(endpointsAPI)': expected 'endpointslices' or 'endpoints'")
    }
    do { _ = try Authority(admin) } catch { throw ValidationError("--admin '\(admin)': \(error.message)") }
  }

  func run() async throws {
    LoggingSystem.bootstrap(StreamLogHandler.standardError)
    var logger = Logger(label: "mesh-mirror")
    logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info

    let localConfig = try KubeClientConfig.load(kubeconfig: kubeconfig, context: context)
    let localClient = try KubeClient(config: localConfig, logger: logger)
    let identitySource = try makeIdentitySource(logger: logger)
    if case .absent = identitySource {
      logger.warning("no identity material (--identity or --cert/--key): gateways are not probed")
    }
    let metrics = MirrorMetrics()
    let launcher = MirrorLauncher(
      identity: identitySource, localClient: localClient, metrics: metrics,
      configuration: .defaults {
        $0.namespace = namespace
        $0.linkName = link
        $0.mirror.repairInterval = .milliseconds(Int64(repairInterval * 1000))
        $0.mirror.targetCheckInterval = .milliseconds(Int64(targetCheckInterval * 1000))
        $0.mirror.endpointsAPI = EndpointsAPI(argument: endpointsAPI) ?? .endpointSlices
        $0.mirror.gatewayResolveInterval = .milliseconds(Int64(gatewayResolveInterval * 1000))
        $0.mirror.heartbeatInterval = .milliseconds(Int64(heartbeatInterval * 1000))
      },
      logger: logger)
    // The admin port answers while the probe identity is being certified: /live 200, /ready 503 and why.
    let adminServer = MirrorAdminServer(
      address: try Authority(admin), metrics: metrics, logger: logger, reports: { launcher.reports },
      notReady: { launcher.notReadyReason })
    let group = ServiceGroup(
      configuration: .init(
        services: [
          .init(service: adminServer),
          .init(service: launcher, successTerminationBehavior: .gracefullyShutdownGroup),
        ],
        gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    do {
      try await group.run()
    } catch {
      try? await localClient.shutdown()
      throw error
    }
    try await localClient.shutdown()
  }

  /// The probe's mutual TLS: certified and rotated (`--identity`), fixed PEM files (`--cert`), or none.
  /// What no retry can fix (files, names) fails here, at once.
  func makeIdentitySource(logger: Logger) throws -> MirrorLauncher.IdentitySource {
    if let cert, let key, let ca {
      let chain = try PEMFiles.readCertificates(cert)
      guard let leaf = chain.first else { throw ValidationError("--cert \(cert): no certificate") }
      let material = WorkloadCertificate(
        privateKey: try PEMFiles.readP256Key(key), leaf: leaf, intermediates: Array(chain.dropFirst()))
      logger.notice("identity from PEM files", metadata: ["identity": "\(material.identity?.description ?? "none")"])
      return .fixed(
        try MeshTLS(
          material: material, trustAnchors: try PEMFiles.readCertificates(ca),
          configuration: MirrorLauncher.tlsConfiguration, logger: logger))
    }
    guard let identity, let token, let ca else { return .absent }
    return .certified(
      try WorkloadCertifier(identity: identity, identityServer: identityServer, caFile: ca, tokenFile: token))
  }
}

/// Gets the probe identity (retrying while the identity service is away or refuses, as `/ready` tells),
/// then runs the Link supervisor with the certificate's rotation beside it, until graceful shutdown. A
/// shutdown while it still waits for the certificate ends it quietly.
final class MirrorLauncher: ServiceLifecycle.Service, Sendable {
  enum IdentitySource: Sendable {
    case absent
    case fixed(MeshTLS)
    case certified(WorkloadCertifier)
  }

  /// The probe speaks HTTP/1.1, so that is the only ALPN it offers.
  static let tlsConfiguration = MeshTLS.Configuration.defaults { $0.clientALPN = [MeshTLS.ALPN.http11] }

  let identity: IdentitySource
  let localClient: KubeClient
  let metrics: MirrorMetrics
  let configuration: LinkSupervisor.Configuration
  let logger: Logger
  private let state: Mutex<(supervisor: LinkSupervisor?, notReady: String?)>

  init(
    identity: IdentitySource, localClient: KubeClient, metrics: MirrorMetrics,
    configuration: LinkSupervisor.Configuration, logger: Logger
  ) {
    self.identity = identity
    self.localClient = localClient
    self.metrics = metrics
    self.configuration = configuration
    self.logger = logger
    if case .certified(let certifier) = identity {
      state = Mutex((nil, "waiting for the probe certificate from the identity service at \(certifier.identityServer)"))
    } else {
      state = Mutex((nil, nil))
    }
  }

  var reports: [GatewayReport] { state.withLock { $0.supervisor }?.reports ?? [] }
  var notReadyReason: String? { state.withLock { $0.notReady } }

  func run() async throws {
    var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
    let tls: MeshTLS?
    switch identity {
    case .absent:
      tls = nil
    case .fixed(let fixed):
      tls = fixed
    case .certified(let certifier):
      do {
        let workload = try await cancelWhenGracefulShutdown {
          try await certifier.certify(configuration: Self.tlsConfiguration, logger: self.logger) { waiting in
            self.state.withLock { $0.notReady = "\(waiting)" }
          }
        }
        services += workload.services.map { .init(service: $0) }
        tls = workload.tls
      } catch is CancellationError {
        logger.notice("stopped before the probe identity was certified")
        return
      }
    }
    let supervisor = LinkSupervisor(
      localClient: localClient, tls: tls, metrics: metrics, configuration: configuration, logger: logger)
    state.withLock {
      $0.supervisor = supervisor
      $0.notReady = nil
    }
    services.append(.init(service: supervisor, successTerminationBehavior: .gracefullyShutdownGroup))
    try await ServiceGroup(configuration: .init(services: services, logger: logger)).run()
  }
}
