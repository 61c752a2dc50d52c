import NIOCore
import NIOHTTP1

/// Time limits of a downstream HTTP/1.1 connection, in two handlers that share one state:
///
/// - **Header read timeout.** From the first byte of a request until its whole head has been parsed: a client
///   that trickles a header (slowloris) gets `408 Request Timeout` and the connection closes, so a few hundred
///   such clients cannot hold the proxy's connections forever.
/// - **Idle timeout.** A connection with no request in progress and no bytes for this long is closed.
///
/// ``HTTP1TimeoutBytesHandler`` sits before the HTTP decoder and sees raw bytes (the first byte of a request
/// starts the header clock); ``HTTP1TimeoutPartsHandler`` sits after it and sees where requests begin and
/// responses end. Both run on the connection's event loop.
final class HTTP1TimeoutBytesHandler: ChannelDuplexHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer
  typealias InboundOut = ByteBuffer
  typealias OutboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer

  private let headerTimeout: TimeAmount
  private let idleTimeout: TimeAmount
  private let onTimeout: @Sendable (ProxyError.Reason) -> Void
  /// No request head is being read: the previous request (if any) was read whole.
  fileprivate var awaitingHead = true
  /// A response is being written (from the head read until its end is written).
  fileprivate var responding = false
  private var headerTimer: Scheduled<Void>?
  private var idleTimer: Scheduled<Void>?
  private var context: ChannelHandlerContext?

  init(headerTimeout: TimeAmount, idleTimeout: TimeAmount, onTimeout: @escaping @Sendable (ProxyError.Reason) -> Void) {
    self.headerTimeout = headerTimeout
    self.idleTimeout = idleTimeout
    self.onTimeout = onTimeout
  }

  func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
    armIdle()
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    cancelTimers()
    self.context = nil
  }

  func channelInactive(context: ChannelHandlerContext) {
    cancelTimers()
    context.fireChannelInactive()
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    idleTimer?.cancel()
    idleTimer = nil
    if awaitingHead, headerTimer == nil, unwrapInboundIn(data).readableBytes > 0 {
      let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
      headerTimer = context.eventLoop.scheduleTask(in: headerTimeout) { loopBound.value.headerTimedOut() }
    }
    context.fireChannelRead(data)
  }

  /// The head of a request was parsed.
  fileprivate func headReceived() {
    awaitingHead = false
    responding = true
    headerTimer?.cancel()
    headerTimer = nil
  }

  /// The request was read to its end: bytes after it start the next request.
  fileprivate func requestEnded() { awaitingHead = true }

  /// The response was written to its end.
  fileprivate func responseEnded() {
    responding = false
    armIdle()
  }

  private func armIdle() {
    guard let context, idleTimer == nil, !responding else { return }
    let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
    idleTimer = context.eventLoop.scheduleTask(in: idleTimeout) { loopBound.value.idleTimedOut() }
  }

  private func cancelTimers() {
    headerTimer?.cancel()
    headerTimer = nil
    idleTimer?.cancel()
    idleTimer = nil
  }

  private func headerTimedOut() {
    headerTimer = nil
    guard let context, awaitingHead, context.channel.isActive else { return }
    onTimeout(.headerTimeout)
    // Written below the HTTP encoder: no request was parsed, so there is no HTTP-level response to answer.
    let seconds = headerTimeout.nanoseconds / 1_000_000_000
    let body = "request header timeout: no complete request head within \(seconds) s\n"
    let response =
      "HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-type: text/plain; charset=utf-8\r\n"
      + "\(ProxyError.headerName): \(ProxyError.Reason.headerTimeout.rawValue)\r\ncontent-length: \(body.utf8.count)\r\n\r\n"
      + body
    context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: response))).whenComplete { _ in
      context.close(promise: nil)
    }
  }

  private func idleTimedOut() {
    idleTimer = nil
    guard let context, awaitingHead, !responding, headerTimer == nil else { return }
    context.close(promise: nil)
  }
}

/// The half of ``HTTP1TimeoutBytesHandler`` that sees parsed requests and written responses.
final class HTTP1TimeoutPartsHandler: ChannelDuplexHandler, RemovableChannelHandler {
  typealias InboundIn = HTTPServerRequestPart
  typealias InboundOut = HTTPServerRequestPart
  typealias OutboundIn = HTTPServerResponsePart
  typealias OutboundOut = HTTPServerResponsePart

  private let bytes: HTTP1TimeoutBytesHandler

  init(bytes: HTTP1TimeoutBytesHandler) { self.bytes = bytes }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    switch unwrapInboundIn(data) {
    case .head: bytes.headReceived()
    case .end: bytes.requestEnded()
    case .body: break
    }
    context.fireChannelRead(data)
  }

  func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
    if case .end = unwrapOutboundIn(data) { bytes.responseEnded() }
    context.write(data, promise: promise)
  }
}
