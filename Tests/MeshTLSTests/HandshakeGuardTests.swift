import MeshCore
import MeshIdentity
import MeshTLS
import NIOCore
import NIOEmbedded
import NIOPosix
import NIOSSL
import Synchronization
import Testing
import _MeshTestSupport

/// Holds every write after the first flush (the ClientHello) and sends them all in one burst, followed at once
/// by a FIN, when the output is closed: the TLS client's second flight (certificate, `Finished`), its data and
/// its `close_notify` reach the server together with the end of input, as from a client that writes one request
/// and half-closes the moment its handshake is done.
private final class Burst: ChannelOutboundHandler {
  typealias OutboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer
  private var holding = false
  private var held: [(ByteBuffer, EventLoopPromise<Void>?)] = []

  func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
    if holding {
      held.append((unwrapOutboundIn(data), promise))
    } else {
      context.write(data, promise: promise)
    }
  }

  func flush(context: ChannelHandlerContext) {
    guard !holding else { return }
    holding = true
    context.flush()
  }

  func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
    for (buffer, promise) in held { context.write(wrapOutboundOut(buffer), promise: promise) }
    held = []
    context.flush()
    context.close(mode: mode, promise: promise)
  }
}

/// The server's application: takes half-closure once the session is known (as the proxy's detector does for
/// bytes that may be opaque), collects what the client sent, and on the client's end of input answers with
/// the byte count and digest, then closes.
private final class Collector: ChannelInboundHandler {
  typealias InboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer
  private var digest = FNV1a()
  private var count = 0

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let buffer = unwrapInboundIn(data)
    digest.add(buffer.readableBytesView)
    count += buffer.readableBytes
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    guard case ChannelEvent.inputClosed = event else { return context.fireUserInboundEventTriggered(event) }
    let answer = "\(count) \(digest.value)\n"
    context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: answer))).whenComplete { _ in
      context.close(promise: nil)
    }
  }
}

/// A 64-bit FNV-1a digest: enough to tell bytes lost or reordered.
private struct FNV1a {
  var value: UInt64 = 0xcbf2_9ce4_8422_2325
  mutating func add(_ bytes: some Sequence<UInt8>) {
    for byte in bytes { value = (value ^ UInt64(byte)) &* 0x100_0000_01b3 }
  }
}

/// Reads what the server answers until it closes.
private final class AnswerReader: ChannelInboundHandler {
  typealias InboundIn = ByteBuffer
  private let answer: EventLoopPromise<String>
  private var text = ""
  init(answer: EventLoopPromise<String>) { self.answer = answer }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) { text += String(buffer: unwrapInboundIn(data)) }
  func channelInactive(context: ChannelHandlerContext) { answer.succeed(text) }
  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    // A TLS close without close_notify after the answer is fine; anything before it shows as a short answer.
    context.close(promise: nil)
  }
}

@Suite("TLS handshake guard")
struct HandshakeGuardTests {
  let web = IdentityName.test("web")
  let backend = IdentityName.test("backend")

