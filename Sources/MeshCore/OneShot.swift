import Synchronization

/// A value set once and awaited by many.
public final class OneShot<Value: Sendable>: Sendable {
  private let state = Mutex<(result: Result<Value, any Error>?, waiters: [CheckedContinuation<Value, any Error>])>((nil, []))

  public init() {}

  public func succeed(_ value: Value) { complete(.success(value)) }
  public func fail(_ error: any Error) { complete(.failure(error)) }

  private func complete(_ result: Result<Value, any Error>) {
    let waiters = state.withLock { s -> [CheckedContinuation<Value, any Error>] in
      guard s.result == nil else { return [] }
      s.result = result
      defer { s.waiters = [] }
      return s.waiters
    }
    for w in waiters { w.resume(with: result) }
  }

  public func value() async throws -> Value {
    try await withCheckedThrowingContinuation { continuation in
      let ready = state.withLock { s -> Result<Value, any Error>? in
        if let r = s.result { return r }
        s.waiters.append(continuation)
        return nil
      }
      if let ready { continuation.resume(with: ready) }
    }
  }
}
