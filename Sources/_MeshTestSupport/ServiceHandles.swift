public import ServiceLifecycle

/// Stops a service started with `start(_:in:)`.
public final class StopHandle: Sendable {
  private let signal: AsyncStream<Void>
  private let continuation: AsyncStream<Void>.Continuation
  public init() { (signal, continuation) = AsyncStream<Void>.makeStream() }
  public func stop() { continuation.finish() }
  public func stopped() async { for await _ in signal {} }
}

/// Runs `service` as a child of `group` until the handle is stopped (then cancels it).
public func start(
  _ service: some ServiceLifecycle.Service, in group: inout ThrowingTaskGroup<Void, any Error>
) -> StopHandle {
  let handle = StopHandle()
  group.addTask {
    await withTaskGroup(of: Void.self) { inner in
      inner.addTask { try? await service.run() }
      inner.addTask { await handle.stopped() }
      await inner.next()
      inner.cancelAll()
    }
  }
  return handle
}
