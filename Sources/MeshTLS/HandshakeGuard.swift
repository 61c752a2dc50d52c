import NIOCore
import NIOSSL
import Synchronization

/// Sits in front of the TLS handler while a handshake is under way and keeps two things from going wrong:
///
/// - **A peer's end of input while its certificate is being verified is held, not lost.** With TLS 1.3 a
///   client finishes its handshake as soon as it has the server's `Finished`; it may then send its data,
///   `close_notify` and a FIN at once (a client that writes one request and half-closes). The server still
///   verifies the client's certificate (asynchronously), and swift-nio-ssl treats an end of input in that
///   window as a failed handshake and closes, although every byte it needs has arrived. This handler turns on
///   half-closure at the socket for the handshake; an end of input that comes while a verification runs is
///   held and handed on once the handshake is over and the TLS handler has passed on the bytes before it: as
///   `inputClosed` when the channel allows half-closure by then, else by closing, as NIO itself would have.
///   At any other moment of the handshake it goes on at once: a peer that hangs up mid-handshake fails it
///   now, not at the timeout.
/// - **A handshake that does not finish in `timeout` closes the connection** (a peer that connects and sends
///   nothing, or half a handshake, would otherwise hold it open for ever).
///
/// It removes itself when the handshake is over, so it costs nothing afterwards.
final class HandshakeGuard: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = NIOAny

  /// Whether the peer's certificate is being verified: set by the verification callback (see
  /// ``tracking(_:)``), read by the handler.
  final class Verification: Sendable {
    private let running = Atomic<Int>(0)
    var isRunning: Bool { running.load(ordering: .acquiring) > 0 }
    func started() { running.add(1, ordering: .releasing) }
    func finished() { running.subtract(1, ordering: .releasing) }
  }

  let verification = Verification()
  private let session: EventLoopFuture<MeshTLSSession>
  private let timeout: TimeAmount
  private var context: ChannelHandlerContext?
  /// Whether the channel allowed half-closure before this handler turned it on.
  private var allowedHalfClosure = false
  private var heldInputClosed = false
  private var over = false
  private var timer: Scheduled<Void>?

  init(session: EventLoopFuture<MeshTLSSession>, timeout: TimeAmount) {
    self.session = session
    self.timeout = timeout
  }

  func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
    let options = context.channel.syncOptions
    allowedHalfClosure = (try? options?.getOption(ChannelOptions.allowRemoteHalfClosure)) ?? false
    try? options?.setOption(ChannelOptions.allowRemoteHalfClosure, value: true)
    let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
    timer = context.eventLoop.scheduleTask(in: timeout) { handler.value.timedOut() }
    // Registered before anyone else can see the session, so it runs first: those that act on the session
    // (a detector that turns half-closure on for opaque bytes, say) set the option after it is restored.
    session.whenComplete { _ in handler.value.handshakeOver() }
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    timer?.cancel()
    timer = nil
    self.context = nil
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if !over, verification.isRunning, case ChannelEvent.inputClosed = event {
      heldInputClosed = true
      return
    }
    context.fireUserInboundEventTriggered(event)
  }

  /// `callback`, reporting to this handler while each verification runs.
  func tracking(
    _ callback: @escaping @Sendable ([NIOSSLCertificate], EventLoopPromise<NIOSSLVerificationResultWithMetadata>) -> Void
  ) -> @Sendable ([NIOSSLCertificate], EventLoopPromise<NIOSSLVerificationResultWithMetadata>) -> Void {
    let verification = self.verification
    return { chain, promise in
      verification.started()
      promise.futureResult.whenComplete { _ in verification.finished() }
      callback(chain, promise)
    }
  }

  private func handshakeOver() {
    guard !over, let context else { return }
    over = true
    timer?.cancel()
    timer = nil
    if !allowedHalfClosure {
      try? context.channel.syncOptions?.setOption(ChannelOptions.allowRemoteHalfClosure, value: false)
    }
    // The session completes from within the TLS handler, before it passes on the bytes that came after the
    // handshake: the end of input follows them, on the next tick.
    let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
    context.eventLoop.execute { handler.value.release() }
  }

  private func release() {
    guard let context, context.channel.isActive else { return }
    if heldInputClosed {
      heldInputClosed = false
      let halfClosure = (try? context.channel.syncOptions?.getOption(ChannelOptions.allowRemoteHalfClosure)) ?? false
      if halfClosure {
        context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
      } else {
        context.close(promise: nil)
        return
      }
    }
    context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
  }

  private func timedOut() {
    timer = nil
    guard !over, let context else { return }
    let milliseconds = timeout.nanoseconds / 1_000_000
    context.fireErrorCaught(
      MeshTLSError(.handshakeFailed, "the TLS handshake did not finish within \(milliseconds) ms"))
    context.close(promise: nil)
  }
}
