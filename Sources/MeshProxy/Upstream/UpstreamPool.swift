import Logging
import MeshCore
import MeshTLS
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix

/// The connections one event loop keeps to upstreams: one multiplexed HTTP/2 connection per (address,
/// expected identity) — mutual TLS when an identity is expected, prior-knowledge plaintext otherwise — and
/// idle HTTP/1.1 keep-alive connections per address.
///
/// Used only on its own event loop (requests are served on the loop of their downstream connection), so it
/// needs no locks; every entry point checks that.
final class UpstreamPool: @unchecked Sendable {
  struct HTTP2Key: Hashable {
    var address: Authority
    var identity: IdentityName?
  }

  let eventLoop: any EventLoop
  private let tls: MeshTLS?
  private let configuration: ProxyConfiguration
  private let metrics: ProxyMetrics
  private let logger: Logger
  private let loopGuard: LoopGuard
  /// The HTTP/2 upstreams of this loop: each one's pooled connection and its stream slots, found with one
  /// lookup a request (a stream's end is counted on the object itself).
  private var http2: [HTTP2Key: HTTP2Endpoint] = [:]
  /// The HTTP/2 upstreams used last (at most ``recentLimit``), looked at before `http2`: requests mostly go to
  /// the same few endpoints, and comparing a key with one made from the same endpoint's strings is a check
  /// of their storage, where hashing the address and the identity cost about 1,700 instructions a request
  /// (Benchmarks/load/instructions.sh).
  private var recent: [HTTP2Endpoint] = []
  private var recentNext = 0
  private static let recentLimit = 4

  /// A pooled HTTP/2 connection, connecting or connected. Used only on the pool's event loop.
  private final class HTTP2Entry: @unchecked Sendable {
    let future: EventLoopFuture<HTTP2Connection>
    var connection: HTTP2Connection?
    init(_ future: EventLoopFuture<HTTP2Connection>) { self.future = future }
  }

  /// One HTTP/2 upstream (address and expected identity) of this loop: its connection, and the streams open to
  /// it and the requests waiting for one. Kept while it has a connection, a stream or a waiting request. Used
  /// only on the pool's event loop, as the pool itself.
  private final class HTTP2Endpoint: @unchecked Sendable {
    let key: HTTP2Key
    var entry: HTTP2Entry?
    var active = 0
    var waiters = PendingRequests<Void>()
    init(_ key: HTTP2Key) { self.key = key }
    var isUnused: Bool { entry == nil && active == 0 && waiters.isEmpty }
  }
  private var http1: [Authority: HTTP1Endpoint] = [:]
  private var nextWaiterID = 0
  /// Connections this loop is opening now, and the most it may (its share of `maxConnectsInProgress`).
  private var connecting = 0
  private let maxConnecting: Int

  init(
    eventLoop: any EventLoop, tls: MeshTLS?, configuration: ProxyConfiguration, metrics: ProxyMetrics,
    loopGuard: LoopGuard, logger: Logger
  ) {
    self.logger = logger
    self.loopGuard = loopGuard
    let loops = configuration.eventLoopCount
    self.maxConnecting = max((configuration.maxConnectsInProgress + loops - 1) / loops, 1)
    self.eventLoop = eventLoop
    self.tls = tls
    self.configuration = configuration
    self.metrics = metrics
  }

  /// A new HTTP/2 stream to `address`, as an HTTP/1-parts channel (client side); mutual TLS expecting
  /// `identity` when given. The stream comes with a test telling whether a failure means the peer never
  /// processed it (see ``UpstreamStream``).
  ///
  /// At most `maxConcurrentStreamsPerEndpoint` streams are open to one endpoint from this event loop (its one
  /// connection there): past that a request waits for a stream to end, until `deadline`, in a bounded queue,
  /// and what cannot be served in time fails fast with `overloaded`. Without this, a flood of streams piles
  /// up inside the HTTP/2 connection's own buffer, where nothing sheds it and every request ends late.
  func openHTTP2Stream(
    to address: Authority, identity: IdentityName?, deadline: NIODeadline, abandonment: RequestAbandonment
  ) -> EventLoopFuture<UpstreamStream> {
    openHTTP2Stream(to: address, identity: identity, deadline: deadline, abandonment: abandonment) { $0 }
  }

