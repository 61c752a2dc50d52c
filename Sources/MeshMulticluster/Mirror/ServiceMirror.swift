import Foundation
public import Logging
public import MeshKube
public import MeshTLS
import NIOCore
public import ServiceLifecycle
import Synchronization

/// The service mirror of one Link: follows the target cluster's Services and EndpointSlices (or
/// Endpoints) and keeps, in the source cluster, a mirror `<name>-<targetClusterName>` of every exported one,
/// whose EndpointSlices (or Endpoints, see `Configuration.endpointsAPI`) point at the target's gateway.
///
/// - Reads the credentials Secret (key `kubeconfig`) in the Link's namespace; a missing Secret or a broken
///   kubeconfig is a `CredentialsReady=False` condition, retried every `retryInterval`.
/// - Writes only differences; the remote resourceVersion is recorded on each mirror.
/// - Repairs on start and every `repairInterval`: creates missing mirrors, updates stale ones, deletes
///   orphans (this Link's mirrors whose remote is gone or no longer exported).
/// - A target that does not answer leaves the mirrors as they are (`TargetReachable=False`).
/// - Stopping deletes nothing; `stop(deletingMirrors: true)` (the Link was deleted) deletes exactly the
///   mirrors of this Link's target cluster.
///
/// Gateway addresses may be IPs or DNS names; names are resolved every `gatewayResolveInterval` (and at once
/// when a probe fails), every IP they give is used, and the target's gateway Service is followed (see
/// `resolveGateway`).
///
/// Status conditions on the Link: `LinkValid`, `CredentialsReady`, `TargetReachable`, `GatewayResolved`,
/// `GatewayAlive`, `MirrorsReady`; `status.mirroredServices` lists the mirrors (`namespace/name`).
public final class ServiceMirror: ServiceLifecycle.Service, Sendable {
  public struct Configuration: Sendable {
    /// How often every mirror is checked and repaired. Default 60 s.
    public var repairInterval: Duration = .seconds(60)
    /// How often bad credentials and failed writes are retried. Default 5 s.
    public var retryInterval: Duration = .seconds(5)
    /// How often the target's API server and the credentials Secret are checked. Default 10 s.
    public var targetCheckInterval: Duration = .seconds(10)
    /// Connection timeout towards the target's API server. Default 5 s.
    public var remoteConnectTimeout: Duration = .seconds(5)
    /// Longest retry delay of the target informers (how soon a returning target is noticed). Default 5 s.
    public var remoteMaxBackoff: Duration = .seconds(5)
    /// Shortest gap between two status writes. Default 200 ms.
    public var statusInterval: Duration = .milliseconds(200)
    /// How mirrors' endpoints are written, and how the target's are read. Default `.endpointSlices`:
    /// mirrors get EndpointSlices (`MirrorPlanner.endpointSlices`, which says why) and the target's
    /// services are followed through their slices; on either side a cluster that does not serve
    /// `discovery.k8s.io/v1` gets `.endpoints` instead. `.endpoints`: v1 Endpoints on both sides. A mirror
    /// left in the other form (after a change of this setting) is converted on the next reconciliation.
    public var endpointsAPI: EndpointsAPI = .endpointSlices
    /// How often the gateway's names are resolved again (and its gateway Service re-read). A probe failure,
    /// a gateway Service change or a Link change resolves at once. Default 30 s.
    public var gatewayResolveInterval: Duration = .seconds(30)
    /// Longest wait for one name's answer. Default 5 s.
    public var gatewayResolveTimeout: Duration = .seconds(5)
    /// Resolves gateway names. Default: the system resolver (`getaddrinfo`).
    public var resolver: any GatewayResolver = SystemGatewayResolver()
    /// How often the mirror renews its heartbeat Lease (`service-mirror-<link>` in the Link's namespace),
    /// which tells `meshctl multicluster check` it runs, and carries the gateway report. Default 10 s.
    public var heartbeatInterval: Duration = .seconds(10)

    public init() {}

    public static func defaults(configure: (inout Self) -> Void = { _ in }) -> Self {
      var c = Self()
      configure(&c)
      return c
    }
  }

