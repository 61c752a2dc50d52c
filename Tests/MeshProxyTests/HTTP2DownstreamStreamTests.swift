import Logging
import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP1
import NIOHTTP2
import Testing

@testable import MeshProxy

/// The proxy's downstream HTTP/2 connection without a channel per stream (``HTTP2StreamsHandler`` on the server
/// side, an ``HTTP2DownstreamStream`` and a ``ProxyRequestHandler`` per stream), driven by swift-nio-http2's own
/// client side on an embedded channel, with embedded upstreams on the same loop: requests reach their
/// upstreams and responses their streams, the request's body and the response's cross the 64 KiB windows,
/// a slow client pauses the upstream, and resets, malformed requests and the connection's end are handled as
/// a stream channel handled them.
@Suite("HTTP/2 downstream streams without channels (against swift-nio-http2's client)")
struct HTTP2DownstreamStreamTests {
  typealias EmbeddedRouter = ProxyRequestHandlerTests.EmbeddedRouter

  /// Counts the reads asked of an upstream (reading resumes with one).
  final class ReadCounter: ChannelOutboundHandler {
    typealias OutboundIn = Any
    var reads = 0
    func read(context: ChannelHandlerContext) {
      reads += 1
      context.read()
    }
  }

  final class Made {
    var streams: [HTTP2DownstreamStream] = []
  }

  struct Fixture {
    let loop = EmbeddedEventLoop()
    let made = Made()
    let client: EmbeddedChannel
    let server: EmbeddedChannel
    let upstreams: [EmbeddedChannel]
    let router: EmbeddedRouter
    let tracker = HTTP2StreamTracker()
    let streams: HTTP2StreamsHandler
    let clientHandler = EmbeddedHTTP2Peer()

    init(upstreams count: Int = 2) throws {
      client = EmbeddedChannel(loop: loop)
      server = EmbeddedChannel(loop: loop)
      upstreams = (0..<count).map { [loop] _ in EmbeddedChannel(loop: loop) }
      let router = EmbeddedRouter(upstreams: upstreams)
      self.router = router
      let loop = self.loop
      let metrics = ProxyMetrics()
      let inFlight = InFlightRequests()
      let cache = DownstreamConnectionCache()
      let made = self.made
      streams = HTTP2StreamsHandler(server: tracker) { connection, _ in
        let stream = HTTP2DownstreamStream(connection: connection, eventLoop: loop, takingOutMeshFields: false)
        made.streams.append(stream)
        ProxyRequestHandler(
          router: router, metrics: metrics, peerIdentity: nil, isHTTP2: true, inFlight: inFlight, tap: TapHub(),
          logger: Logger(label: "test.h2-downstream"), connection: cache
        ).attach(to: stream)
        return stream
      }
      try server.pipeline.syncOperations.addHandler(
        NIOHTTP2Handler(
          mode: .server, frameDelegate: streams, connectionConfiguration: .proxy(meshPeer: false),
          streamConfiguration: .proxy(meshPeer: false)))
      try server.pipeline.syncOperations.addHandler(streams)
      try server.pipeline.syncOperations.addHandler(GracefulHTTP2Shutdown(streams: tracker))
      // Without NIO's validation of the blocks it sends: the tests send malformed ones too.
      try client.pipeline.syncOperations.addHandler(
        NIOHTTP2Handler(
          mode: .client, connectionConfiguration: .proxy(meshPeer: false), streamConfiguration: .proxy(meshPeer: false)))
      try client.pipeline.syncOperations.addHandler(clientHandler)
      let address = try SocketAddress(ipAddress: "127.0.0.1", port: 1)
      try server.connect(to: address).wait()
      try client.connect(to: address).wait()
      for upstream in upstreams {
        try upstream.connect(to: try SocketAddress(ipAddress: "198.18.0.3", port: 8080)).wait()
      }
      try exchange()
    }

