public import MeshCore
public import MeshDiscovery
import Synchronization

/// Where the proxy learns what an authority resolves to: complete snapshots, the current one first.
/// `ResolverDiscovery` (the destination service) is the real implementation; `InMemoryDiscovery` serves
/// tests and static setups.
public protocol EndpointDiscovery: Sendable {
  /// Calls `update` with every snapshot for `authority`, the current one first, until the task is
  /// cancelled. Keeps the last state across connection trouble (it does not report an empty set for it).
  func follow(_ authority: Authority, update: @escaping @Sendable (EndpointSet) -> Void) async

  /// Calls `update` with every profile (routes, retry budget, traffic split) for `authority`, the current
  /// one first, until the task is cancelled. A discovery without profiles returns at once.
  func followProfile(_ authority: Authority, update: @escaping @Sendable (Profile) -> Void) async
}

extension EndpointDiscovery {
  public func followProfile(_ authority: Authority, update: @escaping @Sendable (Profile) -> Void) async {}
}

/// A discovery whose answers are set by hand; changes are pushed to every follower at once.
public final class InMemoryDiscovery: EndpointDiscovery {
  private struct State {
    var sets: [Authority: EndpointSet] = [:]
    var followers: [Authority: [Int: AsyncStream<EndpointSet>.Continuation]] = [:]
    var profiles: [Authority: Profile] = [:]
    var profileFollowers: [Authority: [Int: AsyncStream<Profile>.Continuation]] = [:]
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

  /// Sets the profile of `authority` (routes, budget, split); followers get it at once.
  public func setProfile(_ profile: Profile, for authority: Authority) {
    let followers = state.withLock { state in
      state.profiles[authority] = profile
      return Array((state.profileFollowers[authority] ?? [:]).values)
    }
    for follower in followers { follower.yield(profile) }
  }

  public func followProfile(_ authority: Authority, update: @escaping @Sendable (Profile) -> Void) async {
    let (stream, continuation) = AsyncStream.makeStream(of: Profile.self, bufferingPolicy: .bufferingNewest(1))
    let (id, current) = state.withLock { state in
      defer { state.nextID += 1 }
      state.profileFollowers[authority, default: [:]][state.nextID] = continuation
      return (state.nextID, state.profiles[authority])
    }
    // Like the destination service, answer every name: without a profile set, an empty one.
    continuation.yield(current ?? Profile(fullyQualifiedName: authority.host))
    continuation.onTermination = { [weak self] _ in
      self?.state.withLock { state in
        state.profileFollowers[authority]?.removeValue(forKey: id)
        if state.profileFollowers[authority]?.isEmpty == true { state.profileFollowers[authority] = nil }
      }
    }
    for await profile in stream { update(profile) }
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
      self?.state.withLock { state in
        state.followers[authority]?.removeValue(forKey: id)
        if state.followers[authority]?.isEmpty == true { state.followers[authority] = nil }
      }
    }
    return stream
  }
}
