import MeshCore
import NIOCore
import NIOPosix
import Synchronization
import Testing

@Suite struct ConnectionListenerTests {
  /// Connects `count` clients to `port` and returns their channels (still open).
  private func connect(_ count: Int, port: Int) async throws -> [any Channel] {
    var clients: [any Channel] = []
    for _ in 0..<count {
      clients.append(try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .connect(host: "127.0.0.1", port: port).get())
    }
    return clients
  }

  /// The case SwiftNIO's own async `bind` traps on: connections accepted but not yet handed to the accept loop
  /// when the serving task is cancelled. Each must be closed, and the process must not trap.
  @Test func cancellingWithConnectionsWaitingClosesThemAll() async throws {
    for _ in 0..<5 {
      let served = ManagedCounter()
      let listener = try await ConnectionListener<Void, ByteBuffer, ByteBuffer>.bind(host: "127.0.0.1", port: 0) { _ in }
      let port = try #require(listener.channel.localAddress?.port)
      let serving = Task {
        await listener.serve { _, connection in
          served.increment()
          // A slow handler, so that connections pile up in the queue behind it.
          try? await connection.executeThenClose { _, _ in try await Task.sleep(for: .seconds(30)) }
        }
      }
      let clients = try await connect(64, port: port)
      serving.cancel()
      await serving.value
      #expect(!listener.channel.isActive)
      // Every client sees its connection closed by the server, served or not.
      for client in clients {
        try await withTimeout(seconds: 10) { try await client.closeFuture.get() }
      }
      #expect(served.value <= 64)
    }
  }

  @Test func servesEveryConnectionUntilClosed() async throws {
    let listener = try await ConnectionListener<Int, ByteBuffer, ByteBuffer>.bind(host: "127.0.0.1", port: 0) { channel in
      channel.localAddress?.port ?? 0
    }
    let port = try #require(listener.channel.localAddress?.port)
    let served = ManagedCounter()
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask {
        await listener.serve { localPort, connection in
          #expect(localPort == port)
          served.increment()
          try? await connection.executeThenClose { inbound, outbound in
            for try await chunk in inbound { try await outbound.write(chunk) }
          }
        }
      }
      let clients = try await connect(10, port: port)
      for client in clients { try await client.close() }
      try await withTimeout(seconds: 10) {
        while served.value < 10 { try await Task.sleep(for: .milliseconds(10)) }
      }
      listener.close()
      try await group.waitForAll()
    }
    #expect(served.value == 10)
    // Closed: a new connection is refused.
    await #expect(throws: (any Error).self) { _ = try await connect(1, port: port) }
  }
}

private final class ManagedCounter: Sendable {
  private let count = Mutex(0)
  func increment() { count.withLock { $0 += 1 } }
  var value: Int { count.withLock { $0 } }
}

private struct Timeout: Error {}

private func withTimeout(seconds: Int, _ body: @escaping @Sendable () async throws -> Void) async throws {
  try await withThrowingTaskGroup(of: Void.self) { group in
    group.addTask { try await body() }
    group.addTask {
      try await Task.sleep(for: .seconds(seconds))
      throw Timeout()
    }
    try await group.next()
    group.cancelAll()
  }
}
