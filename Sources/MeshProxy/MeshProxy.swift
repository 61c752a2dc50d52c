public import Logging
public import MeshCore
public import MeshDiscovery
public import MeshTLS
import NIOCore
import NIOHTTP1
import NIOPosix
public import ServiceLifecycle
import Synchronization

/// The data-plane proxy: an outbound listener for the local application's requests, an inbound listener
/// for peers (mutual TLS, plaintext from unmeshed clients unless identity is required), and the admin
/// server. A ServiceLifecycle `Service`: graceful shutdown stops accepting, then waits for in-flight
/// requests up to the grace period.
///
/// Given a `Resolver` (`init(configuration:tls:resolver:logger:)`), the proxy runs it itself, for as long as
/// it runs: add only the proxy to your `ServiceGroup`. `listening` tells when the listeners are bound.
public final class MeshProxy: Service, Sendable {
  /// How the last graceful shutdown ended.
  public struct ShutdownReport: Sendable, Hashable {
    /// Every request in flight finished within the grace period.
    public var drained: Bool
    /// Requests still in flight when the grace period ran out (cut off).
    public var inFlightCut: Int
    /// Connections the proxy had to close itself at the end (rather than closing gracefully on their own).
    public var forcedConnections: Int
    public init(drained: Bool, inFlightCut: Int, forcedConnections: Int) {
      self.drained = drained
      self.inFlightCut = inFlightCut
      self.forcedConnections = forcedConnections
    }
  }

  /// The last graceful shutdown's outcome; nil until one happened.
  public var lastShutdown: ShutdownReport? { shutdownReport.withLock { $0 } }
  private let shutdownReport = Mutex<ShutdownReport?>(nil)

  /// The ports the listeners are bound to (useful with port 0).
  public struct BoundPorts: Sendable, Hashable {
    public var outbound: Int
    public var inbound: Int
    public var admin: Int
  }

  public let configuration: ProxyConfiguration
  public let metrics: ProxyMetrics
  public let readiness: Readiness
  /// The observers of this proxy's requests; serve it with a `TapServer` (`mesh-proxy --tap`).
  public let tap = TapHub()
  public let inFlight = InFlightRequests()
  private let tls: MeshTLS?
  /// An admin listener bound before the proxy (while the workload waited for its certificate), if any.
  private let adoptedAdmin: AdminListener?
  private let outboundRouter: OutboundRouter
  private let inboundRouter: InboundRouter
  private let gatewayRouter: GatewayRouter
  private let logger: Logger
  private let ports = OneShot<BoundPorts>()
  /// The resolver this proxy runs beside its listeners (see `init(configuration:tls:resolver:logger:)`).
  private let resolver: MeshDiscovery.Resolver?
  private let connections = Mutex<[ObjectIdentifier: any Channel]>([:])
  private let loopGuard = LoopGuard()

  public convenience init(
    configuration: ProxyConfiguration,
    tls: MeshTLS?,
    discovery: any EndpointDiscovery,
    metrics: ProxyMetrics = ProxyMetrics(),
    logger: Logger
  ) {
    self.init(
      configuration: configuration, tls: tls, discovery: discovery, metrics: metrics, readiness: Readiness(),
      admin: nil, resolver: nil, logger: logger)
  }

  /// A proxy that learns endpoints and profiles from the destination service through `resolver`, and runs
  /// the resolver itself while it runs (do not add the resolver to a `ServiceGroup` as well).
  public convenience init(
    configuration: ProxyConfiguration,
    tls: MeshTLS?,
    resolver: MeshDiscovery.Resolver,
    metrics: ProxyMetrics = ProxyMetrics(),
    logger: Logger
  ) {
    self.init(
      configuration: configuration, tls: tls, discovery: ResolverDiscovery(resolver: resolver, logger: logger),
      metrics: metrics, readiness: Readiness(), admin: nil, resolver: resolver, logger: logger)
  }

