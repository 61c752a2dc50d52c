public import MeshCore
public import MeshTLS
public import NIOCore
import Foundation
import NIOPosix

/// A mesh-TLS echo server and client on loopback, for tests and benchmarks. After the handshake the server
/// writes `identity=<client identity or none>\n`, then echoes every byte; a line `quit` makes it close.
public enum MeshTLSEcho {
  public typealias SessionObserver = @Sendable (Result<MeshTLSSession, MeshTLSError>) -> Void

  /// Runs a server on 127.0.0.1:0 while `body` runs with its port.
  public static func withServer<T: Sendable>(
    tls: MeshTLS,
    requireClientCertificate: Bool = true,
    onSession: @escaping SessionObserver = { _ in },
    _ body: @Sendable (Int) async throws -> T
  ) async throws -> T {
    let server = try await ConnectionListener<EventLoopFuture<MeshTLSSession>, ByteBuffer, ByteBuffer>.bind(
      host: "127.0.0.1", port: 0
    ) { child in
      let session = try tls.addServerHandlers(
        to: child.pipeline.syncOperations, requireClientCertificate: requireClientCertificate)
      // Reported from the event loop, so a test that stops the server right away still hears of it.
      session.whenComplete { result in
        onSession(result.mapError { $0 as? MeshTLSError ?? MeshTLSError(.handshakeFailed, "\($0)") })
      }
      return session
    }
    let port = server.channel.localAddress?.port ?? 0
    return try await withThrowingTaskGroup(of: T?.self) { group in
      group.addTask {
        await server.serve { sessionFuture, child in
          await serve(child, session: sessionFuture)
        }
        return nil
      }
      defer { server.close() }
      let result = try await body(port)
      group.cancelAll()
      return result
    }
  }

  private static func serve(
    _ child: NIOAsyncChannel<ByteBuffer, ByteBuffer>,
    session sessionFuture: EventLoopFuture<MeshTLSSession>
  ) async {
    try? await child.executeThenClose { inbound, outbound in
      guard let session = try? await sessionFuture.get() else { return }
      try await outbound.write(ByteBuffer(string: "identity=\(session.peerIdentity?.description ?? "none")\n"))
      var pending = ""
      for try await chunk in inbound {
        try await outbound.write(chunk)
        pending += String(buffer: chunk)
        if pending.contains("quit\n") { return }
        if pending.count > 16 { pending = String(pending.suffix(16)) }
      }
    }
  }

  /// Connects with mesh TLS to 127.0.0.1:`port`, expecting `expected`, and runs `body` with the session and
  /// the connection's streams; the connection is closed when `body` returns.
  public static func withConnection<T: Sendable>(
    tls: MeshTLS,
    port: Int,
    expected: IdentityName,
    _ body: (MeshTLSSession, NIOAsyncChannelInboundStream<ByteBuffer>, NIOAsyncChannelOutboundWriter<ByteBuffer>)
      async throws -> T = { _, _, _ in () }
  ) async throws -> T {
    let (sessionFuture, channel) = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .connect(host: "127.0.0.1", port: port) { channel in
        channel.eventLoop.makeCompletedFuture {
          let session = try tls.addClientHandlers(to: channel.pipeline.syncOperations, expected: expected)
          let async = try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
          return (session, async)
        }
      }
    return try await channel.executeThenClose { inbound, outbound in
      let session = try await sessionFuture.get()
      return try await body(session, inbound, outbound)
    }
  }

  /// `count` distinct ports that were free a moment ago (held together while chosen, so no two are the same).
  public static func freePorts(_ count: Int) async throws -> [Int] {
    var channels: [any Channel] = []
    do {
      for _ in 0..<count {
        channels.append(try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get())
      }
    } catch {
      for channel in channels { try? await channel.close() }
      throw error
    }
    let ports = channels.map { $0.localAddress?.port ?? 0 }
    for channel in channels { try await channel.close() }
    return ports
  }

  /// A port that was free a moment ago, for tools that must be told their port.
  public static func freePort() async throws -> Int {
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .bind(host: "127.0.0.1", port: 0).get()
    let port = channel.localAddress?.port ?? 0
    try await channel.close()
    return port
  }
}

/// Ports for servers a test stops and starts again on the same port.
public enum StablePorts {
  /// A free loopback port below the kernel's ephemeral range. A port from `bind(0)` comes from that range,
  /// so once its server stops, any outgoing connection on the machine may take it as its source port and a
  /// restart on it fails; a port below the range is never handed out that way.
  public static func free() async throws -> Int {
    let range = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8))?
      .split(whereSeparator: \.isWhitespace).compactMap { Int($0) } ?? []
    let ephemeralLow = range.first ?? 32768
    let low = 10_000
    let high = max(low + 1000, ephemeralLow)
    for _ in 0..<64 {
      let candidate = Int.random(in: low..<high)
      if let channel = try? await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .bind(host: "127.0.0.1", port: candidate).get()
      {
        try await channel.close()
        return candidate
      }
    }
    throw TestFailure("no free port in \(low)..<\(high)")
  }
}
