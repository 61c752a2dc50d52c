import MeshCore
import MeshDiscovery
@testable import MeshProxy
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Synchronization
import Testing
import _MeshTestSupport

/// The downstream HTTP/1.1 time limits on an `EmbeddedChannel` with a virtual clock: one timer per connection
/// that checks the clocks when it fires, instead of a timer set and cancelled per request.
@Suite("HTTP/1.1 header read and idle timeouts")
struct HTTP1TimeoutsTests {
  /// A downstream HTTP/1.1 pipeline as the proxy builds it: the bytes handler, the parser and encoder, and in
  /// place of the proxy's request handler a ``Reporter`` that tells the bytes handler what the request handler
  /// tells it (the whole proxy is judged in `idleAndSlowResponseThroughProxy`).
  struct Connection {
    let channel: EmbeddedChannel
    let loop: EmbeddedEventLoop
    /// The reasons the handler reported timeouts with.
    final class Reasons: Sendable {
      private let value = Mutex<[ProxyError.Reason]>([])
      func append(_ reason: ProxyError.Reason) { value.withLock { $0.append(reason) } }
      var all: [ProxyError.Reason] { value.withLock { $0 } }
    }
    let reasons = Reasons()

    init(header: TimeAmount = .seconds(10), idle: TimeAmount = .seconds(300)) throws {
      loop = EmbeddedEventLoop()
      channel = EmbeddedChannel(loop: loop)
      let reasons = self.reasons
      let bytes = HTTP1TimeoutBytesHandler(headerTimeout: header, idleTimeout: idle) { reason in
        reasons.append(reason)
      }
      let sync = channel.pipeline.syncOperations
      try sync.addHandler(bytes)
      try sync.addHandler(ByteToMessageHandler(HTTPRequestDecoder()))
      try sync.addHandler(HTTPResponseEncoder())
      try sync.addHandler(Reporter(bytes: bytes))
      try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
    }

    func send(_ text: String) throws { try channel.writeInbound(ByteBuffer(string: text)) }

