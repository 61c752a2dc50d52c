@testable import MeshProxy
import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP1
import NIOHTTP2
import Testing

/// The proxy's stream codecs against swift-nio-http2's own (`HTTP2FramePayloadToHTTP1{Client,Server}Codec`),
/// which they replace: the same parts in, the same frames out, and the other way round. Where they differ on
/// purpose (a response without a body is one HEADERS frame; received blocks are validated; `connection`
/// tokens match in any case), the tests say so.
@Suite("HTTP/2 stream codecs (against swift-nio-http2's)")
struct HTTP2StreamCodecsTests {
  /// A frame as something to compare: kind, END_STREAM, fields in order, body bytes.
  struct Frame: Equatable, CustomStringConvertible {
    var kind: String
    var endStream: Bool
    var fields: [String]
    var body: String

    init(_ payload: HTTP2Frame.FramePayload) {
      switch payload {
      case .headers(let headers):
        kind = "HEADERS"
        endStream = headers.endStream
        fields = headers.headers.map { "\($0.name): \($0.value)" }
        body = ""
      case .data(let data):
        kind = "DATA"
        endStream = data.endStream
        fields = []
        if case .byteBuffer(let buffer) = data.data { body = String(buffer: buffer) } else { body = "?" }
      case .rstStream(let code):
        kind = "RST_STREAM \(code)"
        endStream = false
        fields = []
        body = ""
      default:
        kind = "\(payload)"
        endStream = false
        fields = []
        body = ""
      }
    }

    var description: String { "\(kind)\(endStream ? " END" : "") \(fields) \(body.isEmpty ? "" : "'\(body)'")" }
  }

  /// A part as something to compare: its kind, the head's start line and fields in order, body bytes.
  static func describe<Head>(_ part: HTTPPart<Head, ByteBuffer>) -> String {
    switch part {
    case .head(let head as HTTPRequestHead):
      "head \(head.method.rawValue) \(head.uri) \(head.version) \(head.headers.map { "\($0.name): \($0.value)" })"
    case .head(let head as HTTPResponseHead):
      "head \(head.status.code) \(head.version) \(head.headers.map { "\($0.name): \($0.value)" })"
    case .head(let head):
      "head \(head)"
    case .body(let buffer):
      "body '\(String(buffer: buffer))'"
    case .end(let trailers):
      "end \(trailers.map { $0.map { "\($0.name): \($0.value)" } } ?? [])"
    }
  }

  enum Step<Part> {
    case write(Part)
    case flush
  }

  static func frames<Part>(_ handler: any ChannelHandler, _ steps: [Step<Part>]) throws -> (frames: [Frame], failures: Int) {
    let channel = EmbeddedChannel(handler: handler)
    defer { _ = try? channel.finish() }
    var failures = 0
    for step in steps {
      switch step {
      case .write(let part):
        let promise = channel.eventLoop.makePromise(of: Void.self)
        promise.futureResult.whenFailure { _ in failures += 1 }
        channel.write(part, promise: promise)
      case .flush:
        channel.flush()
      }
    }
    channel.flush()
    var frames: [Frame] = []
    while let frame = try channel.readOutbound(as: HTTP2Frame.FramePayload.self) { frames.append(Frame(frame)) }
    return (frames, failures)
  }

