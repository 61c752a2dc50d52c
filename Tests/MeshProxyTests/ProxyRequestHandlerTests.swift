import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Synchronization
import Testing

@testable import MeshProxy

/// `ProxyRequestHandler` on `EmbeddedChannel`s: the I/O shell around its state machine, with a router that
/// hands out embedded upstreams on the test's loop.
@Suite("Proxy request handler on embedded channels")
struct ProxyRequestHandlerTests {
  final class EmbeddedRouter: RequestRouter, @unchecked Sendable {
    let direction = "outbound"
    /// Upstreams to hand out, in order; none left: the router fails with `failure`.
    var upstreams: [EmbeddedChannel]
    var failure = ProxyError(.noEndpoints, "backend has no endpoints")
    var policy: RequestPolicy?
    /// Whether upstreams come from a pool (HTTP/1.1) and where they are returned.
    var pooled = false
    let released = Mutex<[ObjectIdentifier]>([])
    private(set) var opened = 0
    /// Whether `open` waits (until ``failPending()``).
    var hang = false
    private var pending: [EventLoopPromise<Upstream>] = []

    init(upstreams: [EmbeddedChannel]) { self.upstreams = upstreams }

    func failPending() {
      for promise in pending { promise.fail(failure) }
      pending = []
    }

    func open(_ request: RoutedRequest, on eventLoop: any EventLoop) -> EventLoopFuture<Upstream> {
      if hang {
        let promise = eventLoop.makePromise(of: Upstream.self)
        pending.append(promise)
        return promise.futureResult
      }
      guard !upstreams.isEmpty else { return eventLoop.makeFailedFuture(failure) }
      opened += 1
      let channel = upstreams.removeFirst()
      let release: (@Sendable (any Channel) -> Void)? =
        pooled ? { @Sendable [self] channel in self.released.withLock { $0.append(ObjectIdentifier(channel)) } } : nil
      return eventLoop.makeSucceededFuture(
        Upstream(
          channel: channel, head: request.head, ticket: nil,
          labels: .init(.init(direction: direction, authority: "backend", tls: false)), release: release))
    }

    func knownPolicy(for request: RoutedRequest) -> RequestPolicy? { policy }
  }

  struct Fixture {
    let loop: EmbeddedEventLoop
    let downstream: EmbeddedChannel
    let upstreams: [EmbeddedChannel]
    let router: EmbeddedRouter
    let metrics = ProxyMetrics()
    let inFlight = InFlightRequests()