  @Test(
    "a client that sends its data, close_notify and FIN in one burst with the end of its handshake is heard in full, 20 times over"
  )
  func endOfInputDuringVerification() async throws {
    let pki = try TestPKI()
    let server = try MeshTLS(material: try pki.workload(backend), trustAnchors: [pki.anchor.certificate])
    let client = try MeshTLS(material: try pki.workload(web), trustAnchors: [pki.anchor.certificate])
    let group = MultiThreadedEventLoopGroup.singleton
    let listener = try await ServerBootstrap(group: group)
      .childChannelInitializer { child in
        child.eventLoop.makeCompletedFuture {
          let session = try server.addServerHandlers(to: child.pipeline.syncOperations)
          try child.pipeline.syncOperations.addHandler(Collector())
          session.whenSuccess { _ in
            try? child.syncOptions?.setOption(ChannelOptions.allowRemoteHalfClosure, value: true)
          }
        }
      }
      .bind(host: "127.0.0.1", port: 0).get()
    defer { listener.close(promise: nil) }
    let port = try #require(listener.localAddress?.port)

    var payload = ByteBuffer()
    for index in 0..<(48 * 1024) { payload.writeInteger(UInt8(truncatingIfNeeded: index &* 31)) }
    var digest = FNV1a()
    digest.add(payload.readableBytesView)
    let expected = "\(payload.readableBytes) \(digest.value)\n"

    for attempt in 0..<20 {
      let answer = group.next().makePromise(of: String.self)
      let channel = try await ClientBootstrap(group: group)
        .channelInitializer { channel in
          channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(Burst())
            let session = try client.addClientHandlers(to: channel.pipeline.syncOperations, expected: backend)
            try channel.pipeline.syncOperations.addHandler(AnswerReader(answer: answer))
            session.whenSuccess { _ in
              channel.write(payload, promise: nil)
              channel.close(mode: .output, promise: nil)
            }
            session.whenFailure { answer.fail($0) }
          }
        }
        .connect(host: "127.0.0.1", port: port).get()
      let timeout = channel.eventLoop.scheduleTask(in: .seconds(10)) { channel.close(promise: nil) }
      let text = try await answer.futureResult.get()
      timeout.cancel()
      #expect(text == expected, "attempt \(attempt)")
      if text != expected { break }
    }
  }

  @Test("a peer that connects and never finishes the handshake is closed after the handshake timeout")
  func timeout() async throws {
    let pki = try TestPKI()
    let server = try MeshTLS(
      material: try pki.workload(backend), trustAnchors: [pki.anchor.certificate],
      configuration: .defaults { $0.handshakeTimeout = .milliseconds(300) })
    let log = SessionLog()
    try await MeshTLSEcho.withServer(tls: server, onSession: log.record) { port in
      let clock = ContinuousClock()
      let start = clock.now
      // Connects, sends the first two bytes of a TLS record, and waits for the server to hang up.
      let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .connect(host: "127.0.0.1", port: port).get()
      let bound = channel.eventLoop.scheduleTask(in: .seconds(5)) { channel.close(promise: nil) }
      try await channel.writeAndFlush(ByteBuffer(bytes: [0x16, 0x03]))
      try await channel.closeFuture.get()
      bound.cancel()
      #expect(clock.now - start < .seconds(4))
    }
    let sessions = try await log.wait(for: 1)
    #expect(throws: MeshTLSError(.handshakeFailed, "")) { try sessions[0].get() }
    if case .failure(let error) = sessions[0] { #expect(error.message.contains("did not finish within 300 ms"), "\(error)") }
  }

  @Test("a peer that hangs up in the middle of the handshake (no verification running) fails it at once, not at the timeout")
  func hangUpMidHandshake() async throws {
    let pki = try TestPKI()
    let server = try MeshTLS(
      material: try pki.workload(backend), trustAnchors: [pki.anchor.certificate],
      configuration: .defaults { $0.handshakeTimeout = .seconds(8) })
    let log = SessionLog()
    try await MeshTLSEcho.withServer(tls: server, onSession: log.record) { port in
      let clock = ContinuousClock()
      let start = clock.now
      let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .channelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
        .connect(host: "127.0.0.1", port: port).get()
      let bound = channel.eventLoop.scheduleTask(in: .seconds(10)) { channel.close(promise: nil) }
      try await channel.writeAndFlush(ByteBuffer(bytes: [0x16, 0x03]))
      try await channel.close(mode: .output)
      try await channel.closeFuture.get()
      bound.cancel()
      #expect(clock.now - start < .seconds(4), "closed by the server when the peer hung up")
    }
    let sessions = try await log.wait(for: 1)
    if case .failure(let error) = sessions[0] {
      #expect(!error.message.contains("did not finish within"), "\(error)")
    } else {
      Issue.record("the handshake cannot have succeeded: \(sessions[0])")
    }
  }
}
