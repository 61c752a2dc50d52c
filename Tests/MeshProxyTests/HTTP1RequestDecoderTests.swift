import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import MeshProxy

/// The proxy's HTTP/1.1 request decoder, judged against NIO's (llhttp): for the same bytes, fed whole and one
/// byte at a time, both read the same requests; what llhttp refuses, it refuses, with an `HTTPParserError`.
@Suite("HTTP/1.1 request decoder")
struct HTTP1RequestDecoderTests {
  enum Decoder { case ours, nio }

  static func channel(_ decoder: Decoder) throws -> EmbeddedChannel {
    let channel = EmbeddedChannel()
    switch decoder {
    case .ours: try channel.pipeline.syncOperations.addHandler(HTTP1RequestDecoder())
    case .nio: try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(HTTPRequestDecoder()))
    }
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 8080)).wait()
    return channel
  }

  typealias Reading = HTTP1DecoderReading

  static func read(_ decoder: Decoder, _ bytes: String, piece: Int = .max, eof: Bool = false) throws -> Reading {
    try Reading.read(try channel(decoder), bytes, piece: piece, eof: eof) { (head: HTTPRequestHead) in
      "\(head.method) \(head.uri) \(head.version) [\(Reading.fields(head.headers, trimmed: true))]"
    }
  }

  static let valid: [String] = [
    "GET / HTTP/1.1\r\nHost: backend.default.svc.cluster.local\r\n\r\n",
    "GET /a/b?c=d&e=%20f HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\nHEAD / HTTP/1.0\r\nHost: y\r\n\r\n",
    "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world",
    "PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n",
    "PURGE /cache HTTP/1.1\r\nHost: x\r\n\r\n",
    "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    "CONNECT backend:443 HTTP/1.1\r\nHost: backend:443\r\n\r\n",
    "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n",
    "POST /p HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: h2c\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: x\r\nX-Spaces:   a b  \r\nX-Empty:\r\nX-Latin: caf\u{e9}\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: x\r\nX-Tabs:\ta\tb \t\r\nX-Long: \(String(repeating: "0123456789abcdef", count: 8)) \r\n\r\n",
    "\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET  /two-spaces   HTTP/1.1\r\nHost: x\r\n\r\n",
  ]

  @Test("valid requests: the same as NIO's decoder reads, fed whole and one byte at a time")
  func sameAsNIO() throws {
    for bytes in Self.valid {
      let theirs = try Self.read(.nio, bytes)
      #expect(!theirs.failed, "NIO refused \(bytes.debugDescription)")
      for piece in [Int.max, 1, 5] {
        let ours = try Self.read(.ours, bytes, piece: piece)
        #expect(ours == theirs, "\(bytes.debugDescription) in pieces of \(piece)")
      }
    }
  }

  @Test("an extension method (any token, RFC 9110 9.1) is read and kept, where llhttp knows a fixed list")
  func extensionMethod() throws {
    let ours = try Self.read(.ours, "FROBNICATE /x HTTP/1.1\r\nHost: x\r\n\r\n")
    #expect(ours.parts == ["head RAW(value: \"FROBNICATE\") /x HTTP/1.1 [Host=x]", "end -"], "\(ours)")
    #expect(try Self.read(.nio, "FROBNICATE /x HTTP/1.1\r\nHost: x\r\n\r\n").failed)
  }

  static let invalid: [String] = [
    "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc",
    "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
    "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n",
    "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
    "GET / HTTP/1.1\r\nX\u{0}Y: 1\r\n\r\n",
    "GET / HTTP/1.1\r\nX: a\u{0}b\r\n\r\n",
    "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
    "GET / HTTP/1.1\r\n: empty\r\n\r\n",
    "GET / HTTP/2.0\r\nHost: x\r\n\r\n",
    "GET / HTTP/1.1 \r\nHost: x\r\n\r\n",
    "G@T / HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /\u{1} HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET / HTTP/1.1\nHost: x\n\n",
    "GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n",
  ]

  @Test("invalid requests: refused as NIO's decoder refuses them, as an HTTPParserError, whole and byte by byte")
  func refusedAsNIO() throws {
    for bytes in Self.invalid {
      let theirs = try Self.read(.nio, bytes)
      #expect(theirs.failed, "NIO accepted \(bytes.debugDescription): \(theirs)")
      for piece in [Int.max, 1] {
        let ours = try Self.read(.ours, bytes, piece: piece)
        #expect(ours.failed && ours.parserError, "\(bytes.debugDescription) in pieces of \(piece): \(ours)")
        #expect(!ours.parts.contains { $0.hasPrefix("end") }, "nothing of a refused request ends: \(ours)")
      }
    }
  }

  @Test("a request cut short by the client's close is an error; a closed idle connection is not")
  func cutShort() throws {
    for bytes in ["POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", "GET / HTTP/1.1\r\nHo"] {
      #expect(try Self.read(.ours, bytes, eof: true).failed)
      #expect(try Self.read(.nio, bytes, eof: true).failed)
    }
    #expect(try !Self.read(.ours, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", eof: true).failed)
  }

  @Test("an upgrade request ends what is HTTP: the bytes after it are handed on when the decoder is removed")
  func upgrade() throws {
    let channel = try Self.channel(.ours)
    try channel.writeInbound(
      ByteBuffer(string: "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\u{81}\u{2}hi"))
    guard case .head = try channel.readInbound(as: HTTPServerRequestPart.self),
      case .end = try channel.readInbound(as: HTTPServerRequestPart.self)
    else {
      Issue.record("no head and end")
      return
    }
    try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\n\r\n"))
    #expect(try channel.readInbound(as: HTTPServerRequestPart.self) == nil, "nothing after the upgrade is parsed")
    let decoder = try channel.pipeline.syncOperations.handler(type: HTTP1RequestDecoder.self)
    try channel.pipeline.syncOperations.removeHandler(decoder).wait()
    let leftover = try #require(try channel.readInbound(as: ByteBuffer.self))
    #expect(String(buffer: leftover) == "\u{81}\u{2}hiGET / HTTP/1.1\r\n\r\n")
  }
}
