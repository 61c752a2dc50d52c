import Logging
import MeshCore
import MeshIdentity
import MeshTLS
import NIOCore
import NIOEmbedded
import NIOHTTP2
import Synchronization
import Testing
import _MeshTestSupport

@testable import MeshProxy

/// More of `ProtocolDetector`'s decisions on embedded channels (see `ProtocolDetectorTests` for the fixture):
/// the HTTP/2 preface, a TLS record where no TLS is offered, time and shutdown before the protocol is known,
/// and the HTTP/1 request-line test byte by byte.
@Suite("Protocol detection decisions")
struct ProtocolDetectorDecisionTests {
  typealias Fixture = ProtocolDetectorTests.Fixture

  static func has<Handler: ChannelHandler>(_ type: Handler.Type, _ channel: EmbeddedChannel) -> Bool {
    (try? channel.pipeline.syncOperations.handler(type: type)) != nil
  }

  @Test("the HTTP/2 preface makes an HTTP/2 server pipeline with graceful shutdown; a part of it waits")
  func http2Preface() throws {
    let f = try Fixture(original: try Authority("198.18.1.10:80"))
    try f.downstream.writeInbound(ByteBuffer(string: "PRI * HTTP/2.0\r\n"))
    #expect(Self.has(ProtocolDetector.self, f.downstream))
    #expect(!Self.has(NIOHTTP2Handler.self, f.downstream))
    try f.downstream.writeInbound(ByteBuffer(string: "\r\nSM\r\n\r\n"))
    #expect(!Self.has(ProtocolDetector.self, f.downstream))
    #expect(Self.has(NIOHTTP2Handler.self, f.downstream))
    #expect(Self.has(GracefulHTTP2Shutdown.self, f.downstream))
    #expect(f.router.asked.withLock { $0.isEmpty })
    // The server's SETTINGS go out: the HTTP/2 handler took the preface.
    let settings = try #require(try f.downstream.readOutbound(as: ByteBuffer.self))
    #expect(settings.readableBytes >= 9)
    #expect(settings.getInteger(at: settings.readerIndex + 3, as: UInt8.self) == 0x4)
  }

  @Test("a part of the HTTP/2 preface, then the client half-closes: what it sent is opaque")
  func partialPrefaceThenHalfClose() throws {
    let f = try Fixture(original: try Authority("198.18.1.10:7001"))
    try f.downstream.writeInbound(ByteBuffer(string: "PRI * HTTP"))
    #expect(f.router.asked.withLock { $0.isEmpty })
    f.downstream.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
    #expect(f.router.asked.withLock { $0.count } == 1)
    #expect(try f.sentUpstream() == "PRI * HTTP")
  }

  @Test("a TLS record where this side offers no TLS: not HTTP, so opaque toward the original destination")
  func tlsWithoutTLS() throws {
    let f = try Fixture(original: try Authority("198.18.1.10:443"))
    var hello = ByteBuffer()
    hello.writeBytes([0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00])
    try f.downstream.writeInbound(hello)
    #expect(f.router.asked.withLock { $0.map(\.originalDestination) } == [try Authority("198.18.1.10:443")])
    var relayed = ByteBuffer()
    while var buffer = try f.upstream.readOutbound(as: ByteBuffer.self) { relayed.writeBuffer(&buffer) }
    #expect(relayed == hello)
  }

  @Test("without an original destination, nothing within the detect timeout: the connection closes, counted")
  func detectTimeoutWithoutDestination() throws {
    let f = try Fixture(original: nil)
    f.downstream.embeddedEventLoop.advanceTime(by: .seconds(10))
    #expect(!f.downstream.isActive)
    #expect(f.router.asked.withLock { $0.isEmpty })
    #expect(f.exposition.contains("protocol_detect_timeout_total{direction=\"outbound\"} 1"), "\(f.exposition)")
  }

  @Test("shutting down before the protocol is known closes the connection; the timer then does nothing")
  func quiesceBeforeDetection() throws {
    let f = try Fixture(original: try Authority("198.18.1.10:7003"))
    try f.downstream.writeInbound(ByteBuffer(string: "GE"))
    f.downstream.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
    #expect(!f.downstream.isActive)
    f.downstream.embeddedEventLoop.advanceTime(by: .seconds(11))
    #expect(f.router.asked.withLock { $0.isEmpty })
  }

  @Test("a detected HTTP/1.1 connection stops the detect timer")
  func http1StopsTimer() throws {
    let f = try Fixture(original: try Authority("198.18.1.10:80"))
    try f.downstream.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\n"))
    f.downstream.embeddedEventLoop.advanceTime(by: .seconds(11))
    #expect(f.router.asked.withLock { $0.isEmpty })
    #expect(!f.exposition.contains("protocol_detect_timeout_total{direction=\"outbound\"} 1"))
  }

  @Test(
    "the HTTP/1 request line, byte by byte",
    arguments: [
      ("GET / HTTP/1.1\r\n", ProtocolDetector.Verdict.yes),
      ("GET / HTTP/1.0\n", .yes),
      ("OPTIONS * HTTP/1.1\r\n", .yes),
      ("M-SEARCH * HTTP/1.1\r\n", .yes),
      ("", .maybe),
      ("GET", .maybe),
      ("GET /", .maybe),
      ("GET / HTTP/1", .maybe),
      ("GET / HTTP/1.1", .maybe),
      ("GET / HTTP/1.1\r", .maybe),
      (" GET / HTTP/1.1\r\n", .no),
      ("GET  / HTTP/1.1\r\n", .no),
      ("GET / HTTP/2.0\r\n", .no),
      ("GET / HTTP/1.x\r\n", .no),
      ("GET / HTTP/1.1\rX", .no),
      ("GET / HTTP/1.1 \r\n", .no),
      ("GET /\u{7F} HTTP/1.1\r\n", .no),
      ("G(T / HTTP/1.1\r\n", .no),
      (String(repeating: "A", count: 33) + " / HTTP/1.1\r\n", .no),
      (String(repeating: "A", count: 32) + " / HTTP/1.1\r\n", .yes),
    ])
  func requestLine(_ text: String, _ verdict: ProtocolDetector.Verdict) {
    #expect(ProtocolDetector.http1RequestLine(ByteBuffer(string: text), limit: 16 * 1024) == verdict)
  }