  /// ``openHTTP2Stream(to:identity:deadline:abandonment:)``, its stream made into `value` and its failure told
  /// to `onFailure` first, in the one future the caller gets. Inside, the steps report by callbacks, not by a
  /// chain of futures: a request through the mTLS pair made eight futures here, at about a thousand
  /// instructions each to make and free (Benchmarks/load/instructions.sh).
  func openHTTP2Stream<Value: Sendable>(
    to address: Authority, identity: IdentityName?, deadline: NIODeadline, abandonment: RequestAbandonment,
    onFailure: (@Sendable (any Error) -> Void)? = nil, as value: @escaping @Sendable (UpstreamStream) -> Value
  ) -> EventLoopFuture<Value> {
    eventLoop.preconditionInEventLoop()
    let promise = eventLoop.makePromise(of: Value.self)
    openHTTP2Stream(to: address, identity: identity, deadline: deadline, abandonment: abandonment) { result in
      switch result {
      case .success(let stream):
        promise.succeed(value(stream))
      case .failure(let error):
        onFailure?(error)
        promise.fail(error)
      }
    }
    return promise.futureResult
  }

  /// ``openHTTP2Stream(to:identity:deadline:abandonment:)`` without a future: `complete` is called on this
  /// pool's event loop (at once when the loop guard refuses the address).
  func openHTTP2Stream(
    to address: Authority, identity: IdentityName?, deadline: NIODeadline, abandonment: RequestAbandonment,
    complete: @escaping StreamCompletion
  ) {
    eventLoop.preconditionInEventLoop()
    if loopGuard.isSelf(address) {
      complete(.failure(UpstreamPools.loop(to: address)))
      return
    }
    let key = HTTP2Key(address: address, identity: identity)
    let endpoint: HTTP2Endpoint
    if let seen = recentEndpoint(key) {
      endpoint = seen
    } else {
      if let existing = http2[key] {
        endpoint = existing
      } else {
        endpoint = HTTP2Endpoint(key)
        http2[key] = endpoint
      }
      if recent.count < Self.recentLimit {
        recent.append(endpoint)
      } else {
        recent[recentNext] = endpoint
        recentNext = (recentNext + 1) % Self.recentLimit
      }
    }
    if endpoint.active < max(configuration.maxConcurrentStreamsPerEndpoint, 1) {
      // The usual case: a slot is free.
      endpoint.active += 1
      openCountedStream(endpoint, complete)
    } else {
      waitForStream(endpoint, deadline: deadline, abandonment: abandonment).whenComplete { result in
        switch result {
        case .success: self.openCountedStream(endpoint, complete)
        case .failure(let error): complete(.failure(error))
        }
      }
    }
  }

  typealias StreamCompletion = @Sendable (Result<UpstreamStream, any Error>) -> Void

  /// Opens a stream in a slot taken already: the slot is given back when the stream closes, or now when no
  /// stream could be opened.
  private func openCountedStream(_ endpoint: HTTP2Endpoint, _ complete: @escaping StreamCompletion) {
    openStream(endpoint, isRetry: false) { result in
      switch result {
      case .success(let stream):
        stream.stream.onClose = {
          // Nobody waiting for a slot (nearly always): it is given back at once, bookkeeping only. Somebody
          // waiting: it is served on the loop's next turn, not from inside the closing stream's callbacks,
          // since serving it opens a stream on the same connection. (One task and closure fewer per request.)
          if endpoint.waiters.isEmpty {
            self.releaseStream(endpoint)
          } else {
            self.eventLoop.execute { self.releaseStream(endpoint) }
          }
        }
      case .failure:
        self.releaseStream(endpoint)
      }
      complete(result)
    }
  }

  /// Every slot of `endpoint` is taken: the request waits in its bounded queue until `deadline`, or is shed.
  private func waitForStream(
    _ endpoint: HTTP2Endpoint, deadline: NIODeadline, abandonment: RequestAbandonment
  ) -> EventLoopFuture<Void> {
    guard endpoint.waiters.count < configuration.maxPendingRequestsPerEndpoint else {
      metrics.shed(reason: "queue full")
      dropIfUnused(endpoint)
      return eventLoop.makeFailedFuture(
        ProxyError(
          .overloaded,
          "\(endpoint.key.address) has \(endpoint.active) streams open and \(endpoint.waiters.count) requests waiting for one"))
    }
    let waiter: PendingRequests<Void>.Entry = makeWaiter(deadline: deadline, abandonment: abandonment) { [self] id in
      guard endpoint.waiters.remove(id: id) else { return nil }
      dropIfUnused(endpoint)
      return ProxyError(.overloaded, "no stream to \(endpoint.key.address) came free in time (\(endpoint.active) open)")
    }
    endpoint.waiters.append(waiter)
    return waiter.promise.futureResult
  }

