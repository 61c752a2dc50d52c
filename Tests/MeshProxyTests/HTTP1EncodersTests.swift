import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import MeshProxy

/// The proxy's HTTP/1.1 encoders, judged by NIO's decoders (llhttp) and against NIO's own encoders: the same
/// messages must come out the other side, framed by the same rules.
@Suite("HTTP/1.1 encoders")
struct HTTP1EncodersTests {
  // MARK: Helpers

  /// The bytes `encoder` writes for `parts`, and the promises' results.
  static func encode<Encoder: ChannelOutboundHandler>(
    _ encoder: Encoder, _ parts: [Encoder.OutboundIn]
  ) throws -> (bytes: String, results: [Result<Void, any Error>]) {
    let channel = EmbeddedChannel()
    try channel.pipeline.syncOperations.addHandler(encoder)
    // By part: a refused write fails at once, the others complete when flushed.
    var results = [Result<Void, any Error>](repeating: .failure(CancellationError()), count: parts.count)
    for (index, part) in parts.enumerated() {
      let promise = channel.eventLoop.makePromise(of: Void.self)
      promise.futureResult.whenComplete { results[index] = $0 }
      channel.write(NIOAny(part), promise: promise)
    }
    channel.flush()
    var bytes = ByteBuffer()
    while let data = try channel.readOutbound(as: IOData.self) {
      guard case .byteBuffer(var buffer) = data else { Issue.record("a file region"); continue }
      bytes.writeBuffer(&buffer)
    }
    _ = try channel.finish()
    return (String(buffer: bytes), results)
  }

