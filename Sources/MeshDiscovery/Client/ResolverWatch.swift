import Synchronization

/// One shared watch of the resolver (the endpoints or the profile of one authority): the last known
/// value and the consumers that want it. Consumers get the newest value (`bufferingNewest(1)`), so a
/// slow consumer skips to the latest complete snapshot instead of queueing stale ones.
final class ResolverWatch<Value: Sendable & Equatable>: Sendable {
  private struct State {
    var last: Value?
    var consumers: [Int: AsyncThrowingStream<Value, any Error>.Continuation] = [:]
    var nextID = 0
    var finished = false
  }
  private let state = Mutex(State())
  private let stopSignal: AsyncStream<Void>
  private let stopContinuation: AsyncStream<Void>.Continuation

  init() {
    (stopSignal, stopContinuation) = AsyncStream<Void>.makeStream()
  }

  /// Adds a consumer; it gets the last known value at once when there is one.
  func addConsumer(onTermination: @escaping @Sendable (Int) -> Void) -> AsyncThrowingStream<Value, any Error> {
    let (stream, continuation) = AsyncThrowingStream<Value, any Error>.makeStream(bufferingPolicy: .bufferingNewest(1))
    let id: Int? = state.withLock { s in
      guard !s.finished else { return nil }
      s.nextID += 1
      s.consumers[s.nextID] = continuation
      if let last = s.last { continuation.yield(last) }
      return s.nextID
    }
    guard let id else {
      continuation.finish()
      return stream
    }
    continuation.onTermination = { _ in onTermination(id) }
    return stream
  }

  /// Removes a consumer; returns how many remain.
  func removeConsumer(_ id: Int) -> Int {
    state.withLock { s in
      s.consumers[id] = nil
      return s.consumers.count
    }
  }

  var consumerCount: Int { state.withLock { $0.consumers.count } }
  var last: Value? { state.withLock { $0.last } }

  /// Publishes a new value to every consumer, unless it equals the last one.
  func publish(_ value: Value) {
    state.withLock { s in
      guard s.last != value else { return }
      s.last = value
      for continuation in s.consumers.values { continuation.yield(value) }
    }
  }

  /// Ends every consumer (with `error` when given) and stops the watch.
  func finish(throwing error: (any Error)? = nil) {
    let consumers = state.withLock { s in
      s.finished = true
      defer { s.consumers.removeAll() }
      return Array(s.consumers.values)
    }
    for continuation in consumers { continuation.finish(throwing: error) }
    stopContinuation.finish()
  }

  /// Stops the watch's work (its last consumer went away).
  func stop() { stopContinuation.finish() }

  /// Returns once `stop()` or `finish()` was called.
  func stopped() async {
    for await _ in stopSignal {}
  }
}
