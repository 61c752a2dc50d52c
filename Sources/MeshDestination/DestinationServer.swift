import GRPCCore
import MeshAPI
public import GRPCNIOTransportHTTP2
public import Logging
public import MeshCore
public import MeshKube
public import ServiceLifecycle
import Synchronization
public import MeshDiscovery

/// The destination service as a long-running `Service`: gRPC `Get` and `GetProfile` over HTTP/2, fed
/// by informers over the cluster's Services, EndpointSlices (or Endpoints), Pods, ServiceProfiles and
/// TrafficSplits.
///
/// `run()` first chooses the endpoints API (`Configuration.endpointsAPI`; EndpointSlices fall back to
/// Endpoints when the API server does not serve `discovery.k8s.io/v1`), runs the informers, waits until
/// each has listed once, then serves. Subscribers of one
/// destination share one publisher; informer events recompute only the publishers of the service they
/// concern. On graceful shutdown every open stream ends (status OK), so clients reconnect elsewhere.
public final class DestinationServer: ServiceLifecycle.Service, Sendable {
  public struct Configuration: Sendable {
    /// Where to listen. Default 0.0.0.0:8086.
    public var host: String = "0.0.0.0"
    public var port: Int = 8086
    /// The cluster's DNS domain. Default `cluster.local`.
    public var clusterDomain: String = "cluster.local"
    /// The trust domain of identities. Default `cluster.local`.
    public var trustDomain: TrustDomain = .clusterLocal
    /// The control-plane namespace (part of identity names). Default `swiftmesh`.
    public var controlPlaneNamespace: String = IdentityName.defaultControlPlaneNamespace
    /// Weight of every endpoint. Default 10000.
    public var defaultWeight: UInt32 = Endpoint.defaultWeight
    /// Plaintext (default) or TLS, e.g. `.tls(certificateReloader: RotatingCredentials)` from MeshIdentity.
    public var transportSecurity: HTTP2ServerTransport.Posix.TransportSecurity = .plaintext
    /// Where endpoints come from. Default `.endpointSlices` (every slice of a service, joined by the
    /// `kubernetes.io/service-name` label), falling back to `.endpoints` when the API server does not
    /// serve `discovery.k8s.io/v1` EndpointSlices; `.endpoints` reads `v1` Endpoints only.
    public var endpointsAPI: EndpointsAPI = .endpointSlices
    /// The inbound port of meshed pods' proxies, where other proxies send opaque connections. Default 4143.
    public var proxyInboundPort: Int = 4143

    public init() {}

    public static func defaults(configure: (inout Self) -> Void = { _ in }) -> Self {
      var config = Self()
      configure(&config)
      return config
    }
  }

  /// Counters and gauges, for tests and diagnostics.
  public struct Statistics: Sendable, Hashable {
    /// Endpoint publishers alive (one per destination with subscribers).
    public var endpointPublishers: Int
    /// Endpoint publishers ever created.
    public var endpointPublishersCreated: Int
    public var endpointSubscribers: Int
    public var profilePublishers: Int
    public var profileSubscribers: Int
    /// Problems reported in profiles and splits so far.
    public var problemsReported: Int
  }

  public let configuration: Configuration
  public let informers: DiscoveryInformers
  let endpointRegistry: PublisherRegistry<EndpointSet>
  let profileRegistry: PublisherRegistry<Profile>
  let problemLog: ProblemLog
  let logger: Logger
  private let server: GRPCServerService

  /// A server over existing informers (which `run()` runs).
  public init(configuration: Configuration, informers: DiscoveryInformers, logger: Logger) {
    self.configuration = configuration
    self.informers = informers
    self.logger = logger
    let problemLog = ProblemLog(logger: logger)
    self.problemLog = problemLog
    let endpointTranslator = EndpointTranslator(
      trustDomain: configuration.trustDomain, controlPlaneNamespace: configuration.controlPlaneNamespace,
      defaultWeight: configuration.defaultWeight, proxyInboundPort: configuration.proxyInboundPort)
    let profileTranslator = ProfileTranslator(clusterDomain: configuration.clusterDomain)
    self.endpointRegistry = PublisherRegistry { target, zone in
      { Self.endpointSet(target, zone: zone, informers: informers, translator: endpointTranslator, logger: logger) }
    }
    self.profileRegistry = PublisherRegistry { target, _ in
      { Self.profile(target, informers: informers, translator: profileTranslator, problems: problemLog) }
    }
    let service = DestinationService(
      clusterDomain: configuration.clusterDomain, endpoints: endpointRegistry, profiles: profileRegistry, logger: logger)
    self.server = GRPCServerService(
      name: "destination service", host: configuration.host, port: configuration.port,
      transportSecurity: configuration.transportSecurity, services: [service],
      metadata: ["cluster_domain": "\(configuration.clusterDomain)"], logger: logger)
  }