    /// Answers the request read last: head and end, as the proxy writes them.
    func respond() throws {
      var headers = HTTPHeaders()
      headers.add(name: "content-length", value: "0")
      try channel.writeOutbound(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers)))
      try channel.writeOutbound(HTTPServerResponsePart.end(nil))
      while try channel.readInbound(as: HTTPServerRequestPart.self) != nil {}
    }

    /// Everything written to the client so far, as text.
    func written() throws -> String {
      var text = ""
      while var buffer = try channel.readOutbound(as: ByteBuffer.self) { text += buffer.readString(length: buffer.readableBytes) ?? "" }
      return text
    }

    var isOpen: Bool { channel.isActive }
  }

  /// Tells the bytes handler where requests begin and end and where responses end, as `ProxyRequestHandler`
  /// does.
  final class Reporter: ChannelDuplexHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart
    let bytes: HTTP1TimeoutBytesHandler
    init(bytes: HTTP1TimeoutBytesHandler) { self.bytes = bytes }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
      switch unwrapInboundIn(data) {
      case .head: bytes.headReceived()
      case .end: bytes.requestEnded()
      case .body: break
      }
      context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
      if case .end = unwrapOutboundIn(data) { bytes.responseEnded() }
      context.write(data, promise: promise)
    }
  }

  static let request = "GET / HTTP/1.1\r\nHost: backend.default.svc.cluster.local\r\n\r\n"

  @Test("a head still incomplete after the header timeout gets 408 and the connection closes, counted")
  func headerTimeout() throws {
    let connection = try Connection(header: .seconds(10))
    try connection.send("GET / HTTP/1.1\r\nHost: back")
    connection.loop.advanceTime(by: .seconds(9))
    #expect(connection.isOpen)
    try connection.send("end.default.svc.cluster.local\r\nx-slow: 1\r\n")
    connection.loop.advanceTime(by: .seconds(1))
    #expect(!connection.isOpen)
    #expect(try connection.written().hasPrefix("HTTP/1.1 408 Request Timeout\r\n"))
    #expect(connection.reasons.all == [.headerTimeout])
  }

  @Test("the header clock runs from the first byte of each request, not from the connection's start")
  func headerClockPerRequest() throws {
    let connection = try Connection(header: .seconds(10), idle: .seconds(300))
    for _ in 0..<5 {
      try connection.send(Self.request)
      try connection.respond()
      connection.loop.advanceTime(by: .seconds(8))
    }
    // 40 s after the start, a request begins and takes 9 s to finish its head: within its own 10 s.
    try connection.send("GET / HTTP/1.1\r\n")
    connection.loop.advanceTime(by: .seconds(9))
    try connection.send("Host: backend.default.svc.cluster.local\r\n\r\n")
    #expect(connection.isOpen)
    try connection.respond()
    let written = try connection.written()
    #expect(written.ranges(of: "HTTP/1.1 200 OK").count == 6, "\(written)")
    #expect(connection.reasons.all.isEmpty)
  }

  @Test("a connection with nothing in progress closes after the idle timeout; each request restarts the clock")
  func idleTimeout() throws {
    let connection = try Connection(header: .seconds(10), idle: .seconds(300))
    connection.loop.advanceTime(by: .seconds(250))
    try connection.send(Self.request)
    try connection.respond()
    connection.loop.advanceTime(by: .seconds(299))
    #expect(connection.isOpen, "299 s after the last response")
    connection.loop.advanceTime(by: .seconds(1))
    #expect(!connection.isOpen)
    #expect(connection.reasons.all.isEmpty, "an idle close is not an error")
  }

  @Test("a request whose response takes longer than the idle timeout is not cut off")
  func slowResponseIsNotIdle() throws {
    let connection = try Connection(header: .seconds(10), idle: .seconds(300))
    try connection.send(Self.request)
    connection.loop.advanceTime(by: .seconds(900))
    #expect(connection.isOpen)
    try connection.respond()
    #expect(try connection.written().hasPrefix("HTTP/1.1 200 OK"))
    connection.loop.advanceTime(by: .seconds(300))
    #expect(!connection.isOpen)
  }

  @Test("a connection that never sends a byte closes after the idle timeout")
  func silentConnection() throws {
    let connection = try Connection(header: .seconds(10), idle: .seconds(30))
    connection.loop.advanceTime(by: .seconds(29))
    #expect(connection.isOpen)
    connection.loop.advanceTime(by: .seconds(1))
    #expect(!connection.isOpen)
  }

  /// The request handler tells the clocks what happens, through a real proxy: a response slower than the idle
  /// timeout is not cut off (the request's head stops the idle clock), a request after it on the same
  /// connection is served, and the connection closes once it has been idle for the idle timeout after the
  /// last response (the response's end starts the idle clock).
  @Test("through a proxy: a slow response outlives the idle timeout; an idle keep-alive connection closes after it")
  func idleAndSlowResponseThroughProxy() async throws {
    let app = try await TestHTTPServer(name: "slow", delay: .milliseconds(1500))
    defer { Task { await app.stop() } }
    let backend = try Authority("backend.default.svc.cluster.local:80")
    let discovery = InMemoryDiscovery([
      backend: EndpointSet(exists: true, endpoints: [Endpoint(address: try Authority(host: "127.0.0.1", port: app.port))])
    ])
    try await withSingleProxy(discovery: discovery, label: "test.timeouts", configure: {
      $0.downstreamIdleTimeout = .seconds(1)
      $0.headerReadTimeout = .seconds(1)
    }) { proxy in
      let port = try await proxy.boundPorts().outbound
      let script = """
        import socket, sys, time
        s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
        request = b"GET / HTTP/1.1\\r\\nHost: backend.default.svc.cluster.local\\r\\n\\r\\n"
        def answer():
            data = b""
            while b"slow\\n" not in data:
                chunk = s.recv(4096)
                if not chunk: return "closed"
                data += chunk
            return data.split(b"\\r\\n")[0].decode()
        for i in range(2):
            s.sendall(request)
            started = time.time()
            print("answer", i, answer(), "after %.1f s" % (time.time() - started), flush=True)
        started = time.time()
        s.settimeout(5)
        closed = s.recv(4096) == b""
        print("idle close", closed, "after %.1f s" % (time.time() - started), flush=True)
        """
      let out = try await Subprocess.run("python3", ["-c", script, "\(port)"])
      let lines = out.stdout.split(separator: "\n").map(String.init)
      #expect(lines.count == 3, "\(out)")
      // `... after S s`: the seconds.
      func seconds(_ line: String?) -> Double? { line.flatMap { $0.split(separator: " ").dropLast(1).last }.flatMap { Double($0) } }
      for (index, line) in lines.prefix(2).enumerated() {
        #expect(line.hasPrefix("answer \(index) HTTP/1.1 200 OK after "), "\(out)")
        // Longer than the idle timeout (the app takes 1.5 s), and answered, not cut off.
        #expect((seconds(line) ?? 0) >= 1.4, "\(out)")
      }
      // Closed about one idle timeout after the last response, not during the slow ones and not never.
      let seconds = seconds(lines.last)
      #expect(lines.last?.hasPrefix("idle close True") == true, "\(out)")
      #expect((0.5...3.5).contains(seconds ?? -1), "\(out)")
    }
  }
}
