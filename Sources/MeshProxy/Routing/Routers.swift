import Logging
import MeshBalancer
import MeshDiscovery
package import MeshCore
import MeshTLS
package import NIOCore
import NIOHTTP1
import Synchronization

/// The upstream pools of all event loops, one per loop.
final class UpstreamPools: Sendable {
  private let pools: Mutex<[ObjectIdentifier: UpstreamPool]> = Mutex([:])
  private let tls: MeshTLS?
  private let configuration: ProxyConfiguration
  private let metrics: ProxyMetrics
  private let logger: Logger
  let loopGuard: LoopGuard

  init(tls: MeshTLS?, configuration: ProxyConfiguration, metrics: ProxyMetrics, loopGuard: LoopGuard, logger: Logger) {
    self.tls = tls
    self.configuration = configuration
    self.metrics = metrics
    self.loopGuard = loopGuard
    self.logger = logger
  }

  func pool(for eventLoop: any EventLoop) -> UpstreamPool {
    pools.withLock { pools in
      let key = ObjectIdentifier(eventLoop)
      if let pool = pools[key] { return pool }
      let pool = UpstreamPool(
        eventLoop: eventLoop, tls: tls, configuration: configuration, metrics: metrics, loopGuard: loopGuard,
        logger: logger)
      pools[key] = pool
      return pool
    }
  }

  /// Event loops serving requests (MultiThreadedEventLoopGroup.singleton has one per core): a limit for the
  /// whole proxy is shared out among their pools.
  private var loopCount: Int { configuration.eventLoopCount }

  /// How an upstream comes: at once (an idle pooled connection), or later.
  typealias Opening = UpstreamOpening

  /// Opens a plaintext upstream to `address` in the request's own protocol. HTTP/1.1 opens at most `limit`
  /// connections to it across the proxy; past that requests wait for one until `deadline`. An idle pooled
  /// HTTP/1.1 connection is ready at once.
  func plaintext(
    to address: Authority, http2: Bool, head: HTTPRequestHead, ticket: TicketBox?,
    labels: ProxyMetrics.LabelSet, limit: Int, deadline: NIODeadline, abandonment: RequestAbandonment,
    on eventLoop: any EventLoop
  ) -> Opening {
    if loopGuard.isSelf(address) {
      return .pending(eventLoop.makeFailedFuture(Self.loop(to: address)))
    }
    let pool = pool(for: eventLoop)
    var head = head
    if http2 {
      return .pending(
        pool.openHTTP2Stream(to: address, identity: nil, deadline: deadline, abandonment: abandonment) { [head] stream in
          Upstream(stream: stream, head: head, ticket: ticket, labels: labels)
        })
    }
    // A head that came over HTTP/2 keeps its 2.0 (the upstream's encoder writes it as HTTP/1.1): setting it
    // copied the head's storage, which the request shares.
    if head.version.major < 2, head.version != .http1_1 { head.version = .http1_1 }
    if let idle = pool.idleHTTP1Connection(to: address) {
      return .ready(Upstream(channel: idle.channel, head: head, ticket: ticket, labels: labels, release: idle.release))
    }
    let perLoop = (limit + loopCount - 1) / loopCount
    return .pending(
      pool.http1Connection(to: address, limit: perLoop, deadline: deadline, abandonment: abandonment).map {
        [head] channel in
        Upstream(channel: channel, head: head, ticket: ticket, labels: labels, release: pool.releaser(for: address))
      })
  }
}

extension UpstreamPools {
  static func loop(to address: Authority) -> ProxyError {
    ProxyError(.loopDetected, "\(address) is this proxy's own listener")
  }
}

