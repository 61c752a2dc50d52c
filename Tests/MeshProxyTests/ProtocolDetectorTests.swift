import Logging
import MeshCore
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Synchronization
import Testing
import _MeshTestSupport

@testable import MeshProxy

/// `ProtocolDetector` on `EmbeddedChannel`s: what the first bytes (or their absence) make of a connection,
/// with a router stand-in that hands out an embedded upstream on the same event loop.
@Suite("Protocol detection on embedded channels")
struct ProtocolDetectorTests {
  /// A router whose opaque upstream is an embedded channel of the test's loop; HTTP is not opened.
  final class StubRouter: RequestRouter, @unchecked Sendable {
    let direction = "outbound"
    let opaquePort: Bool
    let upstream: EmbeddedChannel?
    let asked = Mutex<[OpaqueConnection]>([])

    init(opaquePort: Bool = false, upstream: EmbeddedChannel?) {
      self.opaquePort = opaquePort
      self.upstream = upstream
    }

    func open(_ request: RoutedRequest, on eventLoop: any EventLoop) -> EventLoopFuture<Upstream> {
      eventLoop.makeFailedFuture(ProxyError(.unknownRoute, "not in this test"))
    }

    func isOpaque(_ original: Authority, on eventLoop: any EventLoop) -> EventLoopFuture<Bool> {
      eventLoop.makeSucceededFuture(opaquePort)
    }

    func openOpaque(_ connection: OpaqueConnection, on eventLoop: any EventLoop) -> EventLoopFuture<any Channel> {
      asked.withLock { $0.append(connection) }
      guard let upstream else {
        return eventLoop.makeFailedFuture(ProxyError(.connectFailed, "nothing listens there"))
      }
      return eventLoop.makeSucceededFuture(upstream)
    }
  }

  struct Fixture {
    let downstream: EmbeddedChannel
    let upstream: EmbeddedChannel
    let router: StubRouter
    let metrics: ProxyMetrics