  /// A proxy with a resolver it runs itself (see `init(configuration:tls:resolver:metrics:logger:)`) that
  /// adopts an admin listener bound earlier (see `init(configuration:tls:discovery:admin:logger:)`).
  public convenience init(
    configuration: ProxyConfiguration,
    tls: MeshTLS?,
    resolver: MeshDiscovery.Resolver,
    admin: AdminListener,
    logger: Logger
  ) {
    self.init(
      configuration: configuration, tls: tls, discovery: ResolverDiscovery(resolver: resolver, logger: logger),
      metrics: admin.metrics, readiness: admin.readiness, admin: admin, resolver: resolver, logger: logger)
  }

  /// A proxy that adopts an admin listener bound earlier (see `AdminListener`): its metrics, readiness and
  /// port; `configuration.adminAddress` is not used.
  public convenience init(
    configuration: ProxyConfiguration,
    tls: MeshTLS?,
    discovery: any EndpointDiscovery,
    admin: AdminListener,
    logger: Logger
  ) {
    self.init(
      configuration: configuration, tls: tls, discovery: discovery, metrics: admin.metrics,
      readiness: admin.readiness, admin: admin, resolver: nil, logger: logger)
  }

  private init(
    configuration: ProxyConfiguration,
    tls: MeshTLS?,
    discovery: any EndpointDiscovery,
    metrics: ProxyMetrics,
    readiness: Readiness,
    admin: AdminListener?,
    resolver: MeshDiscovery.Resolver?,
    logger: Logger
  ) {
    self.configuration = configuration
    self.resolver = resolver
    self.tls = tls
    self.metrics = metrics
    self.readiness = readiness
    self.adoptedAdmin = admin
    self.logger = logger
    let pools = UpstreamPools(
      tls: tls, configuration: configuration, metrics: metrics, loopGuard: loopGuard, logger: logger)
    self.outboundRouter = OutboundRouter(
      discovery: discovery, pools: pools, configuration: configuration,
      direction: configuration.gatewayMode ? "gateway" : "outbound")
    self.inboundRouter = InboundRouter(
      application: configuration.applicationAddress, pools: pools, configuration: configuration)
    self.gatewayRouter = GatewayRouter(
      local: outboundRouter, identity: tls?.localIdentity, clusterDomain: configuration.clusterDomain)
  }

  /// The listeners' ports, once `run()` has bound them (at once after that). Throws what stopped `run()`
  /// from binding them, or `CancellationError` when the waiting task is cancelled.
  public var listening: BoundPorts {
    get async throws { try await ports.value() }
  }

  /// Waits until the listeners are bound (up to `timeout`) and returns their ports (`listening` with a
  /// deadline).
  public func boundPorts(timeout: Duration = .seconds(10)) async throws -> BoundPorts {
    try await withThrowingTaskGroup(of: BoundPorts?.self) { group in
      group.addTask { try await self.listening }
      group.addTask {
        try await Task.sleep(for: timeout)
        return nil
      }
      defer { group.cancelAll() }
      guard let first = try await group.next(), let bound = first else {
        throw MeshError.unavailable("proxy listeners did not bind within \(timeout)")
      }
      return bound
    }
  }

  /// Tells the proxy about another listener of this process (the tap server, say): nothing is ever
  /// forwarded to it. The proxy's own listeners are known already.
  public func addLocalListener(_ address: Authority) {
    loopGuard.add(listener: address)
  }

  /// Destinations the outbound side follows.
  public var destinationCount: Int { outboundRouter.destinationCount }