  /// Condition types, in the order the status lists them.
  public enum ConditionType {
    public static let linkValid = "LinkValid"
    public static let credentialsReady = "CredentialsReady"
    public static let targetReachable = "TargetReachable"
    public static let gatewayResolved = "GatewayResolved"
    public static let gatewayAlive = "GatewayAlive"
    public static let mirrorsReady = "MirrorsReady"
    public static let federatedReady = "FederatedReady"
    static let order = [
      linkValid, credentialsReady, targetReachable, gatewayResolved, gatewayAlive, mirrorsReady, federatedReady,
    ]
  }

  struct Shared {
    var link: Link
    var conditions: [String: Condition] = [:]
    var mirrored: [String] = []
    /// Mirror Services in place right now (updated after every reconciliation, the list after every batch).
    var mirroredCount = 0
    var probe: GatewayProbe.Snapshot?
    var probed = false
    var targetReachable: Bool?
    var deleteOnStop = false
    /// The gateway's IPs in effect; nil until the session's first resolution.
    var gatewayIPs: [String]?
  }

  /// `namespace/name` of the Link.
  public let linkKey: String
  /// The target cluster's name (fixed for the life of this mirror).
  public let clusterName: String
  let localClient: KubeClient
  let tls: MeshTLS?
  let metrics: MirrorMetrics
  let configuration: Configuration
  let logger: Logger
  let shared: Mutex<Shared>
  let queue = MirrorWorkQueue()
  let statusSignal = AsyncSignal()
  /// Asks for a heartbeat now (the gateway report changed).
  let heartbeatSignal = AsyncSignal()
  /// Asks the gateway resolution to run now.
  let resolveSignal = AsyncSignal()
  let stopSignal = AsyncSignal()
  /// Closed when `run()` has returned (and, after `stop(deletingMirrors: true)`, the mirrors are gone).
  let finished = AsyncSignal()

  /// `tls` is the mirror's own identity material for probing gateways; nil disables the probe (the
  /// gateway then counts as alive and the condition says so).
  public init(
    link: Link, localClient: KubeClient, tls: MeshTLS?, metrics: MirrorMetrics,
    configuration: Configuration = .defaults(), logger: Logger = Logger(label: "swiftmesh.mirror")
  ) {
    self.linkKey = link.metadata.key
    self.clusterName = link.spec.targetClusterName
    self.localClient = localClient
    self.tls = tls
    self.metrics = metrics
    self.configuration = configuration
    var logger = logger
    logger[metadataKey: "link"] = "\(link.metadata.key)"
    logger[metadataKey: "target_cluster_name"] = "\(link.spec.targetClusterName)"
    self.logger = logger
    self.shared = Mutex(Shared(link: link))
  }

  /// The Link as last given.
  public var link: Link { shared.withLock { $0.link } }

  /// Hands the mirror a changed Link (same target cluster and credentials Secret); it re-plans every mirror.
  public func update(link: Link) {
    shared.withLock { $0.link = link }
    queue.linkChanged()
  }

  /// Stops the mirror. With `deletingMirrors`, its mirrors are deleted before `run()` returns.
  public func stop(deletingMirrors: Bool = false) {
    shared.withLock { $0.deleteOnStop = $0.deleteOnStop || deletingMirrors }
    stopSignal.close()
  }

  /// Waits until `run()` has returned.
  public func waitUntilFinished() async {
    while !finished.isClosed && !Task.isCancelled { await finished.wait() }
  }

  /// The Link's current status conditions, by type.
  public var conditions: [String: Condition] { shared.withLock { $0.conditions } }

  /// The mirrors in place (`namespace/name`), sorted.
  public var mirroredServices: [String] { shared.withLock { $0.mirrored } }

  /// What `meshctl multicluster gateways` shows for this Link.
  public var report: GatewayReport {
    shared.withLock { s in
      GatewayReport(
        link: linkKey, cluster: clusterName, alive: s.probed ? (s.probe?.alive) : nil, probed: s.probed,
        numServices: s.mirroredCount, latencyP50: s.probe?.latencyP50, latencyP95: s.probe?.latencyP95,
        latencyP99: s.probe?.latencyP99, targetReachable: s.targetReachable,
        lastError: s.probe?.lastError.map { "\($0)" }, addresses: s.gatewayIPs,
        aliveAddresses: s.probed ? s.probe?.aliveAddresses : nil)
    }
  }

