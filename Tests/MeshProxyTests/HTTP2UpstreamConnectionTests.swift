@testable import MeshProxy
import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP1
import NIOHTTP2
import Testing

/// The proxy's upstream HTTP/2 connection without a channel per stream (``HTTP2StreamsHandler``)
/// against swift-nio-http2's own server side, on two embedded channels whose bytes are passed back and forth:
/// stream IDs, flow control both ways past the 64 KiB windows, paused reading, resets and the connection's
/// end.
@Suite("HTTP/2 upstream streams without channels (against swift-nio-http2's server)")
struct HTTP2UpstreamConnectionTests {
  /// What a stream's reporter would be told, recorded.
  final class Sink: UpstreamResponseSink {
    var parts: [String] = []
    var bodyBytes = 0
    var ended = false
    var failures: [any Error] = []
    var inactiveCount = 0
    var writability: [Bool] = []
    func received(_ part: HTTPClientResponsePart) {
      switch part {
      case .head(let head): parts.append("head \(head.status.code)")
      case .body(let body): bodyBytes += body.readableBytes
      case .end: ended = true
      }
    }
    func readComplete() {}
    func writabilityChanged(_ writable: Bool) { writability.append(writable) }
    func failed(_ error: any Error) { failures.append(error) }
    func inactive() { inactiveCount += 1 }
  }

  struct Pair {
    let client = EmbeddedChannel()
    let server = EmbeddedChannel()
    let handler = HTTP2StreamsHandler()
    let serverHandler = EmbeddedHTTP2Peer()

    init() throws {
      try client.pipeline.syncOperations.addHandler(
        NIOHTTP2Handler(
          mode: .client, frameDelegate: handler, connectionConfiguration: .proxy(meshPeer: true),
          streamConfiguration: .proxy(meshPeer: true)))
      try client.pipeline.syncOperations.addHandler(handler)
      try server.pipeline.syncOperations.addHandler(NIOHTTP2Handler(mode: .server))
      try server.pipeline.syncOperations.addHandler(serverHandler)
      let address = try SocketAddress(ipAddress: "127.0.0.1", port: 1)
      try client.connect(to: address).wait()
      try server.connect(to: address).wait()
      try exchange()
    }

    /// Passes bytes both ways until neither side has anything more to send.
    func exchange() throws { try EmbeddedHTTP2Peer.exchange(client, server) }

    func request(_ method: HTTPMethod = .GET, body: Int = 0) throws -> (HTTP2UpstreamStream, Sink) {
      let stream = try #require(handler.makeStream())
      let sink = Sink()
      stream.sink = sink
      var head = HTTPRequestHead(version: .http1_1, method: method, uri: "/")
      head.headers.add(name: "host", value: "backend")
      if body > 0 { head.headers.add(name: "content-length", value: "\(body)") }
      stream.writeDirectly(.head(head), promise: nil)
      var left = body
      while left > 0 {
        let size = min(left, 16_384)
        stream.writeDirectly(.body(.byteBuffer(ByteBuffer(repeating: 0x61, count: size))), promise: nil)
        left -= size
        stream.flush()
        try exchange()
      }
      stream.writeDirectly(.end(nil), promise: nil)
      stream.flush()
      try exchange()
      return (stream, sink)
    }

    func respond(_ id: HTTP2StreamID, body: Int) throws {
      serverHandler.write(id, .headers(.init(headers: [":status": "200"])))
      var left = body
      while left > 0 {
        let size = min(left, 16_384)
        left -= size
        serverHandler.write(id, .data(.init(data: .byteBuffer(ByteBuffer(repeating: 0x62, count: size)), endStream: left == 0)))
      }
      serverHandler.flush()
      try exchange()
    }
  }

  @Test("streams get odd IDs in the order their first frames are written; a GET is one HEADERS frame with END_STREAM")
  func streamIDs() throws {
    let pair = try Pair()
    let first = try #require(pair.handler.makeStream())
    let second = try #require(pair.handler.makeStream())
    var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/")
    head.headers.add(name: "host", value: "backend")
    // The second stream writes first: it gets stream 1.
    second.writeDirectly(.head(head), promise: nil)
    second.writeDirectly(.end(nil), promise: nil)
    second.flush()
    first.writeDirectly(.head(head), promise: nil)
    first.writeDirectly(.end(nil), promise: nil)
    first.flush()
    try pair.exchange()
    #expect(second.id == HTTP2StreamID(1))
    #expect(first.id == HTTP2StreamID(3))
    let headers = try #require(pair.serverHandler.onlyHeaders(1), "\(pair.serverHandler.frames[1] ?? [])")
    #expect(headers.headers.first(name: ":authority") == "backend")
  }

