import Synchronization
public import MeshDiscovery

/// The shared state of one destination (a service port) and its subscribers.
///
/// The publisher recomputes its value from the informer stores on `refresh()` (under its lock, so
/// refreshes apply in order and the newest store state always wins) and, when the value changed,
/// wakes every subscriber. A subscriber's wake-up signal buffers at most one pending wake-up
/// (`bufferingNewest(1)`): publishing never waits for a subscriber, and a slow subscriber that misses
/// intermediate states reads the newest value when it gets to it and sends the difference between what
/// it sent last and that value (coalescing). Memory per subscriber is therefore bounded by one view.
/// Subscriber ids, unique in the process.
private let subscriberIDs = Atomic<Int>(0)

final class SnapshotPublisher<Value: Sendable & Equatable>: Sendable {
  private struct State {
    var value: Value
    var version = 0
    var subscribers: [Int: AsyncStream<Void>.Continuation] = [:]
    var closed = false
  }

  let key: DestinationTarget
  private let compute: @Sendable () -> Value
  private let state: Mutex<State>

  init(key: DestinationTarget, compute: @escaping @Sendable () -> Value) {
    self.key = key
    self.compute = compute
    self.state = Mutex(State(value: compute()))
  }

  /// The current value and its version (bumped on every change).
  var current: (value: Value, version: Int) { state.withLock { ($0.value, $0.version) } }

  var subscriberCount: Int { state.withLock { $0.subscribers.count } }

  /// Recomputes the value; wakes the subscribers when it changed. Returns whether it changed.
  @discardableResult
  func refresh() -> Bool {
    let toWake: [AsyncStream<Void>.Continuation]? = state.withLock { s in
      let fresh = compute()
      guard fresh != s.value else { return nil }
      s.value = fresh
      s.version += 1
      return Array(s.subscribers.values)
    }
    guard let toWake else { return false }
    for continuation in toWake { continuation.yield() }
    return true
  }

  /// A new subscriber: its id and its wake-up signals (the first is already pending). Nil when closed.
  func subscribe() -> (id: Int, signals: AsyncStream<Void>)? {
    let (signals, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    let id: Int? = state.withLock { s in
      guard !s.closed else { return nil }
      // Unique across publishers: a late unsubscribe never hits another publisher's subscriber.
      let id = subscriberIDs.add(1, ordering: .relaxed).newValue
      s.subscribers[id] = continuation
      return id
    }
    guard let id else {
      continuation.finish()
      return nil
    }
    continuation.yield()
    return (id, signals)
  }

  /// Removes a subscriber; returns how many remain.
  func unsubscribe(_ id: Int) -> Int {
    let (continuation, remaining) = state.withLock { s in (s.subscribers.removeValue(forKey: id), s.subscribers.count) }
    continuation?.finish()
    return remaining
  }

  /// Ends every subscriber's signals (their streams then end) and refuses new ones.
  func close() {
    let all = state.withLock { s in
      s.closed = true
      defer { s.subscribers.removeAll() }
      return Array(s.subscribers.values)
    }
    for continuation in all { continuation.finish() }
  }
}
