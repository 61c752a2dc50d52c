import Foundation
@testable import MeshProxy
import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP2
import NIOPosix
import Testing
import _MeshTestSupport

/// The proxy's own HTTP/2 connection code (`HTTP2ConnectionHandler`): against python-h2 as client and as
/// server over loopback, its flow control and concurrency limits both ways; and, fed frames byte for byte, the
/// connection and stream errors RFC 9113 asks for.
@Suite("HTTP/2 connection handler", .serialized)
struct HTTP2ConnectionHandlerTests {
  static var pythonH2: Bool { PythonPeer.canImport("h2") }

  @Test(
    "python-h2's client: 8 concurrent 100 KB uploads echoed back through windows of 16 KB, a PING answered",
    .enabled(if: pythonH2))
  func pythonClient() async throws {
    let group = MultiThreadedEventLoopGroup.singleton
    let server = try await ServerBootstrap(group: group)
      .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          let echo = EchoStreams()
          try channel.pipeline.syncOperations.addHandler(HTTP2ConnectionHandler(mode: .server, delegate: echo))
          try channel.pipeline.syncOperations.addHandler(echo)
        }
      }
      .bind(host: "127.0.0.1", port: 0).get()
    defer { try? server.close().wait() }
    let port = server.localAddress!.port!
    let result = try await Subprocess.run(
      PythonPeer.python, [PythonPeer.path("h2_peer.py"), "client", "\(port)", "8", "100000"])
    let object = try #require(
      try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any], "\(result)")
    #expect(object["ping"] as? String == "12345678")
    // The handler's first SETTINGS: at most 100 streams at once.
    #expect((object["settings"] as? [String: Int])?["3"] == 100)
    let streams = try #require(object["streams"] as? [String: [String: Any]])
    #expect(streams.count == 8)
    for (id, stream) in streams {
      #expect(stream["status"] as? String == "200", "stream \(id): \(stream)")
      #expect(stream["received"] as? String == "100000", "stream \(id): \(stream)")
      #expect(stream["body"] as? Int == 100_000, "stream \(id): \(stream)")
      #expect(stream["ended"] as? Bool == true, "stream \(id): \(stream)")
    }
  }

  @Test(
    "python-h2's server with 2 streams at most and windows of 1,000 bytes: 6 uploads wait their turns, all answered",
    .enabled(if: pythonH2))
  func pythonServer() async throws {
    let peer = try await PythonPeer.serve(PythonPeer.path("h2_peer.py"), ["serve"])
    defer { peer.process.terminate() }
    let group = MultiThreadedEventLoopGroup.singleton
    let client = RequestingStreams(count: 6, bodySize: 3000, eventLoop: group.next())
    let channel = try await ClientBootstrap(group: group)
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHandler(HTTP2ConnectionHandler(mode: .client, delegate: client))
          try channel.pipeline.syncOperations.addHandler(client)
        }
      }
      .connect(host: "127.0.0.1", port: peer.port).get()
    defer { try? channel.close().wait() }
    let responses = try await client.done.futureResult.get()
    #expect(responses.count == 6)
    for (id, response) in responses {
      #expect(response.status == "200", "stream \(id)")
      #expect(response.fields["x-received"] == "3000", "stream \(id)")
      #expect(response.body == 3000, "stream \(id)")
      #expect(Int(response.fields["x-most-open"] ?? "") ?? 99 <= 2, "stream \(id): \(response.fields)")
    }
  }

  @Test("a first frame other than SETTINGS: GOAWAY PROTOCOL_ERROR, and the connection closes")
  func settingsFirst() async throws {
    let peer = try await ServerUnderTest()
    try await peer.receive([HTTP2Frame(streamID: .rootStream, payload: .ping(HTTP2PingData(withInteger: 1), ack: false))], settings: false)
    #expect(try peer.sent().last?.goAwayCode == .protocolError)
    #expect(!peer.channel.isActive)
  }

  @Test("bytes that are not the client's magic close the connection")
  func badMagic() async throws {
    let peer = try await ServerUnderTest()
    #expect(throws: NIOHTTP2Errors.BadClientMagic.self) {
      try peer.channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
    }
    #expect(!peer.channel.isActive)
  }

  @Test("SETTINGS acknowledged, PING answered with the same data")
  func settingsAndPing() async throws {
    let peer = try await ServerUnderTest()
    try await peer.receive([
      HTTP2Frame(streamID: .rootStream, payload: .ping(HTTP2PingData(withInteger: 0xABCD), ack: false))
    ])
    let sent = try peer.sent()
    #expect(sent.contains { if case .settings(.ack) = $0.payload { true } else { false } })
    #expect(sent.contains { if case .ping(let data, ack: true) = $0.payload { data.integer == 0xABCD } else { false } })
  }

  @Test("the peer's SETTINGS_INITIAL_WINDOW_SIZE holds a response's DATA back until its WINDOW_UPDATE")
  func peerWindowApplied() async throws {
    let peer = try await ServerUnderTest()
    let settings = HTTP2Frame(
      streamID: .rootStream, payload: .settings(.settings([HTTP2Setting(parameter: .initialWindowSize, value: 10)])))
    let body = HTTP2Frame(
      streamID: 1, payload: .data(.init(data: .byteBuffer(ByteBuffer(repeating: 0x61, count: 100)), endStream: true)))
    try await peer.receive([settings, ServerUnderTest.request(1, endStream: false), body], settings: false)
    var data = try peer.sent().compactMap { frame -> Int? in
      if case .data(let data) = frame.payload, frame.streamID == 1 { data.data.readableBytes } else { nil }
    }
    #expect(data == [10])
    try await peer.receive([HTTP2Frame(streamID: 1, payload: .windowUpdate(windowSizeIncrement: 90))], preface: false)
    data = try peer.sent().compactMap { frame -> Int? in
      if case .data(let data) = frame.payload, frame.streamID == 1, data.endStream { data.data.readableBytes } else { nil }
    }
    #expect(data == [90])
    #expect(peer.echo.closed.map(\.0) == [1])
  }

  @Test("DATA on a stream never opened: GOAWAY PROTOCOL_ERROR")
  func dataOnIdleStream() async throws {
    let peer = try await ServerUnderTest()
    try await peer.receive([HTTP2Frame(streamID: 5, payload: .data(.init(data: .byteBuffer(ByteBuffer(string: "x")))))])
    #expect(try peer.sent().last?.goAwayCode == .protocolError)
    #expect(!peer.channel.isActive)
  }

  @Test("DATA beyond the connection's window: GOAWAY FLOW_CONTROL_ERROR")
  func connectionWindowExceeded() async throws {
    let peer = try await ServerUnderTest()
    var frames = [ServerUnderTest.request(1, endStream: false)]
    for _ in 0..<5 {
      frames.append(HTTP2Frame(streamID: 1, payload: .data(.init(data: .byteBuffer(ByteBuffer(repeating: 0x61, count: 16000))))))
    }
    // The streams' handler gives nothing back here (it is not reading), so 80,000 bytes overflow 65,535.
    peer.echo.refill = false
    try await peer.receive(frames)
    #expect(try peer.sent().last?.goAwayCode == .flowControlError)
  }

  @Test("a stream past SETTINGS_MAX_CONCURRENT_STREAMS is refused with REFUSED_STREAM; the others go on")
  func concurrencyLimit() async throws {
    var configuration = HTTP2ConnectionHandler.Configuration()
    configuration.settings = [HTTP2Setting(parameter: .maxConcurrentStreams, value: 2)]
    let peer = try await ServerUnderTest(configuration: configuration)
    peer.echo.answer = false
    try await peer.receive([ServerUnderTest.request(1, endStream: false), ServerUnderTest.request(3, endStream: false), ServerUnderTest.request(5, endStream: false)])
    let resets = try peer.sent().compactMap { frame -> (HTTP2StreamID, HTTP2ErrorCode)? in
      if case .rstStream(let code) = frame.payload { (frame.streamID, code) } else { nil }
    }
    #expect(resets.map(\.0) == [5])
    #expect(resets.map(\.1) == [.refusedStream])
    #expect(peer.echo.opened == [1, 3])
    #expect(peer.channel.isActive)
  }

  @Test("more RST_STREAM frames than the budget allows: GOAWAY ENHANCE_YOUR_CALM")
  func resetFlood() async throws {
    let peer = try await ServerUnderTest.notAnswering { $0.resetBudget = 10 }
    var frames: [HTTP2Frame] = []
    for index in 0..<11 {
      let id = HTTP2StreamID(2 * index + 1)
      frames.append(ServerUnderTest.request(id, endStream: false))
      frames.append(HTTP2Frame(streamID: id, payload: .rstStream(.cancel)))
    }
    try await peer.receive(frames)
    #expect(try peer.sent().last?.goAwayCode == .enhanceYourCalm)
    #expect(peer.echo.closed.count == 10)
    #expect(peer.echo.closed.allSatisfy { $0.1 == .cancel })
  }

  @Test("frames for a stream that just closed are ignored; DATA after END_STREAM resets it with STREAM_CLOSED")
  func closedStreams() async throws {
    let peer = try await ServerUnderTest()
    peer.echo.answer = false
    try await peer.receive([
      ServerUnderTest.request(1, endStream: true),
      HTTP2Frame(streamID: 1, payload: .data(.init(data: .byteBuffer(ByteBuffer(string: "late"))))),
      ServerUnderTest.request(3, endStream: false),
      HTTP2Frame(streamID: 3, payload: .rstStream(.cancel)),
      HTTP2Frame(streamID: 3, payload: .windowUpdate(windowSizeIncrement: 10)),
      HTTP2Frame(streamID: 3, payload: .data(.init(data: .byteBuffer(ByteBuffer(string: "after reset"))))),
    ])
    let sent = try peer.sent()
    let resets = sent.compactMap { frame -> HTTP2StreamID? in
      if case .rstStream(.streamClosed) = frame.payload { frame.streamID } else { nil }
    }
    #expect(resets == [1])
    #expect(!sent.contains { $0.goAwayCode != nil })
    #expect(peer.channel.isActive)
  }

  @Test("the peer's stream errors count against a budget for the connection's life; past it, GOAWAY ENHANCE_YOUR_CALM")
  func glitchBudget() async throws {
    let peer = try await ServerUnderTest.notAnswering { $0.glitchBudget = 3 }
    // Three stream errors of two kinds: DATA after the peer's END_STREAM, and a window increment of 0 on an
    // open stream (a malformed frame). A reset the streams send (here PROTOCOL_ERROR, as an upstream's reset
    // passed on) is not the peer's, and does not count.
    try await peer.receive([
      ServerUnderTest.request(1, endStream: true),
      HTTP2Frame(streamID: 1, payload: .data(.init(data: .byteBuffer(ByteBuffer(string: "late"))))),
      ServerUnderTest.request(3, endStream: false),
      HTTP2Frame(streamID: 3, payload: .windowUpdate(windowSizeIncrement: 0)),
      ServerUnderTest.request(5, endStream: true),
      HTTP2Frame(streamID: 5, payload: .data(.init(data: .byteBuffer(ByteBuffer(string: "late"))))),
      ServerUnderTest.request(7, endStream: false),
    ])
    try await peer.channel.writeAndFlush(HTTP2Frame(streamID: 7, payload: .rstStream(.protocolError)))
    var sent = try peer.sent()
    let resets = sent.compactMap { frame -> (HTTP2StreamID, HTTP2ErrorCode)? in
      if case .rstStream(let code) = frame.payload { (frame.streamID, code) } else { nil }
    }
    #expect(resets.map(\.0) == [1, 3, 5, 7])
    #expect(resets.map(\.1) == [.streamClosed, .protocolError, .streamClosed, .protocolError])
    #expect(!sent.contains { $0.goAwayCode != nil })
    #expect(peer.channel.isActive)

    // The fourth: its stream is reset, then the connection goes.
    try await peer.receive(
      [
        ServerUnderTest.request(9, endStream: true),
        HTTP2Frame(streamID: 9, payload: .data(.init(data: .byteBuffer(ByteBuffer(string: "late"))))),
      ], settings: false, preface: false)
    sent = try peer.sent()
    #expect(sent.dropLast().last?.streamID == 9)
    #expect(sent.last?.goAwayCode == .enhanceYourCalm)
    #expect(!peer.channel.isActive)
  }

  @Test("the peer's GOAWAY: streams this side opened above its last stream close as refused")
  func goAwayRefuses() async throws {
    let channel = EmbeddedChannel()
    let client = RequestingStreams(count: 0, bodySize: 0, eventLoop: channel.eventLoop)
    try channel.pipeline.syncOperations.addHandler(HTTP2ConnectionHandler(mode: .client, delegate: client))
    try channel.pipeline.syncOperations.addHandler(client)
    try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).get()
    var writer = HTTP2FrameWriter()
    var bytes = ByteBuffer()
    try writer.write(HTTP2Frame(streamID: .rootStream, payload: .settings(.settings([]))), into: &bytes)
    try channel.writeInbound(bytes)
    for id in [1, 3, 5] as [HTTP2StreamID] {
      channel.write(ServerUnderTest.request(id, endStream: true), promise: nil)
    }
    channel.flush()
    bytes.clear()
    try writer.write(
      HTTP2Frame(streamID: .rootStream, payload: .goAway(lastStreamID: 1, errorCode: .noError, opaqueData: nil)), into: &bytes)
    try channel.writeInbound(bytes)
    #expect(client.closed.map(\.0) == [3, 5])
    #expect(client.closed.allSatisfy { $0.1 == .refusedStream })
    // A new stream after the GOAWAY fails at once.
    let promise = channel.eventLoop.makePromise(of: Void.self)
    channel.write(ServerUnderTest.request(7, endStream: true), promise: promise)
    channel.flush()
    await #expect(throws: NIOHTTP2Errors.CreatedStreamAfterGoaway.self) { try await promise.futureResult.get() }
    _ = try? channel.finish()
  }
}