  @Test("a 1 MiB response crosses the 64 KiB windows: the stream and the connection are given back their window as it is read")
  func largeResponse() throws {
    let pair = try Pair()
    let (stream, sink) = try pair.request()
    let id = try #require(stream.id)
    try pair.respond(id, body: 1 << 20)
    #expect(sink.parts == ["head 200"])
    #expect(sink.bodyBytes == 1 << 20)
    #expect(sink.ended)
    #expect(stream.isClosed)
    #expect(sink.failures.isEmpty)
    #expect(pair.handler.openStreams == 0)
  }

  @Test("a 1 MiB request crosses the peer's windows; the stream is unwritable while its data waits, writable again after")
  func largeRequest() throws {
    let pair = try Pair()
    let (stream, sink) = try pair.request(.POST, body: 1 << 20)
    let id = try #require(stream.id)
    #expect(pair.serverHandler.bodyBytes(id) == 1 << 20)
    // Unwritable while its data waited for the peer's window, writable again once it was all sent.
    #expect(sink.writability.contains(false))
    #expect(sink.writability.last == true)
    #expect(stream.isWritable)
    try pair.respond(id, body: 10)
    #expect(sink.ended)
    #expect(sink.failures.isEmpty)
  }

  @Test("paused reading holds the frames and the window; resuming reads them and gives the window back")
  func pausedReading() throws {
    let pair = try Pair()
    let (stream, sink) = try pair.request()
    let id = try #require(stream.id)
    stream.setReading(false)
    try pair.respond(id, body: 200_000)
    // The peer stopped at the stream's window: 65,535 bytes sent, none read.
    #expect(sink.bodyBytes == 0)
    #expect(!sink.ended)
    stream.setReading(true)
    try pair.exchange()
    #expect(sink.bodyBytes == 200_000)
    #expect(sink.ended)
  }

  @Test("a reset from the peer fails the request with the stream's code; closing from this side sends RST_STREAM CANCEL")
  func resets() throws {
    let pair = try Pair()
    let (stream, sink) = try pair.request()
    let id = try #require(stream.id)
    pair.serverHandler.write(id, .rstStream(.refusedStream))
    pair.serverHandler.flush()
    try pair.exchange()
    #expect(stream.isClosed)
    #expect(sink.failures.count == 1)
    #expect((sink.failures.first as? NIOHTTP2Errors.StreamClosed)?.errorCode == .refusedStream, "\(sink.failures)")

    let (second, secondSink) = try pair.request()
    let secondID = try #require(second.id)
    second.close()
    try pair.exchange()
    #expect(second.isClosed)
    #expect(secondSink.failures.count == 1)
    let frames = pair.serverHandler.frames[secondID] ?? []
    guard case .rstStream(let code) = frames.last else {
      Issue.record("no RST_STREAM: \(frames)")
      return
    }
    #expect(code == .cancel)
    #expect(pair.handler.openStreams == 0)
  }