    /// `pipelining`: the HTTP/1.1 server's pipelining handler sits in front, as on a real connection.
    init(upstreams count: Int = 1, pipelining: Bool = false, http2: Bool = false) throws {
      let loop = EmbeddedEventLoop()
      self.loop = loop
      downstream = EmbeddedChannel(loop: loop)
      upstreams = (0..<count).map { _ in EmbeddedChannel(loop: loop) }
      router = EmbeddedRouter(upstreams: upstreams)
      if pipelining { try downstream.pipeline.syncOperations.addHandler(HTTPServerPipelineHandler()) }
      try downstream.pipeline.syncOperations.addHandler(
        ProxyRequestHandler(
          router: router, metrics: metrics, peerIdentity: nil, isHTTP2: http2, inFlight: inFlight, tap: TapHub(),
          logger: Logger(label: "test.handler")))
      try downstream.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 4140)).wait()
      for upstream in upstreams {
        try upstream.connect(to: try SocketAddress(ipAddress: "198.18.0.3", port: 8080)).wait()
      }
    }

    func send(_ head: HTTPRequestHead = ProxyRequestHandlerTests.get, body: String? = nil, end: Bool = true) throws {
      try downstream.writeInbound(HTTPServerRequestPart.head(head))
      if let body { try downstream.writeInbound(HTTPServerRequestPart.body(ByteBuffer(string: body))) }
      if end { try downstream.writeInbound(HTTPServerRequestPart.end(nil)) }
    }

    /// What `upstream` was sent.
    func sent(to upstream: Int = 0) throws -> [HTTPClientRequestPart] {
      var parts: [HTTPClientRequestPart] = []
      while let part = try upstreams[upstream].readOutbound(as: HTTPClientRequestPart.self) { parts.append(part) }
      return parts
    }

    func respond(
      on upstream: Int = 0, _ status: HTTPResponseStatus = .ok, headers: HTTPHeaders = [:], body: String? = "hello",
      end: Bool = true
    ) throws {
      let channel = upstreams[upstream]
      try channel.writeInbound(HTTPClientResponsePart.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers)))
      if let body { try channel.writeInbound(HTTPClientResponsePart.body(ByteBuffer(string: body))) }
      if end { try channel.writeInbound(HTTPClientResponsePart.end(nil)) }
    }

    /// What the client got.
    func received() throws -> [HTTPServerResponsePart] {
      var parts: [HTTPServerResponsePart] = []
      while let part = try downstream.readOutbound(as: HTTPServerResponsePart.self) { parts.append(part) }
      return parts
    }

    var exposition: String { String(decoding: metrics.exposition(), as: UTF8.self) }
  }

  /// A request the HTTP/1.1 parser refuses is answered 400 (what NIO's protocol error handler did), unless a
  /// forwarded response is under way: then a 400 would land inside it, and closing is all that is left.
  @Test("a parser error: 400 between responses, nothing written in the middle of one")
  func parserError() throws {
    let idle = try Fixture()
    idle.downstream.pipeline.fireErrorCaught(HTTPParserError.invalidHeaderToken)
    let answer = try idle.received()
    #expect(Self.head(of: answer)?.status == .badRequest)
    #expect(Self.head(of: answer)?.headers["connection"] == ["close"])
    if case .end = answer.last {} else { Issue.record("the 400 ends: \(answer)") }

    let responding = try Fixture()
    try responding.send()
    try responding.respond(end: false)
    let started = try responding.received()
    #expect(Self.head(of: started)?.status == .ok)
    responding.downstream.pipeline.fireErrorCaught(HTTPParserError.invalidHeaderToken)
    #expect(try responding.received().isEmpty, "nothing is written into the response under way")

    // Once that response has ended, a parser error is answered again.
    try responding.upstreams[0].writeInbound(HTTPClientResponsePart.end(nil))
    _ = try responding.received()
    responding.downstream.pipeline.fireErrorCaught(HTTPParserError.invalidHeaderToken)
    #expect(Self.head(of: try responding.received())?.status == .badRequest)
  }

  static let get = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/", headers: ["host": "backend:8080"])

  static func head(of parts: [HTTPServerResponsePart]) -> HTTPResponseHead? {
    guard case .head(let head) = parts.first else { return nil }
    return head
  }

  static func bodyText(of parts: [HTTPServerResponsePart]) -> String {
    parts.reduce(into: "") { text, part in
      if case .body(.byteBuffer(var buffer)) = part { text += buffer.readString(length: buffer.readableBytes) ?? "" }
    }
  }

  @Test("a request and its response pass through; it is in flight until both have ended")
  func passThrough() throws {
    let f = try Fixture()
    try f.send(body: "ping")
    let sent = try f.sent()
    #expect(sent.count == 3)
    guard case .head(let head) = sent.first else { Issue.record("\(sent)"); return }
    #expect(head.uri == "/")
    guard case .body(.byteBuffer(let body)) = sent[1] else { Issue.record("\(sent)"); return }
    #expect(body == ByteBuffer(string: "ping"))
    #expect(f.inFlight.current == 1)
    try f.respond()
    let received = try f.received()
    #expect(Self.head(of: received)?.status == .ok)
    #expect(Self.bodyText(of: received) == "hello")
    guard case .end = received.last else { Issue.record("\(received)"); return }
    #expect(f.inFlight.current == 0)
    #expect(f.exposition.contains("response_total{"), "\(f.exposition)")
  }

  @Test("a pooled HTTP/1.1 upstream returns to its pool when both ends are done; its response handler stays")
  func pooledUpstream() throws {
    let f = try Fixture()
    f.router.pooled = true
    try f.send(end: false)
    try f.respond()
    // The response is complete, the request is not: the upstream stays with the request.
    #expect(f.router.released.withLock { $0.isEmpty })
    try f.downstream.writeInbound(HTTPServerRequestPart.end(nil))
    #expect(f.router.released.withLock { $0 } == [ObjectIdentifier(f.upstreams[0])])
    #expect((try? f.upstreams[0].pipeline.syncOperations.handler(type: UpstreamResponseHandler.self)) != nil)
    // An unbound handler reports nothing: a late close of the idle connection reaches no request.
    _ = try f.received()
    try f.upstreams[0].close().wait()
    #expect(try f.received().isEmpty)
    #expect(f.downstream.isActive)
  }

  @Test("no endpoints: the proxy answers 503 with mesh-proxy-error and counts it; the next request is served")
  func answered() throws {
    let f = try Fixture(upstreams: 0)
    try f.send()
    let received = try f.received()
    let head = try #require(Self.head(of: received))
    #expect(head.status == .serviceUnavailable)
    #expect(head.headers.first(name: ProxyError.headerName) == "no endpoints")
    #expect(Self.bodyText(of: received).contains("backend has no endpoints"))
    #expect(f.inFlight.current == 0)
    #expect(f.exposition.contains("proxy_errors_total{direction=\"outbound\",reason=\"no endpoints\"} 1"), "\(f.exposition)")
    try f.send()
    #expect(Self.head(of: try f.received())?.status == .serviceUnavailable)
    #expect(f.router.opened == 0)
  }

  @Test("a gRPC call the proxy cannot route gets a trailers-only gRPC status, not an error page")
  func grpcAnswer() throws {
    let f = try Fixture(upstreams: 0, http2: true)
    var head = HTTPRequestHead(version: .http2, method: .POST, uri: "/pkg.Service/Call")
    head.headers.add(name: "host", value: "backend:8080")
    head.headers.add(name: "content-type", value: "application/grpc+proto")
    try f.send(head)
    let received = try f.received()
    #expect(received.count == 2, "\(received)")
    let answer = try #require(Self.head(of: received))
    #expect(answer.status == .ok)
    #expect(answer.headers.first(name: "grpc-status") == "14")
    #expect(answer.headers.first(name: "content-length") == nil)
  }

  @Test("the route timeout before the response: the upstream is closed and the client gets 504")
  func routeTimeout() throws {
    let f = try Fixture()
    f.router.policy = RequestPolicy(routeName: "GET /", timeout: .seconds(1))
    try f.send()
    #expect(f.upstreams[0].isActive)
    f.loop.advanceTime(by: .milliseconds(999))
    #expect(try f.received().isEmpty)
    f.loop.advanceTime(by: .milliseconds(1))
    #expect(!f.upstreams[0].isActive)
    let head = try #require(Self.head(of: try f.received()))
    #expect(head.status == .gatewayTimeout)
    #expect(head.headers.first(name: ProxyError.headerName) == "request timeout")
    #expect(f.inFlight.current == 0)
  }

  @Test("the upstream closes before the response: 502 upstream reset")
  func upstreamClosed() throws {
    let f = try Fixture()
    try f.send()
    try f.upstreams[0].close().wait()
    f.loop.run()
    let head = try #require(Self.head(of: try f.received()))
    #expect(head.status == .badGateway)
    #expect(head.headers.first(name: ProxyError.headerName) == "upstream reset")
    #expect(f.downstream.isActive)
  }

  @Test("the upstream fails mid-response: the client's connection is closed, not given a made-up end")
  func upstreamFailsMidResponse() throws {
    let f = try Fixture()
    try f.send()
    try f.respond(body: "par", end: false)
    try f.upstreams[0].close().wait()
    f.loop.run()
    let received = try f.received()
    #expect(Self.head(of: received)?.status == .ok)
    #expect(!received.contains { if case .end = $0 { true } else { false } })
    #expect(!f.downstream.isActive)
    #expect(f.exposition.contains("proxy_errors_total{direction=\"outbound\",reason=\"upstream reset\"} 1"), "\(f.exposition)")
  }

  @Test("the client goes away mid-request: the upstream is closed, a late response goes nowhere")
  func downstreamGoesAway() throws {
    let f = try Fixture()
    try f.send(end: false)
    #expect(f.inFlight.current == 1)
    try f.downstream.close().wait()
    #expect(!f.upstreams[0].isActive)
    #expect(f.inFlight.current == 0)
    #expect(!f.exposition.contains("proxy_errors_total{"), "\(f.exposition)")
  }

  @Test("quiesce mid-request on HTTP/1.1: the response completes with connection: close, then the connection closes")
  func quiesceMidRequest() throws {
    let f = try Fixture(pipelining: true)
    try f.send(end: false)
    f.downstream.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
    #expect(f.downstream.isActive)
    try f.downstream.writeInbound(HTTPServerRequestPart.end(nil))
    #expect(f.downstream.isActive)
    try f.respond()
    let received = try f.received()
    let head = try #require(Self.head(of: received))
    #expect(head.headers.first(name: "connection") == "close")
    guard case .end = received.last else { Issue.record("\(received)"); return }
    f.loop.run()
    #expect(!f.downstream.isActive)
    #expect(f.inFlight.current == 0)
  }

  @Test("a request pipelined behind one the proxy answers after its end (here: the route timeout) is answered too")
  func pipelinedBehindAnswer() throws {
    let f = try Fixture(upstreams: 0, pipelining: true)
    f.router.hang = true
    f.router.policy = RequestPolicy(routeName: "GET /", timeout: .seconds(1))
    try f.send()
    // The second request waits in the pipelining handler until the first one's response has ended.
    try f.send()
    f.loop.advanceTime(by: .seconds(1))
    #expect(Self.head(of: try f.received())?.status == .gatewayTimeout)
    // The pipelining handler hands the second request over inside the write of the first answer's end: the
    // handler has settled the first by then, so the second starts, waits on its own route timeout and is
    // answered (it used to be buffered with the answered request and dropped).
    f.loop.advanceTime(by: .seconds(1))
    let second = try f.received()
    #expect(Self.head(of: second)?.status == .gatewayTimeout)
    #expect(f.inFlight.current == 0)
    f.router.failPending()
  }
}
