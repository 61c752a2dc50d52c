import Logging
import MeshCore
import MeshTLS
import NIOCore
import NIOHTTP1
import NIOHTTP2

/// Looks at a connection's first bytes and builds the rest of its pipeline: mesh TLS when they are a TLS
/// handshake (and TLS is offered here), then HTTP/2 when they are the HTTP/2 preface, else HTTP/1.1.
final class ProtocolDetector: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer
  typealias InboundOut = ByteBuffer

  struct Setup: Sendable {
    var router: any RequestRouter
    var metrics: ProxyMetrics
    var tls: MeshTLS?
    var requireClientCertificate: Bool
    var inFlight: InFlightRequests
    var tap: TapHub
    var logger: Logger
    /// HTTP/1.1: how long a request's head may take from its first byte (slowloris guard).
    var headerReadTimeout: Duration = .seconds(10)
    /// HTTP/1.1: how long a connection may sit with no request before it is closed.
    var idleTimeout: Duration = .seconds(300)
    var direction: String = ""
  }

  private static let preface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
  private let setup: Setup
  /// Set after TLS: the verified peer.
  private let peerIdentity: IdentityName?
  private let afterTLS: Bool
  private var buffered: ByteBuffer?

  init(setup: Setup, afterTLS: Bool = false, peerIdentity: IdentityName? = nil) {
    self.setup = setup
    self.afterTLS = afterTLS
    self.peerIdentity = peerIdentity
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    var incoming = unwrapInboundIn(data)
    if buffered == nil {
      buffered = incoming
    } else {
      buffered!.writeBuffer(&incoming)
    }
    guard let bytes = buffered, bytes.readableBytes > 0 else { return }
    let first = bytes.getInteger(at: bytes.readerIndex, as: UInt8.self)

    do {
      if !afterTLS, first == 0x16, let tls = setup.tls {
        try startTLS(tls, context: context)
        return
      }
      let count = min(bytes.readableBytes, Self.preface.count)
      let prefix = bytes.getBytes(at: bytes.readerIndex, length: count) ?? []
      if prefix != Array(Self.preface.prefix(count)) {
        try configureHTTP1(context: context)
      } else if count == Self.preface.count {
        try configureHTTP2(context: context)
      }
      // Otherwise: a prefix of the preface so far; wait for more bytes.
    } catch {
      context.fireErrorCaught(error)
      context.close(promise: nil)
    }
  }

  /// Shutting down before the protocol is known: nothing is in flight on this connection, so close it.
  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if event is ChannelShouldQuiesceEvent {
      context.close(promise: nil)
      return
    }
    context.fireUserInboundEventTriggered(event)
  }

  private func startTLS(_ tls: MeshTLS, context: ChannelHandlerContext) throws {
    let session = try tls.addServerHandlers(
      to: context.pipeline.syncOperations, requireClientCertificate: setup.requireClientCertificate)
    // The TLS handlers went in at the end: move this detector behind them by replacing it.
    let setup = self.setup
    let channel = context.channel
    session.whenComplete { result in
      switch result {
      case .success(let session):
        // Decrypted bytes start flowing after the handshake; the second detector sees them.
        try? channel.pipeline.syncOperations.addHandler(
          ProtocolDetector(setup: setup, afterTLS: true, peerIdentity: session.peerIdentity))
      case .failure:
        channel.close(promise: nil)
      }
    }
    // Hand the ClientHello to the TLS handler, which now follows this one, and step aside.
    forwardBufferedAndRemove(context: context)
  }

  private func configureHTTP1(context: ChannelHandlerContext) throws {
    let sync = context.pipeline.syncOperations
    let metrics = setup.metrics
    let direction = setup.direction
    let timeouts = HTTP1TimeoutBytesHandler(
      headerTimeout: TimeAmount(setup.headerReadTimeout), idleTimeout: TimeAmount(setup.idleTimeout)
    ) { reason in metrics.proxyError(direction: direction, reason: reason) }
    try sync.addHandler(timeouts, position: .after(self))
    try sync.configureHTTPServerPipeline(position: .after(timeouts), withErrorHandling: true)
    try sync.addHandler(HTTP1TimeoutPartsHandler(bytes: timeouts))
    try sync.addHandler(
      ProxyRequestHandler(
        router: setup.router, metrics: setup.metrics, peerIdentity: peerIdentity, isHTTP2: false,
        inFlight: setup.inFlight, tap: setup.tap, logger: setup.logger))
    forwardBufferedAndRemove(context: context)
  }

  private func configureHTTP2(context: ChannelHandlerContext) throws {
    let setup = self.setup
    let peerIdentity = self.peerIdentity
    let streams = HTTP2StreamTracker(eventLoop: context.eventLoop)
    _ = try context.pipeline.syncOperations.configureHTTP2Pipeline(
      mode: .server,
      connectionConfiguration: .proxy(meshPeer: peerIdentity != nil),
      streamConfiguration: .proxy(meshPeer: peerIdentity != nil),
      streamDelegate: streams,
      position: .last
    ) { stream in
      stream.eventLoop.makeCompletedFuture {
        try stream.pipeline.syncOperations.addHandler(TrailersOnlyCoalescer())
        try stream.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTP1ServerCodec())
        try stream.pipeline.syncOperations.addHandler(
          ProxyRequestHandler(
            router: setup.router, metrics: setup.metrics, peerIdentity: peerIdentity, isHTTP2: true,
            inFlight: setup.inFlight, tap: setup.tap, logger: setup.logger))
      }
    }
    try context.pipeline.syncOperations.addHandler(GracefulHTTP2Shutdown(streams: streams), position: .last)
    try context.pipeline.syncOperations.addHandler(
      ConnectionErrorLogger(logger: setup.logger, role: "downstream HTTP/2 connection"), position: .last)
    forwardBufferedAndRemove(context: context)
  }

  private func forwardBufferedAndRemove(context: ChannelHandlerContext) {
    let bytes = buffered.take()
    if let bytes { context.fireChannelRead(wrapInboundOut(bytes)) }
    context.fireChannelReadComplete()
    context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
  }
}

