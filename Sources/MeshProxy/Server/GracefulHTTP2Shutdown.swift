import NIOCore
import NIOHTTP2

/// The streams of one downstream HTTP/2 connection, as its ``HTTP2StreamsHandler`` opens and closes them.
/// Used only on the connection's event loop.
final class HTTP2StreamTracker {
  /// How many streams are open (the streams handler reports each once opened and once closed).
  private(set) var open = 0
  private(set) var highest: HTTP2StreamID = .rootStream
  /// Called when the last open stream closes.
  var onIdle: (() -> Void)?

  init() {}

  func streamCreated(_ id: HTTP2StreamID) {
    open += 1
    if id > highest { highest = id }
  }

  func streamClosed(_ id: HTTP2StreamID) {
    guard open > 0 else { return }
    open -= 1
    if open == 0 { onIdle?() }
  }
}

/// Graceful shutdown of a downstream HTTP/2 connection: on `ChannelShouldQuiesceEvent` it sends GOAWAY
/// (NO_ERROR, last stream = the highest the client opened), so the client takes new requests elsewhere while
/// the streams already open finish. Streams opened after the GOAWAY are refused by the HTTP/2 state machine
/// (REFUSED_STREAM), which clients retry. When the last open stream closes it sends the GOAWAY once more and
/// closes the connection as soon as that frame (and so everything before it) is written.
final class GracefulHTTP2Shutdown: ChannelInboundHandler {
  typealias InboundIn = HTTP2Frame
  typealias OutboundOut = HTTP2Frame

  private let streams: HTTP2StreamTracker
  private var quiescing = false

  init(streams: HTTP2StreamTracker) { self.streams = streams }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if event is ChannelShouldQuiesceEvent, !quiescing {
      quiescing = true
      let last = streams.highest
      let goAway = HTTP2Frame(
        streamID: .rootStream, payload: .goAway(lastStreamID: last, errorCode: .noError, opaqueData: nil))
      context.writeAndFlush(wrapOutboundOut(goAway), promise: nil)
      let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
      let finish = {
        let (handler, context) = bound.value
        context.writeAndFlush(handler.wrapOutboundOut(goAway)).whenComplete { _ in context.close(promise: nil) }
      }
      if streams.open == 0 { finish() } else { streams.onIdle = finish }
    }
    context.fireUserInboundEventTriggered(event)
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    streams.onIdle = nil
  }
}