extension HTTP2Frame {
  fileprivate var goAwayCode: HTTP2ErrorCode? {
    if case .goAway(_, let code, _) = payload { code } else { nil }
  }
}

/// A server-side `HTTP2ConnectionHandler` on an `EmbeddedChannel`, fed frames written by `HTTP2FrameWriter`.
private final class ServerUnderTest {
  let channel = EmbeddedChannel()
  let echo = EchoStreams()
  private var writer = HTTP2FrameWriter()
  private var reader = HTTP2FrameReader()

  init(configuration: HTTP2ConnectionHandler.Configuration = .init()) async throws {
    try channel.pipeline.syncOperations.addHandler(
      HTTP2ConnectionHandler(mode: .server, delegate: echo, configuration: configuration))
    try channel.pipeline.syncOperations.addHandler(echo)
    try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).get()
  }

  /// A handler with `configure`'s configuration whose streams are never answered.
  static func notAnswering(
    _ configure: (inout HTTP2ConnectionHandler.Configuration) -> Void
  ) async throws -> ServerUnderTest {
    var configuration = HTTP2ConnectionHandler.Configuration()
    configure(&configuration)
    let peer = try await ServerUnderTest(configuration: configuration)
    peer.echo.answer = false
    return peer
  }

  static func request(_ id: HTTP2StreamID, endStream: Bool) -> HTTP2Frame {
    HTTP2Frame(
      streamID: id,
      payload: .headers(
        .init(headers: [":method": "POST", ":path": "/", ":scheme": "http", ":authority": "backend"], endStream: endStream)))
  }

  /// The client's magic (unless `preface` is false: it came before) and SETTINGS (unless `settings` is false),
  /// then `frames`, in one read.
  func receive(_ frames: [HTTP2Frame], settings: Bool = true, preface: Bool = true) async throws {
    var bytes = ByteBuffer(string: preface ? HTTP2ConnectionHandler.clientMagic : "")
    if settings && preface { try writer.write(HTTP2Frame(streamID: .rootStream, payload: .settings(.settings([]))), into: &bytes) }
    for frame in frames { try writer.write(frame, into: &bytes) }
    do {
      try channel.writeInbound(bytes)
    } catch is HTTP2WireError {
      // A connection error also reaches the end of the pipeline; what was sent tells it.
    }
  }

  /// Every frame the handler wrote so far.
  func sent() throws -> [HTTP2Frame] {
    while let bytes = try channel.readOutbound(as: ByteBuffer.self) { reader.append(bytes) }
    var frames: [HTTP2Frame] = []
    while let (frame, _) = try reader.nextFrame() { frames.append(frame) }
    return frames
  }
}

