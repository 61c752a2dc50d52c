public import Logging
public import ServiceLifecycle
import Synchronization

/// List-then-watch cache of one resource type, kept in a `Store`, with changes as events.
///
/// `run()` lists, then watches from the list's resourceVersion with bookmarks. A dropped stream
/// resumes from the last seen resourceVersion; 410 Gone / `Expired` re-lists and emits only the
/// difference (deletes for objects that vanished); errors back off exponentially with jitter.
/// Subscribe with `events()` before `run()` to see every change.
public final class Informer<R: KubeResource>: ServiceLifecycle.Service, Sendable {
  public struct Configuration: Sendable {
    /// Namespace to watch; nil watches all namespaces (or a cluster-scoped type).
    public var namespace: String?
    public var labelSelector: String?
    public var fieldSelector: String?
    /// Page size of the (re-)list. Default 500.
    public var pageSize: Int? = 500
    /// Ask the server to end each watch after this long (it is then resumed). Default 300 s.
    public var watchTimeoutSeconds: Int? = 300
    /// First retry delay after an error. Default 100 ms.
    public var initialBackoff: Duration = .milliseconds(100)
    /// Longest retry delay. Default 30 s.
    public var maxBackoff: Duration = .seconds(30)
    /// When set, every object is re-announced as `.updated(old: o, new: o)` this often. Default off.
    public var resyncInterval: Duration?

    public init(namespace: String? = nil, labelSelector: String? = nil, fieldSelector: String? = nil) {
      self.namespace = namespace
      self.labelSelector = labelSelector
      self.fieldSelector = fieldSelector
    }

    public static func defaults(configure: (inout Self) -> Void = { _ in }) -> Self {
      var c = Self()
      configure(&c)
      return c
    }
  }

  /// Counters, for tests and diagnostics.
  public struct Statistics: Sendable, Hashable {
    public var lists = 0
    public var watches = 0
    public var errors = 0
    public var eventsDelivered = 0
  }

  public let store = Store<R>()
  /// The client the informer lists and watches with.
  public let client: KubeClient
  let configuration: Configuration
  let logger: Logger
  let subscribers = Mutex<[Int: AsyncStream<InformerEvent<R>>.Continuation]>([:])
  let nextSubscriber = Atomic<Int>(0)
  let stats = Mutex(Statistics())

  public init(client: KubeClient, configuration: Configuration = .init(), logger: Logger = Logger(label: "swiftmesh.kube.informer")) {
    self.client = client
    self.configuration = configuration
    var logger = logger
    logger[metadataKey: "resource"] = "\(R.plural)"
    self.logger = logger
  }

  /// A new stream of changes from now on (unbounded buffer). It finishes when `run()` returns.
  public func events() -> AsyncStream<InformerEvent<R>> {
    let (stream, continuation) = AsyncStream<InformerEvent<R>>.makeStream()
    let id = nextSubscriber.add(1, ordering: .relaxed).newValue
    subscribers.withLock { $0[id] = continuation }
    continuation.onTermination = { [weak self] _ in self?.subscribers.withLock { _ = $0.removeValue(forKey: id) } }
    return stream
  }

  public var statistics: Statistics { stats.withLock { $0 } }

  /// Runs until cancelled or graceful shutdown.
  public func run() async throws {
    defer {
      // Finish outside the lock: finishing runs onTermination, which takes the lock.
      let continuations = subscribers.withLock { s in
        defer { s.removeAll() }
        return Array(s.values)
      }
      for c in continuations { c.finish() }
    }
    do {
      try await cancelWhenGracefulShutdown {
        try await withThrowingDiscardingTaskGroup { group in
          if let interval = self.configuration.resyncInterval {
            group.addTask { try await self.resyncLoop(every: interval) }
          }
          try await self.listWatchLoop()
          group.cancelAll()
        }
      }
    } catch is CancellationError {
      return
    }
  }

  func emit(_ event: InformerEvent<R>) {
    stats.withLock { $0.eventsDelivered += 1 }
    let continuations = subscribers.withLock { Array($0.values) }
    for c in continuations { c.yield(event) }
  }

  private func resyncLoop(every interval: Duration) async throws {
    while true {
      try await Task.sleep(for: interval)
      for object in store.items { emit(.updated(old: object, new: object)) }
    }
  }
}
