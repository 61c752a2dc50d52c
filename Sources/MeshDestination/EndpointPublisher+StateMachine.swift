package import MeshCore
public import MeshDiscovery

/// The publisher of one service port's endpoint set.
typealias EndpointPublisher = SnapshotPublisher<EndpointSet>

/// What one subscriber of an endpoint stream has been sent, and what to send next: a pure value type.
///
/// `next(_:)` turns the newest complete set into the messages that bring the subscriber from what it
/// was sent to that set:
/// - first message: `add(all)` when there are endpoints, else `no_endpoints{exists}`;
/// - then differences: `remove` for addresses gone, `add` for addresses new or changed (an add
///   replaces an address the subscriber knows);
/// - endpoints dropping to zero: `no_endpoints{exists: true}` (chosen over an explicit `remove` of
///   every address: one short message, and the receiver clears its set whatever it holds);
/// - the service deleted: `no_endpoints{exists: false}`;
/// - nothing changed (e.g. a coalesced wake-up): no message.
package struct EndpointStreamStateMachine: Hashable, Sendable {
  /// What the subscriber currently holds.
  package enum Sent: Hashable, Sendable {
    case nothing
    case noEndpoints(exists: Bool)
    case endpoints([Authority: Endpoint])
  }

  package private(set) var sent: Sent = .nothing

  package init() {}

  /// The messages that bring the subscriber to `target`; records them as sent.
  package mutating func next(_ target: EndpointSet) -> [EndpointUpdate] {
    if !target.exists || target.endpoints.isEmpty {
      let wanted = Sent.noEndpoints(exists: target.exists)
      guard sent != wanted else { return [] }
      sent = wanted
      return [.noEndpoints(exists: target.exists)]
    }
    let fresh = Dictionary(target.endpoints.map { ($0.address, $0) }, uniquingKeysWith: { $1 })
    guard case .endpoints(let old) = sent else {
      sent = .endpoints(fresh)
      return [.add(target.endpoints)]
    }
    sent = .endpoints(fresh)
    var updates: [EndpointUpdate] = []
    let removed = old.keys.filter { fresh[$0] == nil }.sorted(by: EndpointSet.precedes)
    if !removed.isEmpty { updates.append(.remove(removed)) }
    let added = target.endpoints.filter { old[$0.address] != $0 }
    if !added.isEmpty { updates.append(.add(added)) }
    return updates
  }
}

extension SnapshotPublisher where Value == EndpointSet {
  /// The per-subscriber diffing state machine of endpoint streams.
  typealias StateMachine = EndpointStreamStateMachine
}