  @Test("a request line still plausible at the limit is HTTP (a very long URL); a shorter one waits")
  func requestLineLimit() {
    let long = "GET /" + String(repeating: "a", count: 100)
    #expect(ProtocolDetector.http1RequestLine(ByteBuffer(string: long), limit: 64) == .yes)
    #expect(ProtocolDetector.http1RequestLine(ByteBuffer(string: long), limit: 1024) == .maybe)
  }

  // MARK: With TLS, and after it

  /// A detector on an embedded connection with `tls` offered, or one that runs after mutual TLS with `peer`.
  struct SecureFixture {
    let downstream: EmbeddedChannel
    let upstream: EmbeddedChannel
    let router: ProtocolDetectorTests.StubRouter
    let metrics = ProxyMetrics()

    init(tls: MeshTLS? = nil, afterTLSWith peer: IdentityName? = nil) throws {
      let loop = EmbeddedEventLoop()
      downstream = EmbeddedChannel(loop: loop)
      upstream = EmbeddedChannel(loop: loop)
      router = ProtocolDetectorTests.StubRouter(upstream: upstream)
      var setup = ProtocolDetector.Setup(
        router: router, metrics: metrics, tls: tls, requireClientCertificate: true, inFlight: InFlightRequests(),
        tap: TapHub(), logger: Logger(label: "test.detector"))
      setup.direction = "inbound"
      try downstream.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 4143)).wait()
      try upstream.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 8080)).wait()
      try downstream.pipeline.syncOperations.addHandler(
        ProtocolDetector(setup: setup, afterTLS: peer != nil, peerIdentity: peer))
    }

    var exposition: String { String(decoding: metrics.exposition(), as: UTF8.self) }
  }

  @Test("a TLS record where TLS is offered: the TLS handlers take the bytes and the detector steps aside")
  func tlsOffered() throws {
    let pki = try TestPKI()
    let tls = try MeshTLS(material: try pki.workload(.test("backend")), trustAnchors: [pki.anchor.certificate])
    let f = try SecureFixture(tls: tls)
    var record = ByteBuffer()
    // A handshake record that holds no valid ClientHello.
    record.writeBytes([0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00])
    try? f.downstream.writeInbound(record)
    #expect(!Self.has(ProtocolDetector.self, f.downstream))
    #expect(f.router.asked.withLock { $0.isEmpty })
    // The TLS server rejects the handshake: an alert record, and the connection ends.
    f.downstream.embeddedEventLoop.run()
    let alert = try #require(try f.downstream.readOutbound(as: ByteBuffer.self))
    #expect(alert.getInteger(at: alert.readerIndex, as: UInt8.self) == 0x15)
    #expect(!f.downstream.isActive)
  }

  @Test("after mutual TLS, a peer proxy's opaque header makes the connection opaque at once; what follows is relayed")
  func opaqueHeaderAfterTLS() throws {
    let f = try SecureFixture(afterTLSWith: .test("web"))
    var bytes = OpaqueHeader(targetPort: 6379).encoded()
    bytes.writeString("PING\r\n")
    try f.downstream.writeInbound(bytes)
    let asked = f.router.asked.withLock { $0 }
    #expect(asked.map(\.header) == [OpaqueHeader(targetPort: 6379)])
    #expect(asked.map(\.peerIdentity) == [.test("web")])
    var relayed = ""
    while var buffer = try f.upstream.readOutbound(as: ByteBuffer.self) {
      relayed += buffer.readString(length: buffer.readableBytes) ?? ""
    }
    #expect(relayed == "PING\r\n")
  }

  @Test("after mutual TLS, a malformed opaque header: the connection is refused, counted (bad authority)")
  func badOpaqueHeaderAfterTLS() throws {
    let f = try SecureFixture(afterTLSWith: .test("web"))
    try f.downstream.writeInbound(ByteBuffer(string: "swiftmesh-opaque/1 99999\r\n"))
    #expect(!f.downstream.isActive)
    #expect(f.router.asked.withLock { $0.isEmpty })
    #expect(f.exposition.contains("tcp_refused_total{direction=\"inbound\",reason=\"bad authority\"} 1"), "\(f.exposition)")
  }

  @Test("after mutual TLS, a part of an opaque header waits; an HTTP/1 request line is HTTP")
  func httpAfterTLS() throws {
    let waiting = try SecureFixture(afterTLSWith: .test("web"))
    try waiting.downstream.writeInbound(ByteBuffer(string: "swiftmesh-opa"))
    #expect(Self.has(ProtocolDetector.self, waiting.downstream))
    #expect(waiting.router.asked.withLock { $0.isEmpty })

    let http = try SecureFixture(afterTLSWith: .test("web"))
    try http.downstream.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\n"))
    #expect(!Self.has(ProtocolDetector.self, http.downstream))
    #expect(Self.has(ProxyRequestHandler.self, http.downstream))
    #expect(http.router.asked.withLock { $0.isEmpty })
  }
}