    init(original: Authority?, opaquePort: Bool = false, failUpstream: Bool = false) throws {
      let loop = EmbeddedEventLoop()
      downstream = EmbeddedChannel(loop: loop)
      upstream = EmbeddedChannel(loop: loop)
      router = StubRouter(opaquePort: opaquePort, upstream: failUpstream ? nil : upstream)
      metrics = ProxyMetrics()
      var setup = ProtocolDetector.Setup(
        router: router, metrics: metrics, tls: nil, requireClientCertificate: false, inFlight: InFlightRequests(),
        tap: TapHub(), logger: Logger(label: "test.detector"))
      setup.direction = "outbound"
      setup.detectTimeout = .seconds(10)
      try downstream.pipeline.syncOperations.addHandler(ProtocolDetector(setup: setup, originalDestination: original))
      try downstream.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 4140)).wait()
      try upstream.connect(to: try SocketAddress(ipAddress: "198.18.0.3", port: 6379)).wait()
    }

    /// Bytes the upstream was sent, as text.
    func sentUpstream() throws -> String {
      var text = ""
      while var buffer = try upstream.readOutbound(as: ByteBuffer.self) { text += buffer.readString(length: buffer.readableBytes) ?? "" }
      return text
    }

    var exposition: String { String(decoding: metrics.exposition(), as: UTF8.self) }
  }

  static let redis = try! Authority("198.18.1.10:6379")

  @Test("an opaque port: relayed before the client sends anything (the server may speak first)")
  func opaquePort() throws {
    let f = try Fixture(original: Self.redis, opaquePort: true)
    #expect(f.router.asked.withLock { $0.map(\.originalDestination) } == [Self.redis])
    // The server speaks first; the client hears it.
    try f.upstream.writeInbound(ByteBuffer(string: "+HELLO\r\n"))
    var heard = try #require(try f.downstream.readOutbound(as: ByteBuffer.self))
    #expect(heard.readString(length: heard.readableBytes) == "+HELLO\r\n")
    try f.downstream.writeInbound(ByteBuffer(string: "*1\r\n$4\r\nPING\r\n"))
    #expect(try f.sentUpstream() == "*1\r\n$4\r\nPING\r\n")
  }

  @Test("bytes that are not HTTP: opaque at once, the bytes read so far go first")
  func notHTTP() throws {
    let f = try Fixture(original: try Authority("198.18.1.10:7001"))
    try f.downstream.writeInbound(ByteBuffer(string: "\u{0}\u{1}binary"))
    #expect(f.router.asked.withLock { $0.count } == 1)
    try f.downstream.writeInbound(ByteBuffer(string: " more"))
    #expect(try f.sentUpstream() == "\u{0}\u{1}binary more")
  }

  @Test("nothing within the detect timeout: opaque, counted")
  func detectTimeout() throws {
    let f = try Fixture(original: try Authority("198.18.1.10:7002"))
    f.downstream.embeddedEventLoop.advanceTime(by: .seconds(9))
    #expect(f.router.asked.withLock { $0.isEmpty })
    f.downstream.embeddedEventLoop.advanceTime(by: .seconds(2))
    #expect(f.router.asked.withLock { $0.count } == 1)
    #expect(f.exposition.contains("protocol_detect_timeout_total{direction=\"outbound\"} 1"), "\(f.exposition)")
  }

  @Test("a partial HTTP/1 request line waits; a complete one makes an HTTP/1.1 pipeline")
  func http1() throws {
    let f = try Fixture(original: try Authority("198.18.1.10:80"))
    try f.downstream.writeInbound(ByteBuffer(string: "GET /index.ht"))
    #expect(f.router.asked.withLock { $0.isEmpty })
    #expect(throws: (any Error).self) { try f.downstream.pipeline.syncOperations.handler(type: ProxyRequestHandler.self) }
    try f.downstream.writeInbound(ByteBuffer(string: "ml HTTP/1.1\r\nhost: backend\r\n"))
    #expect(try f.downstream.pipeline.syncOperations.handler(type: ProxyRequestHandler.self) != nil)
    #expect(f.router.asked.withLock { $0.isEmpty })
  }

  @Test("without an original destination, bytes that are not HTTP are answered by the HTTP/1.1 parser (400)")
  func notHTTPWithoutDestination() throws {
    let f = try Fixture(original: nil)
    try? f.downstream.writeInbound(ByteBuffer(string: "\u{0}\u{1}binary\r\n\r\n"))
    #expect(f.router.asked.withLock { $0.isEmpty })
    var answer = ""
    while var buffer = try f.downstream.readOutbound(as: ByteBuffer.self) { answer += buffer.readString(length: buffer.readableBytes) ?? "" }
    #expect(answer.hasPrefix("HTTP/1.1 400"), "\(answer)")
  }

  @Test("an upstream that cannot be reached: the client's connection is closed, counted")
  func unreachable() throws {
    let f = try Fixture(original: try Authority("198.18.0.254:9"), failUpstream: true)
    try f.downstream.writeInbound(ByteBuffer(string: "\u{0}hello"))
    #expect(!f.downstream.isActive)
    #expect(f.exposition.contains("tcp_refused_total{direction=\"outbound\",reason=\"connect failed\"} 1"), "\(f.exposition)")
  }

  @Test("a client that sends its bytes and half-closes before the protocol is known: relayed, then the upstream's output ends (here: it closes)")
  func halfCloseBeforeDetection() throws {
    let f = try Fixture(original: try Authority("198.18.1.10:7001"))
    try f.downstream.writeInbound(ByteBuffer(string: "GET"))  // could still be HTTP
    f.downstream.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
    #expect(f.router.asked.withLock { $0.count } == 1)
    #expect(try f.sentUpstream() == "GET")
    // An embedded channel cannot shut its output down alone, so the relay falls back to closing it.
    #expect(!f.upstream.isActive)
  }
}
