public import Logging
public import MeshKube
public import MeshTLS
public import ServiceLifecycle
import Synchronization

/// Watches Links (all of a namespace, or one by name) and runs one `ServiceMirror` per Link, each in a child
/// task of its own: one Link's failure never reaches another. A deleted Link's mirror is stopped and its
/// mirrors deleted; a Link whose target cluster or credentials Secret changed gets a new mirror (the old
/// cluster's mirrors deleted when the cluster name changed); other spec changes are handed to the running
/// mirror. Graceful shutdown stops every mirror and deletes nothing.
public final class LinkSupervisor: ServiceLifecycle.Service, Sendable {
  public struct Configuration: Sendable {
    /// Namespace of the Links. Default `swiftmesh-multicluster`.
    public var namespace: String = MirrorMetadata.multiclusterNamespace
    /// Follow only the Link of this name. Default nil (every Link of the namespace).
    public var linkName: String?
    public var mirror: ServiceMirror.Configuration = .defaults()
    /// Write the local half of federated services (`FederatedLocalMirror`). Default true.
    public var federatedServices = true

    public init() {}

    public static func defaults(configure: (inout Self) -> Void = { _ in }) -> Self {
      var c = Self()
      configure(&c)
      return c
    }
  }

  let localClient: KubeClient
  let tls: MeshTLS?
  let metrics: MirrorMetrics
  let configuration: Configuration
  let logger: Logger
  struct Mirrors {
    var running: [String: ServiceMirror] = [:]
    /// Mirrors of deleted Links that are still deleting their mirrors.
    var retiring: [String: ServiceMirror] = [:]
  }
  let state = Mutex(Mirrors())

  public init(
    localClient: KubeClient, tls: MeshTLS?, metrics: MirrorMetrics, configuration: Configuration = .defaults(),
    logger: Logger = Logger(label: "swiftmesh.mirror")
  ) {
    self.localClient = localClient
    self.tls = tls
    self.metrics = metrics
    self.configuration = configuration
    self.logger = logger
  }

  /// The running mirrors, by Link (`namespace/name`).
  public var mirrors: [String: ServiceMirror] { state.withLock { $0.running } }

  /// One row per Link, sorted by cluster name.
  public var reports: [GatewayReport] {
    mirrors.values.map(\.report).sorted { ($0.cluster, $0.link) < ($1.cluster, $1.link) }
  }

  public func run() async throws {
    let informer = Informer<Link>(
      client: localClient,
      configuration: .defaults {
        $0.namespace = self.configuration.namespace
        $0.fieldSelector = self.configuration.linkName.map { "metadata.name=\($0)" }
      },
      logger: logger)
    let events = informer.events()
    logger.notice(
      "watching Links",
      metadata: ["namespace": "\(configuration.namespace)", "link": "\(configuration.linkName ?? "*")"])
    await withDiscardingTaskGroup { group in
      group.addTask { try? await informer.run() }
      if configuration.federatedServices {
        let federated = FederatedLocalMirror(client: localClient, logger: logger)
        group.addTask { try? await federated.run() }
      }
      // Ends when the informer stops (cancellation or graceful shutdown).
      for await event in events {
        switch event {
        case .added(let link):
          start(link, in: &group)
        case .updated(let old, let new):
          let follow = MirrorMetadata.followGatewayServiceAnnotation
          guard old.spec != new.spec || old.metadata.annotations?[follow] != new.metadata.annotations?[follow]
          else { continue }
          if old.spec.targetClusterName != new.spec.targetClusterName
            || old.spec.clusterCredentialsSecret != new.spec.clusterCredentialsSecret
          {
            let clusterChanged = old.spec.targetClusterName != new.spec.targetClusterName
            logger.notice(
              "Link target changed; replacing its mirror",
              metadata: ["link": "\(new.metadata.key)", "deleting_old_mirrors": "\(clusterChanged)"])
            start(new, in: &group, deletingPrevious: clusterChanged)
          } else if let mirror = state.withLock({ $0.running[new.metadata.key] }) {
            mirror.update(link: new)
          } else {
            start(new, in: &group)
          }
        case .deleted(let link):
          let mirror = state.withLock { s -> ServiceMirror? in
            let mirror = s.running.removeValue(forKey: link.metadata.key)
            if let mirror { s.retiring[link.metadata.key] = mirror }
            return mirror
          }
          logger.notice("Link deleted; deleting its mirrors", metadata: ["link": "\(link.metadata.key)"])
          mirror?.stop(deletingMirrors: true)
        }
      }
      group.cancelAll()
    }
  }

  /// Starts a mirror for `link`, after the one it replaces (if any) has stopped.
  private func start(_ link: Link, in group: inout DiscardingTaskGroup, deletingPrevious: Bool = false) {
    let mirror = ServiceMirror(
      link: link, localClient: localClient, tls: tls, metrics: metrics, configuration: configuration.mirror,
      logger: logger)
    let key = link.metadata.key
    let previous = state.withLock { s -> ServiceMirror? in
      defer { s.running[key] = mirror }
      return s.running[key] ?? s.retiring.removeValue(forKey: key)
    }
    previous?.stop(deletingMirrors: deletingPrevious)
    logger.notice(
      "starting the service mirror",
      metadata: ["link": "\(link.metadata.key)", "target_cluster_name": "\(link.spec.targetClusterName)"])
    group.addTask {
      if let previous { await previous.waitUntilFinished() }
      do {
        try await mirror.run()
      } catch is CancellationError {
        // Stopped by us (the Link went away, or shutdown): not a failure.
      } catch {
        self.logger.error("service mirror failed", metadata: ["link": "\(key)", "error": "\(error)"])
      }
      self.state.withLock { s in
        if s.retiring[key] === mirror { s.retiring[key] = nil }
      }
    }
  }
}