/// The outbound side: resolves the request's authority through discovery, balances over its endpoints
/// (power of two choices over peak-EWMA), and opens mutual TLS (HTTP/2) to meshed endpoints or plaintext
/// in the request's own protocol to others. Names discovery does not know go to the authority as given.
package final class OutboundRouter: RequestRouter, Sendable {
  package let direction: String
  private let discovery: any EndpointDiscovery
  private let pools: UpstreamPools
  private let configuration: ProxyConfiguration
  private let destinations = Mutex<[Authority: Destination]>([:])
  private let newDestinations: AsyncStream<Destination>
  private let newDestinationsContinuation: AsyncStream<Destination>.Continuation

  init(
    discovery: any EndpointDiscovery, pools: UpstreamPools, configuration: ProxyConfiguration,
    direction: String = "outbound"
  ) {
    self.direction = direction
    self.discovery = discovery
    self.pools = pools
    self.configuration = configuration
    (newDestinations, newDestinationsContinuation) = AsyncStream.makeStream(of: Destination.self)
  }

  /// Follows discovery for every destination requests have named, until cancelled.
  func run() async {
    await withDiscardingTaskGroup { group in
      for await destination in newDestinations {
        group.addTask { await destination.follow(self.discovery) }
      }
    }
  }

  func finish() { newDestinationsContinuation.finish() }

  /// How many destinations the proxy follows.
  package var destinationCount: Int { destinations.withLock { $0.count } }

  /// The destination of a request's own authority: the one its connection's memo holds while it is the same
  /// authority and still followed, else looked up (and kept in the memo).
  private func destination(of request: RoutedRequest, authority: Authority) -> Destination {
    guard let memo = request.destinationMemo else { return destination(for: authority) }
    if let known = memo.destination, !known.isStopped, known.authority == authority {
      known.touch(Destination.uptimeSeconds)
      return known
    }
    let found = destination(for: authority)
    memo.destination = found
    return found
  }

  private func destination(for authority: Authority) -> Destination {
    let now = Destination.uptimeSeconds
    let (destination, isNew, evicted) = destinations.withLock { map -> (Destination, Bool, Destination?) in
      if let existing = map[authority] { return (existing, false, nil) }
      // At the limit, the destination used longest ago goes (its discovery streams with it): requests may
      // name any number of authorities, the proxy follows a bounded number.
      var evicted: Destination?
      if map.count >= max(configuration.maxDestinations, 1),
        let oldest = map.values.min(by: { $0.lastUsed < $1.lastUsed })
      {
        map[oldest.authority] = nil
        evicted = oldest
      }
      let created = Destination(authority: authority)
      map[authority] = created
      return (created, true, evicted)
    }
    destination.touch(now)
    evicted?.stop()
    if isNew { newDestinationsContinuation.yield(destination) }
    return destination
  }

  /// Forgets the destinations no request named for `idleTimeout`, and stops following them. Returns how
  /// many went.
  @discardableResult
  func evictIdleDestinations(idleTimeout: Duration) -> Int {
    let cutoff = Destination.uptimeSeconds - idleTimeout.components.seconds
    let idle = destinations.withLock { map -> [Destination] in
      let idle = map.values.filter { $0.lastUsed < cutoff }
      for destination in idle { map[destination.authority] = nil }
      return idle
    }
    for destination in idle { destination.stop() }
    return idle.count
  }

  package func policy(for request: RoutedRequest, on eventLoop: any EventLoop) -> EventLoopFuture<RequestPolicy> {
    guard let authority = request.authority else { return eventLoop.makeSucceededFuture(.none) }
    let deadline = request.receivedAt + TimeAmount(configuration.failfastTimeout)
    return destination(of: request, authority: authority).profile(on: eventLoop, deadline: deadline).map { profile in
      profile?.policy(method: request.head.method.rawValue, path: request.head.uri, authority: authority.description)
        ?? .none
    }
  }

  package func knownPolicy(for request: RoutedRequest) -> RequestPolicy? {
    guard let authority = request.authority else { return RequestPolicy.none }
    guard let known = destination(of: request, authority: authority).knownProfile else { return nil }
    // Known to have no profile: the default policy, now (`.none` alone would be the Optional's: "not known").
    return known?.policy(method: request.head.method.rawValue, path: request.head.uri, authority: authority.description)
      ?? RequestPolicy.none
  }

  package func metricAuthority(for request: RoutedRequest) -> String {
    guard let authority = request.authority,
      destinations.withLock({ $0[authority] })?.isKnown == true
    else { return "" }
    return authority.description
  }

  package func open(_ request: RoutedRequest, on eventLoop: any EventLoop) -> EventLoopFuture<Upstream> {
    openNow(request, on: eventLoop).future(on: eventLoop)
  }

  package func openNow(_ request: RoutedRequest, on eventLoop: any EventLoop) -> UpstreamOpening {
    let promise = eventLoop.makePromise(of: Upstream.self)
    if let upstream = openNow(request, on: eventLoop, completion: { promise.completeWith($0) }) {
      promise.succeed(upstream)
    }
    return .pending(promise.futureResult)
  }

  package func openNow(
    _ request: RoutedRequest, on eventLoop: any EventLoop, for opener: NIOLoopBound<any UpstreamOpener>
  ) -> Upstream? {
    openNow(request, on: eventLoop, completion: opener.completion)
  }

  /// The upstream at hand, or nil and `completion` later. `completion` is an autoclosure so that it is made
  /// only when the upstream is not at hand.
  func openNow(
    _ request: RoutedRequest, on eventLoop: any EventLoop, completion: @autoclosure () -> UpstreamCompletion
  ) -> Upstream? {
    guard let apex = request.authority else {
      completion()(.failure(ProxyError(.badAuthority, "request has no valid Host/:authority")))
      return nil
    }
    let deadline = request.receivedAt + TimeAmount(configuration.failfastTimeout)
    return attempt(request, apex: apex, deadline: deadline, attemptsLeft: Self.connectAttempts, on: eventLoop, completion: completion())
  }

  /// The target of one attempt: a leaf of the apex's traffic split (by weight, among leaves that have an
  /// endpoint to offer, so a dead cluster's leaf is passed over while another leaf can serve), else the apex.
  /// With the target, its destination when that is the apex's (already at hand).
  private func pickTarget(_ request: RoutedRequest, apex: Authority) -> (Authority, Destination?) {
    let apexDestination = destination(of: request, authority: apex)
    guard let profile = apexDestination.profile,
      let leaf = profile.pickLeaf(isAvailable: { leaf in self.destination(for: leaf).canServe })
    else { return (apex, apexDestination) }
    return (leaf, leaf == apex ? apexDestination : nil)
  }

  /// The target of `authority`; in transparent mode, a name discovery does not know is looked up by where
  /// the connection was going (a ClusterIP or a pod IP), and else forwarded there rather than to the name.
  private func target(
    for authority: Authority, original: Authority?, on eventLoop: any EventLoop, deadline: NIODeadline
  ) -> EventLoopFuture<Target> {
    let target = destination(for: authority).target(on: eventLoop, deadline: deadline)
    guard let original, original != authority else { return target }
    return target.flatMap { target in
      guard case .passthrough = target else { return eventLoop.makeSucceededFuture(target) }
      return self.destination(for: original).target(on: eventLoop, deadline: deadline)
    }
  }

  package func isOpaque(_ original: Authority, on eventLoop: any EventLoop) -> EventLoopFuture<Bool> {
    // A service discovery knows: its profile decides (the opaque-ports annotation replaces the default list);
    // anything else: the configured ports.
    let configured = configuration.opaquePorts.contains(original.port)
    let deadline = NIODeadline.now() + TimeAmount(configuration.failfastTimeout)
    return destination(for: original).profile(on: eventLoop, deadline: deadline).map { compiled in
      guard let profile = compiled?.profile else { return configured }
      return profile.fullyQualifiedName.isEmpty ? configured || profile.opaqueProtocol : profile.opaqueProtocol
    }
  }

  /// Opaque connections to `original` (outbound), or to the service a gateway caller's header names: a
  /// balanced endpoint of what discovery knows there (mutual TLS with the opaque header to a meshed one,
  /// plain TCP to others); an address it does not know is connected to as is (not from a gateway).
  package func openOpaque(_ connection: OpaqueConnection, on eventLoop: any EventLoop) -> EventLoopFuture<any Channel> {
    openOpaque(connection, allowPassthrough: true, on: eventLoop)
  }

  func openOpaque(
    _ connection: OpaqueConnection, allowPassthrough: Bool, on eventLoop: any EventLoop
  ) -> EventLoopFuture<any Channel> {
    guard let original = connection.header?.authority ?? connection.originalDestination else {
      return eventLoop.makeFailedFuture(
        ProxyError(
          .badAuthority,
          "an opaque connection needs its original destination (run the proxy with --transparent behind mesh-proxy-init)"))
    }
    let deadline = NIODeadline.now() + TimeAmount(configuration.failfastTimeout)
    return openOpaque(
      to: original, allowPassthrough: allowPassthrough, peer: connection.peerIdentity, deadline: deadline,
      attemptsLeft: Self.connectAttempts, on: eventLoop)
  }

  private func openOpaque(
    to original: Authority, allowPassthrough: Bool, peer: IdentityName?, deadline: NIODeadline, attemptsLeft: Int,
    on eventLoop: any EventLoop
  ) -> EventLoopFuture<any Channel> {
    let pool = pools.pool(for: eventLoop)
    let clientID = [("client_id", peer?.description ?? "")]
    let opened = destination(for: original).target(on: eventLoop, deadline: deadline).flatMap {
      target -> EventLoopFuture<any Channel> in
      switch target {
      case .passthrough(let address):
        guard allowPassthrough else {
          return eventLoop.makeFailedFuture(
            ProxyError(.unknownAuthority, "\(original) is not a service this cluster knows"))
        }
        if self.pools.loopGuard.isSelf(address) { return eventLoop.makeFailedFuture(UpstreamPools.loop(to: address)) }
        return pool.openOpaqueConnection(
          to: address, identity: nil, header: OpaqueHeader(targetPort: address.port), direction: self.direction,
          labels: clientID)
      case .endpoint(let ticket):
        let endpoint = ticket.endpoint
        if self.pools.loopGuard.isSelf(endpoint.address) {
          ticket.complete(.cancelled)
          return eventLoop.makeFailedFuture(UpstreamPools.loop(to: endpoint.address))
        }
        let labels = [
          ("dst_service", endpoint.metricLabels["service"] ?? ""),
          ("dst_namespace", endpoint.metricLabels["namespace"] ?? ""),
          ("server_id", endpoint.tlsIdentity?.description ?? ""),
        ] + clientID
        // A meshed pod's proxy is reached on its inbound port and delivers to the endpoint's port; a gateway
        // delivers to the service the header names.
        let header = OpaqueHeader(targetPort: endpoint.address.port, authority: endpoint.authorityOverride)
        let address = endpoint.tlsIdentity == nil ? endpoint.address : endpoint.opaqueAddress
        if self.pools.loopGuard.isSelf(address) {
          ticket.complete(.cancelled)
          return eventLoop.makeFailedFuture(UpstreamPools.loop(to: address))
        }
        return pool.openOpaqueConnection(
          to: address, identity: endpoint.tlsIdentity, header: header, direction: self.direction,
          labels: labels
        ).map { channel in
          // A connection is balanced as one request: its load ends once it is established.
          ticket.complete(.success)
          return channel
        }.flatMapErrorThrowing { error in
          ticket.complete((error as? ProxyError)?.reason == .connectFailed ? .connectionFailure : .failure)
          throw error
        }
      }
    }
    return opened.flatMapError { error in
      guard attemptsLeft > 1, (error as? ProxyError)?.reason == .connectFailed, NIODeadline.now() < deadline else {
        return eventLoop.makeFailedFuture(error)
      }
      return self.openOpaque(
        to: original, allowPassthrough: allowPassthrough, peer: peer, deadline: deadline,
        attemptsLeft: attemptsLeft - 1, on: eventLoop)
    }
  }

  /// Connection attempts per request. A request whose connection failed never reached the upstream, so it
  /// is safe to send it to another endpoint (the failed one accrues the failure).
  static let connectAttempts = 3

  private func attempt(
    _ request: RoutedRequest, apex: Authority, deadline: NIODeadline, attemptsLeft: Int, on eventLoop: any EventLoop,
    completion: @autoclosure () -> UpstreamCompletion
  ) -> Upstream? {
    // Each attempt picks its leaf again: a connection refused by one leaf (a gateway gone) may go to another.
    let (authority, known) = pickTarget(request, apex: apex)
    // The target first when it is at hand: an HTTP/1 request to a meshed endpoint gets its original-protocol
    // mark in the same addition as the hop header (one copy of the headers, not two).
    let ready = readyTarget(for: authority, known: known, original: request.originalDestination)
    let viaStream = ready.map { Self.ridesMeshStream(request, to: $0) } ?? false
    // An HTTP/1 request inside the peer proxies' HTTP/2 carries the original-protocol mark.
    let marked = viaStream && !request.arrivedOverHTTP2
    let head: HTTPRequestHead
    var hopFields: HopFields?
    do {
      if viaStream, !marked || !request.meshFields.contains(.origProto) {
        // Over a peer proxy's HTTP/2 (the usual case): the stream's header block leaves the connection-specific
        // fields out as it is made, and gets the hop fields there, so the headers are neither rebuilt nor copied.
        if request.meshFields.contains(.hopHeader) { try pools.loopGuard.check(request.head.headers) }
        head = request.head
        hopFields = HopFields(token: pools.loopGuard.token, markHTTP1: marked)
      } else {
        var stamped = request.head
        HTTPHeaderRules.stripHopByHop(&stamped.headers, upgrade: request.upgrade)
        if marked, stamped.headers.contains(name: MeshHeaders.origProto) { stamped.headers.remove(name: MeshHeaders.origProto) }
        try pools.loopGuard.stamp(&stamped.headers, also: marked ? (MeshHeaders.origProto, "HTTP/1.1") : nil)
        head = stamped
      }
    } catch {
      if case .endpoint(let ticket)? = ready { ticket.complete(.cancelled) }
      completion()(.failure(error))
      return nil
    }
    // What becomes of an attempt that did not open at once: a connection that could not be made is tried
    // again (another endpoint, or the same one's next address) while attempts and time are left.
    func retrying(_ completion: @escaping UpstreamCompletion) -> UpstreamCompletion {
      { result in
        guard case .failure(let error) = result, attemptsLeft > 1, let proxyError = error as? ProxyError,
          proxyError.reason == .connectFailed, NIODeadline.now() < deadline
        else { return completion(result) }
        if let upstream = self.attempt(
          request, apex: apex, deadline: deadline, attemptsLeft: attemptsLeft - 1, on: eventLoop, completion: completion)
        {
          completion(.success(upstream))
        }
      }
    }
    if let target = ready {
      // The usual case: the destination is resolved, and often an idle connection waits. Then no future is
      // made at all, and through the mTLS pair none either: the stream's opening reports by a callback.
      return open(
        target, request: request, apex: apex, head: head, marked: marked, hopFields: hopFields, deadline: deadline,
        on: eventLoop
      ).upstream(orReporting: retrying(completion()), on: eventLoop)
    }
    let whenOpened = retrying(completion())
    target(for: authority, original: request.originalDestination, on: eventLoop, deadline: deadline)
      .hop(to: eventLoop)
      .whenComplete { result in
        switch result {
        case .success(let target):
          if let upstream = self.open(target, request: request, apex: apex, head: head, deadline: deadline, on: eventLoop)
            .upstream(orReporting: whenOpened, on: eventLoop)
          {
            whenOpened(.success(upstream))
          }
        case .failure(let error):
          whenOpened(.failure(error))
        }
      }
    return nil
  }

  /// How one attempt's upstream comes: at once, later by a future, or later as an HTTP/2 stream that reports
  /// by a callback.
  private enum AttemptOpening {
    case ready(Upstream)
    case pending(EventLoopFuture<Upstream>)
    case stream(StreamOpening)

    /// The upstream when it is at hand; else nil, and the result goes to `completion` (made only then).
    func upstream(orReporting completion: @autoclosure () -> UpstreamCompletion, on eventLoop: any EventLoop) -> Upstream? {
      switch self {
      case .ready(let upstream): return upstream
      case .pending(let future): future.hop(to: eventLoop).whenComplete(completion())
      case .stream(let opening): opening.start(completion())
      }
      return nil
    }
  }

  /// An HTTP/2 stream to a meshed endpoint, to be opened (``UpstreamPool/openHTTP2Stream(to:identity:deadline:abandonment:complete:)``)
  /// and made the upstream; a failure settles the balancer ticket. A class: its callback holds it by one
  /// reference rather than copies of the head and the labels (eight strings).
  private final class StreamOpening: Sendable {
    let pool: UpstreamPool
    let address: Authority
    let identity: IdentityName
    let deadline: NIODeadline
    let abandonment: RequestAbandonment
    let ticket: TicketBox
    let head: HTTPRequestHead
    let hopFields: HopFields?
    let labels: ProxyMetrics.LabelSet

    init(
      pool: UpstreamPool, address: Authority, identity: IdentityName, deadline: NIODeadline,
      abandonment: RequestAbandonment, ticket: TicketBox, head: HTTPRequestHead, hopFields: HopFields?,
      labels: ProxyMetrics.LabelSet
    ) {
      self.hopFields = hopFields
      self.pool = pool
      self.address = address
      self.identity = identity
      self.deadline = deadline
      self.abandonment = abandonment
      self.ticket = ticket
      self.head = head
      self.labels = labels
    }

    func start(_ completion: @escaping UpstreamCompletion) {
      pool.openHTTP2Stream(to: address, identity: identity, deadline: deadline, abandonment: abandonment) { result in
        self.opened(result, completion)
      }
    }

    // Not inlined into the pool's opening: specialised there with this body, the head and the labels were
    // copied field by field (about 100 retains a request more; Benchmarks/load/instructions.sh).
    @inline(never)
    private func opened(_ result: Result<UpstreamStream, any Error>, _ completion: UpstreamCompletion) {
      switch result {
      case .success(let stream):
        stream.stream.hopFields = hopFields
        completion(.success(Upstream(stream: stream, head: head, ticket: ticket, labels: labels)))
      case .failure(let error):
        OutboundRouter.complete(ticket, failedWith: error)
        completion(.failure(error))
      }
    }
  }

  /// The target of `authority` when it is known without waiting; nil when it must be waited for (not yet
  /// resolved, no endpoint available now) or looked up by the original destination (a name discovery does
  /// not know, in transparent mode).
  private func readyTarget(for authority: Authority, known: Destination?, original: Authority?) -> Target? {
    guard let target = (known ?? destination(for: authority)).readyTarget() else { return nil }
    if case .passthrough = target, let original, original != authority { return nil }
    return target
  }

  /// Whether a request to `target` goes on an HTTP/2 stream to a peer proxy: a meshed endpoint, and not an
  /// upgrade (which keeps HTTP/1.1 on a connection of its own). An endpoint that is this proxy is refused when
  /// it is opened.
  private static func ridesMeshStream(_ request: RoutedRequest, to target: Target) -> Bool {
    guard case .endpoint(let ticket) = target else { return false }
    return ticket.endpoint.tlsIdentity != nil && request.upgrade == nil
  }

  /// Opens the upstream of one attempt at `target`: at once when a pooled connection is idle, else later.
  /// A ticket's outcome is reported when opening fails. `marked`: `head` (or `hopFields`) has the
  /// original-protocol mark already.
  /// `hopFields`: the hop fields `head` does not carry yet, for its stream's header block (only for a target
  /// that ``ridesMeshStream(_:to:)``).
  private func open(
    _ target: Target, request: RoutedRequest, apex: Authority, head: HTTPRequestHead, marked: Bool = false,
    hopFields: HopFields? = nil, deadline: NIODeadline, on eventLoop: any EventLoop
  ) -> AttemptOpening {
    var head = head
    let clientID = request.peerIdentity?.description ?? ""
    switch target {
    case .passthrough(let address):
      // A name discovery does not know: the application (or a peer) chose it, so it is not a label value.
      var passthrough = ProxyMetrics.RequestLabels(direction: direction, authority: "", tls: false)
      passthrough.clientID = clientID
      let labels = ProxyMetrics.LabelSet(passthrough)
      switch pools.plaintext(
        to: address, http2: request.arrivedOverHTTP2, head: head, ticket: nil, labels: labels,
        limit: configuration.maxConnectionsPerEndpoint, deadline: deadline, abandonment: request.abandonment,
        on: eventLoop)
      {
      case .ready(let upstream): return .ready(upstream)
      case .pending(let future): return .pending(future)
      }
    case .endpoint(let ticket):
      let balanced = ticket.balanced
      let endpoint = balanced.endpoint
      let labels = balanced.labelSet(direction: direction, authority: apex.description, clientID: clientID)
      if let override = endpoint.authorityOverride {
        head.headers.replaceOrAdd(name: "host", value: override.description)
      }
      let opened: EventLoopFuture<Upstream>
      if let identity = endpoint.tlsIdentity {
        if pools.loopGuard.isSelf(endpoint.address) {
          ticket.complete(.cancelled)
          return .pending(eventLoop.makeFailedFuture(UpstreamPools.loop(to: endpoint.address)))
        }
        if request.upgrade != nil {
          // An upgrade cannot ride an HTTP/2 stream: HTTP/1.1 inside mutual TLS, on a connection of its own.
          opened = pools.pool(for: eventLoop).openUpgradeConnection(to: endpoint.address, identity: identity).map {
            [head, labels] channel in
            Upstream(channel: channel, head: head, ticket: ticket, labels: labels, release: nil)
          }
        } else {
          if !request.arrivedOverHTTP2, !marked { head.headers.replaceOrAdd(name: MeshHeaders.origProto, value: "HTTP/1.1") }
          // No future for the opening (see there): the stream becomes the upstream, and a failure settles the
          // ticket, in its callback.
          return .stream(
            StreamOpening(
              pool: pools.pool(for: eventLoop), address: endpoint.address, identity: identity, deadline: deadline,
              abandonment: request.abandonment, ticket: ticket, head: head, hopFields: hopFields, labels: labels))
        }
      } else {
        switch pools.plaintext(
          to: endpoint.address, http2: request.arrivedOverHTTP2, head: head, ticket: ticket, labels: labels,
          limit: configuration.maxConnectionsPerEndpoint, deadline: deadline, abandonment: request.abandonment,
          on: eventLoop)
        {
        case .ready(let upstream): return .ready(upstream)
        case .pending(let future): opened = future
        }
      }
      return .pending(
        opened.flatMapErrorThrowing { error in
          Self.complete(ticket, failedWith: error)
          throw error
        })
    }
  }

  /// Settles the balancer ticket of an upstream that could not be opened.
  fileprivate static func complete(_ ticket: TicketBox, failedWith error: any Error) {
    switch (error as? ProxyError)?.reason {
    case .connectFailed: ticket.complete(.connectionFailure)
    // Shed (busy) or refused as a loop: says nothing about the endpoint's health.
    case .overloaded, .loopDetected: ticket.complete(.cancelled)
    default: ticket.complete(.failure)
    }
  }
}

