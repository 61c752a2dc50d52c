import Synchronization

/// A value set once and awaited by many. A waiter whose task is cancelled stops waiting with
/// `CancellationError`; the others go on waiting.
public final class OneShot<Value: Sendable>: Sendable {
  private struct State {
    var result: Result<Value, any Error>?
    var waiters: [Int: CheckedContinuation<Value, any Error>] = [:]
    var nextWaiter = 0
  }
  private let state = Mutex(State())

  public init() {}

  public func succeed(_ value: Value) { complete(.success(value)) }
  public func fail(_ error: any Error) { complete(.failure(error)) }

  /// The value, if it is set.
  public var current: Result<Value, any Error>? { state.withLock { $0.result } }

  private func complete(_ result: Result<Value, any Error>) {
    let waiters = state.withLock { s -> [CheckedContinuation<Value, any Error>] in
      guard s.result == nil else { return [] }
      s.result = result
      defer { s.waiters = [:] }
      return Array(s.waiters.values)
    }
    for w in waiters { w.resume(with: result) }
  }

  public func value() async throws -> Value {
    let id = state.withLock { s in
      defer { s.nextWaiter += 1 }
      return s.nextWaiter
    }
    return try await withTaskCancellationHandler {
      try await withCheckedThrowingContinuation { continuation in
        let ready = state.withLock { s -> Result<Value, any Error>? in
          if let r = s.result { return r }
          if Task.isCancelled { return .failure(CancellationError()) }
          s.waiters[id] = continuation
          return nil
        }
        if let ready { continuation.resume(with: ready) }
      }
    } onCancel: {
      let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
      waiter?.resume(throwing: CancellationError())
    }
  }
}
