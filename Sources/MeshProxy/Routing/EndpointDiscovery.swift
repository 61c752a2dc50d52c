public import MeshCore
import Synchronization

/// Where the proxy learns what an authority resolves to: complete snapshots, the current one first.
/// `ResolverDiscovery` (the destination service) is the real implementation; `InMemoryDiscovery` serves
/// tests and static setups.
public protocol EndpointDiscovery: Sendable {
  /// Calls `update` with every snapshot for `authority`, the current one first, until the task is
  /// cancelled. Keeps the last state across connection trouble (it does not report an empty set for it).
  func follow(_ authority: Authority, update: @escaping @Sendable (EndpointSet) -> Void) async
}

/// A discovery whose answers are set by hand; changes are pushed to every follower at once.
public final class InMemoryDiscovery: EndpointDiscovery {
  private struct State {
    var sets: [Authority: EndpointSet] = [:]
    var followers: [Authority: [Int: AsyncStream<EndpointSet>.Continuation]] = [:]
    var nextID = 0
  }
  private let state = Mutex(State())

  public init(_ sets: [Authority: EndpointSet] = [:]) {
    state.withLock { $0.sets = sets }
  }

  /// Sets what `authority` resolves to.
  public func set(_ set: EndpointSet, for authority: Authority) {
    let followers = state.withLock { state in
      state.sets[authority] = set
      return Array((state.followers[authority] ?? [:]).values)
    }
    for follower in followers { follower.yield(set) }
  }

  public func follow(_ authority: Authority, update: @escaping @Sendable (EndpointSet) -> Void) async {
    for await snapshot in endpoints(for: authority) { update(snapshot) }
  }

  /// Snapshots for `authority`, the current one first.
  public func endpoints(for authority: Authority) -> AsyncStream<EndpointSet> {
    let (stream, continuation) = AsyncStream.makeStream(of: EndpointSet.self, bufferingPolicy: .bufferingNewest(1))
    let (id, current) = state.withLock { state in
      defer { state.nextID += 1 }
      state.followers[authority, default: [:]][state.nextID] = continuation
      return (state.nextID, state.sets[authority] ?? .doesNotExist)
    }
    continuation.yield(current)
    continuation.onTermination = { [weak self] _ in
      _ = self?.state.withLock { $0.followers[authority]?.removeValue(forKey: id) }
    }
    return stream
  }
}