  /// A stream ended: its slot goes to the first waiting request.
  private func releaseStream(_ endpoint: HTTP2Endpoint) {
    let (next, dropped) = endpoint.waiters.popNext()
    if next == nil { endpoint.active -= 1 }
    next?.serve(())
    for waiter in dropped { waiter.drop() }
    dropIfUnused(endpoint)
  }

  private func recentEndpoint(_ key: HTTP2Key) -> HTTP2Endpoint? {
    var index = 0
    while index < recent.count {
      if recent[index].key == key { return recent[index] }
      index += 1
    }
    return nil
  }

  /// Forgets `endpoint` once it has no connection, no stream and no waiting request.
  private func dropIfUnused(_ endpoint: HTTP2Endpoint) {
    guard endpoint.isUnused else { return }
    if let index = recent.firstIndex(where: { $0 === endpoint }) {
      recent.remove(at: index)
      recentNext = 0
    }
    if http2[endpoint.key] === endpoint { http2[endpoint.key] = nil }
  }

  /// A queue entry for a request that waits for a slot until `deadline`; past it, `timedOut` takes the entry
  /// out of its queue (nil: it was served meanwhile) and the request is shed with the error it returns.
  private func makeWaiter<Value: Sendable>(
    deadline: NIODeadline, abandonment: RequestAbandonment, timedOut: @escaping @Sendable (Int) -> ProxyError?
  ) -> PendingRequests<Value>.Entry {
    let promise = eventLoop.makePromise(of: Value.self)
    let id = nextWaiterID
    nextWaiterID &+= 1
    let timer = eventLoop.scheduleTask(deadline: deadline) { [self] in
      guard let error = timedOut(id) else { return }
      metrics.shed(reason: "queue timeout")
      promise.fail(error)
    }
    return .init(id: id, promise: promise, timer: timer, abandonment: abandonment)
  }

  private func openStream(_ endpoint: HTTP2Endpoint, isRetry: Bool, _ complete: @escaping StreamCompletion) {
    let key = endpoint.key
    let entry: HTTP2Entry
    if let existing = endpoint.entry {
      entry = existing
    } else {
      entry = HTTP2Entry(connectHTTP2(key))
      endpoint.entry = entry
      entry.future.whenComplete { result in
        switch result {
        case .success(let connection): entry.connection = connection
        case .failure:
          if endpoint.entry === entry {
            endpoint.entry = nil
            self.dropIfUnused(endpoint)
          }
        }
      }
    }
    // Connected (every request but a connection's first): the stream is asked for at once.
    if let connection = entry.connection { return openStream(on: connection, endpoint, isRetry: isRetry, complete) }
    entry.future.whenComplete { result in
      switch result {
      case .success(let connection): self.openStream(on: connection, endpoint, isRetry: isRetry, complete)
      case .failure(let error): complete(.failure(error))
      }
    }
  }

  private func openStream(
    on connection: HTTP2Connection, _ endpoint: HTTP2Endpoint, isRetry: Bool, _ complete: @escaping StreamCompletion
  ) {
    // A stream is an object of the connection's handler, made at once: no channel, no future.
    if let stream = connection.handler.makeStream() {
      return complete(.success(UpstreamStream(stream: stream, connection: connection)))
    }
    // The connection is going or gone (GOAWAY, closed) and nothing was sent: forget it, and try once more on a
    // fresh connection before giving up.
    evict(endpoint.key, connection)
    let failure = ProxyError(.connectFailed, "opening a stream to \(endpoint.key.address) failed: the connection is closing")
    if isRetry {
      complete(.failure(failure))
    } else {
      openStream(endpoint, isRetry: true, complete)
    }
  }

  /// Runs `connect` unless this loop already has its share of connection attempts in progress; those past
  /// it fail at once with `overloaded`.
  private func boundedConnect(
    to address: Authority, _ connect: () -> EventLoopFuture<any Channel>
  ) -> EventLoopFuture<any Channel> {
    guard connecting < maxConnecting else {
      metrics.shed(reason: "connects in progress")
      return eventLoop.makeFailedFuture(
        ProxyError(.overloaded, "\(connecting) upstream connections are being opened already; not opening one to \(address)"))
    }
    connecting += 1
    let attempt = connect()
    attempt.whenComplete { [self] _ in connecting -= 1 }
    return attempt
  }

  /// Forgets the connection for `key` if it is still `connection` (a newer one is left alone).
  private func evict(_ key: HTTP2Key, _ connection: HTTP2Connection) {
    guard let endpoint = http2[key], endpoint.entry?.connection === connection else { return }
    endpoint.entry = nil
    dropIfUnused(endpoint)
  }

