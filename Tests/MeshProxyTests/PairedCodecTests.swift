import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Synchronization
import Testing

@testable import MeshProxy

/// The request handler paired with the codec in front of it (`ProxyRequestHandler.pair(_:with:)`) and writing
/// to its upstream's codec directly: the same bytes must come out as when every part goes through the
/// pipelines, and the paired objects must let go of each other when the connection closes.
@Suite("Request handler paired with its codecs")
struct PairedCodecTests {
  typealias EmbeddedRouter = ProxyRequestHandlerTests.EmbeddedRouter

  /// A downstream HTTP/1.1 connection (server codec, request handler) and upstream connections with the
  /// HTTP/1.1 client codec, all on embedded channels; `paired` joins the handler to the codecs directly.
  struct Connection {
    let loop: EmbeddedEventLoop
    let downstream: EmbeddedChannel
    let upstreams: [EmbeddedChannel]
    let router: EmbeddedRouter
    let handler: ProxyRequestHandler
    let codec: HTTP1ServerCodec

    init(paired: Bool, upstreams count: Int, pooled: Bool = false) throws {
      let loop = EmbeddedEventLoop()
      self.loop = loop
      downstream = EmbeddedChannel(loop: loop)
      upstreams = try (0..<count).map { _ in
        let channel = EmbeddedChannel(loop: loop)
        try channel.pipeline.syncOperations.addHandler(HTTP1ClientCodec())
        return channel
      }
      router = EmbeddedRouter(upstreams: upstreams)
      router.pooled = pooled
      codec = HTTP1ServerCodec()
      handler = ProxyRequestHandler(
        router: router, metrics: ProxyMetrics(), peerIdentity: nil, isHTTP2: false, inFlight: InFlightRequests(),
        tap: TapHub(), logger: Logger(label: "test.paired"))
      try downstream.pipeline.syncOperations.addHandlers(codec, handler)
      if paired { ProxyRequestHandler.pair(handler, with: codec) }
      try downstream.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 4140)).wait()
      for upstream in upstreams {
        try upstream.connect(to: try SocketAddress(ipAddress: "198.18.0.3", port: 8080)).wait()
      }
    }

    /// The bytes written to a channel so far.
    static func written(_ channel: EmbeddedChannel) throws -> String {
      var text = ""
      while let buffer = try channel.readOutbound(as: ByteBuffer.self) { text += String(buffer: buffer) }
      return text
    }
  }

  /// What a client and the upstreams see of one script: the client's bytes in (whole, or in pieces), each
  /// upstream's request bytes out and its response bytes in, in turn.
  struct Transcript: Equatable {
    var toUpstreams: [String] = []
    var toClient: [String] = []
  }

  static func firstLine(_ text: String) -> String {
    String(decoding: text.utf8.prefix { $0 != 0x0D }, as: UTF8.self)
  }

  static func run(paired: Bool, pieces: Int) throws -> Transcript {
    let connection = try Connection(paired: paired, upstreams: 3)
    let requests =
      "GET /a HTTP/1.1\r\nhost: backend:8080\r\nuser-agent: test\r\n\r\n"
      + "POST /b HTTP/1.1\r\nhost: backend:8080\r\ncontent-length: 5\r\n\r\nhello"
      + "GET /c HTTP/1.1\r\nhost: backend:8080\r\nconnection: close\r\n\r\n"
    let responses = [
      "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-upstream: a\r\n\r\nok",
      "HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n3\r\nnew\r\n0\r\n\r\n",
      "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
    ]
    let bytes = Array(requests.utf8)
    let size = (bytes.count + pieces - 1) / pieces
    for start in stride(from: 0, to: bytes.count, by: size) {
      try connection.downstream.writeInbound(ByteBuffer(bytes: bytes[start..<min(start + size, bytes.count)]))
    }
    connection.loop.run()
    var transcript = Transcript()
    for (index, upstream) in connection.upstreams.enumerated() {
      transcript.toUpstreams.append(try Connection.written(upstream))
      try upstream.writeInbound(ByteBuffer(string: responses[index]))
      connection.loop.run()
      transcript.toClient.append(try Connection.written(connection.downstream))
    }
    #expect(!connection.downstream.isActive, "the third request asked to close")
    return transcript
  }

  @Test("pipelined requests with bodies, chunked responses and a close: the same bytes paired as through the pipeline")
  func sameBytes() throws {
    for pieces in [1, 7] {
      let throughPipeline = try Self.run(paired: false, pieces: pieces)
      let paired = try Self.run(paired: true, pieces: pieces)
      #expect(paired == throughPipeline, "in \(pieces) pieces")
      // Not an empty comparison: every request reached its upstream and every response its client.
      #expect(paired.toUpstreams.map { Self.firstLine($0) } == [
        "GET /a HTTP/1.1", "POST /b HTTP/1.1", "GET /c HTTP/1.1",
      ])
      #expect(paired.toUpstreams[1].hasSuffix("\r\n\r\nhello"))
      #expect(paired.toClient.map { Self.firstLine($0) } == [
        "HTTP/1.1 200 OK", "HTTP/1.1 201 Created", "HTTP/1.1 404 Not Found",
      ])
      #expect(paired.toClient[1].hasSuffix("3\r\nnew\r\n0\r\n\r\n"))
    }
  }

  @Test("the paired handler and codecs let go of each other when the connections close")
  func noCycleLeft() throws {
    weak var handler: ProxyRequestHandler?
    weak var codec: HTTP1ServerCodec?
    weak var upstreamCodec: HTTP1ClientCodec?
    try {
      let connection = try Connection(paired: true, upstreams: 1, pooled: true)
      handler = connection.handler
      codec = connection.codec
      upstreamCodec = try connection.upstreams[0].pipeline.syncOperations.handler(type: HTTP1ClientCodec.self)
      #expect(connection.handler.downstreamCodec === connection.codec)
      #expect(connection.codec.requests === connection.handler)
      try connection.downstream.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nhost: backend:8080\r\n\r\n"))
      connection.loop.run()
      #expect(try Connection.written(connection.upstreams[0]).hasPrefix("GET / HTTP/1.1\r\n"))
      try connection.upstreams[0].writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"))
      connection.loop.run()
      #expect(try Connection.written(connection.downstream).hasPrefix("HTTP/1.1 200 OK\r\n"))
      #expect(connection.router.released.withLock { $0.count } == 1, "the upstream went back to its pool")
      _ = try connection.downstream.finish()
      _ = try connection.upstreams[0].finish()
      #expect(connection.handler.downstreamCodec == nil)
      #expect(connection.codec.requests == nil)
    }()
    #expect(handler == nil)
    #expect(codec == nil)
    #expect(upstreamCodec == nil)
  }

  @Test("a response part written to a codec that has left its pipeline fails its promise")
  func writeAfterRemoval() throws {
    let loop = EmbeddedEventLoop()
    let channel = EmbeddedChannel(loop: loop)
    let codec = HTTP1ServerCodec()
    try channel.pipeline.syncOperations.addHandler(codec)
    _ = try channel.finish()
    let promise = loop.makePromise(of: Void.self)
    codec.writeDirectly(.end(nil), promise: promise)
    #expect(throws: ChannelError.ioOnClosedChannel) { try promise.futureResult.wait() }

    let client = EmbeddedChannel(loop: loop)
    let clientCodec = HTTP1ClientCodec()
    try client.pipeline.syncOperations.addHandler(clientCodec)
    _ = try client.finish()
    let clientPromise = loop.makePromise(of: Void.self)
    clientCodec.writeDirectly(.end(nil), promise: clientPromise)
    #expect(throws: ChannelError.ioOnClosedChannel) { try clientPromise.futureResult.wait() }
  }
}

