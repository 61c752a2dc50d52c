import NIOCore
import NIOHTTP1

/// Time limits of a downstream HTTP/1.1 connection:
///
/// - **Header read timeout.** From the first byte of a request until its whole head has been parsed: a client
///   that trickles a header (slowloris) gets `408 Request Timeout` and the connection closes, so a few hundred
///   such clients cannot hold the proxy's connections forever.
/// - **Idle timeout.** A connection with no request in progress and no bytes for this long is closed.
///
/// ``HTTP1TimeoutBytesHandler`` sits before the HTTP decoder and sees raw bytes (the first byte of a request
/// starts the header clock); the ``ProxyRequestHandler`` behind the decoder tells it where requests begin and
/// end and where responses end (``headReceived()``, ``requestEnded()``, ``responseEnded()``), rather than a
/// handler of its own that every request part would cross. All run on the connection's event loop.
///
/// An inbound handler only: the response's writes, flushes and reads pass it by (it writes a 408 through its
/// context, below the HTTP encoder).
final class HTTP1TimeoutBytesHandler: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer
  typealias InboundOut = ByteBuffer
  typealias OutboundOut = ByteBuffer

  private let headerTimeout: TimeAmount
  private let idleTimeout: TimeAmount
  private let onTimeout: @Sendable (ProxyError.Reason) -> Void
  /// No request head is being read: the previous request (if any) was read whole.
  private var awaitingHead = true
  /// A response is being written (from the head read until its end is written).
  private var responding = false
  /// When the first byte of the request head being read arrived.
  private var headStartedAt: NIODeadline?
  /// Since when the connection has had nothing in progress.
  private var idleSince: NIODeadline?
  /// One timer per connection, not one per request: requests only note the time, and the timer, when it
  /// fires, checks the clocks and sets itself for the next moment one of them could run out (as Netty's
  /// `IdleStateHandler`). Scheduling and cancelling two timers per request cost six allocations.
  private var timer: Scheduled<Void>?
  private var timerDeadline: NIODeadline = .distantFuture
  private var context: ChannelHandlerContext?

  init(headerTimeout: TimeAmount, idleTimeout: TimeAmount, onTimeout: @escaping @Sendable (ProxyError.Reason) -> Void) {
    self.headerTimeout = headerTimeout
    self.idleTimeout = idleTimeout
    self.onTimeout = onTimeout
  }

  func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
    let now = context.eventLoop.now
    idleSince = now
    schedule(at: now + idleTimeout)
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    cancelTimer()
    self.context = nil
  }

  func channelInactive(context: ChannelHandlerContext) {
    cancelTimer()
    context.fireChannelInactive()
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    idleSince = nil
    if awaitingHead, headStartedAt == nil, unwrapInboundIn(data).readableBytes > 0 {
      let now = context.eventLoop.now
      headStartedAt = now
      // The timer may be set for the idle clock, later than this head may take.
      if timerDeadline > now + headerTimeout { schedule(at: now + headerTimeout) }
    }
    context.fireChannelRead(data)
  }

  /// The head of a request was parsed.
  func headReceived() {
    awaitingHead = false
    responding = true
    headStartedAt = nil
  }

  /// The request was read to its end: bytes after it start the next request.
  func requestEnded() { awaitingHead = true }

  /// The response is being written to its end.
  func responseEnded() {
    responding = false
    if idleSince == nil, let context { idleSince = context.eventLoop.now }
  }

  /// Sets the timer for `deadline`, unless it is set already for then or earlier.
  private func schedule(at deadline: NIODeadline) {
    guard let context else { return }
    if timer != nil {
      guard deadline < timerDeadline else { return }
      timer?.cancel()
    }
    timerDeadline = deadline
    let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
    timer = context.eventLoop.scheduleTask(deadline: deadline) { loopBound.value.timerFired() }
  }

  private func cancelTimer() {
    timer?.cancel()
    timer = nil
    timerDeadline = .distantFuture
  }

  /// Checks both clocks; sets the timer again for the first moment one of them could run out.
  private func timerFired() {
    timer = nil
    timerDeadline = .distantFuture
    guard let context, context.channel.isActive else { return }
    let now = context.eventLoop.now
    // Whatever happens next, the timer is never off for longer than the shorter timeout.
    var next = now + min(headerTimeout, idleTimeout)
    if awaitingHead, let started = headStartedAt {
      if now >= started + headerTimeout { return headerTimedOut() }
      next = min(next, started + headerTimeout)
    } else if awaitingHead, !responding, let since = idleSince {
      if now >= since + idleTimeout { return idleTimedOut() }
      next = min(next, since + idleTimeout)
    }
    schedule(at: next)
  }

  private func headerTimedOut() {
    guard let context else { return }
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
    context?.close(promise: nil)
  }
}
