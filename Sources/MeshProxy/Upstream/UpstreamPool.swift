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
  private var http2: [HTTP2Key: HTTP2Entry] = [:]

  /// A pooled HTTP/2 connection, connecting or connected.
  private final class HTTP2Entry {
    let future: EventLoopFuture<HTTP2Connection>
    var connection: HTTP2Connection?
    init(_ future: EventLoopFuture<HTTP2Connection>) { self.future = future }
  }
  private var idle: [Authority: [any Channel]] = [:]

  init(
    eventLoop: any EventLoop, tls: MeshTLS?, configuration: ProxyConfiguration, metrics: ProxyMetrics, logger: Logger
  ) {
    self.logger = logger
    self.eventLoop = eventLoop
    self.tls = tls
    self.configuration = configuration
    self.metrics = metrics
  }

  /// A new HTTP/2 stream to `address`, as an HTTP/1-parts channel (client side); mutual TLS expecting
  /// `identity` when given. The stream comes with a test telling whether a failure means the peer never
  /// processed it (see ``UpstreamStream``).
  func openHTTP2Stream(
    to address: Authority, identity: IdentityName?, isRetry: Bool = false
  ) -> EventLoopFuture<UpstreamStream> {
    eventLoop.preconditionInEventLoop()
    let key = HTTP2Key(address: address, identity: identity)
    let entry: HTTP2Entry
    if let existing = http2[key] {
      entry = existing
    } else {
      entry = HTTP2Entry(connectHTTP2(key))
      http2[key] = entry
      entry.future.whenComplete { result in
        switch result {
        case .success(let connection): entry.connection = connection
        case .failure: if self.http2[key] === entry { self.http2[key] = nil }
        }
      }
    }
    let connection = entry.future
    return connection.flatMap { connection in
      let promise = self.eventLoop.makePromise(of: (any Channel).self)
      connection.multiplexer.createStreamChannel(promise: promise) { stream in
        stream.eventLoop.makeCompletedFuture {
          try stream.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTP1ClientCodec(httpProtocol: .http))
        }
      }
      return promise.futureResult.map { UpstreamStream(channel: $0, connection: connection) }.flatMapErrorThrowing {
        error in
        // The connection is going or gone (GOAWAY, closed) and nothing was sent: forget it, and try once
        // more on a fresh connection before giving up.
        self.evict(key, connection)
        throw ProxyError(.connectFailed, "opening a stream to \(key.address) failed: \(error)")
      }.flatMapError { error in
        isRetry
          ? self.eventLoop.makeFailedFuture(error)
          : self.openHTTP2Stream(to: address, identity: identity, isRetry: true)
      }
    }
  }

  /// Forgets the connection for `key` if it is still `connection` (a newer one is left alone).
  private func evict(_ key: HTTP2Key, _ connection: HTTP2Connection) {
    if let current = http2[key], current.connection === connection { http2[key] = nil }
  }

  private func connectHTTP2(_ key: HTTP2Key) -> EventLoopFuture<HTTP2Connection> {
    let tls = self.tls
    let metrics = self.metrics
    return ClientBootstrap(group: eventLoop)
      .connectTimeout(TimeAmount(configuration.connectTimeout))
      .channelOption(.socketOption(.tcp_nodelay), value: 1)
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHandler(
            ConnectionMetricsHandler(metrics: metrics.tcp(direction: "outbound", peer: "dst", tls: key.identity != nil)))
        }
      }
      .connect(host: key.address.host, port: key.address.port)
      .flatMapErrorThrowing { error in
        throw ProxyError.connecting(to: key.address, failedWith: error)
      }
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
          let multiplexer = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
            mode: .client,
            connectionConfiguration: .init(),
            streamConfiguration: .init()
          ) { stream in stream.eventLoop.makeSucceededVoidFuture() }
          let connection = HTTP2Connection(multiplexer: multiplexer)
          try channel.pipeline.syncOperations.addHandler(
            GoAwayWatcher(connection: connection) { lastStreamID, code in
              self.logger.debug(
                "upstream sent GOAWAY; new requests get a new connection",
                metadata: ["peer": "\(key.address)", "last_stream_id": "\(lastStreamID)", "code": "\(code)"])
              self.evict(key, connection)
            })
          try channel.pipeline.syncOperations.addHandler(
            ConnectionErrorLogger(logger: self.logger, role: "upstream HTTP/2 connection to \(key.address)"))
          channel.closeFuture.whenComplete { _ in
            self.eventLoop.execute { self.evict(key, connection) }
          }
          return connection
        }
      }
  }

  /// An HTTP/1.1 connection to `address`: an idle one if there is one, else a new one.
  func http1Connection(to address: Authority) -> EventLoopFuture<any Channel> {
    eventLoop.preconditionInEventLoop()
    while var list = idle[address], let channel = list.popLast() {
      idle[address] = list
      if channel.isActive { return eventLoop.makeSucceededFuture(channel) }
    }
    let metrics = self.metrics
    return ClientBootstrap(group: eventLoop)
      .connectTimeout(TimeAmount(configuration.connectTimeout))
      .channelOption(.socketOption(.tcp_nodelay), value: 1)
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHandler(
            ConnectionMetricsHandler(metrics: metrics.tcp(direction: "outbound", peer: "dst", tls: false)))
          try channel.pipeline.syncOperations.addHTTPClientHandlers()
        }
      }
      .connect(host: address.host, port: address.port)
      .flatMapErrorThrowing { error in
        throw ProxyError.connecting(to: address, failedWith: error)
      }
  }

  /// Returns a finished HTTP/1.1 connection for reuse.
  func releaseHTTP1(_ channel: any Channel, to address: Authority) {
    eventLoop.preconditionInEventLoop()
    guard channel.isActive else { return }
    var list = idle[address] ?? []
    if list.count >= configuration.maxIdleConnectionsPerEndpoint {
      channel.close(promise: nil)
      return
    }
    list.append(channel)
    idle[address] = list
    channel.closeFuture.whenComplete { [self] _ in
      self.eventLoop.execute {
        self.idle[address]?.removeAll { $0 === channel }
      }
    }
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

  typealias InboundIn = Never
  private let logger: Logger
  private let role: String

  init(logger: Logger, role: String) {
    self.logger = logger
    self.role = role
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
    if Self.isUnrecoverable(originalError) { context.close(promise: nil) }
  }
}

/// One upstream HTTP/2 connection as the pool keeps it; touched only on its event loop.
final class HTTP2Connection: @unchecked Sendable {
  let multiplexer: NIOHTTP2Handler.StreamMultiplexer
  /// Set when the peer sent GOAWAY: streams above it were never processed.
  var goAwayLastStreamID: HTTP2StreamID?

  init(multiplexer: NIOHTTP2Handler.StreamMultiplexer) { self.multiplexer = multiplexer }
}

/// An upstream HTTP/2 stream and the connection it belongs to.
struct UpstreamStream: Sendable {
  let channel: any Channel
  let connection: HTTP2Connection

  /// Whether `error` (nil: the stream closed) means the peer refused the stream without processing it:
  /// REFUSED_STREAM, or a stream above the last stream ID of the peer's GOAWAY (RFC 9113, 8.7). Such a
  /// request can be sent again, to any endpoint, whatever its method. Call on the stream's event loop.
  func wasRefused(by error: (any Error)?) -> Bool {
    if let closed = error as? NIOHTTP2Errors.StreamClosed, closed.errorCode == .refusedStream { return true }
    guard let last = connection.goAwayLastStreamID else { return false }
    guard let id = try? channel.syncOptions?.getOption(HTTP2StreamChannelOptions.streamID) else { return true }
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