/// The inbound side: forwards to the local application, restoring HTTP/1.1 for requests a peer proxy
/// carried over HTTP/2.
package final class InboundRouter: RequestRouter, Sendable {
  package let direction = "inbound"
  private let application: Authority
  private let pools: UpstreamPools
  private let requireIdentity: Bool
  private let configuration: ProxyConfiguration
  /// The label set of the last request, for the next with the same authority and caller.
  private let lastLabels = ProxyMetrics.LastLabelSet()

  init(application: Authority, pools: UpstreamPools, configuration: ProxyConfiguration) {
    self.application = application
    self.pools = pools
    self.requireIdentity = configuration.requireIdentityOnInbound
    self.configuration = configuration
  }

  /// A meshed caller's authority was resolved by its own proxy (a destination it knows); a plaintext
  /// caller's is whatever it wrote, so those share the empty value.
  package func metricAuthority(for request: RoutedRequest) -> String {
    request.peerIdentity == nil ? "" : request.authority?.description ?? ""
  }

  /// The inbound side has no routes: the caller's proxy applied them.
  package func knownPolicy(for request: RoutedRequest) -> RequestPolicy? { RequestPolicy.none }

  /// The application: in transparent mode, `port` (where the caller was going) on the pod's loopback;
  /// else the configured application address.
  private func application(port: Int?) -> Authority {
    guard configuration.transparent, let port, let local = try? Authority(host: "127.0.0.1", port: port) else {
      return application
    }
    return local
  }

  package func isOpaque(_ original: Authority, on eventLoop: any EventLoop) -> EventLoopFuture<Bool> {
    eventLoop.makeSucceededFuture(configuration.opaquePorts.contains(original.port))
  }

  /// An opaque connection goes to the application, on the port a peer proxy's header names (else the port
  /// the caller was going to); plain TCP.
  package func openOpaque(_ connection: OpaqueConnection, on eventLoop: any EventLoop) -> EventLoopFuture<any Channel> {
    if requireIdentity, connection.peerIdentity == nil {
      return eventLoop.makeFailedFuture(
        ProxyError(.identityRequired, "this port requires a mesh identity (mutual TLS); the connection came in plaintext"))
    }
    let target = application(port: connection.header?.targetPort ?? connection.originalDestination?.port)
    if pools.loopGuard.isSelf(target) { return eventLoop.makeFailedFuture(UpstreamPools.loop(to: target)) }
    return pools.pool(for: eventLoop).openOpaqueConnection(
      to: target, identity: nil, header: OpaqueHeader(targetPort: target.port), direction: direction,
      labels: [("client_id", connection.peerIdentity?.description ?? "")])
  }

  /// Headers no application gets, lowercase: the original protocol's first (see `open`).
  private static let removedHeaders = [MeshHeaders.origProto.lowercased(), LoopGuard.headerName]
  package var takesOutMeshFieldsOnArrival: Bool { true }

  package func open(_ request: RoutedRequest, on eventLoop: any EventLoop) -> EventLoopFuture<Upstream> {
    openNow(request, on: eventLoop).future(on: eventLoop)
  }

  package func openNow(_ request: RoutedRequest, on eventLoop: any EventLoop) -> UpstreamOpening {
    if requireIdentity, request.peerIdentity == nil {
      return .pending(eventLoop.makeFailedFuture(
        ProxyError(.identityRequired, "this port requires a mesh identity (mutual TLS); the request came in plaintext")))
    }
    var head = request.head
    let restoreHTTP1: Bool
    if request.arrivedOverHTTP2 {
      // The stream's codec took out the mesh's fields (``takesOutMeshFieldsOnArrival``) and made the head of a
      // request a peer proxy carried as HTTP/1.1 an HTTP/1.1 head; an HTTP/2 block has no connection-specific
      // field to strip (the codec refuses those) and no upgrade.
      restoreHTTP1 = head.version.major == 1
    } else {
      // In the same pass: the original protocol's header (a peer proxy carried an HTTP/1.1 request over
      // HTTP/2), and the hop header (the application starts a fresh hop chain with whatever it sends next).
      let found = HTTPHeaderRules.stripHopByHop(
        &head.headers, upgrade: request.upgrade, removing: Self.removedHeaders)
      restoreHTTP1 = found & 1 != 0
    }
    let authority = metricAuthority(for: request)
    let clientID = request.peerIdentity?.description ?? ""
    let labels = lastLabels.labelSet {
      $0.authority == authority && $0.clientID == clientID && $0.tls == (request.peerIdentity != nil)
    } make: {
      var labels = ProxyMetrics.RequestLabels(direction: direction, authority: authority, tls: request.peerIdentity != nil)
      labels.clientID = clientID
      return labels
    }
    return pools.plaintext(
      to: application(port: request.originalDestination?.port), http2: request.arrivedOverHTTP2 && !restoreHTTP1,
      head: head, ticket: nil, labels: labels, limit: configuration.maxApplicationConnections,
      deadline: request.receivedAt + TimeAmount(configuration.failfastTimeout), abandonment: request.abandonment,
      on: eventLoop)
  }
}

