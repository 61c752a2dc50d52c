import Synchronization

/// The publishers of one kind (endpoints or profiles), one per destination, created by the first
/// subscriber and dropped with the last. Many subscribers to one destination share one publisher.
final class PublisherRegistry<Value: Sendable & Equatable>: Sendable {
  private struct State {
    var publishers: [DestinationTarget: SnapshotPublisher<Value>] = [:]
    /// `namespace/name` -> targets of that service (all ports).
    var byService: [String: Set<DestinationTarget>] = [:]
    var closed = false
    var created = 0
  }

  private let state = Mutex(State())
  private let make: @Sendable (DestinationTarget) -> @Sendable () -> Value

  /// `make` returns, for a target, the closure that computes its current value from the stores.
  init(make: @escaping @Sendable (DestinationTarget) -> @Sendable () -> Value) {
    self.make = make
  }

  /// Subscribes to `target`, creating its publisher if needed. Nil once closed.
  func subscribe(_ target: DestinationTarget) -> (publisher: SnapshotPublisher<Value>, id: Int, signals: AsyncStream<Void>)? {
    state.withLock { s in
      guard !s.closed else { return nil }
      let publisher: SnapshotPublisher<Value>
      if let existing = s.publishers[target] {
        publisher = existing
      } else {
        publisher = SnapshotPublisher(key: target, compute: make(target))
        s.publishers[target] = publisher
        s.created += 1
        if let service = target.serviceKey { s.byService[service, default: []].insert(target) }
      }
      guard let (id, signals) = publisher.subscribe() else { return nil }
      return (publisher, id, signals)
    }
  }

  /// Ends a subscription; drops the publisher when it was the last.
  func unsubscribe(_ target: DestinationTarget, id: Int) {
    state.withLock { s in
      guard let publisher = s.publishers[target] else { return }
      if publisher.unsubscribe(id) == 0 {
        s.publishers[target] = nil
        if let service = target.serviceKey {
          s.byService[service]?.remove(target)
          if s.byService[service]?.isEmpty == true { s.byService[service] = nil }
        }
      }
    }
  }

  /// Recomputes the publishers of one service (`namespace/name`).
  func refresh(service: String) {
    let publishers = state.withLock { s in (s.byService[service] ?? []).compactMap { s.publishers[$0] } }
    for publisher in publishers { publisher.refresh() }
  }

  /// Recomputes the publishers of every service in `namespace`.
  func refresh(namespace: String) {
    let publishers = state.withLock { s in s.publishers.filter { $0.key.namespace == namespace }.map(\.value) }
    for publisher in publishers { publisher.refresh() }
  }

  /// Recomputes every publisher.
  func refreshAll() {
    let publishers = state.withLock { Array($0.publishers.values) }
    for publisher in publishers { publisher.refresh() }
  }

  /// Ends every subscription and refuses new ones (graceful shutdown).
  func close() {
    let publishers = state.withLock { s in
      s.closed = true
      return Array(s.publishers.values)
    }
    for publisher in publishers { publisher.close() }
  }

  var publisherCount: Int { state.withLock { $0.publishers.count } }
  var publishersCreated: Int { state.withLock { $0.created } }
  var subscriberCount: Int {
    let publishers = state.withLock { Array($0.publishers.values) }
    return publishers.reduce(0) { $0 + $1.subscriberCount }
  }
}
