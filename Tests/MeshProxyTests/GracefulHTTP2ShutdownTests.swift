import NIOCore
import NIOEmbedded
import NIOHTTP2
import Testing

@testable import MeshProxy

/// `GracefulHTTP2Shutdown` and its stream tracker on an `EmbeddedChannel`: the GOAWAY frames a quiescing
/// downstream HTTP/2 connection sends, and when it closes.
@Suite("Graceful HTTP/2 shutdown on an embedded channel")
struct GracefulHTTP2ShutdownTests {
  struct Fixture {
    let channel: EmbeddedChannel
    let streams: HTTP2StreamTracker

    init() throws {
      channel = EmbeddedChannel()
      streams = HTTP2StreamTracker()
      try channel.pipeline.syncOperations.addHandler(GracefulHTTP2Shutdown(streams: streams))
      try channel.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 4143)).wait()
    }

    func open(_ ids: HTTP2StreamID...) { for id in ids { streams.streamCreated(id) } }
    func close(_ id: HTTP2StreamID) { streams.streamClosed(id) }
    func quiesce() { channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent()) }

    /// The GOAWAY frames written so far, as (last stream, code).
    func goAways() throws -> [(HTTP2StreamID, HTTP2ErrorCode)] {
      var frames: [(HTTP2StreamID, HTTP2ErrorCode)] = []
      while let frame = try channel.readOutbound(as: HTTP2Frame.self) {
        guard case .goAway(let last, let code, _) = frame.payload else {
          Issue.record("unexpected frame \(frame)")
          continue
        }
        #expect(frame.streamID == .rootStream)
        frames.append((last, code))
      }
      return frames
    }
  }

  @Test("the tracker knows the open streams and the highest one opened")
  func tracker() throws {
    let f = try Fixture()
    f.open(1, 5, 3)
    #expect(f.streams.open == 3)
    #expect(f.streams.highest == 5)
    f.close(5)
    #expect(f.streams.open == 2)
    #expect(f.streams.highest == 5)
  }

  @Test("quiesce with streams open: GOAWAY (NO_ERROR, highest stream) at once; the second and the close when the last stream ends")
  func quiesceWithOpenStreams() throws {
    let f = try Fixture()
    f.open(1, 3)
    f.quiesce()
    let first = try f.goAways()
    #expect(first.count == 1)
    #expect(first.first?.0 == 3)
    #expect(first.first?.1 == .noError)
    #expect(f.channel.isActive)
    f.close(1)
    #expect(try f.goAways().isEmpty)
    #expect(f.channel.isActive)
    f.close(3)
    let second = try f.goAways()
    #expect(second.count == 1)
    #expect(second.first?.0 == 3)
    #expect(!f.channel.isActive)
  }

  @Test("quiesce with nothing open: both GOAWAY frames, then the connection closes")
  func quiesceIdle() throws {
    let f = try Fixture()
    f.open(1)
    f.close(1)
    f.quiesce()
    let frames = try f.goAways()
    #expect(frames.count == 2)
    #expect(frames.allSatisfy { $0.0 == 1 && $0.1 == .noError })
    #expect(!f.channel.isActive)
  }

  @Test("a second quiesce sends nothing more; the event still reaches the handlers behind")
  func secondQuiesce() throws {
    let f = try Fixture()
    final class Seen: ChannelInboundHandler, @unchecked Sendable {
      typealias InboundIn = HTTP2Frame
      var events = 0
      func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent { events += 1 }
      }
    }
    let seen = Seen()
    try f.channel.pipeline.syncOperations.addHandler(seen)
    f.open(7)
    f.quiesce()
    f.quiesce()
    #expect(try f.goAways().count == 1)
    #expect(seen.events == 2)
  }

  @Test("a connection closed while it quiesces: the tracker's callback goes with the handler")
  func closedWhileQuiescing() throws {
    let f = try Fixture()
    f.open(1)
    f.quiesce()
    #expect(try f.goAways().count == 1)
    #expect(f.streams.onIdle != nil)
    try f.channel.close().wait()
    f.channel.embeddedEventLoop.run()
    #expect(f.streams.onIdle == nil)
    f.close(1)
    #expect(try f.goAways().isEmpty)
  }
}