/// The gateway: traffic from other clusters, after mutual TLS, to the local service its authority names.
/// Refuses callers without a mesh identity, authorities outside the local cluster domain, and loops (a
/// request that already passed this gateway, as its `forwarded` header says).
package final class GatewayRouter: RequestRouter, Sendable {
  package var direction: String { local.direction }
  private let local: OutboundRouter
  private let identity: IdentityName?
  private let clusterDomain: String

  init(local: OutboundRouter, identity: IdentityName?, clusterDomain: String) {
    self.local = local
    self.identity = identity
    self.clusterDomain = clusterDomain.lowercased()
  }

  /// The `by=` token this gateway writes into `forwarded`.
  private var byToken: String { "by=\(identity?.description ?? "swiftmesh-gateway")" }

  func run() async { await local.run() }
  func finish() { local.finish() }

  private func check(_ request: RoutedRequest) -> ProxyError? {
    guard let peer = request.peerIdentity else {
      return ProxyError(.identityRequired, "the gateway accepts only mesh callers with a certificate (mutual TLS)")
    }
    guard let authority = request.authority else {
      return ProxyError(.badAuthority, "request has no valid Host/:authority")
    }
    if let refusal = checkService(authority, caller: peer) { return refusal }
    let forwarded = request.head.headers["forwarded"].joined(separator: ",").lowercased()
    if forwarded.split(whereSeparator: { $0 == ";" || $0 == "," }).contains(where: {
      $0.drop(while: { $0 == " " }) == byToken.lowercased()
    }) {
      return ProxyError(.loopDetected, "the request already passed this gateway (forwarded: \(forwarded))")
    }
    return nil
  }

  /// Refuses an authority outside the local cluster domain.
  private func checkService(_ authority: Authority, caller peer: IdentityName) -> ProxyError? {
    let host = authority.host.lowercased()
    guard host.hasSuffix(".svc.\(clusterDomain)"), host.split(separator: ".").count >= 4 else {
      return ProxyError(
        .unknownRoute,
        "\(authority) is not a service of this cluster (<service>.<namespace>.svc.\(clusterDomain)); caller \(peer)")
    }
    return nil
  }

  /// The request as the local side forwards it: marked in `forwarded`; an HTTP/1.1 request the caller
  /// carried over HTTP/2 is handed on as HTTP/1.1 (the next hop carries it again as it needs).
  private func forwardable(_ request: RoutedRequest) -> RoutedRequest {
    var head = request.head
    var arrivedOverHTTP2 = request.arrivedOverHTTP2
    head.headers.add(name: "forwarded", value: "\(byToken);for=\(request.peerIdentity?.description ?? "")")
    if head.headers.first(name: MeshHeaders.origProto) != nil {
      head.headers.remove(name: MeshHeaders.origProto)
      arrivedOverHTTP2 = false
    }
    return request.with(head: head, arrivedOverHTTP2: arrivedOverHTTP2)
  }

  package func policy(for request: RoutedRequest, on eventLoop: any EventLoop) -> EventLoopFuture<RequestPolicy> {
    if check(request) != nil { return eventLoop.makeSucceededFuture(.none) }
    return local.policy(for: request, on: eventLoop)
  }

  package func knownPolicy(for request: RoutedRequest) -> RequestPolicy? {
    check(request) == nil ? local.knownPolicy(for: request) : RequestPolicy.none
  }

  package func metricAuthority(for request: RoutedRequest) -> String {
    check(request) == nil ? local.metricAuthority(for: request) : ""
  }

  /// An opaque connection from another cluster: its header names the local service (mutual TLS only).
  package func openOpaque(_ connection: OpaqueConnection, on eventLoop: any EventLoop) -> EventLoopFuture<any Channel> {
    guard let peer = connection.peerIdentity else {
      return eventLoop.makeFailedFuture(
        ProxyError(.identityRequired, "the gateway accepts only mesh callers with a certificate (mutual TLS)"))
    }
    guard let authority = connection.header?.authority else {
      return eventLoop.makeFailedFuture(
        ProxyError(.badAuthority, "an opaque connection through the gateway must name its service; caller \(peer)"))
    }
    if let refusal = checkService(authority, caller: peer) { return eventLoop.makeFailedFuture(refusal) }
    return local.openOpaque(
      OpaqueConnection(originalDestination: authority, header: nil, peerIdentity: peer), allowPassthrough: false,
      on: eventLoop)
  }

  package func open(_ request: RoutedRequest, on eventLoop: any EventLoop) -> EventLoopFuture<Upstream> {
    openNow(request, on: eventLoop).future(on: eventLoop)
  }

  package func openNow(_ request: RoutedRequest, on eventLoop: any EventLoop) -> UpstreamOpening {
    if let refusal = check(request) { return .pending(eventLoop.makeFailedFuture(refusal)) }
    return local.openNow(forwardable(request), on: eventLoop)
  }

  package func openNow(
    _ request: RoutedRequest, on eventLoop: any EventLoop, for opener: NIOLoopBound<any UpstreamOpener>
  ) -> Upstream? {
    if let refusal = check(request) {
      opener.value.opened(.failure(refusal))
      return nil
    }
    return local.openNow(forwardable(request), on: eventLoop, for: opener)
  }
}
