import NIOCore

/// Gathers the writes made between two flushes into one buffer, so that TLS seals them into one record, and
/// the flushes of one event-loop round into one.
///
/// swift-nio-ssl seals every write into a record of its own. An HTTP/2 response of HEADERS, a DATA frame's
/// header, its payload and an END_STREAM frame were four writes, so four records: each sealed here, and each
/// framed, opened and authenticated on the far side (callgrind: about 4,000 instructions to seal a record and
/// as many to open one). This handler sits behind the TLS handler and hands it one buffer per flush instead.
///
/// - A flush waits for the end of the event loop's current round (the I/O events of one `epoll_wait`), so
///   that the frames of the streams it served, whose responses arrived on other connections in the same
///   round, also leave in one record and one write instead of one each. At one request at a time the round
///   has nothing else, and the flush follows at once.
/// - A lone write between two flushes goes on as it is, without a copy.
/// - Writes are gathered only up to one record's worth (16 KiB); a write that would take the gathered bytes
///   past that sends what is gathered first, and a large write goes on as it is, so bulk data is never copied.
/// - A write's promise completes when the gathered buffer it went into is written.
/// - Closing sends what is gathered first, so the order of writes and close is kept.
final class TLSRecordCoalescer: ChannelOutboundHandler {
  typealias OutboundIn = IOData
  typealias OutboundOut = IOData

  /// TLS's largest record holds this much plaintext.
  static let recordSize = 16_384

  private enum Pending {
    case none
    /// One write so far, not copied.
    case single(ByteBuffer)
    /// Two or more, copied into `gathered`.
    case gathered
  }

  private var pending = Pending.none
  private var promise: EventLoopPromise<Void>?
  /// Reused from flush to flush: once TLS has sealed its bytes, nothing else holds it, so `clear()` keeps its
  /// memory.
  private var gathered = ByteBuffer()
  private var flushScheduled = false
  private var removed = false

  init() {}

  func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
    guard case .byteBuffer(let buffer) = unwrapOutboundIn(data) else {
      // A file region cannot go through TLS's buffers here anyway: keep the order and pass it on.
      sendPending(context: context)
      context.write(data, promise: promise)
      return
    }
    switch pending {
    case .none:
      pending = .single(buffer)
    case .single(let first):
      guard first.readableBytes + buffer.readableBytes <= Self.recordSize else {
        sendPending(context: context)
        pending = .single(buffer)
        break
      }
      gathered.clear()
      gathered.reserveCapacity(first.readableBytes + buffer.readableBytes)
      gathered.writeImmutableBuffer(first)
      gathered.writeImmutableBuffer(buffer)
      pending = .gathered
    case .gathered:
      guard gathered.readableBytes + buffer.readableBytes <= Self.recordSize else {
        sendPending(context: context)
        pending = .single(buffer)
        break
      }
      gathered.writeImmutableBuffer(buffer)
    }
    hold(promise)
  }

  func flush(context: ChannelHandlerContext) {
    guard !flushScheduled else { return }
    flushScheduled = true
    let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
    context.eventLoop.execute {
      let (handler, context) = bound.value
      handler.flushNow(context: context)
    }
  }

  func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
    // What was flushed before the close leaves before it.
    if flushScheduled { flushNow(context: context) } else { sendPending(context: context) }
    context.close(mode: mode, promise: promise)
  }

  /// Only the channel's end removes this handler: what it still holds cannot be written any more.
  func handlerRemoved(context: ChannelHandlerContext) {
    removed = true
    flushScheduled = false
    pending = .none
    let held = promise
    promise = nil
    held?.fail(ChannelError.ioOnClosedChannel)
  }

  private func flushNow(context: ChannelHandlerContext) {
    guard flushScheduled, !removed else { return }
    flushScheduled = false
    sendPending(context: context)
    context.flush()
  }

  private func hold(_ promise: EventLoopPromise<Void>?) {
    guard let promise else { return }
    if let held = self.promise {
      held.futureResult.cascade(to: promise)
    } else {
      self.promise = promise
    }
  }

  /// Writes what is gathered (without flushing), with the promises of the writes it holds.
  private func sendPending(context: ChannelHandlerContext) {
    let promise = self.promise
    self.promise = nil
    switch pending {
    case .none:
      return
    case .single(let buffer):
      pending = .none
      context.write(wrapOutboundOut(.byteBuffer(buffer)), promise: promise)
    case .gathered:
      pending = .none
      context.write(wrapOutboundOut(.byteBuffer(gathered)), promise: promise)
    }
  }
}