  public func run() async throws {
    if configuration.gatewayMode && tls == nil {
      let error = MeshError.invalidArgument("gateway mode needs a mesh identity: callers are admitted by mutual TLS only")
      ports.fail(error)
      throw error
    }
    if let interval = configuration.memoryTrimInterval, interval <= .zero {
      // A zero interval would walk malloc's arenas in a loop that never sleeps.
      let error = MeshError.invalidArgument("memoryTrimInterval must be positive (nil turns trimming off), got \(interval)")
      ports.fail(error)
      throw error
    }
    // The admin port first (unless it is already up): it answers /live while the rest binds.
    let admin: AdminListener
    if let adoptedAdmin {
      admin = adoptedAdmin
    } else {
      do {
        admin = try await AdminListener.bind(configuration.adminAddress, metrics: metrics, readiness: readiness)
      } catch {
        ports.fail(error)
        throw error
      }
    }
    admin.serve(tls: tls)
    // The listeners' event loops: the process-wide group, or a group of the configured size, this proxy's own.
    let eventLoops: MultiThreadedEventLoopGroup
    if let count = configuration.eventLoops {
      eventLoops = MultiThreadedEventLoopGroup(numberOfThreads: max(count, 1))
    } else {
      eventLoops = .singleton
    }
    defer {
      if configuration.eventLoops != nil { eventLoops.shutdownGracefully { _ in } }
    }
    let outbound: (any Channel)?
    let inbound: any Channel
    do {
      // A gateway has no outbound listener: its inbound port takes mesh traffic for local services.
      outbound =
        configuration.gatewayMode
        ? nil
        : try await bind(
          configuration.outboundAddress, direction: "outbound", on: eventLoops,
          setup: .init(
            router: outboundRouter, metrics: metrics, tls: nil, requireClientCertificate: false, inFlight: inFlight,
            tap: tap, logger: logger))
      inbound = try await bind(
        configuration.inboundAddress, direction: configuration.gatewayMode ? "gateway" : "inbound", on: eventLoops,
        setup: .init(
          router: configuration.gatewayMode ? gatewayRouter : inboundRouter, metrics: metrics, tls: tls,
          requireClientCertificate: configuration.gatewayMode || configuration.requireIdentityOnInbound,
          inFlight: inFlight, tap: tap, logger: logger))
    } catch {
      ports.fail(error)
      readiness.setNotReady("cannot listen: \(error)")
      await admin.close()
      throw error
    }
    for listener in [outbound, inbound] { loopGuard.add(listener: listener?.localAddress) }
    loopGuard.add(listener: admin.channel.localAddress)
    let bound = BoundPorts(
      outbound: outbound?.localAddress?.port ?? 0, inbound: inbound.localAddress?.port ?? 0, admin: admin.port)
    ports.succeed(bound)
    readiness.set(true)
    logger.notice(
      "proxy listening",
      metadata: [
        "outbound": "\(configuration.gatewayMode ? "none (gateway)" : "\(configuration.outboundAddress.host):\(bound.outbound)")",
        "mode": "\(configuration.gatewayMode ? "gateway" : "sidecar")",
        "inbound": "\(configuration.inboundAddress.host):\(bound.inbound)",
        "admin": "\(configuration.adminAddress.host):\(bound.admin)",
        "identity": "\(tls?.localIdentity?.description ?? "none")",
      ])

    await withDiscardingTaskGroup { group in
      group.addTask { await self.outboundRouter.run() }
      if let resolver = self.resolver {
        group.addTask {
          do { try await resolver.run() } catch { self.logger.error("resolver stopped", metadata: ["error": "\(error)"]) }
        }
      }
      group.addTask {
        // Forget what requests named and no longer use: destinations (with their discovery streams) and
        // metric label sets.
        await Self.every(.seconds(30)) {
          self.outboundRouter.evictIdleDestinations(idleTimeout: self.configuration.destinationIdleTimeout)
          self.metrics.evictIdleSeries()
        }
      }
      if let interval = self.configuration.memoryTrimInterval {
        let trimmer = MemoryTrimmer(threshold: self.configuration.memoryTrimThreshold)
        group.addTask {
          await Self.every(interval) {
            if let released = trimmer.trimIfWorthIt() {
              self.logger.debug("gave memory malloc held free back to the system", metadata: ["free_bytes": "\(released)"])
            }
          }
        }
      }
      if let tls = self.tls {
        _ = tls  // rotation is followed by whoever owns the rotator (see mesh-proxy)
      }
      // Until graceful shutdown (or cancellation).
      try? await gracefulShutdown()
      self.readiness.setNotReady("shutting down")
      self.logger.notice("proxy draining", metadata: ["in_flight": "\(self.inFlight.current)"])
      try? await outbound?.close()
      try? await inbound.close()
      // Every open connection quiesces: HTTP/1.1 closes when idle, or after the response in progress (sent
      // with `connection: close`); HTTP/2 gets GOAWAY and closes when its open streams finish. Clients move
      // their next requests elsewhere instead of losing them to a close at the deadline.
      for channel in self.connections.withLock({ Array($0.values) }) {
        channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
      }
      let deadline = ContinuousClock.now + self.configuration.shutdownGracePeriod
      while self.inFlight.current > 0 && ContinuousClock.now < deadline && !Task.isCancelled {
        try? await Task.sleep(for: .milliseconds(20))
      }
      // The responses are out; give the connections a moment to finish closing on their own.
      let settle = min(deadline, ContinuousClock.now + .seconds(1))
      while !self.connections.withLock({ $0.isEmpty }) && ContinuousClock.now < settle && !Task.isCancelled {
        try? await Task.sleep(for: .milliseconds(10))
      }
      let remaining = self.connections.withLock({ Array($0.values) })
      let cut = self.inFlight.current
      for channel in remaining { channel.close(promise: nil) }
      let drained = cut == 0
      let report = ShutdownReport(drained: drained, inFlightCut: cut, forcedConnections: remaining.count)
      self.shutdownReport.withLock { $0 = report }
      if drained && remaining.isEmpty {
        self.logger.notice("proxy drained: every connection closed gracefully")
      } else {
        self.logger.warning(
          "grace period over",
          metadata: ["requests_cut": "\(report.inFlightCut)", "connections_closed": "\(report.forcedConnections)"])
      }
      await admin.close()
      self.outboundRouter.finish()
      group.cancelAll()
    }
    logger.notice("proxy stopped")
  }