/// Answers each request with 200, `x-received` (its body's length) and a body of that length; gives the
/// peer's windows back as it reads.
private final class EchoStreams: ChannelInboundHandler, HTTP2ConnectionDelegate {
  typealias InboundIn = HTTP2Frame
  typealias OutboundOut = HTTP2Frame

  var answer = true
  var refill = true
  private(set) var opened: [HTTP2StreamID] = []
  private(set) var closed: [(HTTP2StreamID, HTTP2ErrorCode?)] = []
  private var received: [HTTP2StreamID: Int] = [:]
  private var context: ChannelHandlerContext?

  func handlerAdded(context: ChannelHandlerContext) { self.context = context }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let frame = unwrapInboundIn(data)
    var ended = false
    switch frame.payload {
    case .headers(let headers):
      if received[frame.streamID] == nil {
        opened.append(frame.streamID)
        received[frame.streamID] = 0
      }
      ended = headers.endStream
    case .data(let data):
      received[frame.streamID, default: 0] += data.data.readableBytes
      ended = data.endStream
    default:
      break
    }
    guard ended, answer else { return }
    let size = received[frame.streamID] ?? 0
    let headers: HPACKHeaders = [":status": "200", "x-received": "\(size)"]
    context.write(wrapOutboundOut(HTTP2Frame(streamID: frame.streamID, payload: .headers(.init(headers: headers)))), promise: nil)
    let body = ByteBuffer(repeating: 0x79, count: size)
    context.write(
      wrapOutboundOut(HTTP2Frame(streamID: frame.streamID, payload: .data(.init(data: .byteBuffer(body), endStream: true)))),
      promise: nil)
  }

  func channelReadComplete(context: ChannelHandlerContext) {
    context.flush()
  }

  func wroteFrame(_ frame: HTTP2Frame) {}

  func inboundWindowChanged(stream id: HTTP2StreamID, to size: Int) {
    guard refill, size < 32768, let context else { return }
    context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .windowUpdate(windowSizeIncrement: 65535 - size))), promise: nil)
  }

  func streamClosed(_ id: HTTP2StreamID, reason: HTTP2ErrorCode?) {
    closed.append((id, reason))
  }

  func initialInboundWindowChanged(by delta: Int) {}
}