  @Test("the stream table: found by ID, a slot a longer-lived stream holds goes to the overflow, grown past half full")
  func streamTable() {
    let connection = HTTP2StreamsHandler()
    let loop = EmbeddedEventLoop()
    func stream(_ id: Int) -> HTTP2FrameStream {
      let stream = HTTP2FrameStream(connection: connection, eventLoop: loop)
      stream.id = HTTP2StreamID(id)
      return stream
    }
    var table = HTTP2StreamTable(capacity: 8)
    let long = stream(1)
    table.insert(long)
    // 9 takes the slot of 1 (8 slots): it goes to the overflow, and both are found.
    let colliding = stream(9)
    table.insert(colliding)
    #expect(table[1] === long)
    #expect(table[9] === colliding)
    #expect(table[17] == nil)
    #expect(table.count == 2)
    // Past half full the table grows; every stream is still found.
    let more = stride(from: 3, through: 61, by: 2).filter { $0 != 9 }.map(stream)
    for stream in more { table.insert(stream) }
    #expect(table.count == 2 + more.count)
    for stream in more { #expect(table[stream.id!] === stream) }
    #expect(table[1] === long)
    #expect(table[9] === colliding)
    #expect(Set(table.all.map { ObjectIdentifier($0) }).count == table.count)
    // Removed ones are gone, once; a stream with an ID that is not in the table is not removed.
    #expect(table.remove(9) === colliding)
    #expect(table.remove(9) == nil)
    #expect(table[9] == nil)
    #expect(table.remove(1) === long)
    #expect(table.remove(63) == nil)
    #expect(table.count == more.count)
  }

  @Test("the connection's end closes its open streams; no stream is made on a closed connection")
  func connectionEnd() throws {
    let pair = try Pair()
    let (stream, sink) = try pair.request()
    var closed = 0
    stream.onClose = { closed += 1 }
    try pair.client.close().wait()
    #expect(stream.isClosed)
    #expect(sink.inactiveCount == 1)
    #expect(closed == 1)
    #expect(pair.handler.makeStream() == nil)
  }

  /// The settings a connection's first SETTINGS frame carries, read from the bytes it wrote (after the client's
  /// 24-byte preface).
  static func advertisedSettings(mode: NIOHTTP2Handler.ParserMode, meshPeer: Bool) throws -> [UInt16: UInt32] {
    let channel = EmbeddedChannel()
    try channel.pipeline.syncOperations.addHandler(
      NIOHTTP2Handler(
        mode: mode, connectionConfiguration: .proxy(meshPeer: meshPeer), streamConfiguration: .proxy(meshPeer: meshPeer)))
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
    var bytes = ByteBuffer()
    while var part = try channel.readOutbound(as: ByteBuffer.self) { bytes.writeBuffer(&part) }
    if mode == .client { bytes.moveReaderIndex(forwardBy: 24) }
    let header = bytes.readBytes(length: 9) ?? []  // 24-bit length, type, flags, stream 0
    try #require(header.count == 9 && header[3] == 4, "a SETTINGS frame first: \(header)")
    let length = Int(header[0]) << 16 | Int(header[1]) << 8 | Int(header[2])
    var settings: [UInt16: UInt32] = [:]
    for _ in 0..<(length / 6) {
      let parameter = bytes.readInteger(as: UInt16.self)
      let value = bytes.readInteger(as: UInt32.self)
      if let parameter, let value { settings[parameter] = value }
    }
    _ = try? channel.finish()
    return settings
  }

  @Test("between proxies each side advertises a 1,024-byte HPACK table (SETTINGS_HEADER_TABLE_SIZE); to others the default")
  func headerTableSetting() throws {
    for mode in [NIOHTTP2Handler.ParserMode.client, .server] {
      let mesh = try Self.advertisedSettings(mode: mode, meshPeer: true)
      #expect(mesh[1] == 1024, "\(mode): \(mesh)")
      #expect(mesh[3] == 100, "\(mode): max concurrent streams kept: \(mesh)")
      let other = try Self.advertisedSettings(mode: mode, meshPeer: false)
      #expect(other[1] == nil, "\(mode): \(other)")
      #expect(other[3] == 100, "\(mode): \(other)")
    }
  }

  /// Each response also repeats the value of the one 20 before: an encoder that kept to 4,096 bytes would still
  /// hold it and send an index the client's 1,024-byte table no longer has, and decoding would fail.
  @Test("a peer's encoder keeps to the smaller table: 100 responses, each with fields of new values, all decoded")
  func headerTableHonoured() throws {
    let pair = try Pair()
    func value(_ index: Int) -> String { String(repeating: "\(index % 10)", count: 40) + "-\(index)" }
    for index in 0..<100 {
      let (stream, sink) = try pair.request()
      let id = try #require(stream.id)
      var fields = [(":status", "200"), ("x-request-id", value(index)), ("etag", "\"\(index)\"")]
      if index >= 20 { fields.append(("x-request-id", value(index - 20))) }
      pair.serverHandler.write(
        id,
        .headers(
          .init(
            headers: HPACKHeaders(fields),
            endStream: true)))
      pair.serverHandler.flush()
      try pair.exchange()
      #expect(sink.parts == ["head 200"], "response \(index)")
      #expect(sink.ended && sink.failures.isEmpty, "response \(index): \(sink.failures)")
    }
    #expect(pair.client.isActive)
  }
}
