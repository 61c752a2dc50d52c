import Logging
import MeshCore
import MeshTLS
import NIOCore
import NIOHTTP1
import NIOHTTP2

/// Looks at a connection's first bytes and builds the rest of its pipeline: mesh TLS when they are a TLS
/// handshake (and TLS is offered here), then HTTP/2 when they are the HTTP/2 preface, HTTP/1.1 when they are
/// an HTTP/1 request line, and otherwise (or when nothing tells within the detect timeout) opaque TCP, relayed
/// byte for byte to where the router sends it. After mutual TLS, an `OpaqueHeader` from a peer proxy makes the
/// connection opaque at once; so does an opaque port (no detection: the server may speak first).
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
    /// How long detection waits for bytes that tell the protocol.
    var detectTimeout: Duration = .seconds(10)
    var direction: String = ""
  }

  private enum State {
    /// Asking the router whether the original destination is an opaque port (bytes are held meanwhile).
    case askingOpaque
    case detecting
    /// Opaque: waiting for the upstream connection (bytes are held, reading paused).
    case connectingOpaque
    case done
  }

  private static let preface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
  /// Bytes detection looks at before it calls a connection that is still a plausible HTTP/1 request line HTTP.
  private static let maximumDetectBytes = 16 * 1024
  private let setup: Setup
  /// Set after TLS: the verified peer.
  private let peerIdentity: IdentityName?
  private let afterTLS: Bool
  /// Where a redirected connection was going (transparent mode).
  private let originalDestination: Authority?
  private var buffered: ByteBuffer?
  private var state: State = .detecting
  private var inputClosed = false
  private var detectTimer: Scheduled<Void>?
  private var context: ChannelHandlerContext?

  init(setup: Setup, afterTLS: Bool = false, peerIdentity: IdentityName? = nil, originalDestination: Authority? = nil) {
    self.setup = setup
    self.afterTLS = afterTLS
    self.peerIdentity = peerIdentity
    self.originalDestination = originalDestination
  }

  /// Whether this connection may turn out opaque: it has somewhere to go without HTTP's authority.
  private var mayBeOpaque: Bool { originalDestination != nil || (afterTLS && peerIdentity != nil) }

  func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
    if context.channel.isActive { start(context: context) }
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    detectTimer?.cancel()
    detectTimer = nil
    self.context = nil
  }

  func channelActive(context: ChannelHandlerContext) {
    start(context: context)
    context.fireChannelActive()
  }

  private var started = false

  private func start(context: ChannelHandlerContext) {
    guard !started else { return }
    started = true
    if mayBeOpaque {
      // An opaque connection's client may send its last bytes and half-close at once; its FIN must not end
      // the connection before they are relayed. HTTP turns this off again.
      try? context.channel.syncOptions?.setOption(ChannelOptions.allowRemoteHalfClosure, value: true)
    }
    let timeout = setup.detectTimeout
    detectTimer = context.eventLoop.scheduleTask(in: TimeAmount(timeout)) { [weak self] in
      self?.detectTimedOut()
    }
    guard let original = originalDestination, !afterTLS else { return }
    state = .askingOpaque
    // Nothing is read while the answer is pending (bytes held here must stay bounded).
    try? context.channel.syncOptions?.setOption(ChannelOptions.autoRead, value: false)
    setup.router.isOpaque(original, on: context.eventLoop).whenComplete { [weak self] result in
      guard let self, let context = self.context, case .askingOpaque = self.state else { return }
      if case .success(true) = result {
        self.startOpaque(context: context, header: nil)
      } else {
        self.state = .detecting
        try? context.channel.syncOptions?.setOption(ChannelOptions.autoRead, value: true)
        self.detect(context: context)
      }
    }
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    var incoming = unwrapInboundIn(data)
    if buffered == nil {
      buffered = incoming
    } else {
      buffered!.writeBuffer(&incoming)
    }
    if case .detecting = state { detect(context: context) }
  }

  private func detect(context: ChannelHandlerContext) {
    guard let bytes = buffered, bytes.readableBytes > 0 else {
      if inputClosed { inputEndedBeforeProtocol(context: context) }
      return
    }
    let first = bytes.getInteger(at: bytes.readerIndex, as: UInt8.self)
    do {
      if !afterTLS, first == 0x16, let tls = setup.tls {
        try startTLS(tls, context: context)
        return
      }
      if afterTLS, peerIdentity != nil {
        switch OpaqueHeader.parse(bytes) {
        case .header(let header, let length):
          buffered!.moveReaderIndex(forwardBy: length)
          startOpaque(context: context, header: header)
          return
        case .incomplete:
          if inputClosed { inputEndedBeforeProtocol(context: context) }
          return
        case .invalid(let reason):
          refuseOpaque(context: context, error: ProxyError(.badAuthority, reason))
          return
        case .notHeader:
          break
        }
      }
      let count = min(bytes.readableBytes, Self.preface.count)
      if bytes.readableBytesView.prefix(count).elementsEqual(Self.preface.prefix(count)) {
        if count == Self.preface.count {
          try configureHTTP2(context: context)
        } else if inputClosed {
          inputEndedBeforeProtocol(context: context)
        }
        // Otherwise: a prefix of the preface so far; wait for more bytes.
        return
      }
      switch Self.http1RequestLine(bytes, limit: Self.maximumDetectBytes) {
      case .yes:
        try configureHTTP1(context: context)
      case .maybe:
        if inputClosed { inputEndedBeforeProtocol(context: context) }
      case .no:
        if mayBeOpaque {
          startOpaque(context: context, header: nil)
        } else {
          // Nowhere to send bytes that are not HTTP: the HTTP/1.1 parser answers them with 400.
          try configureHTTP1(context: context)
        }
      }
    } catch {
      context.fireErrorCaught(error)
      context.close(promise: nil)
    }
  }

  /// The client stopped sending before its bytes told the protocol: what it sent is opaque, if it can go
  /// somewhere; else the connection ends.
  private func inputEndedBeforeProtocol(context: ChannelHandlerContext) {
    if mayBeOpaque {
      startOpaque(context: context, header: nil)
    } else {
      context.close(promise: nil)
    }
  }

  private func detectTimedOut() {
    detectTimer = nil
    guard let context else { return }
    switch state {
    case .detecting, .askingOpaque:
      setup.metrics.detectTimeout(direction: setup.direction)
      if mayBeOpaque {
        setup.logger.debug(
          "protocol detection timed out: opaque TCP",
          metadata: ["original_destination": "\(originalDestination?.description ?? "-")"])
        startOpaque(context: context, header: nil)
      } else {
        context.close(promise: nil)
      }
    case .connectingOpaque, .done:
      break
    }
  }

  /// Shutting down before the protocol is known: nothing is in flight on this connection, so close it.
  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if event is ChannelShouldQuiesceEvent {
      context.close(promise: nil)
      return
    }
    if case ChannelEvent.inputClosed = event {
      inputClosed = true
      if case .detecting = state { detect(context: context) }
      return
    }
    context.fireUserInboundEventTriggered(event)
  }

  // MARK: Opaque TCP

  private func startOpaque(context: ChannelHandlerContext, header: OpaqueHeader?) {
    state = .connectingOpaque
    detectTimer?.cancel()
    detectTimer = nil
    try? context.channel.syncOptions?.setOption(ChannelOptions.allowRemoteHalfClosure, value: true)
    try? context.channel.syncOptions?.setOption(ChannelOptions.autoRead, value: false)
    let connection = OpaqueConnection(
      originalDestination: originalDestination, header: header, peerIdentity: peerIdentity)
    setup.router.openOpaque(connection, on: context.eventLoop).whenComplete { [weak self] result in
      guard let self, let context = self.context else {
        if case .success(let upstream) = result { upstream.close(promise: nil) }
        return
      }
      switch result {
      case .success(let upstream):
        self.relay(context: context, to: upstream)
      case .failure(let error):
        self.refuseOpaque(context: context, error: error)
      }
    }
  }

  private func relay(context: ChannelHandlerContext, to upstream: any Channel) {
    guard context.channel.isActive else {
      upstream.close(promise: nil)
      return
    }
    state = .done
    let (downstream, upstreamEnd) = ByteRelay.pair()
    do {
      try upstream.pipeline.syncOperations.addHandler(upstreamEnd)
      try context.pipeline.syncOperations.addHandler(downstream, position: .after(self))
    } catch {
      upstream.close(promise: nil)
      context.close(promise: nil)
      return
    }
    if let bytes = buffered.take(), bytes.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(bytes)) }
    context.fireChannelReadComplete()
    if inputClosed { context.fireUserInboundEventTriggered(ChannelEvent.inputClosed) }
    try? context.channel.syncOptions?.setOption(ChannelOptions.autoRead, value: true)
    context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
  }

  private func refuseOpaque(context: ChannelHandlerContext, error: any Error) {
    state = .done
    let reason = (error as? ProxyError)?.reason ?? .connectFailed
    setup.metrics.opaqueRefused(direction: setup.direction, reason: reason)
    setup.logger.warning(
      "opaque connection closed: it cannot be carried",
      metadata: [
        "direction": "\(setup.direction)", "original_destination": "\(originalDestination?.description ?? "-")",
        "client": "\(peerIdentity?.description ?? "-")", "error": "\(error)",
      ])
    context.close(promise: nil)
  }

  // MARK: HTTP/1 request line

  enum Verdict: Equatable { case yes, maybe, no }

  /// Whether `buffer` starts with an HTTP/1 request line (`METHOD SP target SP HTTP/1.x CRLF`): `maybe`
  /// while every byte so far could still begin one. A line still plausible after `limit` bytes is HTTP (a
  /// very long URL).
  static func http1RequestLine(_ buffer: ByteBuffer, limit: Int) -> Verdict {
    let view = buffer.readableBytesView
    var index = view.startIndex
    func atEnd() -> Verdict { view.count >= limit ? .yes : .maybe }
    // Method: one or more token characters.
    var methodLength = 0
    while index < view.endIndex, isTokenCharacter(view[index]) {
      index += 1
      methodLength += 1
      if methodLength > 32 { return .no }
    }
    if index == view.endIndex { return .maybe }
    guard methodLength > 0, view[index] == UInt8(ascii: " ") else { return .no }
    index += 1
    // Target: visible characters.
    var targetLength = 0
    while index < view.endIndex, view[index] > 0x20, view[index] < 0x7F {
      index += 1
      targetLength += 1
    }
    if index == view.endIndex { return atEnd() }
    guard targetLength > 0, view[index] == UInt8(ascii: " ") else { return .no }
    index += 1
    for expected in Self.http1Version {
      if index == view.endIndex { return .maybe }
      guard view[index] == expected else { return .no }
      index += 1
    }
    if index == view.endIndex { return .maybe }
    guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(view[index]) else { return .no }
    index += 1
    if index == view.endIndex { return .maybe }
    if view[index] == UInt8(ascii: "\n") { return .yes }
    guard view[index] == UInt8(ascii: "\r") else { return .no }
    index += 1
    if index == view.endIndex { return .maybe }
    return view[index] == UInt8(ascii: "\n") ? .yes : .no
  }

  private static let http1Version: [UInt8] = Array("HTTP/1.".utf8)
  /// The characters besides letters and digits a method (an RFC 9110 token) may hold.
  private static let tokenSymbols: [UInt8] = Array("!#$%&'*+-.^_`|~".utf8)

  private static func isTokenCharacter(_ byte: UInt8) -> Bool {
    switch byte {
    case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
      true
    default:
      tokenSymbols.contains(byte)
    }
  }

  private func startTLS(_ tls: MeshTLS, context: ChannelHandlerContext) throws {
    let session = try tls.addServerHandlers(
      to: context.pipeline.syncOperations, requireClientCertificate: setup.requireClientCertificate)
    // The TLS handlers went in at the end: move this detector behind them by replacing it.
    let setup = self.setup
    let original = originalDestination
    let channel = context.channel
    state = .done
    session.whenComplete { result in
      switch result {
      case .success(let session):
        // Decrypted bytes start flowing after the handshake; the second detector sees them.
        try? channel.pipeline.syncOperations.addHandler(
          ProtocolDetector(
            setup: setup, afterTLS: true, peerIdentity: session.peerIdentity, originalDestination: original))
      case .failure:
        channel.close(promise: nil)
      }
    }
    // Hand the ClientHello to the TLS handler, which now follows this one, and step aside.
    forwardBufferedAndRemove(context: context)
  }

  /// Leaves detection for an HTTP pipeline: HTTP connections close on FIN.
  private func becomeHTTP(context: ChannelHandlerContext) {
    state = .done
    detectTimer?.cancel()
    detectTimer = nil
    if mayBeOpaque {
      try? context.channel.syncOptions?.setOption(ChannelOptions.allowRemoteHalfClosure, value: false)
    }
  }

  private func configureHTTP1(context: ChannelHandlerContext) throws {
    becomeHTTP(context: context)
    let sync = context.pipeline.syncOperations
    let metrics = setup.metrics
    let direction = setup.direction
    let timeouts = HTTP1TimeoutBytesHandler(
      headerTimeout: TimeAmount(setup.headerReadTimeout), idleTimeout: TimeAmount(setup.idleTimeout)
    ) { reason in metrics.proxyError(direction: direction, reason: reason) }
    // The proxy's HTTP/1.1 server codec (``HTTP1ServerCodec``: request decoder, response encoder and
    // pipelining in one handler). No outbound header validation: what the proxy writes are headers it parsed
    // and validated from its upstream (``HTTP1ClientCodec``, or `HTTP2HeaderValidator`) and its own
    // (`HTTPHeaderRules`). No `HTTPServerProtocolErrorHandler` either: `ProxyRequestHandler` answers a request
    // the parser refuses with 400 itself (it knows whether a response is under way), one handler fewer for
    // every response part.
    let codec = HTTP1ServerCodec()
    let handler = ProxyRequestHandler(
      router: setup.router, metrics: setup.metrics, peerIdentity: peerIdentity, isHTTP2: false,
      inFlight: setup.inFlight, tap: setup.tap, logger: setup.logger, originalDestination: originalDestination,
      timeouts: timeouts)
    try sync.addHandlers([timeouts, codec], position: .after(self))
    try sync.addHandler(handler, position: .after(codec))
    // Side by side: request and response parts pass between the two directly.
    ProxyRequestHandler.pair(handler, with: codec)
    forwardBufferedAndRemove(context: context)
  }

  /// HTTP/2: swift-nio-http2's connection handler without its stream multiplexer, and the proxy's own stream
  /// handling behind it (``HTTP2StreamsHandler``): each stream the client opens is an ``HTTP2DownstreamStream``
  /// object with a ``ProxyRequestHandler``, not a child channel with a pipeline of its own.
  private func configureHTTP2(context: ChannelHandlerContext) throws {
    becomeHTTP(context: context)
    let setup = self.setup
    let original = originalDestination
    let peerIdentity = self.peerIdentity
    let meshPeer = peerIdentity != nil
    let tracker = HTTP2StreamTracker()
    let cache = DownstreamConnectionCache()
    let eventLoop = context.eventLoop
    let takesOutMeshFields = setup.router.takesOutMeshFieldsOnArrival
    let streams = HTTP2StreamsHandler(server: tracker) { connection, _ in
      let stream = HTTP2DownstreamStream(
        connection: connection, eventLoop: eventLoop, takingOutMeshFields: takesOutMeshFields)
      let handler = ProxyRequestHandler(
        router: setup.router, metrics: setup.metrics, peerIdentity: peerIdentity, isHTTP2: true,
        inFlight: setup.inFlight, tap: setup.tap, logger: setup.logger, originalDestination: original,
        connection: cache)
      handler.attach(to: stream)
      return stream
    }
    let sync = context.pipeline.syncOperations
    if meshPeer && HTTP2ConnectionHandler.onMeshHops {
      try sync.addHandler(
        HTTP2ConnectionHandler(mode: .server, delegate: streams, configuration: .meshHop), position: .last)
    } else {
      try sync.addHandler(
        NIOHTTP2Handler(
          mode: .server, frameDelegate: streams, connectionConfiguration: .proxy(meshPeer: meshPeer),
          streamConfiguration: .proxy(meshPeer: meshPeer)),
        position: .last)
    }
    try sync.addHandler(streams, position: .last)
    try sync.addHandler(GracefulHTTP2Shutdown(streams: tracker), position: .last)
    try sync.addHandler(
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
  /// - Header blocks: validated as they come in by ``HTTP2HeaderValidator``, first in every stream's pipeline,
  ///   instead of by swift-nio-http2, which would validate the blocks the proxy sends too (see there).
  /// - Content length: a received stream's DATA is held to its `content-length` by the stream's codec state
  ///   (``HTTP2BodyLength``), instead of by swift-nio-http2, which checks the streams the proxy sends too.
  /// - HPACK dynamic table, between two proxies only: ``meshHeaderTableSize`` (see there).
  static func proxy(meshPeer: Bool) -> Self {
    var configuration = Self()
    configuration.maximumRecentlyResetStreams = meshPeer ? 8192 : 2048
    configuration.maximumConnectionGlitches = meshPeer ? 100_000 : 10_000
    configuration.headerBlockValidation = .disabled
    configuration.contentLengthValidation = .disabled
    if meshPeer {
      configuration.initialSettings.append(HTTP2Setting(parameter: .headerTableSize, value: meshHeaderTableSize))
    }
    return configuration
  }

  /// The HPACK dynamic table a proxy lets its mesh peer fill (SETTINGS_HEADER_TABLE_SIZE; the default is 4,096
  /// bytes). swift-nio-hpack's encoder looks for every field it sends by scanning its whole dynamic table, and
  /// a proxy's table fills with fields that change, such as one `date` a second: after a minute a response's
  /// fields were compared with about 60 entries each, 8,200 instructions a response on the server proxy.
  /// With 1,024 bytes the fields that repeat still fit, with room for the ones that change (about 15
  /// entries), and a response costs 6,800 instructions less (`Benchmarks/load/instructions.sh`, a minute
  /// warm). Both ends of a mesh connection are this proxy, so each side's setting bounds the other's encoder;
  /// an application or client that is not a proxy keeps the default table, since its encoder may not scan.
  static let meshHeaderTableSize = 1024
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
