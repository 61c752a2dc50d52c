public import NIOCore
public import NIOPosix
import Synchronization

/// A listening socket whose accepted connections are each either served or closed, never dropped.
///
/// SwiftNIO's `bind(host:port:childChannelInitializer:)` buffers accepted `NIOAsyncChannel`s in an async
/// sequence; when the task iterating it is cancelled (a test ending, a service stopped), connections still in
/// that buffer are released without their writer being finished, and the process traps with "Deinited
/// NIOAsyncWriter without calling finish()" (swift-nio issues 2637 and 2813). Here the buffer is this type's:
/// `serve` hands each connection to its handler, and when it stops (listener closed or task cancelled) it
/// closes the listener and runs `executeThenClose` on every connection still waiting.
public final class ConnectionListener<Context: Sendable, Inbound: Sendable, Outbound: Sendable>: Sendable {
  public typealias Connection = NIOAsyncChannel<Inbound, Outbound>

  /// The listening channel (its `localAddress` tells the bound port).
  public let channel: any Channel
  private let queue: Queue

  private init(channel: any Channel, queue: Queue) {
    self.channel = channel
    self.queue = queue
  }

  /// Binds `host:port`. `configure` runs on each accepted connection's event loop before it is wrapped: it
  /// adds the connection's handlers and returns a value handed to the connection's handler with it.
  public static func bind(
    host: String,
    port: Int,
    group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
    backlog: Int32 = 256,
    configuration: NIOAsyncChannel<Inbound, Outbound>.Configuration = .init(),
    configure: @escaping @Sendable (any Channel) throws -> Context
  ) async throws -> ConnectionListener {
    let queue = Queue()
    let channel = try await ServerBootstrap(group: group)
      .serverChannelOption(.backlog, value: backlog)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
      .childChannelInitializer { child in
        child.eventLoop.makeCompletedFuture {
          guard queue.isAccepting else { throw ChannelError.ioOnClosedChannel }
          let context = try configure(child)
          let connection = try Connection(wrappingChannelSynchronously: child, configuration: configuration)
          queue.push((context, connection))
        }
      }
      .bind(host: host, port: port).get()
    channel.closeFuture.whenComplete { _ in queue.finish() }
    return ConnectionListener(channel: channel, queue: queue)
  }

  /// Serves every accepted connection with `handler`, each in its own child task, until the listener is
  /// closed or the calling task is cancelled; then closes the listener, closes the connections no handler
  /// took, and waits for the running handlers.
  public func serve(_ handler: @escaping @Sendable (Context, Connection) async -> Void) async {
    await withDiscardingTaskGroup { group in
      while let (context, connection) = await queue.next() {
        group.addTask { await handler(context, connection) }
      }
      try? await channel.close()
      for (_, connection) in queue.drain() {
        try? await connection.executeThenClose { _, _ in }
      }
    }
  }

  /// Stops accepting: the listener closes and `serve` returns once its handlers have.
  public func close() {
    channel.close(promise: nil)
  }

  private final class Queue: Sendable {
    private struct State {
      var buffer: [(Context, Connection)] = []
      var head = 0
      var waiter: CheckedContinuation<(Context, Connection)?, Never>?
      var finished = false
      var drained = false
    }
    private let state = Mutex(State())

    var isAccepting: Bool { state.withLock { !$0.drained } }

    func push(_ element: (Context, Connection)) {
      let outcome = state.withLock { s -> (waiter: CheckedContinuation<(Context, Connection)?, Never>?, late: Bool) in
        if s.drained { return (nil, true) }
        if let waiter = s.waiter {
          s.waiter = nil
          return (waiter, false)
        }
        s.buffer.append(element)
        return (nil, false)
      }
      if let waiter = outcome.waiter {
        waiter.resume(returning: element)
      } else if outcome.late {
        // Accepted while `serve` was already closing down: nobody will serve it, so close it properly.
        Task { try? await element.1.executeThenClose { _, _ in } }
      }
    }

    /// No more connections will be handed out: a waiting `next` returns nil (buffered ones stay for `drain`).
    func finish() {
      let waiter = state.withLock { s -> CheckedContinuation<(Context, Connection)?, Never>? in
        s.finished = true
        defer { s.waiter = nil }
        return s.waiter
      }
      waiter?.resume(returning: nil)
    }

    func next() async -> (Context, Connection)? {
      await withTaskCancellationHandler {
        await withCheckedContinuation { (continuation: CheckedContinuation<(Context, Connection)?, Never>) in
          let ready = state.withLock { s -> (Context, Connection)?? in
            // Cancelled: stop handing out; what is buffered is closed by `drain`.
            if Task.isCancelled { return .some(nil) }
            if s.head < s.buffer.count {
              let element = s.buffer[s.head]
              s.head += 1
              if s.head == s.buffer.count {
                s.buffer.removeAll(keepingCapacity: true)
                s.head = 0
              }
              return .some(element)
            }
            if s.finished { return .some(nil) }
            s.waiter = continuation
            return nil
          }
          if let ready { continuation.resume(returning: ready) }
        }
      } onCancel: {
        finish()
      }
    }

    /// Everything not handed out, once; later arrivals are closed by `push`.
    func drain() -> [(Context, Connection)] {
      state.withLock { s in
        s.finished = true
        s.drained = true
        defer {
          s.buffer = []
          s.head = 0
        }
        return Array(s.buffer[s.head...])
      }
    }
  }
}
