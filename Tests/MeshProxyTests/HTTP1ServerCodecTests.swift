import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import MeshProxy

/// The downstream HTTP/1.1 codec (decoder, encoder and pipelining in one handler), judged against what it
/// replaces: NIO's `HTTPRequestDecoder`, `HTTPResponseEncoder` and `HTTPServerPipelineHandler`. The same script
/// (bytes from the client, responses, reads, quiescing, the input's end) runs through both on an
/// `EmbeddedChannel`, and what reaches the request handler (parts, errors, the input's end), the reads let
/// through to the socket, the bytes written and whether the connection closed must be the same.
@Suite("HTTP/1.1 server codec")
struct HTTP1ServerCodecTests {
  enum Stack { case ours, nio }

  enum Step {
    /// Bytes from the client.
    case send(String)
    /// A whole response: head (with content-length), body, end.
    case respond(status: HTTPResponseStatus, body: String)
    /// Only the head of a response (its end comes with `.end`).
    case head(HTTPResponseStatus, contentLength: Int)
    case end
    /// The request handler asks for a read.
    case read
    case quiesce
    case inputClosed
  }

  /// What the request handler saw, the reads that reached the socket, and closes, in order.
  final class Recorder: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    var events: [String] = []
    var readCompletes = 0

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
      switch unwrapInboundIn(data) {
      case .head(let head): events.append("head \(head.method) \(head.uri)")
      case .body(var body): events.append("body \(body.readString(length: body.readableBytes) ?? "")")
      case .end(let trailers): events.append(trailers.map { "end \($0.count) trailers" } ?? "end")
      }
    }
    func channelReadComplete(context: ChannelHandlerContext) { readCompletes += 1 }
    func errorCaught(context: ChannelHandlerContext, error: any Error) { events.append("error \(error)") }
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
      if case .inputClosed = event as? ChannelEvent { events.append("inputClosed") }
      if event is ChannelShouldQuiesceEvent { events.append("quiesce passed on") }
    }
  }

  /// Counts the reads that reach the socket (it sits next to the channel's head).
  final class ReadCounter: ChannelOutboundHandler, @unchecked Sendable {
    typealias OutboundIn = Any
    let recorder: Recorder
    init(_ recorder: Recorder) { self.recorder = recorder }
    func read(context: ChannelHandlerContext) {
      recorder.events.append("read")
      context.read()
    }
    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
      recorder.events.append("close")
      context.close(mode: mode, promise: promise)
    }
  }

  struct Outcome: Equatable {
    var events: [String]
    var written: String
    var active: Bool
  }

  static func run(_ stack: Stack, _ steps: [Step], piece: Int = .max) throws -> (Outcome, Recorder) {
    let channel = EmbeddedChannel()
    let recorder = Recorder()
    let sync = channel.pipeline.syncOperations
    try sync.addHandler(ReadCounter(recorder))
    switch stack {
    case .ours:
      try sync.addHandler(HTTP1ServerCodec())
    case .nio:
      try sync.addHandlers([ByteToMessageHandler(HTTPRequestDecoder()), HTTPResponseEncoder(), HTTPServerPipelineHandler()])
    }
    try sync.addHandler(recorder)
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 8080)).wait()
    for step in steps {
      switch step {
      case .send(let text):
        var bytes = ByteBuffer(string: text)
        while bytes.readableBytes > 0 {
          let slice = bytes.readSlice(length: min(piece, bytes.readableBytes))!
          try channel.writeInbound(slice)
        }
      case .respond(let status, let body):
        var headers = HTTPHeaders()
        headers.add(name: "content-length", value: "\(body.utf8.count)")
        channel.write(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers)), promise: nil)
        if !body.isEmpty { channel.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: body))), promise: nil) }
        channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: nil)
      case .head(let status, let length):
        var headers = HTTPHeaders()
        headers.add(name: "content-length", value: "\(length)")
        channel.writeAndFlush(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers)), promise: nil)
      case .end:
        channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: nil)
      case .read:
        channel.read()
      case .quiesce:
        channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
      case .inputClosed:
        channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
      }
      channel.embeddedEventLoop.run()
    }
    var written = ""
    while var buffer = try channel.readOutbound(as: ByteBuffer.self) {
      written += buffer.readString(length: buffer.readableBytes) ?? ""
    }
    let outcome = Outcome(events: recorder.events, written: written, active: channel.isActive)
    _ = try? channel.finish()
    return (outcome, recorder)
  }

  /// Runs `steps` through both stacks, whole and in small pieces; returns ours.
  @discardableResult
  static func same(_ steps: [Step], _ comment: Comment? = nil) throws -> Outcome {
    let (theirs, _) = try run(.nio, steps)
    let (ours, _) = try run(.ours, steps)
    #expect(ours == theirs, comment)
    for piece in [1, 7] {
      let (ours, _) = try run(.ours, steps, piece: piece)
      let (theirs, _) = try run(.nio, steps, piece: piece)
      #expect(ours.written == theirs.written && ours.active == theirs.active, comment)
      #expect(ours.events.filter { $0 != "read" } == theirs.events.filter { $0 != "read" }, comment)
    }
    return ours
  }

  static func count(_ needle: String, in text: String) -> Int {
    let bytes = Array(text.utf8), pattern = Array(needle.utf8)
    guard bytes.count >= pattern.count else { return 0 }
    return (0...(bytes.count - pattern.count)).filter { Array(bytes[$0..<($0 + pattern.count)]) == pattern }.count
  }

  static let get = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
  static let get2 = "GET /b HTTP/1.1\r\nHost: x\r\n\r\n"

  @Test("pipelined requests: the second is handed on only once the first's response has ended")
  func pipelined() throws {
    let ours = try Self.same([.send(Self.get + Self.get2), .respond(status: .ok, body: "one"), .respond(status: .ok, body: "two")])
    #expect(ours.events == ["head GET /a", "end", "head GET /b", "end"])
    #expect(Self.count("HTTP/1.1 200 OK", in: ours.written) == 2)
    #expect(ours.written.hasSuffix("two"))
    // Between the two, nothing of the second request was handed on.
    let (early, _) = try Self.run(.ours, [.send(Self.get + Self.get2)])
    #expect(early.events == ["head GET /a", "end"])
  }

  @Test("a read waits while a response is outstanding, and is made when it ends")
  func readHeld() throws {
    let ours = try Self.same([.send(Self.get), .read, .read, .respond(status: .ok, body: ""), .read])
    #expect(ours.events == ["head GET /a", "end", "read", "read"])
    // During a request (before its end) reads go through.
    let during = try Self.same([.send("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab"), .read, .send("cd")])
    #expect(during.events == ["head POST /p", "body ab", "read", "body cd", "end"])
  }

  @Test("the requests that waited are handed on with a read completing")
  func readCompleteAfterDelivery() throws {
    let (_, theirs) = try Self.run(.nio, [.send(Self.get + Self.get2), .respond(status: .ok, body: "")])
    let (_, ours) = try Self.run(.ours, [.send(Self.get + Self.get2), .respond(status: .ok, body: "")])
    #expect(ours.readCompletes == theirs.readCompletes)
    #expect(ours.readCompletes == 2)
  }

  @Test("a response that ends before its request: the rest of the request is handed on, then the next")
  func earlyResponse() throws {
    let ours = try Self.same([
      .send("POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nabc"), .respond(status: .payloadTooLarge, body: ""),
      .send("def" + Self.get2), .respond(status: .ok, body: "b"),
    ])
    #expect(ours.events == ["head POST /big", "body abc", "body def", "end", "head GET /b", "end"])
  }

  @Test("a response to HEAD carries its headers and no body")
  func headResponse() throws {
    let ours = try Self.same([.send("HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n"), .head(.ok, contentLength: 5), .end, .send(Self.get2), .respond(status: .ok, body: "x")])
    #expect(ours.written.contains("content-length: 5\r\n\r\nHTTP/1.1 200 OK"))
  }

  @Test("quiescing an idle connection closes it")
  func quiesceIdle() throws {
    let ours = try Self.same([.send(Self.get), .respond(status: .ok, body: ""), .quiesce])
    #expect(!ours.active)
    #expect(!ours.events.contains("quiesce passed on"))
  }

  @Test("quiescing during a request: it is read to its end and answered with connection: close, then the connection closes; nothing after it is read")
  func quiesceDuringRequest() throws {
    let ours = try Self.same([
      .send("POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab"), .quiesce, .send("cd" + Self.get2), .read,
      .respond(status: .ok, body: "done"), .read,
    ])
    #expect(ours.events.prefix(4) == ["head POST /p", "body ab", "body cd", "end"])
    #expect(!ours.events.contains("head GET /b"))
    #expect(ours.written.lowercased().contains("connection: close"))
    #expect(!ours.active)
  }

  @Test("quiescing while a response is outstanding: the pipelined request is dropped, and the connection closes after the response")
  func quiesceWhileResponding() throws {
    let ours = try Self.same([.send(Self.get + Self.get2), .quiesce, .respond(status: .ok, body: "a")])
    #expect(ours.events == ["head GET /a", "end", "close"])
    #expect(ours.written.lowercased().contains("connection: close"))
    #expect(!ours.active)
  }

  @Test("a request with connection: close (or HTTP/1.0 without keep-alive) is the last: answered with connection: close, then the connection closes; nothing after it is read")
  func closeRequested() throws {
    for request in [
      "GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
      "GET /a HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\n\r\n",
      "GET /a HTTP/1.0\r\nHost: x\r\n\r\n",
    ] {
      // NIO's decoder refuses what follows such a request as an error, but its handlers leave closing to the
      // application: the connection stays open.
      let (theirs, _) = try Self.run(.nio, [.send(request + Self.get2), .respond(status: .ok, body: "a")])
      #expect(theirs.active)
      #expect(!theirs.events.contains("head GET /b"))
      for piece in [Int.max, 1, 7] {
        let (ours, _) = try Self.run(.ours, [.send(request + Self.get2), .respond(status: .ok, body: "a")], piece: piece)
        #expect(ours.events == ["head GET /a", "end", "close"], "\(request), pieces of \(piece)")
        #expect(ours.written.lowercased().contains("connection: close"))
        #expect(ours.written.hasSuffix("\r\n\r\na"))
        #expect(!ours.active)
      }
    }
    // HTTP/1.0 with keep-alive stays open, and the next request is read.
    let (kept, _) = try Self.run(.ours, [
      .send("GET /a HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n" + Self.get2), .respond(status: .ok, body: "a"),
      .respond(status: .ok, body: "b"),
    ])
    #expect(kept.events == ["head GET /a", "end", "head GET /b", "end"])
    #expect(kept.active)
  }

  @Test("the client's end of input reaches the request handler after the requests that waited")
  func halfCloseAfterPipelined() throws {
    let ours = try Self.same([.send(Self.get + Self.get2), .inputClosed, .respond(status: .ok, body: ""), .respond(status: .ok, body: "")])
    #expect(ours.events == ["head GET /a", "end", "head GET /b", "end", "inputClosed"])
    let idle = try Self.same([.send(Self.get), .inputClosed])
    #expect(idle.events == ["head GET /a", "end", "inputClosed"])
  }

  @Test("a malformed pipelined request is refused on its turn, after the response before it")
  func malformedPipelined() throws {
    let (theirs, _) = try Self.run(.nio, [.send(Self.get + "GET / HTTP/9.9\r\n\r\n"), .respond(status: .ok, body: "")])
    let (ours, _) = try Self.run(.ours, [.send(Self.get + "GET / HTTP/9.9\r\n\r\n"), .respond(status: .ok, body: "")])
    #expect(ours.events.count == 3 && ours.events.prefix(2) == ["head GET /a", "end"])
    #expect(ours.events.last?.hasPrefix("error") == true)
    #expect(ours.events == theirs.events)
    // Before the response, the error is not seen.
    let (waiting, _) = try Self.run(.ours, [.send(Self.get + "GET / HTTP/9.9\r\n\r\n")])
    #expect(waiting.events == ["head GET /a", "end"])
  }

  @Test("a refused request holds reads until its answer is written; nothing more is decoded")
  func refusedHoldsReads() throws {
    let steps: [Step] = [.send("GET / HTTP/9.9\r\n\r\n"), .read, .respond(status: .badRequest, body: ""), .read]
    let (ours, _) = try Self.run(.ours, steps)
    let (theirs, _) = try Self.run(.nio, steps)
    // The read asked for before the answer is made after it.
    #expect(ours.events == ["error invalid HTTP version", "read", "read"])
    let (unanswered, _) = try Self.run(.ours, Array(steps.prefix(2)))
    #expect(unanswered.events == ["error invalid HTTP version"])
    // NIO's decoder reports each later read again (dataReceivedInErrorState); the first error and the reads are
    // the same.
    #expect(theirs.events.first == ours.events.first)
    #expect(theirs.events.filter { $0 == "read" } == ours.events.filter { $0 == "read" })
    #expect(ours.written == theirs.written)
  }

  @Test("after an upgrade request, the bytes that follow go on as bytes when the codec is removed")
  func upgradeLeftover() throws {
    let channel = EmbeddedChannel()
    let codec = HTTP1ServerCodec()
    try channel.pipeline.syncOperations.addHandler(codec)
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 8080)).wait()
    try channel.writeInbound(ByteBuffer(string: "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n\u{81}\u{05}hello"))
    var parts: [HTTPServerRequestPart] = []
    while let part = try channel.readInbound(as: HTTPServerRequestPart.self) { parts.append(part) }
    #expect(parts.count == 2)
    try channel.pipeline.syncOperations.removeHandler(codec).wait()
    var rest = try #require(try channel.readInbound(as: ByteBuffer.self))
    #expect(rest.readBytes(length: rest.readableBytes) == Array("\u{81}\u{05}hello".utf8))
    _ = try? channel.finish()
  }
}