  static func request(_ method: HTTPMethod, _ uri: String, _ headers: [(String, String)]) -> HTTPRequestHead {
    HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: HTTPHeaders(headers))
  }

  static func request(_ headers: [(String, String)]) -> HTTPRequestHead { request(.GET, "/a?b=c", headers) }

  static func body(_ text: String) -> IOData { .byteBuffer(ByteBuffer(string: text)) }

  // MARK: Client side: requests out

  static var requests: [(String, [Step<HTTPClientRequestPart>])] {
    [
    ("GET, mixed-case names", [.write(.head(request([("Host", "backend:80"), ("User-Agent", "curl/8"), ("Accept", "*/*")]))), .write(.end(nil))]),
    ("POST with a length and a body", [
      .write(.head(request(.POST, "/p", [("host", "b"), ("Content-Length", "5"), ("Content-Type", "text/plain")]))),
      .write(.body(body("hello"))), .write(.end(nil)),
    ]),
    ("chunked POST with trailers", [
      .write(.head(request(.POST, "/p", [("host", "b"), ("Transfer-Encoding", "chunked"), ("TE", "trailers")]))),
      .write(.body(body("a"))), .write(.body(body("b"))), .write(.end(HTTPHeaders([("X-Checksum", "1"), ("grpc-status", "0")]))),
    ]),
    ("hop-by-hop fields and the names connection lists", [
      .write(.head(request([("host", "b"), ("Connection", "keep-alive, x-drop"), ("Keep-Alive", "5"), ("x-drop", "1"), ("Proxy-Connection", "x"), ("Upgrade", "h2c"), ("x-keep", "2")]))),
      .write(.end(nil)),
    ]),
    ("flushes between the parts", [
      .write(.head(request(.PUT, "/u", [("host", "b")]))), .flush, .write(.body(body("x"))), .flush,
      .write(.body(body("y"))), .write(.end(nil)),
    ]),
    ("a flushed head, then the end", [.write(.head(request([("host", "b")]))), .flush, .write(.end(nil))]),
    ("a head and trailers", [.write(.head(request(.POST, "/", [("host", "b")]))), .write(.end(HTTPHeaders([("a", "1")])))]),
    ("an extension method", [.write(.head(request(.RAW(value: "PURGE"), "/", [("host", "b")]))), .write(.end(nil))]),
    ("no host", [.write(.head(request([("x", "1")]))), .write(.end(nil))]),
    ("two hosts", [.write(.head(request([("host", "a"), ("Host", "b")]))), .write(.end(nil))]),
    ]
  }

  @Test("requests: the same frames as NIOHTTP2's client codec", arguments: requests.indices)
  func requestFrames(_ index: Int) throws {
    let (name, steps) = Self.requests[index]
    let ours = try Self.frames(HTTP2ClientStreamCodec(), steps)
    let theirs = try Self.frames(HTTP2FramePayloadToHTTP1ClientCodec(httpProtocol: .http), steps)
    #expect(ours.frames == theirs.frames, "\(name):\n ours   \(ours.frames)\n theirs \(theirs.frames)")
    #expect(ours.failures == theirs.failures, "\(name)")
    #expect(!ours.frames.isEmpty || ours.failures > 0, "\(name): nothing written and nothing failed")
  }

  @Test("the names connection lists are dropped in any case (NIO matches them case-sensitively)")
  func connectionTokensInAnyCase() throws {
    let steps: [Step<HTTPClientRequestPart>] = [
      .write(.head(Self.request([("host", "b"), ("Connection", "X-Drop"), ("x-drop", "1"), ("x-keep", "2")]))), .write(.end(nil)),
    ]
    let ours = try Self.frames(HTTP2ClientStreamCodec(), steps)
    #expect(ours.frames.map(\.fields) == [[":path: /a?b=c", ":method: GET", ":scheme: http", ":authority: b", "x-keep: 2"]])
  }

  // MARK: Client side: responses in

  static func responseParts(
    _ handler: any ChannelHandler, method: HTTPMethod, _ frames: [HTTP2Frame.FramePayload]
  ) throws -> (parts: [String], errors: [String], written: [Frame]) {
    final class Collect: ChannelInboundHandler, @unchecked Sendable {
      typealias InboundIn = HTTPClientResponsePart
      var parts: [String] = []
      var errors: [String] = []
      func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        parts.append(HTTP2StreamCodecsTests.describe(unwrapInboundIn(data)))
      }
      func errorCaught(context: ChannelHandlerContext, error: any Error) { errors.append("\(error)") }
    }
    let collect = Collect()
    let channel = EmbeddedChannel()
    defer { _ = try? channel.finish() }
    try channel.pipeline.syncOperations.addHandler(handler)
    try channel.pipeline.syncOperations.addHandler(collect)
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
    try channel.writeOutbound(HTTPClientRequestPart.head(request(method, "/", [("host", "b")])))
    try channel.writeOutbound(HTTPClientRequestPart.end(nil))
    while try channel.readOutbound(as: HTTP2Frame.FramePayload.self) != nil {}
    for frame in frames where channel.isActive { try channel.writeInbound(frame) }
    var written: [Frame] = []
    while let frame = try channel.readOutbound(as: HTTP2Frame.FramePayload.self) { written.append(Frame(frame)) }
    return (collect.parts, collect.errors, written)
  }

  static func headers(_ fields: [(String, String)], end: Bool = false) -> HTTP2Frame.FramePayload {
    .headers(.init(headers: HPACKHeaders(fields), endStream: end))
  }

  static func data(_ text: String, end: Bool = false) -> HTTP2Frame.FramePayload {
    .data(.init(data: .byteBuffer(ByteBuffer(string: text)), endStream: end))
  }

  static var responses: [(String, HTTPMethod, [HTTP2Frame.FramePayload])] {
    [
    ("a length and a body", .GET, [headers([(":status", "200"), ("content-length", "2"), ("x-a", "b")]), data("h"), data("i", end: true)]),
    ("no length, not the end: chunked", .GET, [headers([(":status", "200")]), data("x"), data("", end: true)]),
    ("HEADERS with END_STREAM: length 0", .POST, [headers([(":status", "201"), ("x", "y")], end: true)]),
    ("204 and 304 get nothing", .GET, [headers([(":status", "204")], end: true)]),
    ("304", .GET, [headers([(":status", "304")], end: true)]),
    ("an answer to HEAD gets nothing", .HEAD, [headers([(":status", "200")]), data("", end: true)]),
    ("1xx, then the response", .GET, [headers([(":status", "103"), ("link", "</a>")]), headers([(":status", "200")], end: true)]),
    ("trailers", .POST, [
      headers([(":status", "200"), ("content-type", "application/grpc")]), data("msg"),
      headers([("grpc-status", "0"), ("grpc-message", "")], end: true),
    ]),
    ("a trailers-only response", .POST, [headers([(":status", "200"), ("grpc-status", "5"), ("grpc-message", "nope")], end: true)]),
    ]
  }

  @Test("responses: the same parts as NIOHTTP2's client codec", arguments: responses.indices)
  func responseParts(_ index: Int) throws {
    let (name, method, frames) = Self.responses[index]
    let ours = try Self.responseParts(HTTP2ClientStreamCodec(), method: method, frames)
    let theirs = try Self.responseParts(HTTP2FramePayloadToHTTP1ClientCodec(httpProtocol: .http), method: method, frames)
    #expect(ours.parts == theirs.parts, "\(name):\n ours   \(ours.parts)\n theirs \(theirs.parts)")
    #expect(ours.errors.isEmpty && theirs.errors.isEmpty, "\(name): \(ours.errors) \(theirs.errors)")
    #expect(ours.parts.last?.hasPrefix("end") == true, "\(name): \(ours.parts)")
  }

  @Test("a malformed response fails the stream with the reason, resets it, and nothing more is read")
  func malformedResponses() throws {
    let cases: [(String, [HTTP2Frame.FramePayload])] = [
      ("uppercase name", [Self.headers([(":status", "200"), ("X-A", "b")])]),
      ("no :status", [Self.headers([("x", "y")])]),
      ("a :status that is not a number", [Self.headers([(":status", "2xx")])]),
      ("connection-specific field", [Self.headers([(":status", "200"), ("connection", "close")])]),
      ("a pseudo-header field in trailers", [Self.headers([(":status", "200")]), Self.headers([(":status", "200")], end: true)]),
    ]
    for (name, frames) in cases {
      let ours = try Self.responseParts(HTTP2ClientStreamCodec(), method: .GET, frames + [Self.data("late", end: true)])
      #expect(ours.errors.count == 1 && ours.errors[0].contains("malformed HTTP/2 header block"), "\(name): \(ours.errors)")
      #expect(ours.written == [Frame(.rstStream(.protocolError))], "\(name): \(ours.written)")
      #expect(!ours.parts.contains { $0.contains("late") }, "\(name): \(ours.parts)")
    }
  }

  /// swift-nio-http2's content-length validation is off on the proxy's connections; the codecs hold a
  /// received stream's DATA to its `content-length` instead (RFC 9113 8.1.1). A body that does not add up is
  /// never passed on whole: the stream fails before the frame that breaks the length is read.
  @Test("a response whose DATA does not add up to its content-length fails the stream before the part that breaks it")
  func responseBodyLengths() throws {
    let ok: [(String, HTTPMethod, [HTTP2Frame.FramePayload])] = [
      ("the length in two frames", .GET, [Self.headers([(":status", "200"), ("content-length", "3")]), Self.data("ab"), Self.data("c", end: true)]),
      ("a list of one value", .GET, [Self.headers([(":status", "200"), ("content-length", "2, 2")]), Self.data("ab", end: true)]),
      ("two fields that agree", .GET, [
        Self.headers([(":status", "200"), ("content-length", "2"), ("content-length", "2")]), Self.data("ab", end: true),
      ]),
      ("the length, then trailers", .POST, [
        Self.headers([(":status", "200"), ("content-length", "1")]), Self.data("a"), Self.headers([("grpc-status", "0")], end: true),
      ]),
      ("HEAD: a length and no DATA", .HEAD, [Self.headers([(":status", "200"), ("content-length", "10")], end: true)]),
      ("304: a length and no DATA", .GET, [Self.headers([(":status", "304"), ("content-length", "10")], end: true)]),
      ("no length: any body", .GET, [Self.headers([(":status", "200")]), Self.data("abc"), Self.data("de", end: true)]),
    ]
    for (name, method, frames) in ok {
      let ours = try Self.responseParts(HTTP2ClientStreamCodec(), method: method, frames)
      #expect(ours.errors.isEmpty && ours.written.isEmpty, "\(name): \(ours.errors) \(ours.written)")
      #expect(ours.parts.last?.hasPrefix("end") == true, "\(name): \(ours.parts)")
    }
    let broken: [(String, HTTPMethod, [HTTP2Frame.FramePayload], reason: String, parts: Int)] = [
      ("more DATA than the length", .GET, [Self.headers([(":status", "200"), ("content-length", "2")]), Self.data("a"), Self.data("bc", end: true)],
       "more DATA", 2),
      ("less DATA than the length", .GET, [Self.headers([(":status", "200"), ("content-length", "3")]), Self.data("ab", end: true)],
       "less DATA", 1),
      ("a length, and END_STREAM on the HEADERS", .GET, [Self.headers([(":status", "200"), ("content-length", "3")], end: true)],
       "less DATA", 0),
      ("trailers before the length is made up", .POST, [
        Self.headers([(":status", "200"), ("content-length", "3")]), Self.data("a"), Self.headers([("grpc-status", "0")], end: true),
      ], "less DATA", 2),
      ("DATA in answer to HEAD", .HEAD, [Self.headers([(":status", "200"), ("content-length", "1")]), Self.data("a", end: true)],
       "more DATA", 1),
      ("DATA in a 204", .GET, [Self.headers([(":status", "204")]), Self.data("a", end: true)], "more DATA", 1),
      ("a length that is not digits", .GET, [Self.headers([(":status", "200"), ("content-length", "+1")]), Self.data("a", end: true)],
       "not digits", 0),
      ("lengths that disagree", .GET, [
        Self.headers([(":status", "200"), ("content-length", "1"), ("content-length", "2")]), Self.data("a", end: true),
      ], "disagree", 0),
      ("a list that disagrees", .GET, [Self.headers([(":status", "200"), ("content-length", "1, 2")]), Self.data("a", end: true)],
       "not digits", 0),
    ]
    for (name, method, frames, reason, parts) in broken {
      let ours = try Self.responseParts(HTTP2ClientStreamCodec(), method: method, frames + [Self.data("late", end: true)])
      #expect(ours.errors.count == 1 && ours.errors[0].contains(reason), "\(name): \(ours.errors)")
      #expect(ours.written == [Frame(.rstStream(.protocolError))], "\(name): \(ours.written)")
      // The head and the bodies before the frame that broke the length went through; nothing from it on.
      #expect(ours.parts.count == parts && !ours.parts.contains { $0.hasPrefix("end") || $0.contains("late") }, "\(name): \(ours.parts)")
    }
  }

  // MARK: Server side: requests in

  static func requestParts(_ handler: any ChannelHandler, _ frames: [HTTP2Frame.FramePayload]) throws -> (parts: [String], written: [Frame]) {
    let channel = EmbeddedChannel(handler: handler)
    defer { _ = try? channel.finish() }
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
    for frame in frames where channel.isActive { try channel.writeInbound(frame) }
    var parts: [String] = []
    while let part = try channel.readInbound(as: HTTPServerRequestPart.self) { parts.append(describe(part)) }
    var written: [Frame] = []
    while let frame = try channel.readOutbound(as: HTTP2Frame.FramePayload.self) { written.append(Frame(frame)) }
    return (parts, written)
  }

  static let requestFields: [(String, String)] = [(":method", "GET"), (":scheme", "http"), (":path", "/x"), (":authority", "backend:80")]

  static var requestsIn: [(String, [HTTP2Frame.FramePayload])] {
    [
    ("GET with END_STREAM", [headers(requestFields + [("user-agent", "h2load")], end: true)]),
    ("POST with END_STREAM: length 0", [headers([(":method", "POST"), (":scheme", "http"), (":path", "/"), (":authority", "b")], end: true)]),
    ("POST with a body: chunked", [
      headers([(":method", "POST"), (":scheme", "https"), (":path", "/"), (":authority", "b"), ("x", "1")]), data("ab"), data("c", end: true),
    ]),
    ("POST with a length", [
      headers([(":method", "POST"), (":scheme", "http"), (":path", "/"), (":authority", "b"), ("content-length", "1")]), data("a", end: true),
    ]),
    ("a host field as well as :authority", [headers(requestFields + [("host", "other")], end: true)]),
    ("trailers", [
      headers([(":method", "POST"), (":scheme", "http"), (":path", "/s"), (":authority", "b"), ("content-type", "application/grpc"), ("te", "trailers")]),
      data("m"), headers([("x-t", "1")], end: true),
    ]),
    ("an extension method", [headers([(":method", "PURGE"), (":scheme", "http"), (":path", "/"), (":authority", "b")], end: true)]),
    ]
  }

  @Test("received requests: the same parts as NIOHTTP2's server codec", arguments: requestsIn.indices)
  func receivedRequests(_ index: Int) throws {
    let (name, frames) = Self.requestsIn[index]
    let ours = try Self.requestParts(HTTP2ServerStreamCodec(), frames)
    let theirs = try Self.requestParts(HTTP2FramePayloadToHTTP1ServerCodec(), frames)
    #expect(ours.parts == theirs.parts, "\(name):\n ours   \(ours.parts)\n theirs \(theirs.parts)")
    #expect(ours.written.isEmpty, "\(name): \(ours.written)")
    #expect(ours.parts.last?.hasPrefix("end") == true, "\(name): \(ours.parts)")
  }

  @Test("a malformed request, or one with nowhere to go, is reset with PROTOCOL_ERROR and goes no further")
  func refusedRequests() throws {
    let cases: [(String, [(String, String)])] = [
      ("uppercase name", Self.requestFields + [("X-A", "b")]),
      ("no :path", [(":method", "GET"), (":scheme", "http"), (":authority", "b")]),
      ("te other than trailers", Self.requestFields + [("te", "gzip")]),
      ("CONNECT (no :path to forward)", [(":method", "CONNECT"), (":authority", "b:443")]),
      ("neither :authority nor host", [(":method", "GET"), (":scheme", "http"), (":path", "/")]),
    ]
    for (name, fields) in cases {
      let ours = try Self.requestParts(HTTP2ServerStreamCodec(), [Self.headers(fields), Self.data("late", end: true)])
      #expect(ours.parts.isEmpty, "\(name): \(ours.parts)")
      #expect(ours.written == [Frame(.rstStream(.protocolError))], "\(name): \(ours.written)")
    }
    // `host` without `:authority` is enough (RFC 9113 8.3.1); NIO's codec refuses it.
    let hostOnly = try Self.requestParts(
      HTTP2ServerStreamCodec(), [Self.headers([(":method", "GET"), (":scheme", "http"), (":path", "/"), ("host", "b")], end: true)])
    #expect(hostOnly.parts == ["head GET / HTTP/2.0 [\"host: b\"]", "end []"], "\(hostOnly.parts)")
  }

  @Test("a request whose DATA does not add up to its content-length is reset before the part that breaks it")
  func requestBodyLengths() throws {
    let post: [(String, String)] = [(":method", "POST"), (":scheme", "http"), (":path", "/"), (":authority", "b")]
    let ok = try Self.requestParts(
      HTTP2ServerStreamCodec(), [Self.headers(post + [("content-length", "3")]), Self.data("ab"), Self.data("c", end: true)])
    #expect(ok.parts == ["head POST / HTTP/2.0 [\"host: b\", \"content-length: 3\"]", "body 'ab'", "body 'c'", "end []"], "\(ok.parts)")
    #expect(ok.written.isEmpty, "\(ok.written)")
    let broken: [(String, [HTTP2Frame.FramePayload], parts: Int)] = [
      ("more DATA than the length", [Self.headers(post + [("content-length", "1")]), Self.data("ab", end: true)], 1),
      ("more DATA, without the end", [Self.headers(post + [("content-length", "1")]), Self.data("a"), Self.data("b")], 2),
      ("less DATA than the length", [Self.headers(post + [("content-length", "4")]), Self.data("ab"), Self.data("c", end: true)], 2),
      ("a length, and END_STREAM on the HEADERS", [Self.headers(post + [("content-length", "4")], end: true)], 0),
      ("trailers before the length is made up", [
        Self.headers(post + [("content-length", "4")]), Self.data("ab"), Self.headers([("x-t", "1")], end: true),
      ], 2),
      ("a negative length", [Self.headers(post + [("content-length", "-1")]), Self.data("", end: true)], 0),
    ]
    for (name, frames, parts) in broken {
      let ours = try Self.requestParts(HTTP2ServerStreamCodec(), frames + [Self.data("late", end: true)])
      #expect(ours.written == [Frame(.rstStream(.protocolError))], "\(name): \(ours.written)")
      #expect(ours.parts.count == parts && !ours.parts.contains { $0.hasPrefix("end") || $0.contains("late") }, "\(name): \(ours.parts)")
    }
  }

  /// Where the mesh's fields end (the inbound side), the codec takes them out as the block becomes HTTP/1
  /// headers, and a request a peer proxy carried as HTTP/1.1 gets an HTTP/1.1 head; elsewhere they stay.
  @Test("the inbound side's codec takes out the hop header and the original-protocol mark")
  func meshFieldsTakenOut() throws {
    let carried = Self.requestFields + [
      ("user-agent", "u"), ("swiftmesh-via", "p1"), ("swiftmesh-orig-proto", "HTTP/1.1"), ("x-a", "b"),
    ]
    let inbound = try Self.requestParts(HTTP2ServerStreamCodec(takingOutMeshFields: true), [Self.headers(carried, end: true)])
    #expect(inbound.parts == ["head GET /x HTTP/1.1 [\"host: backend:80\", \"user-agent: u\", \"x-a: b\"]", "end []"], "\(inbound.parts)")
    // Without the mark the request stays HTTP/2; a name that only shares a mesh field's length is kept.
    let native = Self.requestFields + [("swiftmesh-via", "p1"), ("swiftmesh-orig-prot0", "x"), ("x-abcdefghijk", "y")]
    let inboundNative = try Self.requestParts(HTTP2ServerStreamCodec(takingOutMeshFields: true), [Self.headers(native, end: true)])
    #expect(
      inboundNative.parts == ["head GET /x HTTP/2.0 [\"host: backend:80\", \"swiftmesh-orig-prot0: x\", \"x-abcdefghijk: y\"]", "end []"],
      "\(inboundNative.parts)")
    // Elsewhere (outbound, gateway) the hop header must stay: it is how a loop is found.
    let outbound = try Self.requestParts(HTTP2ServerStreamCodec(), [Self.headers(carried, end: true)])
    #expect(
      outbound.parts == [
        "head GET /x HTTP/2.0 [\"host: backend:80\", \"user-agent: u\", \"swiftmesh-via: p1\", \"swiftmesh-orig-proto: HTTP/1.1\", \"x-a: b\"]",
        "end []",
      ], "\(outbound.parts)")
  }

  /// The client proxy's hop fields for a request to a peer proxy are added to the stream's header block as it
  /// is made, not to the request's `HTTPHeaders` first (which copied them): the head goes as it arrived, and
  /// its connection-specific fields are left out on the way.
  @Test("a request's hop fields go into its header block; the connection-specific fields of the head as it arrived stay out")
  func hopFieldsInTheBlock() throws {
    let head = HTTPRequestHead(
      version: .http1_1, method: .POST, uri: "/x",
      headers: HTTPHeaders([
        ("Host", "backend:80"), ("Connection", "keep-alive, x-drop"), ("x-drop", "1"), ("TE", "trailers, deflate"),
        ("User-Agent", "u"), ("Keep-Alive", "timeout=5"),
      ]))
    for (fields, added) in [
      (HopFields(token: "p42", markHTTP1: true), [("swiftmesh-via", "p42"), ("swiftmesh-orig-proto", "HTTP/1.1")]),
      (HopFields(token: "p7", markHTTP1: false), [("swiftmesh-via", "p7")]),
    ] {
      var state = HTTP2ClientStreamState(scheme: "http")
      state.hopFields = fields
      _ = try state.write(.head(head), promise: nil)
      let frames = try state.write(.end(nil), promise: nil)
      guard case .headers(let block)? = frames.first?.frame else {
        Issue.record("no HEADERS frame: \(String(describing: frames.first?.frame))")
        continue
      }
      #expect(block.endStream)
      let sent = block.headers.map { "\($0.name): \($0.value)" }
      let expected =
        [":path: /x", ":method: POST", ":scheme: http", ":authority: backend:80", "te: trailers", "user-agent: u"]
        + added.map { "\($0.0): \($0.1)" }
      #expect(sent == expected, "\(sent)")
    }
  }

  // MARK: Server side: responses out

  static func response(_ status: HTTPResponseStatus, _ headers: [(String, String)] = []) -> HTTPServerResponsePart {
    .head(HTTPResponseHead(version: .http1_1, status: status, headers: HTTPHeaders(headers)))
  }

  static var responsesOut: [(String, [Step<HTTPServerResponsePart>])] {
    [
    ("a head, a body and the end", [.write(response(.ok, [("Content-Type", "text/plain"), ("Content-Length", "2")])), .write(.body(body("hi"))), .write(.end(nil))]),
    ("a flushed head, then the end", [.write(response(.noContent)), .flush, .write(.end(nil))]),
    ("trailers", [.write(response(.ok, [("content-type", "application/grpc")])), .write(.body(body("m"))), .write(.end(HTTPHeaders([("grpc-status", "0")])))]),
    ("a head and trailers", [.write(response(.ok)), .write(.end(HTTPHeaders([("grpc-status", "5"), ("grpc-message", "x")])))]),
    ("hop-by-hop fields", [
      .write(response(.ok, [("Connection", "close, x-drop"), ("x-drop", "1"), ("Keep-Alive", "timeout=5"), ("Transfer-Encoding", "chunked"), ("x-keep", "k")])),
      .write(.body(body("b"))), .write(.end(nil)),
    ]),
    ("1xx, flushed, then a body", [.write(response(.continue)), .flush, .write(response(.ok)), .write(.body(body("z"))), .write(.end(nil))]),
    ("a custom status", [.write(response(.custom(code: 299, reasonPhrase: "Fine"))), .flush, .write(.end(nil))]),
    ]
  }

  @Test("responses out: the same frames as NIOHTTP2's server codec", arguments: responsesOut.indices)
  func responseFrames(_ index: Int) throws {
    let (name, steps) = Self.responsesOut[index]
    let ours = try Self.frames(HTTP2ServerStreamCodec(), steps)
    let theirs = try Self.frames(HTTP2FramePayloadToHTTP1ServerCodec(), steps)
    let expected = Self.endOnLastData(theirs.frames)
    #expect(ours.frames == expected, "\(name):\n ours   \(ours.frames)\n theirs \(theirs.frames)")
    #expect(ours.failures == 0 && theirs.failures == 0)
  }

  /// NIO's frames as ours differ from them on purpose: an empty DATA frame with END_STREAM right behind a
  /// DATA frame is that frame's END_STREAM.
  static func endOnLastData(_ frames: [Frame]) -> [Frame] {
    var merged: [Frame] = []
    for frame in frames {
      if frame.kind == "DATA", frame.endStream, frame.body.isEmpty, let last = merged.last, last.kind == "DATA",
        !last.endStream
      {
        merged[merged.count - 1].endStream = true
      } else {
        merged.append(frame)
      }
    }
    return merged
  }

  @Test("the last DATA frame carries END_STREAM when the end follows it; a flush between them sends it without")
  func endOnLastDataFrame() throws {
    let together = try Self.frames(
      HTTP2ServerStreamCodec(),
      [.write(Self.response(.ok)), .write(.body(Self.body("a"))), .write(.body(Self.body("b"))), .write(.end(nil))])
    #expect(together.frames.map(\.description) == ["HEADERS [\":status: 200\"] ", "DATA [] 'a'", "DATA END [] 'b'"])
    let flushed = try Self.frames(
      HTTP2ServerStreamCodec(), [.write(Self.response(.ok)), .write(.body(Self.body("a"))), .flush, .write(.end(nil))])
    #expect(flushed.frames.map(\.description) == ["HEADERS [\":status: 200\"] ", "DATA [] 'a'", "DATA END [] "])
    // Trailers follow the last DATA frame as they are.
    let trailers = try Self.frames(
      HTTP2ServerStreamCodec(),
      [.write(Self.response(.ok)), .write(.body(Self.body("m"))), .write(.end(HTTPHeaders([("grpc-status", "0")])))])
    #expect(trailers.frames.map(\.description) == ["HEADERS [\":status: 200\"] ", "DATA [] 'm'", "HEADERS END [\"grpc-status: 0\"] "])
    // A reset drops the held frame and fails its write.
    let channel = EmbeddedChannel(handler: HTTP2ServerStreamCodec())
    defer { _ = try? channel.finish() }
    let written = channel.eventLoop.makePromise(of: Void.self)
    channel.write(Self.response(.ok), promise: nil)
    channel.write(HTTPServerResponsePart.body(Self.body("x")), promise: written)
    channel.pipeline.triggerUserOutboundEvent(StreamResetEvent(code: .cancel), promise: nil)
    #expect(throws: (any Error).self) { try written.futureResult.wait() }
  }

  @Test("a final head followed by the end, with no body between, is one HEADERS frame with END_STREAM (gRPC trailers-only)")
  func trailersOnly() throws {
    let steps: [Step<HTTPServerResponsePart>] = [
      .write(Self.response(.ok, [("content-type", "application/grpc"), ("grpc-status", "5")])), .write(.end(nil)),
    ]
    let ours = try Self.frames(HTTP2ServerStreamCodec(), steps)
    #expect(ours.frames.count == 1, "\(ours.frames)")
    #expect(ours.frames.first?.kind == "HEADERS" && ours.frames.first?.endStream == true, "\(ours.frames)")
    #expect(ours.frames.first?.fields == [":status: 200", "content-type: application/grpc", "grpc-status: 5"])
    // NIO's codec sends the same as HEADERS and an empty DATA frame with END_STREAM.
    let theirs = try Self.frames(HTTP2FramePayloadToHTTP1ServerCodec(), steps)
    #expect(theirs.frames.map(\.kind) == ["HEADERS", "DATA"])
    // A 1xx head is not held: the final response comes after it.
    let informational = try Self.frames(
      HTTP2ServerStreamCodec(), [.write(Self.response(.continue)), .write(Self.response(.ok)), .write(.end(nil))])
    #expect(informational.frames.map(\.description) == ["HEADERS [\":status: 100\"] ", "HEADERS END [\":status: 200\"] "])
  }

  @Test("a reset event becomes RST_STREAM with the upstream's code, and a held head is dropped")
  func reset() throws {
    let channel = EmbeddedChannel(handler: HTTP2ServerStreamCodec())
    defer { _ = try? channel.finish() }
    channel.write(Self.response(.ok), promise: nil)
    channel.pipeline.triggerUserOutboundEvent(StreamResetEvent(code: .refusedStream), promise: nil)
    var frames: [Frame] = []
    while let frame = try channel.readOutbound(as: HTTP2Frame.FramePayload.self) { frames.append(Frame(frame)) }
    #expect(frames == [Frame(.rstStream(.refusedStream))])
  }

  @Test("lowercasing returns the same string when there is nothing to fold")
  func lowercasing() {
    #expect(HTTP2Translation.lowercased("Content-Type") == "content-type")
    #expect(HTTP2Translation.lowercased("x-already-lower") == "x-already-lower")
    #expect(HTTP2Translation.lowercased("X-Ü") == "x-Ü")
  }
}