  /// A server with its own informers over `client`.
  public convenience init(
    configuration: Configuration, client: KubeClient, informerConfiguration: Informer<Pod>.Configuration = .init(),
    logger: Logger
  ) {
    self.init(
      configuration: configuration,
      informers: DiscoveryInformers(client: client, configuration: informerConfiguration, logger: logger),
      logger: logger)
  }

  /// The bound port, once listening (useful with port 0).
  public var listeningPort: Int {
    get async throws { try await server.listeningPort }
  }

  public var statistics: Statistics {
    Statistics(
      endpointPublishers: endpointRegistry.publisherCount,
      endpointPublishersCreated: endpointRegistry.publishersCreated,
      endpointSubscribers: endpointRegistry.subscriberCount,
      profilePublishers: profileRegistry.publisherCount,
      profileSubscribers: profileRegistry.subscriberCount,
      problemsReported: problemLog.reportedCount)
  }

  /// The current problems in ServiceProfiles and TrafficSplits (routes dropped, settings ignored).
  public var problems: [ProfileProblem] { problemLog.all }

  /// The endpoints API in use: nil until `run()` has chosen it.
  public var endpointsAPI: EndpointsAPI? { informers.endpointsAPI }

  public func run() async throws {
    let api: EndpointsAPI
    do {
      api = try await cancelWhenGracefulShutdown { try await self.chooseEndpointsAPI() }
    } catch is CancellationError {
      return
    }
    informers.selection.choose(api)
    // Subscribe before the informers run, so no change is missed.
    let serviceEvents = informers.services.events()
    let endpointsEvents = api == .endpoints ? informers.endpoints.events() : nil
    let sliceEvents = api == .endpointSlices ? informers.endpointSlices.events() : nil
    let podEvents = informers.pods.events()
    let profileEvents = informers.serviceProfiles.events()
    let splitEvents = informers.trafficSplits.events()
    try await withThrowingDiscardingTaskGroup { group in
      group.addTask { try await self.informers.services.run() }
      if let endpointsEvents {
        group.addTask { try await self.informers.endpoints.run() }
        group.addTask { for await event in endpointsEvents { self.handle(event) } }
      }
      if let sliceEvents {
        group.addTask { try await self.informers.endpointSlices.run() }
        group.addTask { for await event in sliceEvents { self.handle(event) } }
      }
      group.addTask { try await self.informers.pods.run() }
      group.addTask { try await self.informers.serviceProfiles.run() }
      group.addTask { try await self.informers.trafficSplits.run() }
      group.addTask { for await event in serviceEvents { self.handle(event) } }
      group.addTask { for await event in podEvents { self.handle(event) } }
      group.addTask { for await event in profileEvents { self.handle(event) } }
      group.addTask { for await event in splitEvents { self.handle(event) } }

      do {
        try await cancelWhenGracefulShutdown { try await self.waitForSync() }
      } catch is CancellationError {
        // Shut down before the informers listed (say, the API server was unreachable): a normal stop.
        self.logger.notice("destination service stopped before its first sync with the API server")
        self.endpointRegistry.close()
        self.profileRegistry.close()
        group.cancelAll()
        return
      }
      try await self.server.run {
        self.endpointRegistry.close()
        self.profileRegistry.close()
      }
      self.endpointRegistry.close()
      self.profileRegistry.close()
      group.cancelAll()
    }
  }

  /// The configured endpoints API, or Endpoints when EndpointSlices are asked for and the API server
  /// does not serve them. An API server that does not answer is asked again with backoff (up to 5 s)
  /// until it does: what it serves cannot be told before.
  private func chooseEndpointsAPI() async throws -> EndpointsAPI {
    let preferred = configuration.endpointsAPI
    guard preferred == .endpointSlices else {
      logger.info("reading endpoints from v1 Endpoints (--endpoints-api endpoints)")
      return preferred
    }
    var delay = Duration.milliseconds(100)
    while true {
      do {
        let api = try await informers.endpointSlices.client.endpointsAPI(preferring: preferred)
        if api == .endpoints {
          logger.warning(
            "the API server does not serve discovery.k8s.io/v1 EndpointSlices; falling back to v1 Endpoints")
        } else {
          logger.info("reading endpoints from discovery.k8s.io/v1 EndpointSlices")
        }
        return api
      } catch is CancellationError {
        throw CancellationError()
      } catch {
        logger.warning(
          "cannot ask the API server whether it serves EndpointSlices; retrying",
          metadata: ["error": "\(error)", "retry_in": "\(delay)"])
        try await Task.sleep(for: delay)
        delay = min(delay * 2, .seconds(5))
      }
    }
  }

  /// Waits until every informer has listed once (polled every 10 ms).
  private func waitForSync() async throws {
    while !informers.hasSynced {
      try await Task.sleep(for: .milliseconds(10))
    }
    // Anything subscribed meanwhile (nothing, as the server is not serving yet) would be stale.
    endpointRegistry.refreshAll()
    profileRegistry.refreshAll()
  }
}
