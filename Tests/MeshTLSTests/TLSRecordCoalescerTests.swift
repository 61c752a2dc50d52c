import MeshCore
import MeshIdentity
import NIOCore
import NIOEmbedded
import NIOPosix
import Synchronization
import Testing
import _MeshTestSupport

@testable import MeshTLS

/// Counts the TLS records a channel writes to its socket (it sits first in the pipeline, so it sees ciphertext).
private final class RecordCounter: ChannelOutboundHandler, Sendable {
  typealias OutboundIn = IOData
  private let state = Mutex<(records: Int, partial: [UInt8])>((0, []))

  var records: Int { state.withLock { $0.records } }
  func reset() { state.withLock { $0.records = 0 } }

  func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
    if case .byteBuffer(let buffer) = unwrapOutboundIn(data) {
      state.withLock { state in
        // Records may straddle writes: keep the bytes of an unfinished one, and walk the 5-byte headers.
        state.partial += buffer.readableBytesView
        while state.partial.count >= 5 {
          let length = Int(state.partial[3]) << 8 | Int(state.partial[4])
          guard state.partial.count >= 5 + length else { break }
          state.partial.removeFirst(5 + length)
          state.records += 1
        }
      }
    }
    context.write(data, promise: promise)
  }
}

/// Collects what a channel reads as text.
private final class Collector: ChannelInboundHandler, Sendable {
  typealias InboundIn = ByteBuffer
  private let text = Mutex("")
  var received: String { text.withLock { $0 } }
  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let buffer = unwrapInboundIn(data)
    text.withLock { $0 += String(buffer: buffer) }
  }
}

@Suite("TLS record coalescing")
struct TLSRecordCoalescerTests {
  private func outbound(_ channel: EmbeddedChannel) throws -> [ByteBuffer] {
    var buffers: [ByteBuffer] = []
    while let buffer = try channel.readOutbound(as: ByteBuffer.self) { buffers.append(buffer) }
    return buffers
  }

  @Test("writes between two flushes leave as one buffer, in order, and every write's promise completes with it")
  func gathers() throws {
    let channel = EmbeddedChannel(handler: TLSRecordCoalescer())
    let promises = (0..<3).map { _ in channel.eventLoop.makePromise(of: Void.self) }
    for (text, promise) in zip(["HEADERS|", "DATA|", "END"], promises) {
      channel.write(ByteBuffer(string: text), promise: promise)
    }
    #expect(try outbound(channel).isEmpty, "nothing leaves before the flush")
    channel.flush()
    channel.embeddedEventLoop.run()
    #expect(try outbound(channel).map { String(buffer: $0) } == ["HEADERS|DATA|END"])
    for promise in promises { try promise.futureResult.wait() }

    // A lone write leaves as it was written, and the next round starts afresh.
    channel.write(ByteBuffer(string: "ping"), promise: nil)
    channel.flush()
    channel.embeddedEventLoop.run()
    channel.write(ByteBuffer(string: "a"), promise: nil)
    channel.write(ByteBuffer(string: "b"), promise: nil)
    channel.flush()
    channel.embeddedEventLoop.run()
    #expect(try outbound(channel).map { String(buffer: $0) } == ["ping", "ab"])
    _ = try channel.finish()
  }

  @Test("the flushes of one event-loop round (several streams' responses) leave together, at the end of the round")
  func oneRound() throws {
    let channel = EmbeddedChannel(handler: TLSRecordCoalescer())
    for stream in 1...3 {
      channel.write(ByteBuffer(string: "[\(stream) HEADERS]"), promise: nil)
      channel.write(ByteBuffer(string: "[\(stream) DATA]"), promise: nil)
      channel.flush()
    }
    #expect(try outbound(channel).isEmpty, "the flush waits for the round's end")
    channel.embeddedEventLoop.run()
    #expect(
      try outbound(channel).map { String(buffer: $0) } == [
        "[1 HEADERS][1 DATA][2 HEADERS][2 DATA][3 HEADERS][3 DATA]"
      ])
    _ = try channel.finish()
  }

  @Test("no more than one record's worth is gathered, and a large write goes on as it is, after what came before")
  func bounded() throws {
    let channel = EmbeddedChannel(handler: TLSRecordCoalescer())
    let tenK = ByteBuffer(repeating: UInt8(ascii: "a"), count: 10_000)
    let big = ByteBuffer(repeating: UInt8(ascii: "b"), count: 40_000)
    channel.write(ByteBuffer(string: "head"), promise: nil)
    channel.write(tenK, promise: nil)
    channel.write(tenK, promise: nil)  // 20,004 bytes would not fit one record
    channel.write(big, promise: nil)
    channel.write(ByteBuffer(string: "tail"), promise: nil)
    channel.flush()
    channel.embeddedEventLoop.run()
    let sizes = try outbound(channel).map(\.readableBytes)
    #expect(sizes == [10_004, 10_000, 40_000, 4])
    _ = try channel.finish()
  }

  @Test("a close right after a flush still sends what was flushed, before the close")
  func closeKeepsOrder() throws {
    let channel = EmbeddedChannel(handler: TLSRecordCoalescer())
    let flushed = channel.eventLoop.makePromise(of: Void.self)
    let written = Mutex(false)
    flushed.futureResult.whenSuccess { written.withLock { $0 = true } }
    channel.write(ByteBuffer(string: "goodbye"), promise: flushed)
    channel.flush()
    channel.close(promise: nil)
    #expect(try outbound(channel).map { String(buffer: $0) } == ["goodbye"])
    #expect(written.withLock { $0 }, "the flushed write completed before the channel closed")
  }

  @Test("through real mutual TLS, three writes and one flush are sealed into one record, and the peer reads them in order")
  func oneRecordOnTheWire() async throws {
    let pki = try TestPKI()
    let server = try MeshTLS(material: try pki.workload(.test("backend")), trustAnchors: [pki.anchor.certificate])
    let client = try MeshTLS(material: try pki.workload(.test("web")), trustAnchors: [pki.anchor.certificate])
    try await MeshTLSEcho.withServer(tls: server) { port in
      let counter = RecordCounter()
      let collector = Collector()
      let (session, channel) = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .connect(host: "127.0.0.1", port: port) { channel in
          channel.eventLoop.makeCompletedFuture {
            let sync = channel.pipeline.syncOperations
            try sync.addHandler(counter, position: .first)
            let session = try client.addClientHandlers(to: sync, expected: .test("backend"))
            try sync.addHandler(collector)
            return (session, channel)
          }
        }
      defer { channel.close(promise: nil) }
      _ = try await session.get()
      try await eventually("the echo server's identity line") { collector.received.contains("identity=") }
      counter.reset()
      try await channel.eventLoop.submit {
        for text in ["alpha\n", "beta\n", "gamma\n"] { channel.write(ByteBuffer(string: text), promise: nil) }
        channel.flush()
      }.get()
      try await eventually("the three lines echoed") { collector.received.contains("gamma\n") }
      #expect(collector.received.hasSuffix("alpha\nbeta\ngamma\n"))
      #expect(counter.records == 1, "three writes and one flush became \(counter.records) records")
    }
  }
}
