import NIOCore

/// One end of a byte relay between two channels on the same event loop: what one reads, the other writes.
/// Used once a connection stops being HTTP (an upgrade answered with `101 Switching Protocols`), and for any
/// stream of bytes the proxy carries without parsing it.
///
/// - Back-pressure: a side reads only while its partner's channel is writable; when the partner becomes
///   writable again, a read held back is issued.
/// - Half-close: when one side's peer stops sending (`inputClosed`, with `allowRemoteHalfClosure` on), the
///   other side's output is shut down and the opposite direction goes on; the relay ends when both
///   directions have ended or either channel closes, and then both are closed.
/// - Shutdown: a proxy that quiesces closes relayed connections (their protocol has no way to say "finish
///   and go"); callers that want a grace period give it before.
///
/// Both ends must be on one event loop; every method runs on it.
final class ByteRelay: ChannelDuplexHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer
  typealias OutboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer

  private var partner: ByteRelay?
  private var context: ChannelHandlerContext?
  private var pendingRead = false
  private var inputEnded = false
  private var outputEnded = false
  /// Called once, when this side's channel has closed.
  private let onClose: (() -> Void)?

  private init(onClose: (() -> Void)?) { self.onClose = onClose }

  /// Two ends joined to each other.
  static func pair(onFirstClose: (() -> Void)? = nil, onSecondClose: (() -> Void)? = nil) -> (ByteRelay, ByteRelay) {
    let first = ByteRelay(onClose: onFirstClose)
    let second = ByteRelay(onClose: onSecondClose)
    first.partner = second
    second.partner = first
    return (first, second)
  }

  func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
    // Half-closure lets one direction end while the other goes on (a client that sends its last bytes and
    // waits for the answer). A channel that cannot do it closes fully instead, which the relay follows.
    context.channel.setOption(ChannelOptions.allowRemoteHalfClosure, value: true).whenComplete { _ in }
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    self.context = nil
    partner = nil
  }

  // MARK: This side

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    partner?.partnerWrite(unwrapInboundIn(data))
  }

  func channelReadComplete(context: ChannelHandlerContext) {
    partner?.partnerFlush()
    context.fireChannelReadComplete()
  }

  func channelInactive(context: ChannelHandlerContext) {
    onClose?()
    partner?.partnerClose()
    context.fireChannelInactive()
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if case ChannelEvent.inputClosed = event {
      inputEnded = true
      partner?.partnerEndOutput()
      closeIfBothEnded()
    } else if event is ChannelShouldQuiesceEvent {
      context.close(promise: nil)
    }
    context.fireUserInboundEventTriggered(event)
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    context.close(promise: nil)
  }

  func channelWritabilityChanged(context: ChannelHandlerContext) {
    if context.channel.isWritable { partner?.partnerBecameWritable() }
    context.fireChannelWritabilityChanged()
  }

  func read(context: ChannelHandlerContext) {
    if partner?.isWritable ?? true {
      context.read()
    } else {
      pendingRead = true
    }
  }

  // MARK: Called by the partner

  private var isWritable: Bool { context?.channel.isWritable ?? false }

  private func partnerWrite(_ buffer: ByteBuffer) {
    context?.write(wrapOutboundOut(buffer), promise: nil)
  }

  private func partnerFlush() {
    context?.flush()
  }

  private func partnerEndOutput() {
    guard let context, !outputEnded else { return }
    outputEnded = true
    afterWrites(context) { context in
      context.close(mode: .output).whenFailure { _ in
        // Output half-closure unsupported (TLS without it, say): end the connection instead.
        context.close(promise: nil)
      }
    }
    closeIfBothEnded()
  }

  private func partnerClose() {
    guard let context else { return }
    afterWrites(context) { $0.close(promise: nil) }
  }

  /// Runs `body` once every byte written so far has gone out: a close fails the writes still queued (the
  /// partner's last bytes, held back while this side was not writable), so closing waits for them.
  private func afterWrites(_ context: ChannelHandlerContext, _ body: @escaping (ChannelHandlerContext) -> Void) {
    let written = context.eventLoop.makePromise(of: Void.self)
    context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0)), promise: written)
    written.futureResult.whenComplete { _ in body(context) }
  }

  private func partnerBecameWritable() {
    guard pendingRead, let context else { return }
    pendingRead = false
    context.read()
  }

  private func closeIfBothEnded() {
    guard inputEnded, outputEnded, let context else { return }
    afterWrites(context) { $0.close(promise: nil) }
  }
}
