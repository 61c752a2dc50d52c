import MeshCore
import NIOCore
import NIOEmbedded
import NIOHTTP2
import Synchronization
import Testing

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
}