  private func connectHTTP2(_ key: HTTP2Key) -> EventLoopFuture<HTTP2Connection> {
    let tls = self.tls
    return openConnection(to: key.address, tls: key.identity != nil, http1: false)
      .flatMap { channel in
        // With mutual TLS, wait for the handshake, so that a refused identity fails with its reason.
        let ready: EventLoopFuture<Void>
        if let identity = key.identity {
          guard let tls else {
            channel.close(promise: nil)
            return channel.eventLoop.makeFailedFuture(ProxyError(.connectFailed, "no TLS identity to reach \(identity)"))
          }
          ready = channel.eventLoop.makeCompletedFuture {
            try tls.addClientHandlers(to: channel.pipeline.syncOperations, expected: identity)
          }.flatMap { $0 }.map { _ in () }.flatMapErrorThrowing { error in
            channel.close(promise: nil)
            throw ProxyError(.connectFailed, "mutual TLS with \(key.address) failed: \(error)")
          }
        } else {
          ready = channel.eventLoop.makeSucceededVoidFuture()
        }
        return ready.flatMapThrowing {
          // Frames straight to the proxy's own stream objects: no multiplexer, no channel per stream.
          let handler = HTTP2StreamsHandler()
          let meshPeer = key.identity != nil
          if meshPeer && HTTP2ConnectionHandler.onMeshHops {
            try channel.pipeline.syncOperations.addHandler(
              HTTP2ConnectionHandler(mode: .client, delegate: handler, configuration: .meshHop))
          } else {
            try channel.pipeline.syncOperations.addHandler(
              NIOHTTP2Handler(
                mode: .client, frameDelegate: handler, connectionConfiguration: .proxy(meshPeer: meshPeer),
                streamConfiguration: .proxy(meshPeer: meshPeer)))
          }
          try channel.pipeline.syncOperations.addHandler(handler)
          let connection = HTTP2Connection(handler: handler)
          try channel.pipeline.syncOperations.addHandler(
            GoAwayWatcher(connection: connection) { lastStreamID, code in
              self.logger.debug(
                "upstream sent GOAWAY; new requests get a new connection",
                metadata: ["peer": "\(key.address)", "last_stream_id": "\(lastStreamID)", "code": "\(code)"])
              self.evict(key, connection)
            })
          try channel.pipeline.syncOperations.addHandler(
            ConnectionErrorLogger(logger: self.logger, role: "upstream HTTP/2 connection to \(key.address)") {
              [weak channel] error in
              // The connection is broken (swift-nio-http2 sent GOAWAY for a connection error, or TLS or the
              // socket failed): no new stream goes there, and it is closed, so that its streams fail now and
              // are retried where they can be, instead of waiting on a connection that will never answer.
              guard connection.goAwayLastStreamID == nil, ConnectionErrorLogger.breaksConnection(error) else { return }
              self.logger.warning(
                "upstream HTTP/2 connection failed; closing it, new requests get a new connection",
                metadata: ["peer": "\(key.address)", "error": "\(error)"])
              self.evict(key, connection)
              channel?.close(promise: nil)
            })
          channel.closeFuture.whenComplete { _ in
            self.eventLoop.execute { self.evict(key, connection) }
          }
          return connection
        }
      }
  }

  /// A new HTTP/1.1 connection inside mutual TLS to the peer proxy at `address` (expecting `identity`), for
  /// one upgrade request (WebSocket and the like): never pooled, it becomes the upgraded connection's
  /// transport or is closed after the refused upgrade's response.
  func openUpgradeConnection(to address: Authority, identity: IdentityName) -> EventLoopFuture<any Channel> {
    eventLoop.preconditionInEventLoop()
    guard let tls else {
      return eventLoop.makeFailedFuture(ProxyError(.connectFailed, "no TLS identity to reach \(identity)"))
    }
    return openConnection(to: address, tls: true, http1: false)
      .flatMap { channel in
        channel.eventLoop.makeCompletedFuture {
          try tls.addClientHandlers(to: channel.pipeline.syncOperations, expected: identity)
        }.flatMap { $0 }.flatMapThrowing { _ in
          try channel.pipeline.syncOperations.addProxyHTTPClientHandlers()
          return channel
        }.flatMapErrorThrowing { error in
          channel.close(promise: nil)
          throw ProxyError(.connectFailed, "mutual TLS with \(address) failed: \(error)")
        }
      }
  }