  /// Runs `body` every `interval` until the task is cancelled.
  private static func every(_ interval: Duration, _ body: () -> Void) async {
    while !Task.isCancelled {
      try? await Task.sleep(for: interval)
      if Task.isCancelled { break }
      body()
    }
  }

  private func bind(
    _ address: Authority, direction: String, on eventLoops: MultiThreadedEventLoopGroup, setup: ProtocolDetector.Setup
  ) async throws -> any Channel {
    let metrics = self.metrics
    let setup = {
      var setup = setup
      setup.headerReadTimeout = configuration.headerReadTimeout
      setup.idleTimeout = configuration.downstreamIdleTimeout
      setup.direction = direction
      setup.detectTimeout = configuration.detectTimeout
      return setup
    }()
    let tlsOffered = setup.tls != nil
    let transparent = configuration.transparent
    let logger = self.logger
    return try await ServerBootstrap(group: eventLoops)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .serverChannelOption(.backlog, value: 1024)
      .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
      .childChannelInitializer { channel in
        self.track(channel)
        // Transparent mode: where the connection was going decides where it goes.
        let original =
          transparent
          ? OriginalDestination.lookup(channel) : channel.eventLoop.makeSucceededFuture(OriginalDestination.Lookup.direct)
        return original.flatMapThrowing { lookup in
          var destination: Authority?
          switch lookup {
          case .redirected(let address): destination = address
          case .direct: destination = nil
          case .unreadable(let reason):
            logger.warning(
              "connection closed: its original destination cannot be read",
              metadata: [
                "direction": "\(direction)", "client": "\(channel.remoteAddress?.description ?? "-")", "reason": "\(reason)",
              ])
            metrics.opaqueRefused(direction: direction, reason: .badAuthority)
            throw ProxyError(.badAuthority, "original destination unreadable: \(reason)")
          }
          try channel.pipeline.syncOperations.addHandler(
            ConnectionMetricsHandler(metrics: metrics.tcp(direction: direction, peer: "src", tls: tlsOffered)))
          try channel.pipeline.syncOperations.addHandler(
            ProtocolDetector(setup: setup, originalDestination: destination))
        }.flatMapErrorThrowing { error in
          logger.notice("connection closed: it could not be set up", metadata: ["direction": "\(direction)", "error": "\(error)"])
          throw error
        }
      }
      .bind(host: address.host, port: address.port).get()
  }

  private func track(_ channel: any Channel) {
    let key = ObjectIdentifier(channel)
    connections.withLock { $0[key] = channel }
    channel.closeFuture.whenComplete { _ in
      _ = self.connections.withLock { $0.removeValue(forKey: key) }
    }
  }
}
