import NIOCore
import NIOHTTP1

/// A downstream HTTP/1.1 connection's requests and responses in one handler: the request decoder
/// (``HTTP1RequestReading``), the response encoder (``HTTP1ResponseEncoding``) and what NIO's
/// `HTTPServerPipelineHandler` did between them, which were three handlers that every request part, response
/// part, read and flush crossed. The pipelining handler alone cost about 7,800 instructions a request through
/// the pair's client proxy (`Benchmarks/load/instructions.sh`), most of it the hops and the events it buffered.
///
/// What it keeps of NIO's pipelining handler (RFC 9112 9.3.2: responses in the order of the requests):
/// - **Pipelined requests wait.** Once a request has ended and its response has not, the next request is not
///   decoded: its bytes stay in the reader, unparsed, and a `read()` is held back until the response ends.
///   Then the waiting requests are handed on (with a `channelReadComplete`), and the held read is made. NIO's
///   handler decoded them at once and kept the parts; here a waiting request is never parsed before its turn,
///   so a malformed one is refused only when it is reached, as there.
/// - **A response may end before its request** (an early answer, say to a body too large): the rest of the
///   request is still handed on, and the next request is read once it has ended.
/// - **Quiescing** (`ChannelShouldQuiesceEvent`, the proxy's graceful shutdown): an idle connection closes at
///   once; else the request under way is read to its end, nothing after it, its response's head gets
///   `connection: close`, and the connection closes once that response has been written. The event is not
///   passed on (as NIO's handler did not).
/// - **`connection: close`** on a request (or HTTP/1.0 without `keep-alive`) makes it the last, as quiescing
///   does: nothing after it is read, its response says `connection: close`, and the connection closes once the
///   response is written (RFC 9112 9.6). NIO's handlers left that to the application, and the proxy kept such a
///   connection open.
/// - **Half-close:** when the client stops sending while pipelined requests still wait, the input's end
///   (`ChannelEvent.inputClosed`) is passed on after them; a request cut short by it is refused, as the decoder
///   alone refused it.
/// - **A refused request** (a parse error, passed on as llhttp's `HTTPParserError`) expects its answer: reads
///   are held until that response has ended, and nothing more is decoded.
///
/// The method of each request handed on is the encoder's: a response to HEAD or CONNECT carries no body.
/// After an upgrade request the bytes are the new protocol's: they go on, as bytes, when the handler is removed.
final class HTTP1ServerCodec: ChannelDuplexHandler, RemovableChannelHandler, DirectlyWrittenCodec, DownstreamCodec {
  typealias InboundIn = ByteBuffer
  typealias InboundOut = HTTPServerRequestPart
  typealias OutboundIn = HTTPServerResponsePart
  typealias OutboundOut = IOData

  private var reading = HTTP1RequestReading()
  private var encoding = HTTP1ResponseEncoding()
  private var removed = false
  /// A request's head was handed on and its end not yet.
  private var requestOpen = false
  /// A request's head was handed on (or a request refused) and the end of its final response not written yet.
  private var responseOpen = false
  /// A `read()` came while the next request had to wait: made when the response ends.
  private var readPending = false
  /// The client stopped sending while pipelined requests waited: passed on after them.
  private var inputClosedPending = false
  private var quiescing = Quiescing.no
  /// The request handler behind this codec when the two are paired (``ProxyRequestHandler/pair(_:with:)``):
  /// request parts go to it directly instead of through the pipeline.
  var requests: ProxyRequestHandler?
  private(set) var pipelineContext: ChannelHandlerContext?

  func handlerAdded(context: ChannelHandlerContext) { pipelineContext = context }

  private enum Quiescing {
    case no
    /// The request under way is read to its end, then its response finishes the connection.
    case afterRequestEnd
    /// The last request has ended; the connection closes when its response has.
    case afterResponseEnd
    /// Closing.
    case done
  }