  /// A connection of its own for an opaque (non-HTTP) stream of bytes to `address`. With `identity`, mutual
  /// TLS that verifies it, then `header` written first so the peer proxy knows where the bytes go; without,
  /// plain TCP. `labels` name the far end in the TCP metrics.
  func openOpaqueConnection(
    to address: Authority, identity: IdentityName?, header: OpaqueHeader, direction: String,
    labels: [(String, String)]
  ) -> EventLoopFuture<any Channel> {
    eventLoop.preconditionInEventLoop()
    guard let identity else {
      return openConnection(to: address, tls: false, http1: false, direction: direction, extraLabels: labels)
    }
    guard let tls else {
      return eventLoop.makeFailedFuture(ProxyError(.connectFailed, "no TLS identity to reach \(identity)"))
    }
    return openConnection(to: address, tls: true, http1: false, direction: direction, extraLabels: labels)
      .flatMap { channel in
        channel.eventLoop.makeCompletedFuture {
          try tls.addClientHandlers(to: channel.pipeline.syncOperations, expected: identity)
        }.flatMap { $0 }.flatMap { _ in
          channel.writeAndFlush(header.encoded(allocator: channel.allocator))
        }.map { channel }.flatMapErrorThrowing { error in
          channel.close(promise: nil)
          throw ProxyError(.connectFailed, "mutual TLS with \(address) failed: \(error)")
        }
      }
  }

  /// An HTTP/1.1 connection to `address`: an idle one if there is one, else a new one while fewer than
  /// `limit` are open to it from this event loop; past that the request waits in a bounded queue for a
  /// connection to come free, until `deadline`, and what cannot be served in time fails fast with
  /// `overloaded` (an application that accepts N connections is never sent N+1).
  func http1Connection(
    to address: Authority, limit: Int, deadline: NIODeadline, abandonment: RequestAbandonment
  ) -> EventLoopFuture<any Channel> {
    eventLoop.preconditionInEventLoop()
    if let idle = idleHTTP1Connection(to: address) { return eventLoop.makeSucceededFuture(idle.channel) }
    let endpoint: HTTP1Endpoint
    if let known = http1[address] {
      endpoint = known
    } else {
      endpoint = HTTP1Endpoint()
      http1[address] = endpoint
    }
    if endpoint.open < max(limit, 1) {
      // Counted before connecting: a connection that fails at once gives its slot back in its callback.
      endpoint.open += 1
      return connectHTTP1(to: address)
    }
    guard endpoint.waiters.count < configuration.maxPendingRequestsPerEndpoint else {
      metrics.shed(reason: "queue full")
      return eventLoop.makeFailedFuture(
        ProxyError(
          .overloaded,
          "\(address) has \(endpoint.open) connections open and \(endpoint.waiters.count) requests waiting for one"))
    }
    let waiter: PendingRequests<any Channel>.Entry = makeWaiter(deadline: deadline, abandonment: abandonment) {
      [self] id in
      guard let endpoint = http1[address], endpoint.waiters.remove(id: id) else { return nil }
      return ProxyError(.overloaded, "no connection to \(address) came free in time (\(endpoint.open) open, all busy)")
    }
    endpoint.waiters.append(waiter)
    return waiter.promise.futureResult
  }

  /// An idle HTTP/1.1 connection to `address`, taken out of the pool, if there is one, with the closure that
  /// returns it (made once per pooled address, not per request).
  func idleHTTP1Connection(to address: Authority) -> (channel: any Channel, release: @Sendable (any Channel) -> Void)? {
    eventLoop.preconditionInEventLoop()
    guard let endpoint = http1[address] else { return nil }
    while let channel = endpoint.takeIdle() {
      guard channel.isActive else { continue }
      if let release = endpoint.release { return (channel, release) }
      let release = releaser(for: address)
      endpoint.release = release
      return (channel, release)
    }
    return nil
  }

  /// Returns a finished HTTP/1.1 connection to `address` to this pool.
  func releaser(for address: Authority) -> @Sendable (any Channel) -> Void {
    { [self] channel in releaseHTTP1(channel, to: address) }
  }

