import Synchronization
public import MeshDiscovery

/// The publishers of one kind (endpoints or profiles), one per destination, created by the first
/// subscriber and dropped with the last. Many subscribers to one destination share one publisher.
///
/// A publisher is per target and per *zone* of the subscriber (nil when unknown): with topology hints
/// the endpoint set depends on the zone asking, so subscribers of one zone share one publisher.
final class PublisherRegistry<Value: Sendable & Equatable>: Sendable {
  struct Key: Hashable, Sendable {
    var target: DestinationTarget
    var zone: String?
  }
  private struct State {
    var publishers: [Key: SnapshotPublisher<Value>] = [:]
    /// `namespace/name` -> keys of that service (all ports and zones).
    var byService: [String: Set<Key>] = [:]
    /// Keys whose target is an IP address.
    var addressKeys: Set<Key> = []
    var closed = false
    var created = 0

    var addressPublishers: [SnapshotPublisher<Value>] { addressKeys.compactMap { publishers[$0] } }
  }

  private let state = Mutex(State())
  private let make: @Sendable (DestinationTarget, String?) -> @Sendable () -> Value

  /// `make` returns, for a target and a zone, the closure that computes its current value from the stores.
  init(make: @escaping @Sendable (DestinationTarget, String?) -> @Sendable () -> Value) {
    self.make = make
  }

  /// Subscribes to `target`, creating its publisher if needed. Nil once closed.
  func subscribe(
    _ target: DestinationTarget, zone: String? = nil
  ) -> (publisher: SnapshotPublisher<Value>, id: Int, signals: AsyncStream<Void>)? {
    let key = Key(target: target, zone: zone)
    return state.withLock { s in
      guard !s.closed else { return nil }
      let publisher: SnapshotPublisher<Value>
      if let existing = s.publishers[key] {
        publisher = existing
      } else {
        publisher = SnapshotPublisher(key: target, compute: make(target, zone))
        s.publishers[key] = publisher
        s.created += 1
        if let service = target.serviceKey { s.byService[service, default: []].insert(key) }
        if case .address = target { s.addressKeys.insert(key) }
      }
      guard let (id, signals) = publisher.subscribe() else { return nil }
      return (publisher, id, signals)
    }
  }

  /// Ends a subscription; drops the publisher when it was the last.
  func unsubscribe(_ target: DestinationTarget, zone: String? = nil, id: Int) {
    let key = Key(target: target, zone: zone)
    state.withLock { s in
      guard let publisher = s.publishers[key] else { return }
      if publisher.unsubscribe(id) == 0 {
        s.publishers[key] = nil
        s.addressKeys.remove(key)
        if let service = target.serviceKey {
          s.byService[service]?.remove(key)
          if s.byService[service]?.isEmpty == true { s.byService[service] = nil }
        }
      }
    }
  }

  /// Recomputes the publishers of one service (`namespace/name`), and those of IP addresses (any service or
  /// pod may be the one an address names; an unchanged value sends nothing).
  func refresh(service: String) {
    let publishers = state.withLock { s in
      (s.byService[service] ?? []).compactMap { s.publishers[$0] } + s.addressPublishers
    }
    for publisher in publishers { publisher.refresh() }
  }

  /// Recomputes the publishers of every service in `namespace`, and those of IP addresses.
  func refresh(namespace: String) {
    let publishers = state.withLock { s in
      s.publishers.filter { $0.key.target.namespace == namespace }.map(\.value) + s.addressPublishers
    }
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