  public func run() async throws {
    defer { finished.close() }
    // Graceful shutdown stops the mirror and deletes nothing.
    await withGracefulShutdownHandler {
      await withDiscardingTaskGroup { group in
        group.addTask { await self.statusWriter() }
        group.addTask { await self.mainLoop() }
        group.addTask { await self.heartbeat() }
        await self.stopSignal.wait()
        group.cancelAll()
      }
    } onGracefulShutdown: {
      self.stopSignal.close()
    }
    let deleting = shared.withLock { $0.deleteOnStop }
    if deleting {
      await Self.deleteMirrors(cluster: clusterName, client: localClient, metrics: metrics, logger: logger)
      await deleteHeartbeat()
    }
    logger.info("service mirror stopped", metadata: ["deleted_mirrors": "\(deleting)"])
  }

  /// Until cancelled: validate the Link, connect to the target, run a session; retry what failed.
  func mainLoop() async {
    while !Task.isCancelled {
      let link = self.link
      let settings: LinkSettings
      do {
        settings = try LinkSettings(link: link)
      } catch {
        setCondition(ConditionType.linkValid, false, reason: error.code.reason, message: error.message)
        logger.error("invalid Link; nothing is mirrored until it is fixed", metadata: ["error": "\(error)"])
        while !Task.isCancelled {
          let batch = await queue.next()
          if batch.linkChanged { break }
        }
        continue
      }
      setCondition(ConditionType.linkValid, true, reason: "Valid", message: "the Link's spec is valid")
      let remote: (client: KubeClient, secretVersion: String?)
      do {
        remote = try await connect(settings)
      } catch {
        setCondition(ConditionType.credentialsReady, false, reason: error.code.reason, message: error.message)
        logger.warning("cannot use the target cluster's credentials; retrying", metadata: ["error": "\(error)"])
        _ = await queue.signal.wait(timeout: configuration.retryInterval)
        continue
      }
      setCondition(
        ConditionType.credentialsReady, true, reason: "Loaded",
        message: "kubeconfig of '\(settings.targetClusterName)' read from Secret \(settings.linkNamespace)/\(settings.credentialsSecret)")
      await session(settings: settings, remote: remote.client, secretVersion: remote.secretVersion)
      try? await remote.client.shutdown()
    }
  }

  /// Reads the credentials Secret and builds a client for the target cluster.
  func connect(_ settings: LinkSettings) async throws(MulticlusterError) -> (client: KubeClient, secretVersion: String?) {
    try await Self.connect(
      settings, localClient: localClient, connectTimeout: configuration.remoteConnectTimeout, logger: logger)
  }

  /// Reads a Link's credentials Secret through `localClient` and builds a client for its target cluster.
  public static func connect(
    _ settings: LinkSettings, localClient: KubeClient, connectTimeout: Duration, logger: Logger
  ) async throws(MulticlusterError) -> (client: KubeClient, secretVersion: String?) {
    let place = "Secret \(settings.linkNamespace)/\(settings.credentialsSecret)"
    let secret: Secret
    do {
      secret = try await localClient.get(Secret.self, name: settings.credentialsSecret, namespace: settings.linkNamespace)
    } catch let error as KubeError where error.isNotFound {
      throw .secretNotFound("\(place) (the Link's clusterCredentialsSecret) does not exist")
    } catch {
      throw .invalidCredentials("cannot read \(place): \(error)", cause: error)
    }
    let text: String
    if let data = secret.data?[MirrorMetadata.kubeconfigKey] {
      text = String(decoding: data, as: UTF8.self)
    } else if let string = secret.stringData?[MirrorMetadata.kubeconfigKey] {
      text = string
    } else {
      let keys = Array((secret.data ?? [:]).keys).sorted().joined(separator: ", ")
      throw .invalidCredentials("\(place) has no '\(MirrorMetadata.kubeconfigKey)' key (keys: \(keys.isEmpty ? "none" : keys))")
    }
    let config: KubeClientConfig
    do {
      config = try Kubeconfig.parse(yaml: text, path: place).resolve()
    } catch {
      throw .invalidCredentials("\(place): key '\(MirrorMetadata.kubeconfigKey)' is not a usable kubeconfig: \(error)", cause: error)
    }
    do {
      let seconds = connectTimeout.components.seconds
      let client = try KubeClient(
        config: config, connectTimeout: .seconds(max(1, seconds)), logger: logger)
      return (client, secret.metadata.resourceVersion)
    } catch {
      throw .invalidCredentials("\(place): cannot build a client for \(config.server): \(error)", cause: error)
    }
  }