  /// A TCP connection to `address`, counted in the TCP metrics, within this loop's share of connection
  /// attempts; with `http1`, HTTP/1.1 client handlers on it. A name that resolved to one of this proxy's own
  /// listeners is refused as a loop. Fails with a `ProxyError`.
  private func openConnection(
    to address: Authority, tls: Bool, http1: Bool, direction: String = "outbound", extraLabels: [(String, String)] = []
  ) -> EventLoopFuture<any Channel> {
    let tcpMetrics = metrics.tcp(direction: direction, peer: "dst", tls: tls, extra: extraLabels)
    let bootstrap = ClientBootstrap(group: eventLoop)
      .connectTimeout(TimeAmount(configuration.connectTimeout))
      .channelOption(.tcpOption(.tcp_nodelay), value: 1)
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          if http1 {
            // The HTTP/1.1 codec counts the connection's bytes itself (it sees all of them: no TLS here),
            // one handler fewer that every read, write and flush would cross.
            try channel.pipeline.syncOperations.addHandler(HTTP1ClientCodec(tcp: tcpMetrics))
          } else {
            try channel.pipeline.syncOperations.addHandler(ConnectionMetricsHandler(metrics: tcpMetrics))
          }
        }
      }
    return boundedConnect(to: address) { bootstrap.connect(host: address.host, port: address.port) }
      .flatMapErrorThrowing { error in
        if error is ProxyError { throw error }
        throw ProxyError.connecting(to: address, failedWith: error)
      }
      .flatMapThrowing { [loopGuard] channel in
        if loopGuard.isSelf(channel.remoteAddress) {
          channel.close(promise: nil)
          throw UpstreamPools.loop(to: address)
        }
        return channel
      }
  }

  private func connectHTTP1(to address: Authority) -> EventLoopFuture<any Channel> {
    openConnection(to: address, tls: false, http1: true)
      .map { [self] channel in
        // Registered once per connection (not each time it goes back to the pool: that grew a keep-alive
        // connection's close callbacks by one per request).
        channel.closeFuture.whenComplete { [self] _ in
          self.eventLoop.execute { self.http1Closed(channel, address: address) }
        }
        return channel
      }
      .flatMapErrorThrowing { [self] error in
        // The slot it held is free again (a connection refused as a loop is closed: its close callback was
        // never registered); a waiting request may try its own connection.
        http1[address]?.open -= 1
        dispatchWaiter(address)
        throw error
      }
  }

  private func http1Closed(_ channel: any Channel, address: Authority) {
    guard let endpoint = http1[address] else { return }
    endpoint.open -= 1
    endpoint.forgetIdle(channel)
    dispatchWaiter(address)
  }

  /// A slot is free: the first waiting request gets a new connection. An address with nothing open and
  /// nobody waiting is forgotten.
  private func dispatchWaiter(_ address: Authority) {
    guard let endpoint = http1[address] else { return }
    let (next, dropped) = endpoint.waiters.popNext()
    if next != nil { endpoint.open += 1 }
    if endpoint.isUnused { http1[address] = nil }
    for waiter in dropped { waiter.drop() }
    if let next { connectHTTP1(to: address).cascade(to: next.promise) }
  }

  /// Returns a finished HTTP/1.1 connection for reuse: to the first waiting request, else to the idle list
  /// (where it stays until a request takes it, the upstream closes it, or it has been idle for
  /// `upstreamIdleTimeout`).
  func releaseHTTP1(_ channel: any Channel, to address: Authority) {
    eventLoop.preconditionInEventLoop()
    guard channel.isActive, let endpoint = http1[address] else { return }
    let (next, dropped) = endpoint.waiters.popNext()
    let keep = next == nil && endpoint.idle.count < configuration.maxIdleConnectionsPerEndpoint
    if keep {
      endpoint.keepIdle(channel)
      scheduleIdleSweep()
    }
    for waiter in dropped { waiter.drop() }
    if let next {
      next.serve(channel)
    } else if !keep {
      channel.close(promise: nil)
    }
  }

  /// Whether a sweep of idle HTTP/1.1 connections is scheduled; one runs every `upstreamIdleTimeout` while
  /// any connection is idle.
  private var sweepScheduled = false

  private func scheduleIdleSweep() {
    guard !sweepScheduled else { return }
    sweepScheduled = true
    eventLoop.scheduleTask(in: TimeAmount(configuration.upstreamIdleTimeout)) { [self] in sweepIdleHTTP1() }
  }

  /// Closes the idle connections no request took since the last sweep (idle for one to two
  /// `upstreamIdleTimeout`s). The idle list is a stack, so those are at its bottom: as many as its low-water
  /// mark since the last sweep.
  func sweepIdleHTTP1() {
    eventLoop.preconditionInEventLoop()
    sweepScheduled = false
    var stillIdle = false
    for endpoint in http1.values {
      for channel in endpoint.takeStale() { channel.close(promise: nil) }
      stillIdle = stillIdle || !endpoint.idle.isEmpty
    }
    if stillIdle { scheduleIdleSweep() }
  }
}

/// Requests waiting for a slot toward one upstream (an HTTP/1.1 connection, an HTTP/2 stream), first come
/// first served, each until its deadline. Used on its pool's event loop only.
struct PendingRequests<Value: Sendable> {
  struct Entry {
    let id: Int
    let promise: EventLoopPromise<Value>
    let timer: Scheduled<Void>
    let abandonment: RequestAbandonment

    func serve(_ value: Value) {
      timer.cancel()
      promise.succeed(value)
    }