extension Optional {
  fileprivate mutating func take() -> Wrapped? {
    defer { self = nil }
    return self
  }
}

extension NIOHTTP2Handler.ConnectionConfiguration {
  /// HTTP/2 connection settings of the proxy's connections, both directions.
  ///
  /// - Recently reset streams: after a stream is reset, frames the peer had already sent on it keep arriving;
  ///   swift-nio-http2 ignores them only for the last 32 streams it reset and treats any other as a
  ///   connection error (GOAWAY, STREAM_CLOSED). A proxy cancels many streams at once when a flood of clients
  ///   gives up (5,000 streams from h2load, a deploy that kills a client fleet): with 32 the connection
  ///   between two proxies died, and, kept in the pool, took every later request with it. The list holds as
  ///   many as a connection can have open several times over.
  /// - Glitches (stream errors over a connection's whole life): a mesh connection lives for days and carries
  ///   every client's cancellations; the same budget as the stream-error rate applies.
  static func proxy(meshPeer: Bool) -> Self {
    var configuration = Self()
    configuration.maximumRecentlyResetStreams = meshPeer ? 8192 : 2048
    configuration.maximumConnectionGlitches = meshPeer ? 100_000 : 10_000
    return configuration
  }
}

extension NIOHTTP2Handler.StreamConfiguration {
  /// HTTP/2 stream settings of the proxy's connections. swift-nio-http2 closes a connection whose peer sends
  /// more than 200 RST_STREAM frames (or causes 200 stream errors) in 30 s, a guard against the rapid-reset
  /// attack. A connection between proxies carries the requests of many clients, and their cancellations are
  /// ordinary (a gRPC deadline, a closed browser tab, a load generator that stops): with the default, a few
  /// hundred of them closed the connection for every client on it. A mesh peer (mutual TLS) gets a budget
  /// of 100,000 per 30 s, anything else 10,000 per 30 s: real traffic stays far below, a reset flood of
  /// thousands per second is still cut off.
  static func proxy(meshPeer: Bool) -> Self {
    var configuration = Self()
    let budget = meshPeer ? 100_000 : 10_000
    configuration.streamResetFrameRateLimit.maximumCount = budget
    configuration.streamErrorRateLimit.maximumCount = budget
    return configuration
  }
}