    /// Passes bytes both ways until neither side has anything more to send.
    func exchange() throws { try EmbeddedHTTP2Peer.exchange(client, server, loop: loop) }

    /// Opens stream `id` with a request; `body` bytes of DATA follow, and the end unless `end` is false.
    func request(
      _ id: HTTP2StreamID, method: String = "GET", body: Int = 0, end: Bool = true, extra: [(String, String)] = []
    ) throws {
      var headers: HPACKHeaders = [":method": method, ":scheme": "http", ":path": "/\(Int(id))", ":authority": "backend:8080"]
      for (name, value) in extra { headers.add(name: name, value: value) }
      clientHandler.write(id, .headers(.init(headers: headers, endStream: body == 0 && end)))
      clientHandler.flush()
      try exchange()
      var left = body
      while left > 0 {
        let size = min(left, 16_384)
        left -= size
        clientHandler.write(id, .data(.init(data: .byteBuffer(ByteBuffer(repeating: 0x61, count: size)), endStream: left == 0 && end)))
        clientHandler.flush()
        try exchange()
      }
    }

    /// The request parts upstream `index` was sent, as text: "head GET /1", "body N", "end".
    func sent(to index: Int) throws -> [String] {
      var parts: [String] = []
      while let part = try upstreams[index].readOutbound(as: HTTPClientRequestPart.self) {
        switch part {
        case .head(let head): parts.append("head \(head.method.rawValue) \(head.uri)")
        case .body(let body): parts.append("body \(body.readableBytes)")
        case .end: parts.append("end")
        }
      }
      return parts
    }