    /// The request was given up while it waited: its future fails, and nobody reads it.
    func drop() {
      timer.cancel()
      promise.fail(ProxyError(.overloaded, "the request was given up while it waited for the upstream"))
    }
  }

  private var entries = CircularBuffer<Entry>()

  var count: Int { entries.count }
  var isEmpty: Bool { entries.isEmpty }

  mutating func append(_ entry: Entry) { entries.append(entry) }

  /// Takes out the entry `id` (its deadline passed); whether it was still waiting.
  mutating func remove(id: Int) -> Bool {
    guard let index = entries.firstIndex(where: { $0.id == id }) else { return false }
    entries.remove(at: index)
    return true
  }

  /// The first entry whose request is still wanted, and the given-up ones that stood before it. The caller
  /// stores its state first, then serves and drops them (their callbacks may come back into the pool).
  mutating func popNext() -> (next: Entry?, dropped: [Entry]) {
    var dropped: [Entry] = []
    while let first = entries.first, first.abandonment.isAbandoned { dropped.append(entries.removeFirst()) }
    return (entries.popFirst(), dropped)
  }
}

/// One HTTP/1.1 upstream address as an event loop's pool keeps it: a reference, so a request finds and
/// changes it with one lookup. Used only on the pool's event loop, as the pool itself.
private final class HTTP1Endpoint {
  /// Idle connections, a stack: the one used last is taken first, so connections a lighter load no longer
  /// needs sink to the bottom, where the sweep finds them.
  private(set) var idle: [any Channel] = []
  /// The fewest connections `idle` held since the last sweep: its bottom this many were not touched since.
  private var lowWater = 0
  /// Connections open or being opened, idle or busy.
  var open = 0
  var waiters = PendingRequests<any Channel>()
  /// Returns a connection here; made when a connection is first taken from the idle list.
  var release: (@Sendable (any Channel) -> Void)?

  /// Nothing open (so nothing idle) and nobody waiting.
  var isUnused: Bool { open == 0 && waiters.isEmpty }

  func keepIdle(_ channel: any Channel) { idle.append(channel) }

  func takeIdle() -> (any Channel)? {
    guard let channel = idle.popLast() else { return nil }
    lowWater = min(lowWater, idle.count)
    return channel
  }

  /// A connection closed: out of the idle list, if it was there.
  func forgetIdle(_ channel: any Channel) {
    guard let index = idle.firstIndex(where: { $0 === channel }) else { return }
    idle.remove(at: index)
    if index < lowWater { lowWater -= 1 }
  }

  /// Takes out the connections idle since the last sweep; the next sweep measures from now.
  func takeStale() -> ArraySlice<any Channel> {
    let stale = idle[..<lowWater]
    idle.removeFirst(lowWater)
    lowWater = idle.count
    return stale
  }
}

extension TimeAmount {
  init(_ duration: Duration) {
    let (seconds, attoseconds) = duration.components
    self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
  }
}

/// Logs errors that reach the end of a connection's pipeline (protocol errors, resets, TLS alerts), so that
/// a connection the proxy loses is never lost silently. After bytes that cannot be HTTP/2 (a peer that does
/// not speak it, a corrupt frame) nothing more will parse on the connection, yet it stays open: it is closed
/// then, so its streams fail now rather than wait for a timeout. Other errors (a stream opened just after the
/// peer's GOAWAY, I/O on a closing connection) leave the connection to the streams still finishing on it.
final class ConnectionErrorLogger: ChannelInboundHandler, Sendable {
  static func isUnrecoverable(_ error: any Error) -> Bool {
    error is NIOHTTP2Errors.UnableToParseFrame || error is NIOHTTP2Errors.BadClientMagic
  }

  /// Whether `error`, reaching the end of an HTTP/2 connection's pipeline, leaves the connection unusable.
  /// Not: an error of one stream, a stream opened just after the peer's GOAWAY (the pool moves on by itself),
  /// I/O on a connection already closing. Anything else is a connection error for which swift-nio-http2 has
  /// sent GOAWAY (a protocol violation, a frame on a long-closed stream, a limit exceeded), or a TLS or
  /// socket failure.
  static func breaksConnection(_ error: any Error) -> Bool {
    switch error {
    case is NIOHTTP2Errors.StreamError, is NIOHTTP2Errors.StreamClosed, is NIOHTTP2Errors.CreatedStreamAfterGoaway,
      is ChannelError:
      return false
    case let wire as HTTP2WireError:
      // The proxy's own HTTP/2 connection code: a stream error resets one stream; a connection error has sent
      // GOAWAY and closes the connection.
      return wire.stream == nil
    default:
      return true
    }
  }

