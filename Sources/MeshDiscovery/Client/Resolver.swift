public import GRPCCore
public import GRPCNIOTransportHTTP2
public import Logging
import MeshAPI
public import MeshCore
public import ServiceLifecycle
import Synchronization

/// The client of the destination service: endpoint sets and profiles of authorities as async
/// sequences of complete snapshots, for the balancer and the router.
///
/// `run()` (a `Service`) holds the gRPC connection and every watch. Each authority has at most one
/// `Get` and one `GetProfile` stream however many consumers it has; consumers get the last known
/// snapshot at once, then each change. When a stream breaks, the watch reconnects with exponential
/// backoff and jitter and keeps the last known snapshot meanwhile (no empty set is emitted because the
/// connection broke); after reconnecting, the server's first message carries the whole set, so the
/// next snapshot is complete and emitted only when it differs. A path the server rejects as invalid
/// (INVALID_ARGUMENT) ends the sequence with that error; other errors are retried.
public final class Resolver: ServiceLifecycle.Service, Sendable {
  public struct Configuration: Sendable {
    /// The destination service. Default 127.0.0.1:8086.
    public var host: String = "127.0.0.1"
    public var port: Int = 8086
    /// Plaintext (default) or TLS.
    public var transportSecurity: HTTP2ClientTransport.Posix.TransportSecurity = .plaintext
    /// First reconnect delay. Default 100 ms.
    public var initialBackoff: Duration = .milliseconds(100)
    /// Longest reconnect delay. Default 10 s.
    public var maxBackoff: Duration = .seconds(10)
    /// Sent with every request (`context_token`). Default empty.
    public var contextToken: String = ""

    public init() {}

    public static func defaults(configure: (inout Self) -> Void = { _ in }) -> Self {
      var config = Self()
      configure(&config)
      return config
    }
  }

  /// Counters, for tests and diagnostics.
  public struct Statistics: Sendable, Hashable {
    /// Streams opened (first attempts and reconnects).
    public var streamsOpened = 0
    /// Streams that ended or failed and were retried.
    public var streamsBroken = 0
    /// Messages received.
    public var messagesReceived = 0
  }

  enum WatchKey: Hashable, Sendable {
    case endpoints(Authority)
    case profile(Authority)
  }

  enum Request: Sendable {
    case endpoints(Authority, ResolverWatch<EndpointSet>)
    case profile(Authority, ResolverWatch<Profile>)
  }

  private struct State {
    var endpointWatches: [Authority: ResolverWatch<EndpointSet>] = [:]
    var profileWatches: [Authority: ResolverWatch<Profile>] = [:]
  }

  public let configuration: Configuration
  let client: GRPCClient<HTTP2ClientTransport.Posix>
  let destination: Swiftmesh_Destination_Destination.Client<HTTP2ClientTransport.Posix>
  let logger: Logger
  private let state = Mutex(State())
  let stats = Mutex(Statistics())
  private let requests: AsyncStream<Request>
  private let requestContinuation: AsyncStream<Request>.Continuation

  public init(configuration: Configuration, logger: Logger) throws {
    self.configuration = configuration
    self.logger = logger
    var transportConfig = HTTP2ClientTransport.Posix.Config.defaults
    transportConfig.backoff = .init(
      initial: configuration.initialBackoff, max: configuration.maxBackoff, multiplier: 2, jitter: 0.2)
    let transport = try HTTP2ClientTransport.Posix(
      target: Self.target(host: configuration.host, port: configuration.port),
      transportSecurity: configuration.transportSecurity,
      config: transportConfig)
    self.client = GRPCClient(transport: transport)
    self.destination = Swiftmesh_Destination_Destination.Client(wrapping: client)
    (requests, requestContinuation) = AsyncStream<Request>.makeStream()
  }

  public var statistics: Statistics { stats.withLock { $0 } }

  /// The gRPC target for `host`: an IPv4 or IPv6 literal as such, anything else a DNS name (as in a cluster,
  /// `swiftmesh-destination.swiftmesh.svc.cluster.local`).
  public static func target(host: String, port: Int) -> any ResolvableTarget {
    let bare = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
    let parts = bare.split(separator: ".", omittingEmptySubsequences: false)
    if parts.count == 4, parts.allSatisfy({ UInt8($0) != nil }) { return .ipv4(address: bare, port: port) }
    if bare.contains(":") { return .ipv6(address: bare, port: port) }
    return .dns(host: bare, port: port)
  }

  /// Complete endpoint snapshots of `authority`: the last known at once, then each change. Ends when
  /// the resolver stops, or with a `DiscoveryError` when the server rejects the authority.
  public func endpoints(for authority: Authority) -> AsyncThrowingStream<EndpointSet, any Error> {
    state.withLock { s in
      let watch: ResolverWatch<EndpointSet>
      if let existing = s.endpointWatches[authority] {
        watch = existing
      } else {
        watch = ResolverWatch()
        s.endpointWatches[authority] = watch
        requestContinuation.yield(.endpoints(authority, watch))
      }
      return watch.addConsumer { [weak self] id in self?.release(.endpoints(authority), id: id) }
    }
  }

  /// Complete profile snapshots of `authority`: the last known at once, then each change.
  public func profile(for authority: Authority) -> AsyncThrowingStream<Profile, any Error> {
    state.withLock { s in
      let watch: ResolverWatch<Profile>
      if let existing = s.profileWatches[authority] {
        watch = existing
      } else {
        watch = ResolverWatch()
        s.profileWatches[authority] = watch
        requestContinuation.yield(.profile(authority, watch))
      }
      return watch.addConsumer { [weak self] id in self?.release(.profile(authority), id: id) }
    }
  }

  /// How many watches (RPC streams kept open) there are.
  public var watchCount: Int { state.withLock { $0.endpointWatches.count + $0.profileWatches.count } }

  private func release(_ key: WatchKey, id: Int) {
    state.withLock { s in
      switch key {
      case .endpoints(let authority):
        if let watch = s.endpointWatches[authority], watch.removeConsumer(id) == 0 {
          s.endpointWatches[authority] = nil
          watch.stop()
        }
      case .profile(let authority):
        if let watch = s.profileWatches[authority], watch.removeConsumer(id) == 0 {
          s.profileWatches[authority] = nil
          watch.stop()
        }
      }
    }
  }

  public func run() async throws {
    defer {
      requestContinuation.finish()
      let (endpoints, profiles) = state.withLock { s in
        defer {
          s.endpointWatches.removeAll()
          s.profileWatches.removeAll()
        }
        return (Array(s.endpointWatches.values), Array(s.profileWatches.values))
      }
      for watch in endpoints { watch.finish() }
      for watch in profiles { watch.finish() }
    }
    do {
      try await cancelWhenGracefulShutdown {
        try await withThrowingDiscardingTaskGroup { group in
          group.addTask { try await self.client.runConnections() }
          for await request in self.requests {
            group.addTask {
              switch request {
              case .endpoints(let authority, let watch):
                await self.runWatch(watch) { try await self.streamEndpoints(authority, into: watch) }
              case .profile(let authority, let watch):
                await self.runWatch(watch) { try await self.streamProfile(authority, into: watch) }
              }
            }
          }
        }
      }
    } catch is CancellationError {
      return
    }
  }
}