/// Opens `count` streams at once, each a POST with a body of `bodySize` bytes, and collects the responses.
private final class RequestingStreams: ChannelInboundHandler, HTTP2ConnectionDelegate, @unchecked Sendable {
  typealias InboundIn = HTTP2Frame
  typealias OutboundOut = HTTP2Frame

  struct Response {
    var status: String?
    var fields: [String: String] = [:]
    var body = 0
  }

  let done: EventLoopPromise<[HTTP2StreamID: Response]>
  private let count: Int
  private let bodySize: Int
  private var responses: [HTTP2StreamID: Response] = [:]
  private var finished = 0
  private var started = false
  private(set) var closed: [(HTTP2StreamID, HTTP2ErrorCode?)] = []
  private var context: ChannelHandlerContext?

  init(count: Int, bodySize: Int, eventLoop: any EventLoop) {
    self.count = count
    self.bodySize = bodySize
    self.done = eventLoop.makePromise()
  }

  func handlerAdded(context: ChannelHandlerContext) { self.context = context }

  /// The requests go once the peer's SETTINGS (its limits) are in.
  private func start(context: ChannelHandlerContext) {
    for index in 0..<count {
      let id = HTTP2StreamID(2 * index + 1)
      let headers: HPACKHeaders = [
        ":method": "POST", ":path": "/", ":scheme": "http", ":authority": "backend", "content-length": "\(bodySize)",
      ]
      context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .headers(.init(headers: headers)))), promise: nil)
      let body = ByteBuffer(repeating: 0x78, count: bodySize)
      context.write(
        wrapOutboundOut(HTTP2Frame(streamID: id, payload: .data(.init(data: .byteBuffer(body), endStream: true)))),
        promise: nil)
    }
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let frame = unwrapInboundIn(data)
    switch frame.payload {
    case .settings(.settings):
      if !started {
        started = true
        start(context: context)
      }
    case .headers(let headers):
      var response = Response()
      for (name, value, _) in headers.headers {
        if name == ":status" { response.status = value } else { response.fields[name] = value }
      }
      responses[frame.streamID] = response
    case .data(let data):
      responses[frame.streamID, default: Response()].body += data.data.readableBytes
    default:
      break
    }
  }

  func channelReadComplete(context: ChannelHandlerContext) {
    context.flush()
  }

  func channelInactive(context: ChannelHandlerContext) {
    done.fail(ChannelError.eof)
  }

  func wroteFrame(_ frame: HTTP2Frame) {}

  func inboundWindowChanged(stream id: HTTP2StreamID, to size: Int) {
    guard size < 32768, let context else { return }
    context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .windowUpdate(windowSizeIncrement: 65535 - size))), promise: nil)
  }

  func streamClosed(_ id: HTTP2StreamID, reason: HTTP2ErrorCode?) {
    closed.append((id, reason))
    guard reason == nil, count > 0 else { return }
    finished += 1
    if finished == count { done.succeed(responses) }
  }

  func initialInboundWindowChanged(by delta: Int) {}
}