  /// Whether the next request waits: one has ended and its response has not.
  private var waiting: Bool { responseOpen && !requestOpen }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    guard !reading.reader.isFailed else { return }
    switch quiescing {
    case .afterResponseEnd, .done: return
    case .no, .afterRequestEnd: break
    }
    reading.reader.append(unwrapInboundIn(data))
    decode(context: context)
  }

  /// Hands on the request parts the bytes at hand make, up to a request that has to wait; returns whether any.
  @discardableResult
  private func decode(context: ChannelHandlerContext) -> Bool {
    var delivered = false
    while !removed, !waiting, !reading.reader.isFailed {
      let part: HTTPServerRequestPart
      do {
        guard let next = try reading.next() else { break }
        part = next
      } catch {
        refused(HTTP1RequestReading.parserError(error, default: .unknown), context: context)
        return delivered
      }
      delivered = true
      switch part {
      case .head(let head):
        requestOpen = true
        responseOpen = true
        encoding.requestMethod = head.method
        // A request that asks to close is the connection's last, as when quiescing (RFC 9112 9.6).
        if reading.closeRequested, quiescing == .no { quiescing = .afterRequestEnd }
        deliver(part, context: context)
      case .body:
        deliver(part, context: context)
      case .end:
        requestOpen = false
        deliver(part, context: context)
        if quiescing == .afterRequestEnd { lastRequestEnded(context: context) }
      }
    }
    if inputClosedPending, reading.reader.isIdle || !waiting {
      inputClosedPending = false
      inputEnded(context: context)
    }
    return delivered
  }

  private func deliver(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
    if let requests {
      requests.received(part)
    } else {
      context.fireChannelRead(wrapInboundOut(part))
    }
  }

  /// A request the reader refused: nothing more is read, and its answer is awaited.
  private func refused(_ error: HTTPParserError, context: ChannelHandlerContext) {
    reading.reader.fail()
    requestOpen = false
    responseOpen = true
    context.fireErrorCaught(error)
  }

  /// Quiescing, the last request has ended: what follows it is dropped; the connection closes now if its
  /// response is written already, else when it is.
  private func lastRequestEnded(context: ChannelHandlerContext) {
    reading.reader.fail()
    inputClosedPending = false
    if responseOpen {
      quiescing = .afterResponseEnd
    } else {
      quiescing = .done
      context.close(promise: nil)
    }
  }

  func read(context: ChannelHandlerContext) {
    switch quiescing {
    case .afterResponseEnd, .done: return
    case .no, .afterRequestEnd: break
    }
    if waiting {
      readPending = true
    } else {
      context.read()
    }
  }

  func write(_ part: HTTPServerResponsePart, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
    switch part {
    case .head(var head) where quiescing != .no:
      if head.isKeepAlive { head.headers.replaceOrAdd(name: "connection", value: "close") }
      encoding.write(.head(head), context: context, promise: promise)
    case .head, .body:
      encoding.write(part, context: context, promise: promise)
    case .end:
      guard responseOpen else {
        encoding.write(part, context: context, promise: promise)
        return
      }
      responseOpen = false
      if quiescing == .afterResponseEnd {
        quiescing = .done
        let written = context.eventLoop.makePromise(of: Void.self)
        encoding.write(part, context: context, promise: written)
        let channel = context.channel
        written.futureResult.whenComplete { _ in channel.close(promise: nil) }
        promise.map { written.futureResult.cascade(to: $0) }
        return
      }
      encoding.write(part, context: context, promise: promise)
      // The response ended: the requests that waited for it are next, then the read that was held.
      if decode(context: context) { context.fireChannelReadComplete() }
      if readPending, !waiting, quiescing != .done, quiescing != .afterResponseEnd {
        readPending = false
        context.read()
      }
    }
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if event is ChannelShouldQuiesceEvent {
      guard quiescing == .no else { return }
      if requestOpen {
        quiescing = .afterRequestEnd
      } else {
        lastRequestEnded(context: context)
      }
      return
    }
    if case .inputClosed = event as? ChannelEvent {
      // After the requests that wait, if any.
      if waiting, !reading.reader.isIdle {
        inputClosedPending = true
      } else {
        inputEnded(context: context)
      }
      return
    }
    context.fireUserInboundEventTriggered(event)
  }

  /// The client sent no more: a request cut short is refused; the input's end is passed on.
  private func inputEnded(context: ChannelHandlerContext) {
    finish(context: context)
    context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
  }

  func channelInactive(context: ChannelHandlerContext) {
    inputClosedPending = false
    // Requests that waited their turn are dropped unread, as the pipelining handler dropped them: only a request
    // under way can have been cut short.
    if !waiting { finish(context: context) }
    context.fireChannelInactive()
  }

  private func finish(context: ChannelHandlerContext) {
    if let error = reading.finish() { context.fireErrorCaught(error) }
  }

  func flush(context: ChannelHandlerContext) {
    encoding.writeHeld(context: context)
    context.flush()
  }

  func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
    encoding.writeHeld(context: context)
    context.close(mode: mode, promise: promise)
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    encoding.writeHeld(context: context)
    removed = true
    pipelineContext = nil
    requests = nil
    // What the client sent after an upgrade request goes on as bytes, to the relay behind.
    guard let bytes = reading.upgradeLeftover(), context.channel.isActive else { return }
    context.fireChannelRead(NIOAny(bytes))
  }
}
