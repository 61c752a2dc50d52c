import NIOCore
import NIOHPACK
import NIOHTTP2

/// Sits below `HTTP2FramePayloadToHTTP1ServerCodec` on a downstream HTTP/2 stream and keeps a response that
/// had no body a single HEADERS frame with END_STREAM.
///
/// The codec writes an HTTP/1-style response as HEADERS, then DATA frames, then an empty DATA frame with
/// END_STREAM (or trailers). A gRPC *trailers-only* response (how C core, Go and Java servers answer every
/// error: `:status`, `grpc-status` and `grpc-message` in one HEADERS frame with END_STREAM) arrives from the
/// upstream as a head and an end with nothing between; re-sent as HEADERS + empty DATA, a gRPC client finds
/// no trailers and reports UNKNOWN instead of the server's status. So the response HEADERS are held until
/// the next write or flush: an empty DATA frame with END_STREAM right behind them folds into them.
///
/// It also carries a ``StreamResetEvent`` down as RST_STREAM with the upstream's error code, so that a reset
/// crosses the proxy as a reset (the codec above has no HTTP/1 part for it).
final class TrailersOnlyCoalescer: ChannelOutboundHandler, RemovableChannelHandler {
  typealias OutboundIn = HTTP2Frame.FramePayload
  typealias OutboundOut = HTTP2Frame.FramePayload

  private var held: (headers: HTTP2Frame.FramePayload.Headers, promise: EventLoopPromise<Void>?)?
  /// The final response head has gone by: nothing more is held.
  private var finalHeadSeen = false

  func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
    let payload = unwrapOutboundIn(data)
    if let held = held.take() {
      if case .data(let frame) = payload, frame.endStream, frame.data.readableBytes == 0 {
        var headers = held.headers
        headers.endStream = true
        var combined = held.promise
        combined.setOrCascade(to: promise)
        context.write(wrapOutboundOut(.headers(headers)), promise: combined)
        return
      }
      context.write(wrapOutboundOut(.headers(held.headers)), promise: held.promise)
      context.write(data, promise: promise)
      return
    }
    if !finalHeadSeen, case .headers(let headers) = payload, !headers.endStream {
      // 1xx heads are informational: the final response comes after them.
      if let status = headers.headers.first(name: ":status"), status.hasPrefix("1") {
        context.write(data, promise: promise)
        return
      }
      finalHeadSeen = true
      held = (headers, promise)
      return
    }
    context.write(data, promise: promise)
  }

  func flush(context: ChannelHandlerContext) {
    if let held = held.take() {
      context.write(wrapOutboundOut(.headers(held.headers)), promise: held.promise)
    }
    context.flush()
  }

  func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
    guard let reset = event as? StreamResetEvent else {
      context.triggerUserOutboundEvent(event, promise: promise)
      return
    }
    held = nil
    context.writeAndFlush(wrapOutboundOut(.rstStream(reset.code)), promise: promise)
  }

  func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
    if let held = held.take() {
      context.write(wrapOutboundOut(.headers(held.headers)), promise: held.promise)
      context.flush()
    }
    context.close(mode: mode, promise: promise)
  }
}

/// Asks a downstream HTTP/2 stream to reset with `code` (the upstream's own reset, passed on).
struct StreamResetEvent: Sendable {
  var code: HTTP2ErrorCode
}

extension Optional {
  fileprivate mutating func take() -> Wrapped? {
    defer { self = nil }
    return self
  }
}