    /// The upstream's response, all in one read (as it comes from a socket).
    func respond(on index: Int, status: HTTPResponseStatus = .ok, headers: HTTPHeaders = [:], body: Int) throws {
      let pipeline = upstreams[index].pipeline
      pipeline.fireChannelRead(HTTPClientResponsePart.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers)))
      var left = body
      while left > 0 {
        let size = min(left, 16_384)
        left -= size
        pipeline.fireChannelRead(HTTPClientResponsePart.body(ByteBuffer(repeating: 0x62, count: size)))
      }
      pipeline.fireChannelRead(HTTPClientResponsePart.end(nil))
      pipeline.fireChannelReadComplete()
      try exchange()
    }
  }

  @Test("two streams at once reach their upstreams and get their responses; the streams are let go of at their end")
  func twoStreams() throws {
    let f = try Fixture()
    try f.request(1)
    try f.request(3, method: "POST", body: 200_000)
    #expect(f.tracker.open == 2)
    #expect(try f.sent(to: 0) == ["head GET /1", "end"])
    let post = try f.sent(to: 1)
    #expect(post.first == "head POST /3")
    #expect(post.last == "end")
    #expect(post.dropFirst().dropLast().reduce(0) { $0 + Int($1.dropFirst(5))! } == 200_000)

    try f.respond(on: 1, body: 150_000)
    try f.respond(on: 0, body: 10)
    #expect(f.clientHandler.bodyBytes(1) == 10)
    #expect(f.clientHandler.bodyBytes(3) == 150_000)
    #expect(f.clientHandler.ended(1))
    #expect(f.clientHandler.ended(3))
    #expect(f.streams.openStreams == 0)
    #expect(f.tracker.open == 0)
    if case .headers(let head) = f.clientHandler.frames[1]?.first {
      #expect(head.headers.first(name: ":status") == "200")
    } else {
      Issue.record("stream 1 begins with HEADERS: \(f.clientHandler.frames[1] ?? [])")
    }
  }

  @Test("a response without a body is one HEADERS frame with END_STREAM (gRPC's trailers-only form)")
  func trailersOnly() throws {
    let f = try Fixture(upstreams: 1)
    try f.request(1, method: "POST", body: 5, extra: [("content-type", "application/grpc")])
    _ = try f.sent(to: 0)
    try f.respond(on: 0, headers: ["content-type": "application/grpc", "grpc-status": "5", "content-length": "0"], body: 0)
    let only = try #require(f.clientHandler.onlyHeaders(1), "\(f.clientHandler.frames[1] ?? [])")
    #expect(only.headers.first(name: "grpc-status") == "5")
  }

  @Test("a client that does not read: the upstream stops being read until the client gives its window back")
  func slowClient() throws {
    let f = try Fixture(upstreams: 1)
    f.clientHandler.readsAtOnce = false
    try f.request(1)
    _ = try f.sent(to: 0)
    let upstream = f.upstreams[0]
    let reads = ReadCounter()
    try upstream.pipeline.syncOperations.addHandler(reads, position: .first)
    try upstream.writeInbound(HTTPClientResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok)))
    for _ in 0..<10 {
      try upstream.writeInbound(HTTPClientResponsePart.body(ByteBuffer(repeating: 0x62, count: 16_384)))
    }
    try f.exchange()
    // 64 KiB went out, the rest waits in the connection: the stream is unwritable and the upstream paused.
    #expect(f.clientHandler.bodyBytes(1) == 65_535)
    let stream = try #require(f.made.streams.first)
    #expect(!stream.isWritable)
    let readsWhilePaused = reads.reads
    f.clientHandler.acknowledge()
    try f.exchange()
    f.clientHandler.acknowledge()
    try f.exchange()
    f.clientHandler.acknowledge()
    try f.exchange()
    #expect(f.clientHandler.bodyBytes(1) == 163_840)
    #expect(stream.isWritable)
    #expect(reads.reads > readsWhilePaused, "reading the upstream resumed")
    try upstream.writeInbound(HTTPClientResponsePart.end(nil))
    try f.exchange()
    #expect(f.clientHandler.ended(1))
  }

  @Test("a client's reset cancels the request: the upstream is closed and the stream forgotten")
  func clientReset() throws {
    let f = try Fixture(upstreams: 1)
    try f.request(1, method: "POST", body: 100, end: false)
    #expect(try f.sent(to: 0).first == "head POST /1")
    f.clientHandler.write(1, .rstStream(.cancel))
    f.clientHandler.flush()
    try f.exchange()
    #expect(!f.upstreams[0].isActive)
    #expect(f.streams.openStreams == 0)
    #expect(f.tracker.open == 0)
  }

  @Test("a malformed request is reset with PROTOCOL_ERROR and never routed")
  func malformed() throws {
    let f = try Fixture(upstreams: 1)
    try f.request(1, extra: [("Upper-Case", "no")])
    #expect(f.clientHandler.reset(1) == .protocolError)
    #expect(f.router.opened == 0)
    #expect(f.streams.openStreams == 0)
    // The connection goes on: the next stream is served.
    try f.request(3)
    #expect(try f.sent(to: 0) == ["head GET /3", "end"])
  }

  @Test("the connection's end cancels the requests of its open streams")
  func connectionEnd() throws {
    let f = try Fixture(upstreams: 1)
    try f.request(1)
    #expect(f.streams.openStreams == 1)
    try f.server.close().wait()
    f.loop.run()
    #expect(f.streams.openStreams == 0)
    #expect(f.tracker.open == 0)
    #expect(!f.upstreams[0].isActive)
  }

  @Test("quiescing: GOAWAY at once, the open stream still answered, then the connection closes")
  func quiescing() throws {
    let f = try Fixture(upstreams: 1)
    // The client writes nothing more (a WINDOW_UPDATE after the connection's end would be an error of its own).
    f.clientHandler.readsAtOnce = false
    try f.request(1)
    f.server.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
    try f.exchange()
    #expect(f.server.isActive)
    try f.respond(on: 0, body: 3)
    #expect(f.clientHandler.ended(1))
    try f.exchange()
    #expect(!f.server.isActive)
  }
}
