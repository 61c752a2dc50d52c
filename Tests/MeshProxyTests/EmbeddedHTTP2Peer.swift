import NIOCore
import NIOEmbedded
import NIOHTTP2

/// swift-nio-http2's own side of a connection in the tests of the proxy's channel-free streams: behind a
/// `NIOHTTP2Handler` on an embedded channel, it records the frames of every stream, writes the frames a test
/// tells it to, and gives back the window of the DATA it receives (at once, or when told).
final class EmbeddedHTTP2Peer: ChannelInboundHandler {
  typealias InboundIn = HTTP2Frame
  typealias OutboundOut = HTTP2Frame

  private(set) var frames: [HTTP2StreamID: [HTTP2Frame.FramePayload]] = [:]
  private var context: ChannelHandlerContext?
  /// Gives back the window of every DATA frame at once (else the other side runs into the 64 KiB windows).
  var readsAtOnce = true
  private var unacknowledged: [(HTTP2StreamID, Int)] = []

  func handlerAdded(context: ChannelHandlerContext) { self.context = context }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let frame = unwrapInboundIn(data)
    guard frame.streamID != .rootStream else { return }
    frames[frame.streamID, default: []].append(frame.payload)
    if case .data(let data) = frame.payload, data.data.readableBytes > 0 {
      unacknowledged.append((frame.streamID, data.data.readableBytes))
      if readsAtOnce { acknowledge() }
    }
  }

  /// WINDOW_UPDATE for everything read so far: the connection's, and each stream's unless it has ended.
  func acknowledge() {
    for (id, size) in unacknowledged {
      if !ended(id) { write(id, .windowUpdate(windowSizeIncrement: size)) }
      write(.rootStream, .windowUpdate(windowSizeIncrement: size))
    }
    unacknowledged = []
    context?.flush()
  }

  func write(_ id: HTTP2StreamID, _ payload: HTTP2Frame.FramePayload, promise: EventLoopPromise<Void>? = nil) {
    context?.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: payload)), promise: promise)
  }

  func flush() { context?.flush() }

  func bodyBytes(_ id: HTTP2StreamID) -> Int {
    (frames[id] ?? []).reduce(0) { sum, payload in
      if case .data(let data) = payload { return sum + data.data.readableBytes }
      return sum
    }
  }

  /// Whether the stream's peer has sent END_STREAM.
  func ended(_ id: HTTP2StreamID) -> Bool {
    (frames[id] ?? []).contains { payload in
      switch payload {
      case .headers(let headers): headers.endStream
      case .data(let data): data.endStream
      default: false
      }
    }
  }

  /// The stream's HEADERS frame when that is all the stream got: one HEADERS frame with END_STREAM.
  func onlyHeaders(_ id: HTTP2StreamID) -> HTTP2Frame.FramePayload.Headers? {
    guard let frames = frames[id], frames.count == 1, case .headers(let headers) = frames[0], headers.endStream else {
      return nil
    }
    return headers
  }

  func reset(_ id: HTTP2StreamID) -> HTTP2ErrorCode? {
    for case .rstStream(let code) in frames[id] ?? [] { return code }
    return nil
  }

  /// Passes bytes both ways between two embedded channels until neither has anything more to send (running
  /// `loop` first each round, when the channels share one).
  static func exchange(_ a: EmbeddedChannel, _ b: EmbeddedChannel, loop: EmbeddedEventLoop? = nil) throws {
    var moved = true
    var rounds = 0
    while moved, rounds < 10_000 {
      moved = false
      rounds += 1
      loop?.run()
      while let bytes = try a.readOutbound(as: IOData.self) {
        guard case .byteBuffer(let buffer) = bytes else { continue }
        try b.writeInbound(buffer)
        moved = true
      }
      while let bytes = try b.readOutbound(as: IOData.self) {
        guard case .byteBuffer(let buffer) = bytes else { continue }
        try a.writeInbound(buffer)
        moved = true
      }
    }
  }
}
