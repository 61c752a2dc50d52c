public import MeshCore

/// One message of an endpoint stream: a difference to the set the receiver holds.
public enum EndpointUpdate: Hashable, Sendable, CustomStringConvertible {
  /// Addresses to add, or to replace when already known (their metadata changed).
  case add([Endpoint])
  /// Addresses to remove.
  case remove([Authority])
  /// The set is now empty; `exists` says whether the destination exists.
  case noEndpoints(exists: Bool)

  public var description: String {
    switch self {
    case .add(let endpoints): "add[\(endpoints.map { "\($0.address)" }.joined(separator: ","))]"
    case .remove(let addresses): "remove[\(addresses.map(\.description).joined(separator: ","))]"
    case .noEndpoints(let exists): "no_endpoints(exists: \(exists))"
    }
  }
}

/// The receiving side of an endpoint stream: applies updates to a set and yields complete snapshots.
///
/// A new stream (after a reconnect) starts from a fresh builder: the first message of a stream always
/// carries the whole set, so the snapshot after it is complete and no empty set is ever shown in between.
public struct EndpointSetBuilder: Hashable, Sendable {
  public private(set) var exists = false
  private var endpoints: [Authority: Endpoint] = [:]

  public init() {}

  public mutating func apply(_ update: EndpointUpdate) {
    switch update {
    case .add(let added):
      exists = true
      for endpoint in added { endpoints[endpoint.address] = endpoint }
    case .remove(let removed):
      for address in removed { endpoints[address] = nil }
    case .noEndpoints(let exists):
      self.exists = exists
      endpoints.removeAll()
    }
  }

  /// The current complete set.
  public var snapshot: EndpointSet { EndpointSet(exists: exists, endpoints: Array(endpoints.values)) }
}