  /// Deletes every mirror (Service, Endpoints, EndpointSlices) of `cluster` in the source cluster; returns how many
  /// Services went. Retries a failed attempt twice.
  @discardableResult
  public static func deleteMirrors(cluster: String, client: KubeClient, metrics: MirrorMetrics? = nil, logger: Logger) async -> Int {
    let options = ListOptions(labelSelector: MirrorMetadata.mirrorSelector(cluster: cluster))
    for attempt in 1...3 {
      do {
        let services = try await client.listAll(KubeService.self, options: options)
        for service in services.items {
          do { try await client.delete(KubeService.self, name: service.name, namespace: service.namespace) } catch let error as KubeError where error.isNotFound {}
          metrics?.kubeWrite(cluster, verb: "delete", success: true)
        }
        let endpoints = try await client.listAll(Endpoints.self, options: options)
        for object in endpoints.items {
          do { try await client.delete(Endpoints.self, name: object.name, namespace: object.namespace) } catch let error as KubeError where error.isNotFound {}
        }
        if try await client.serves(EndpointSlice.self) {
          let slices = try await client.listAll(
            EndpointSlice.self, options: ListOptions(labelSelector: MirrorMetadata.mirrorSliceSelector(cluster: cluster)))
          let federated = try await client.listAll(
            EndpointSlice.self, options: ListOptions(labelSelector: "\(MirrorMetadata.federatedClusterLabel)=\(cluster)"))
          for object in slices.items + federated.items {
            do { try await client.delete(EndpointSlice.self, name: object.name, namespace: object.namespace) } catch let error as KubeError where error.isNotFound {}
          }
        }
        logger.notice("deleted the mirrors of a removed Link", metadata: ["target_cluster_name": "\(cluster)", "services": "\(services.items.count)"])
        metrics?.forget(cluster)
        return services.items.count
      } catch {
        logger.warning("deleting mirrors failed; retrying", metadata: ["target_cluster_name": "\(cluster)", "attempt": "\(attempt)", "error": "\(error)"])
        try? await Task.sleep(for: .milliseconds(200 * attempt))
      }
    }
    return 0
  }
}

/// One Link's row in `meshctl multicluster gateways` (and the admin `/gateways` JSON).
public struct GatewayReport: Codable, Sendable, Hashable {
  /// `namespace/name` of the Link.
  public var link: String
  public var cluster: String
  /// Whether the gateway is alive; nil when not (yet) probed.
  public var alive: Bool?
  /// Whether the gateway is probed at all (needs a gateway identity and the mirror's identity material).
  public var probed: Bool
  public var numServices: Int
  /// Probe latency percentiles in milliseconds.
  public var latencyP50: Double?
  public var latencyP95: Double?
  public var latencyP99: Double?
  public var targetReachable: Bool?
  public var lastError: String?
  /// The gateway's IP addresses in use (names resolved), and how many answered the last probe round.
  public var addresses: [String]?
  public var aliveAddresses: Int?

  public init(
    link: String, cluster: String, alive: Bool?, probed: Bool, numServices: Int, latencyP50: Double?,
    latencyP95: Double?, latencyP99: Double?, targetReachable: Bool?, lastError: String?,
    addresses: [String]? = nil, aliveAddresses: Int? = nil
  ) {
    self.addresses = addresses
    self.aliveAddresses = aliveAddresses
    self.link = link
    self.cluster = cluster
    self.alive = alive
    self.probed = probed
    self.numServices = numServices
    self.latencyP50 = latencyP50
    self.latencyP95 = latencyP95
    self.latencyP99 = latencyP99
    self.targetReachable = targetReachable
    self.lastError = lastError
  }
}