  /// What NIO's response decoder reads from `bytes`: the head, the body, the trailers; after a request with
  /// `method` was sent.
  static func decodeResponse(_ bytes: String, method: HTTPMethod = .GET) throws -> (HTTPResponseHead, String, HTTPHeaders?) {
    let channel = EmbeddedChannel()
    try channel.pipeline.syncOperations.addHandlers([
      HTTPRequestEncoder(), ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .dropBytes)),
    ])
    try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: method, uri: "/")))
    try channel.writeOutbound(HTTPClientRequestPart.end(nil))
    return try decode(bytes, on: channel)
  }

  /// What NIO's request decoder reads from `bytes`.
  static func decodeRequest(_ bytes: String) throws -> (HTTPRequestHead, String, HTTPHeaders?) {
    let channel = EmbeddedChannel()
    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(HTTPRequestDecoder()))
    return try decode(bytes, on: channel)
  }

  /// The message `channel`'s decoder reads from `bytes`: its head, its body, its trailers; it must end.
  static func decode<Head: Equatable & Sendable>(_ bytes: String, on channel: EmbeddedChannel) throws -> (Head, String, HTTPHeaders?) {
    try channel.writeInbound(ByteBuffer(string: bytes))
    var head: Head?
    var body = ""
    var trailers: HTTPHeaders?
    var ended = false
    while let part = try channel.readInbound(as: HTTPPart<Head, ByteBuffer>.self) {
      switch part {
      case .head(let h): head = h
      case .body(let b): body += String(buffer: b)
      case .end(let t): trailers = t; ended = true
      }
    }
    _ = try? channel.finish()
    #expect(ended, "the message ends: \(bytes.debugDescription)")
    return (try #require(head), body, trailers)
  }

  static func sorted(_ headers: HTTPHeaders) -> [String] {
    headers.map { "\($0.name.lowercased()): \($0.value)" }.sorted()
  }

  static func body(_ text: String) -> IOData { .byteBuffer(ByteBuffer(string: text)) }

  // MARK: Responses

  @Test("a response with a length: the exact bytes, the body as is")
  func responseWithLength() throws {
    let headers: HTTPHeaders = HTTPHeaders([("Server", "nginx"), ("Content-Length", "5"), ("X-Empty", "")])
    let (bytes, results) = try Self.encode(
      HTTP1ResponseEncoder(),
      [.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers)), .body(Self.body("hello")), .end(nil)])
    #expect(bytes == "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 5\r\nX-Empty: \r\n\r\nhello")
    #expect(results.count == 3 && results.allSatisfy { if case .success = $0 { true } else { false } })
  }

  @Test("an HTTP/1.1 response with a body and no length is chunked, trailers included; a stale transfer-encoding goes")
  func responseChunked() throws {
    let headers: HTTPHeaders = HTTPHeaders([("content-type", "text/plain"), ("Transfer-Encoding", "gzip")])
    var trailers = HTTPHeaders()
    trailers.add(name: "grpc-status", value: "0")
    let (bytes, _) = try Self.encode(
      HTTP1ResponseEncoder(),
      [
        .head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers)), .body(Self.body("hello ")),
        .body(Self.body("")), .body(Self.body("world")), .end(trailers),
      ])
    #expect(bytes.hasSuffix("6\r\nhello \r\n5\r\nworld\r\n0\r\ngrpc-status: 0\r\n\r\n"), "\(bytes.debugDescription)")
    let (head, body, decodedTrailers) = try Self.decodeResponse(bytes)
    #expect(head.status == .ok)
    #expect(head.headers["transfer-encoding"] == ["chunked"])
    #expect(body == "hello world")
    #expect(decodedTrailers?["grpc-status"] == ["0"])
  }

  @Test("responses that cannot have a body carry neither length nor transfer-encoding: 204, 304, 1xx, 2xx to CONNECT")
  func responsesWithoutBody() throws {
    for status in [HTTPResponseStatus.noContent, .notModified] {
      let headers: HTTPHeaders = HTTPHeaders([("content-length", "10"), ("transfer-encoding", "chunked"), ("etag", "x")])
      let (bytes, _) = try Self.encode(
        HTTP1ResponseEncoder(), [.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers)), .end(nil)])
      #expect(bytes == "HTTP/1.1 \(status.code) \(status.reasonPhrase)\r\netag: x\r\n\r\n")
    }
    let encoder = HTTP1ResponseEncoder()
    encoder.requestReceived(.CONNECT)
    let (connect, _) = try Self.encode(
      encoder,
      [.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: HTTPHeaders([("content-length", "0")]))), .end(nil)])
    #expect(connect == "HTTP/1.1 200 OK\r\n\r\n")
  }

  @Test("a response to HEAD keeps the headers a GET would have, sends no body; the next response has its body")
  func responseToHead() throws {
    let encoder = HTTP1ResponseEncoder()
    encoder.requestReceived(.HEAD)
    // A 100 Continue before the final response does not answer the request.
    let (bytes, results) = try Self.encode(
      encoder,
      [
        .head(HTTPResponseHead(version: .http1_1, status: .continue)),
        .head(HTTPResponseHead(version: .http1_1, status: .ok, headers: HTTPHeaders([("content-type", "text/plain")]))),
        .body(Self.body("not sent")), .end(nil),
      ])
    #expect(bytes == "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n")
    if case .failure(let error) = results[2] {
      #expect(error is HTTP1EncoderError)
    } else {
      Issue.record("a body for HEAD is refused")
    }
    encoder.requestReceived(.GET)
    let (next, _) = try Self.encode(
      encoder,
      [.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: HTTPHeaders([("content-length", "2")]))), .body(Self.body("ok")), .end(nil)])
    #expect(next == "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
  }

  @Test("an HTTP/1.0 response without a length is not chunked (the connection's close ends it); odd versions and custom statuses")
  func responseVersions() throws {
    let (old, _) = try Self.encode(
      HTTP1ResponseEncoder(),
      [.head(HTTPResponseHead(version: .http1_0, status: .ok)), .body(Self.body("abc")), .end(nil)])
    #expect(old == "HTTP/1.0 200 OK\r\n\r\nabc")
    let (custom, _) = try Self.encode(
      HTTP1ResponseEncoder(),
      [
        .head(HTTPResponseHead(version: HTTPVersion(major: 1, minor: 1), status: .custom(code: 599, reasonPhrase: "Odd Thing"), headers: HTTPHeaders([("content-length", "0")]))),
        .end(nil),
      ])
    #expect(custom == "HTTP/1.1 599 Odd Thing\r\ncontent-length: 0\r\n\r\n")
  }

  // MARK: Requests

  @Test("requests: exact start line and headers; GET keeps its framing, POST without a length is chunked, a length wins over transfer-encoding")
  func requests() throws {
    let (get, _) = try Self.encode(
      HTTP1ClientCodec(),
      [.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/a?b=c", headers: HTTPHeaders([("Host", "x.example")]))), .end(nil)])
    #expect(get == "GET /a?b=c HTTP/1.1\r\nHost: x.example\r\n\r\n")

    let (post, _) = try Self.encode(
      HTTP1ClientCodec(),
      [
        .head(HTTPRequestHead(version: .http1_1, method: .POST, uri: "/upload", headers: HTTPHeaders([("host", "x")]))),
        .body(Self.body("part1")), .body(Self.body("part2")), .end(nil),
      ])
    let (postHead, postBody, _) = try Self.decodeRequest(post)
    #expect(postHead.method == .POST && postHead.headers["transfer-encoding"] == ["chunked"])
    #expect(postBody == "part1part2")

    let (put, _) = try Self.encode(
      HTTP1ClientCodec(),
      [
        .head(HTTPRequestHead(version: .http1_1, method: .PUT, uri: "/", headers: HTTPHeaders([("CONTENT-LENGTH", "3"), ("Transfer-Encoding", "chunked")]))),
        .body(Self.body("abc")), .end(nil),
      ])
    #expect(put == "PUT / HTTP/1.1\r\nCONTENT-LENGTH: 3\r\n\r\nabc")

    let (custom, _) = try Self.encode(
      HTTP1ClientCodec(),
      [.head(HTTPRequestHead(version: .http1_0, method: .RAW(value: "PURGE"), uri: "*")), .end(nil)])
    #expect(custom == "PURGE * HTTP/1.0\r\n\r\n")
  }

  // MARK: Against NIO's encoders

  @Test("for the same messages, NIO's decoder reads the same from these encoders as from NIO's")
  func sameAsNIO() throws {
    let responses: [(HTTPResponseHead, [String], HTTPHeaders?)] = [
      (HTTPResponseHead(version: .http1_1, status: .ok, headers: HTTPHeaders([("content-length", "3"), ("date", "today")])), ["abc"], nil),
      (HTTPResponseHead(version: .http1_1, status: .notFound, headers: HTTPHeaders([("content-type", "text/html")])), ["<p>", "gone", "</p>"], nil),
      (HTTPResponseHead(version: .http1_1, status: .ok, headers: HTTPHeaders([("content-type", "application/grpc")])), ["\0\0\0\0\0"], ["grpc-status": "0", "grpc-message": "ok"]),
      (HTTPResponseHead(version: .http1_1, status: .noContent, headers: HTTPHeaders([("transfer-encoding", "chunked")])), [], nil),
      (HTTPResponseHead(version: .http1_1, status: .created, headers: HTTPHeaders([("Content-Length", "0"), ("Transfer-Encoding", "chunked")])), [], nil),
    ]
    for (head, bodies, trailers) in responses {
      let parts = [HTTPServerResponsePart.head(head)] + bodies.map { .body(Self.body($0)) } + [.end(trailers)]
      let (ours, _) = try Self.encode(HTTP1ResponseEncoder(), parts)
      let (theirs, _) = try Self.encode(HTTPResponseEncoder(), parts)
      let a = try Self.decodeResponse(ours)
      let b = try Self.decodeResponse(theirs)
      #expect(a.0.status == b.0.status && a.0.version == b.0.version)
      #expect(Self.sorted(a.0.headers) == Self.sorted(b.0.headers), "\(ours.debugDescription) vs \(theirs.debugDescription)")
      #expect(a.1 == b.1)
      #expect(a.2.map(Self.sorted) == b.2.map(Self.sorted))
    }
    let requests: [(HTTPRequestHead, [String])] = [
      (HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: HTTPHeaders([("host", "a"), ("swiftmesh-via", "p1")])), []),
      (HTTPRequestHead(version: .http1_1, method: .POST, uri: "/p", headers: HTTPHeaders([("host", "a")])), ["x", "yz"]),
      (HTTPRequestHead(version: .http1_1, method: .POST, uri: "/p", headers: HTTPHeaders([("host", "a"), ("content-length", "3")])), ["xyz"]),
      (HTTPRequestHead(version: .http1_1, method: .DELETE, uri: "/d", headers: HTTPHeaders([("transfer-encoding", "chunked")])), ["gone"]),
    ]
    for (head, bodies) in requests {
      let parts = [HTTPClientRequestPart.head(head)] + bodies.map { .body(Self.body($0)) } + [.end(nil)]
      let (ours, _) = try Self.encode(HTTP1ClientCodec(), parts)
      let (theirs, _) = try Self.encode(HTTPRequestEncoder(), parts)
      let a = try Self.decodeRequest(ours)
      let b = try Self.decodeRequest(theirs)
      #expect(a.0.method == b.0.method && a.0.uri == b.0.uri && a.0.version == b.0.version)
      #expect(Self.sorted(a.0.headers) == Self.sorted(b.0.headers), "\(ours.debugDescription) vs \(theirs.debugDescription)")
      #expect(a.1 == b.1)
    }
  }

  // MARK: One pass and two

  @Test("the one-pass head and the measured head are the same bytes, framing dropped or added; heads past its room or with three framing headers take the measured path")
  func onePassSameAsMeasured() throws {
    let allocator = ByteBufferAllocator()
    let long = String(repeating: "v", count: HTTP1HeadEncoding.onePassBytesPerHeader * 3)
    let headerSets: [[(String, String)]] = [
      [],
      [("content-length", "3"), ("date", "today")],
      [("Content-Type", "text/plain"), ("Content-Length", "12"), ("Server", "nginx")],
      [("transfer-encoding", "chunked"), ("x-a", "1")],
      [("x-a", "1"), ("Content-Length", "0"), ("x-b", "2"), ("Transfer-Encoding", "chunked"), ("x-c", "3")],
      [("Transfer-Encoding", "gzip"), ("x", "y"), ("transfer-encoding", "chunked")],
      [("transfer-encoding", "chunked"), ("content-length", "5"), ("transfer-encoding", "chunked")],
      [("cookie", long), ("content-length", "1")],
      [("a", "b"), ("cookie", long), ("content-length", "1"), ("transfer-encoding", "chunked")],
      [("a", "b"), ("cookie", long + "vv"), ("content-length", "1"), ("transfer-encoding", "chunked")],
    ]
    let statuses: [HTTPResponseStatus] = [.ok, .noContent, .notModified, .custom(code: 599, reasonPhrase: "Odd")]
    let versions: [HTTPVersion] = [.http1_1, .http1_0, HTTPVersion(major: 2, minor: 0)]
    var onePass = 0
    var measured = 0
    for fields in headerSets {
      let headers = HTTPHeaders(fields)
      for version in versions {
        var lines: [HTTP1HeadEncoding.StartLine] = statuses.map {
          .response(HTTPResponseHead(version: version, status: $0, headers: headers))
        }
        lines += [HTTPMethod.GET, .POST, .TRACE, .RAW(value: "PURGE")].map {
          .request(HTTPRequestHead(version: version, method: $0, uri: "/a?b=c", headers: headers))
        }
        for line in lines {
          for body in [HTTP1HeadEncoding.Body.yes, .no, .unlikely] {
            let slow = HTTP1HeadEncoding.encodeMeasured(startLine: line, headers: headers, body: body, allocator: allocator)
            let fast = HTTP1HeadEncoding.encodeInOnePass(startLine: line, headers: headers, body: body, allocator: allocator)
            let framingHeaders = fields.filter {
              ["content-length", "transfer-encoding"].contains($0.0.lowercased())
            }.count
            // The room is per head: the headers' bytes against their count times the room per header.
            let fieldBytes = fields.map { $0.0.utf8.count + $0.1.utf8.count + 4 }.reduce(0, +)
            let fitsRoom = fieldBytes <= fields.count * HTTP1HeadEncoding.onePassBytesPerHeader
            if fitsRoom && framingHeaders <= 2 {
              let fast = try #require(fast, "\(fields) \(body)")
              #expect(String(buffer: fast.0) == String(buffer: slow.0), "\(fields) \(body) \(line.version)")
              #expect(fast.chunked == slow.chunked, "\(fields) \(body)")
              onePass += 1
            } else {
              #expect(fast == nil, "\(fields)")
              measured += 1
            }
            let chosen = HTTP1HeadEncoding.encode(startLine: line, headers: headers, body: body, allocator: allocator)
            #expect(String(buffer: chosen.0) == String(buffer: slow.0) && chosen.chunked == slow.chunked)
          }
        }
      }
    }
    #expect(onePass > 0 && measured > 0, "\(onePass) one-pass heads, \(measured) measured")
  }

  @Test("a head written without a promise goes out with its first body part, or its end, as one write; a flush, a large body or a promise sends it alone")
  func headHeldForItsBody() throws {
    let channel = EmbeddedChannel()
    try channel.pipeline.syncOperations.addHandler(HTTP1ResponseEncoder())
    func write(_ part: HTTPServerResponsePart, promise: EventLoopPromise<Void>? = nil) {
      channel.write(NIOAny(part), promise: promise)
    }
    func writes() throws -> [String] {
      channel.flush()
      var out: [String] = []
      while let data = try channel.readOutbound(as: IOData.self) {
        guard case .byteBuffer(let buffer) = data else { Issue.record("a file region"); continue }
        out.append(String(buffer: buffer))
      }
      return out
    }
    let sized = HTTPResponseHead(version: .http1_1, status: .ok, headers: ["content-length": "5"])
    let unsized = HTTPResponseHead(version: .http1_1, status: .ok, headers: ["x-a": "1"])

    // A length: head and body in one write, the end adds nothing.
    write(.head(sized))
    write(.body(Self.body("hello")))
    write(.end(nil))
    #expect(try writes() == ["HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"])

    // Chunked: the head and the first chunk in one write; later chunks and the end as before.
    write(.head(unsized))
    write(.body(Self.body("hello")))
    write(.body(Self.body("world!")))
    write(.end(["grpc-status": "0"]))
    let chunked = try writes()
    #expect(chunked.first == "HTTP/1.1 200 OK\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
    #expect(chunked.dropFirst().joined() == "6\r\nworld!\r\n0\r\ngrpc-status: 0\r\n\r\n")
    let (head, body, trailers) = try Self.decodeResponse(chunked.joined())
    #expect(head.status == .ok && body == "helloworld!" && trailers?["grpc-status"] == ["0"])

    // A head with its end and no body: one write, the last chunk included.
    write(.head(unsized))
    write(.end(nil))
    #expect(try writes() == ["HTTP/1.1 200 OK\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"])

    // A flush before the body sends the head alone (a response whose body comes later is not held back).
    write(.head(sized))
    #expect(try writes() == ["HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"])
    write(.body(Self.body("hello")))
    write(.end(nil))
    #expect(try writes() == ["hello"])

    // A body over the limit goes as a write of its own, after the head.
    let large = String(repeating: "x", count: HTTP1ResponseEncoding.coalescedBodyLimit + 1)
    write(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: ["content-length": "\(large.utf8.count)"])))
    write(.body(Self.body(large)))
    write(.end(nil))
    let largeHead = "HTTP/1.1 200 OK\r\ncontent-length: \(large.utf8.count)\r\n\r\n"
    #expect(try writes() == [largeHead, large])

    // A head written with a promise is written at once, and its promise kept.
    let promise = channel.eventLoop.makePromise(of: Void.self)
    write(.head(sized), promise: promise)
    #expect(try writes() == ["HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"])
    try promise.futureResult.wait()
    write(.body(Self.body("hello")))
    write(.end(nil))
    #expect(try writes() == ["hello"])
    _ = try channel.finish()
  }
}