/// `HTTP1ClientCodec` keeping an upstream connection's TCP counters itself (no `ConnectionMetricsHandler` in
/// front of it): they must count what crossed the wire, and a counting handler takes over after an upgrade.
@Suite("Upstream HTTP/1.1 codec's TCP counters")
struct HTTP1ClientCodecTCPTests {
  /// The value of the series of `name` with `tls="false"` labels in `metrics`' exposition.
  static func value(_ name: String, _ metrics: ProxyMetrics) -> Double? {
    let text = String(decoding: metrics.exposition(), as: UTF8.self)
    for line in text.split(separator: "\n") where line.hasPrefix(name + "{") && line.contains("peer=\"dst\"") {
      return line.split(separator: " ").last.flatMap { Double($0) }
    }
    return nil
  }

  /// A connected channel with the codec keeping its counters.
  static func connected() throws -> (ProxyMetrics, EmbeddedChannel) {
    let metrics = ProxyMetrics()
    let channel = EmbeddedChannel()
    try channel.pipeline.syncOperations.addHandler(
      HTTP1ClientCodec(tcp: metrics.tcp(direction: "outbound", peer: "dst", tls: false)))
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 8080)).wait()
    return (metrics, channel)
  }

  static func written(_ channel: EmbeddedChannel) throws -> Int {
    var count = 0
    while let buffer = try channel.readOutbound(as: ByteBuffer.self) { count += buffer.readableBytes }
    return count
  }

  @Test("bytes read and written, the opening and the close, counted once; after an upgrade a handler in front counts on")
  func counts() throws {
    let (metrics, channel) = try Self.connected()
    #expect(Self.value("tcp_open_total", metrics) == 1)
    #expect(Self.value("tcp_open_connections", metrics) == 1)

    // A chunked request (head, two body parts, trailers) and a response read in two pieces.
    var headers = HTTPHeaders([("host", "backend"), ("transfer-encoding", "chunked")])
    headers.add(name: "x-a", value: "1")
    try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .POST, uri: "/p", headers: headers)))
    try channel.writeOutbound(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(string: "hello"))))
    try channel.writeOutbound(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(string: String(repeating: "x", count: 300)))))
    try channel.writeOutbound(HTTPClientRequestPart.end(HTTPHeaders([("x-trailer", "t")])))
    let sent = try Self.written(channel)
    #expect(sent > 300 + 5)
    #expect(Self.value("tcp_write_bytes_total", metrics) == Double(sent))
    let response = "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nfour"
    try channel.writeInbound(ByteBuffer(string: String(response.prefix(10))))
    try channel.writeInbound(ByteBuffer(string: String(response.dropFirst(10))))
    #expect(Self.value("tcp_read_bytes_total", metrics) == Double(response.utf8.count))
    var parts = 0
    while try channel.readInbound(as: HTTPClientResponsePart.self) != nil { parts += 1 }
    #expect(parts == 3)

    // The codec leaves (an upgrade's relay takes the bytes): the counting goes on in front, the opening not
    // counted again.
    let codec = try channel.pipeline.syncOperations.handler(type: HTTP1ClientCodec.self)
    try channel.pipeline.syncOperations.removeHandler(codec).wait()
    #expect(try channel.pipeline.syncOperations.handler(type: ConnectionMetricsHandler.self) != nil)
    try channel.writeInbound(ByteBuffer(string: "relayed"))
    #expect(try channel.readInbound(as: ByteBuffer.self).map { String(buffer: $0) } == "relayed")
    channel.writeAndFlush(ByteBuffer(string: "back"), promise: nil)
    #expect(try Self.written(channel) == 4)
    #expect(Self.value("tcp_read_bytes_total", metrics) == Double(response.utf8.count + 7))
    #expect(Self.value("tcp_write_bytes_total", metrics) == Double(sent + 4))
    #expect(Self.value("tcp_open_total", metrics) == 1)

    _ = try channel.finish()
    #expect(Self.value("tcp_close_total", metrics) == 1)
    #expect(Self.value("tcp_open_connections", metrics) == 0)
  }

  @Test("a connection closed with the codec in place is counted closed once")
  func closedOnce() throws {
    let (metrics, channel) = try Self.connected()
    // The inactive event told twice (once here, once by the close): one close counted.
    channel.pipeline.fireChannelInactive()
    _ = try channel.finish()
    #expect(Self.value("tcp_open_total", metrics) == 1)
    #expect(Self.value("tcp_close_total", metrics) == 1)
    #expect(Self.value("tcp_open_connections", metrics) == 0)
  }
}