  typealias InboundIn = Never
  private let logger: Logger
  private let role: String
  private let onError: (@Sendable (any Error) -> Void)?

  init(logger: Logger, role: String, onError: (@Sendable (any Error) -> Void)? = nil) {
    self.logger = logger
    self.role = role
    self.onError = onError
  }

  func errorCaught(context: ChannelHandlerContext, error originalError: any Error) {
    var error: any Error = originalError
    if let streamError = originalError as? NIOHTTP2Errors.StreamError {
      error = ProxyError(.upstreamReset, "stream \(streamError.streamID): \(streamError.baseError)")
    }
    logger.debug(
      "connection error",
      metadata: [
        "connection": "\(role)", "local": "\(context.localAddress.map { "\($0)" } ?? "?")", "peer": "\(context.remoteAddress.map { "\($0)" } ?? "?")", "error": "\(error)",
      ])
    context.fireErrorCaught(originalError)
    onError?(originalError)
    if Self.isUnrecoverable(originalError) { context.close(promise: nil) }
  }
}

/// One upstream HTTP/2 connection as the pool keeps it; touched only on its event loop.
final class HTTP2Connection: @unchecked Sendable {
  let handler: HTTP2StreamsHandler
  /// Set when the peer sent GOAWAY: streams above it were never processed.
  var goAwayLastStreamID: HTTP2StreamID?

  init(handler: HTTP2StreamsHandler) { self.handler = handler }
}

/// An upstream HTTP/2 stream and the connection it belongs to. Used only on their event loop.
struct UpstreamStream: @unchecked Sendable {
  let stream: HTTP2UpstreamStream
  let connection: HTTP2Connection

  /// Whether `error` (nil: the stream closed) means the peer refused the stream without processing it:
  /// REFUSED_STREAM, or a stream above the last stream ID of the peer's GOAWAY (RFC 9113, 8.7). Such a
  /// request can be sent again, to any endpoint, whatever its method. Call on the stream's event loop.
  func wasRefused(by error: (any Error)?) -> Bool {
    if let closed = error as? NIOHTTP2Errors.StreamClosed, closed.errorCode == .refusedStream { return true }
    guard let last = connection.goAwayLastStreamID else { return false }
    // No ID: nothing of it was ever sent.
    guard let id = stream.id else { return true }
    return id > last
  }
}

/// Watches an upstream connection's GOAWAY frames.
final class GoAwayWatcher: ChannelInboundHandler, @unchecked Sendable {
  typealias InboundIn = HTTP2Frame
  typealias InboundOut = HTTP2Frame
  private let connection: HTTP2Connection
  private let onGoAway: (HTTP2StreamID, HTTP2ErrorCode) -> Void

  init(connection: HTTP2Connection, onGoAway: @escaping (HTTP2StreamID, HTTP2ErrorCode) -> Void) {
    self.connection = connection
    self.onGoAway = onGoAway
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let frame = unwrapInboundIn(data)
    if case .goAway(let lastStreamID, let code, _) = frame.payload {
      connection.goAwayLastStreamID = min(connection.goAwayLastStreamID ?? lastStreamID, lastStreamID)
      onGoAway(lastStreamID, code)
    }
    context.fireChannelRead(data)
  }
}

extension ProxyError {
  /// The error for a failed connection attempt: a name that resolves to no address is an unknown
  /// authority (503, nothing to retry); anything else a connection failure (502, another endpoint may do).
  static func connecting(to address: Authority, failedWith error: any Error) -> ProxyError {
    if let connection = error as? NIOConnectionError, connection.connectionErrors.isEmpty,
      connection.dnsAError != nil || connection.dnsAAAAError != nil
    {
      return ProxyError(.unknownAuthority, "\(address.host) does not resolve to any address")
    }
    return ProxyError(.connectFailed, "connecting to \(address) failed: \(error)")
  }
}

extension ChannelPipeline.SynchronousOperations {
  /// The HTTP/1.1 client handler of an upstream connection (``HTTP1ClientCodec``): the proxy's own request
  /// encoder and response decoder. Bytes that follow a `101 Switching Protocols` in the same read belong to the
  /// upgraded protocol: handed on when the codec is removed, not dropped. No outbound header validation: every
  /// header the proxy sends was parsed and validated on the way in (``HTTP1RequestDecoder``, `HTTP2HeaderValidator`) or is the
  /// proxy's own; NIO's validator cost about 4,000 instructions a request for nothing
  /// (Benchmarks/load/instructions.sh).
  func addProxyHTTPClientHandlers() throws {
    try addHandler(HTTP1ClientCodec())
  }
}
