import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import MeshProxy

/// The proxy's HTTP/1.1 response decoder, judged against NIO's (llhttp): for the same bytes, after the same
/// requests, fed whole and one byte at a time, both read the same messages; what llhttp refuses, it refuses.
@Suite("HTTP/1.1 client codec: responses")
struct HTTP1ClientCodecTests {
  typealias Reading = HTTP1DecoderReading

  enum Decoder { case ours, nio }

  static func channel(_ decoder: Decoder) throws -> EmbeddedChannel {
    let channel = EmbeddedChannel()
    switch decoder {
    case .ours: try channel.pipeline.syncOperations.addHandler(HTTP1ClientCodec())
    case .nio:
      try channel.pipeline.syncOperations.addHandlers([
        HTTPRequestEncoder(), ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .dropBytes)),
      ])
    }
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 8080)).wait()
    return channel
  }

  /// Sends requests with `methods`, then feeds `bytes` (in pieces of `piece` bytes), then, with `eof`, closes.
  static func read(
    _ decoder: Decoder, _ bytes: String, methods: [HTTPMethod] = [.GET], piece: Int = .max, eof: Bool = true
  ) throws -> Reading {
    let channel = try channel(decoder)
    for method in methods {
      try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: method, uri: "/")))
      try channel.writeOutbound(HTTPClientRequestPart.end(nil))
    }
    // Not the reason phrase: NIO's decoder drops it for codes it has no name for (this codec keeps it).
    return try Reading.read(channel, bytes, piece: piece, eof: eof) { (head: HTTPResponseHead) in
      "\(head.version) \(head.status.code) [\(Reading.fields(head.headers, trimmed: true))]"
    }
  }

  static let valid: [(String, [HTTPMethod])] = [
    // nginx's shape: a length, a body.
    ("HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 01 Dec 2026 20:00:00 GMT\r\nContent-Type: text/html\r\nContent-Length: 5\r\nConnection: keep-alive\r\nETag: \"x\"\r\n\r\nhello", [.GET]),
    // Chunked, with extensions and trailers, then a second response on the same connection.
    ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n6;ext\r\n world\r\n0\r\ngrpc-status: 0\r\nX-T: y\r\n\r\nHTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\nno", [.GET, .GET]),
    ("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n", [.POST]),
    ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", [.GET]),
    // No body: HEAD, 204, 304, whatever their headers say.
    ("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\nHTTP/1.1 304 Not Modified\r\nETag: a\r\n\r\n", [.HEAD, .GET, .GET]),
    // Until the connection closes.
    ("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it, until the end", [.GET]),
    ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nbytes until close", [.GET]),
    // 1xx are dropped; the final response follows.
    ("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok", [.POST]),
    // Unusual but valid: a custom status and reason, no reason, OWS, empty and non-ASCII values, upper-case names.
    ("HTTP/1.1 599 Odd Thing\r\ncontent-length: 0\r\n\r\n", [.GET]),
    ("HTTP/1.1 200\r\nContent-Length: 1\r\n\r\nx", [.GET]),
    ("HTTP/1.1 200 OK\r\nX-A:   spaced value \t \r\nX-Empty:\r\nX-Latin: caf\u{e9}\r\nCONTENT-LENGTH: 3\r\n\r\nabc", [.GET]),
    // Empty lines before a status line are ignored.
    ("\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", [.GET]),
  ]

  @Test("valid responses: the same messages as NIO's decoder, fed whole and one byte at a time")
  func sameAsNIO() throws {
    for (bytes, methods) in Self.valid {
      let theirs = try Self.read(.nio, bytes, methods: methods)
      #expect(!theirs.failed, "NIO refused \(bytes.debugDescription)")
      for piece in [Int.max, 1, 7] {
        let ours = try Self.read(.ours, bytes, methods: methods, piece: piece)
        #expect(ours == theirs, "\(bytes.debugDescription) in pieces of \(piece)")
      }
    }
  }

  @Test("what this codec keeps that NIO's does not: a custom status's reason; values without trailing whitespace")
  func fidelity() throws {
    let channel = try Self.channel(.ours)
    try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/")))
    try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 599 Odd Thing\r\nX-A:  v w \t\r\nContent-Length: 0\r\n\r\n"))
    guard case .head(let head) = try channel.readInbound(as: HTTPClientResponsePart.self) else {
      Issue.record("no head")
      return
    }
    #expect(head.status.code == 599 && head.status.reasonPhrase == "Odd Thing")
    #expect(head.headers["x-a"] == ["v w"])
  }

  @Test("names compare in any ASCII case, and only letters fold (CR is not `-`, `@` is not a backtick)")
  func nameComparison() {
    func isName(_ bytes: String, _ lowercase: StaticString) -> Bool {
      Array(bytes.utf8).withUnsafeBytes { HTTP1Grammar.isName($0, lowercase) }
    }
    #expect(isName("Content-Length", "content-length") && isName("CONTENT-LENGTH", "content-length"))
    #expect(!isName("content\rlength", "content-length"))
    #expect(!isName("content-lengtH ", "content-length"))
    #expect(!isName("@", "`"))
    #expect(HTTPHeaderRules.isName("Keep-Alive", "keep-alive") && !HTTPHeaderRules.isName("keep\ralive", "keep-alive"))
  }

  @Test("header-name bytes are exactly RFC 9110's tchar")
  func tokenBytes() {
    let tchar = Set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8)
    for byte in UInt8.min...UInt8.max {
      #expect(HTTP1Grammar.isTokenByte(byte) == tchar.contains(byte), "byte \(byte)")
    }
  }

  static let invalid: [String] = [
    "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "HTTP/1.1 200 OK\r\nContent-Length: 3x\r\n\r\nabc",
    "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    "HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nName : x\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nX-A: a\r\n folded\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nX-A: a\u{1}b\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nNoColon\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    "HTTX/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3 ;ext\r\nabc\r\n0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
    "HTTP/1.1 200 OK\nContent-Length: 0\n\n",
    // Cut short: the connection closes inside a body, a chunk, a head.
    "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    "HTTP/1.1 200 OK\r\nContent-Le",
  ]

  @Test("invalid or cut-short responses: refused as NIO's decoder refuses them, fed whole and one byte at a time")
  func refusedAsNIO() throws {
    for bytes in Self.invalid {
      let theirs = try Self.read(.nio, bytes)
      #expect(theirs.failed, "NIO accepted \(bytes.debugDescription): \(theirs)")
      for piece in [Int.max, 1] {
        let ours = try Self.read(.ours, bytes, piece: piece)
        #expect(ours.failed, "\(bytes.debugDescription) in pieces of \(piece): \(ours)")
        // Whatever was read before the error is what NIO read before it.
        #expect(ours.parts.count <= theirs.parts.count || !ours.parts.isEmpty && ours.parts == Array(theirs.parts.prefix(ours.parts.count)), "\(ours) vs \(theirs)")
      }
    }
  }

  @Test("a head over 80 KiB is refused, and one just under it is read")
  func headLimit() throws {
    let filler = String(repeating: "v", count: 1000)
    let under = "HTTP/1.1 200 OK\r\n" + (0..<70).map { "X-\($0): \(filler)\r\n" }.joined() + "Content-Length: 0\r\n\r\n"
    let over = "HTTP/1.1 200 OK\r\n" + (0..<90).map { "X-\($0): \(filler)\r\n" }.joined() + "Content-Length: 0\r\n\r\n"
    #expect(try Self.read(.ours, under, piece: 4096).parts.count == 2)
    #expect(try Self.read(.ours, over, piece: 4096).failed)
  }

  @Test("101 Switching Protocols ends the message; the bytes after it are handed on when the codec is removed")
  func upgrade() throws {
    let channel = try Self.channel(.ours)
    try channel.writeOutbound(
      HTTPClientRequestPart.head(
        HTTPRequestHead(version: .http1_1, method: .GET, uri: "/ws", headers: ["upgrade": "websocket", "connection": "upgrade"])))
    try channel.writeOutbound(HTTPClientRequestPart.end(nil))
    try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\u{81}\u{2}hi"))
    guard case .head(let head) = try channel.readInbound(as: HTTPClientResponsePart.self) else {
      Issue.record("no head")
      return
    }
    #expect(head.status == .switchingProtocols)
    guard case .end(nil) = try channel.readInbound(as: HTTPClientResponsePart.self) else {
      Issue.record("no end")
      return
    }
    try channel.writeInbound(ByteBuffer(string: "more"))
    #expect(try channel.readInbound(as: HTTPClientResponsePart.self) == nil, "nothing after the upgrade is parsed")
    #expect(channel.isActive)
    let codec = try channel.pipeline.syncOperations.handler(type: HTTP1ClientCodec.self)
    try channel.pipeline.syncOperations.removeHandler(codec).wait()
    let leftover = try #require(try channel.readInbound(as: ByteBuffer.self))
    #expect(String(buffer: leftover) == "\u{81}\u{2}himore")
    #expect(channel.isActive)
  }

  @Test("a response that does not keep its connection alive ends, then the codec closes the connection (never pooled again)")
  func connectionClose() throws {
    let cases: [(String, closes: Bool)] = [
      ("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", true),
      ("HTTP/1.1 200 OK\r\nconnection: Upgrade , CLOSE\r\nContent-Length: 2\r\n\r\nok", true),
      ("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", true),
      ("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", false),
      ("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", false),
      ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
    ]
    for (bytes, closes) in cases {
      let channel = try Self.channel(.ours)
      try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/")))
      try channel.writeOutbound(HTTPClientRequestPart.end(nil))
      #expect(channel.isActive)
      try channel.writeInbound(ByteBuffer(string: bytes))
      var parts: [HTTPClientResponsePart] = []
      while let part = try channel.readInbound(as: HTTPClientResponsePart.self) { parts.append(part) }
      #expect(parts.count == 3)
      guard case .head(let head) = parts.first else { continue }
      #expect(head.isKeepAlive == !closes, "NIO's reading of \(bytes.debugDescription)")
      #expect(channel.isActive == !closes, "\(bytes.debugDescription)")
    }
  }
}
