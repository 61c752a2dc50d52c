package import MeshBalancer
package import MeshCore
import MeshDiscovery
import NIOConcurrencyHelpers
package import NIOCore
import Synchronization

/// An endpoint as a destination's balancer holds it: with what every request to it needs from it, worked
/// out once per discovery update rather than per request (its metric labels are three dictionary lookups,
/// and a request's ticket copied the whole endpoint). Equal, and hashed, as its endpoint.
package final class BalancedEndpoint: Hashable, Sendable {
  package let endpoint: Endpoint
  /// The endpoint's `service`, `namespace` and `target_cluster` metric labels ("" when absent).
  let dstService: String
  let dstNamespace: String
  let targetCluster: String
  /// The label set of the last request to this endpoint, for the next from the same router, authority and
  /// caller.
  private let lastLabels = ProxyMetrics.LastLabelSet()

  init(_ endpoint: Endpoint) {
    self.endpoint = endpoint
    dstService = endpoint.metricLabels["service"] ?? ""
    dstNamespace = endpoint.metricLabels["namespace"] ?? ""
    targetCluster = endpoint.metricLabels["target_cluster"] ?? ""
  }

  /// The metric labels of a request to this endpoint: `direction` (the router's), `authority` (the
  /// destination asked for) and `clientID` (the caller's identity, or "") with the endpoint's own.
  func labelSet(direction: String, authority: String, clientID: String) -> ProxyMetrics.LabelSet {
    lastLabels.labelSet {
      $0.direction == direction && $0.authority == authority && $0.clientID == clientID
    } make: {
      var labels = ProxyMetrics.RequestLabels(direction: direction, authority: authority, tls: endpoint.tlsIdentity != nil)
      labels.clientID = clientID
      labels.serverID = endpoint.tlsIdentity?.description ?? ""
      labels.dstService = dstService
      labels.dstNamespace = dstNamespace
      labels.targetCluster = targetCluster
      return labels
    }
  }

  package static func == (lhs: BalancedEndpoint, rhs: BalancedEndpoint) -> Bool {
    lhs === rhs || lhs.endpoint == rhs.endpoint
  }
  package func hash(into hasher: inout Hasher) { hasher.combine(endpoint) }
}

/// A balancer ticket in a box, so it can travel in futures and handlers; completing it twice is harmless.
package final class TicketBox: Sendable {
  private let box: Mutex<BalancerTicket<BalancedEndpoint>?>
  /// The endpoint picked, with what a request needs from it.
  let balanced: BalancedEndpoint
  package var endpoint: Endpoint { balanced.endpoint }

  init(_ ticket: consuming BalancerTicket<BalancedEndpoint>) {
    self.balanced = ticket.endpoint
    self.box = Mutex(ticket)
  }

  /// Ends the request's claim on the endpoint (at the first response byte, or on failure).
  package func complete(_ outcome: RequestOutcome) {
    let ticket = box.withLock { $0.take() }
    ticket?.complete(outcome)
  }
}

/// What a request is sent to.
package enum Target: Sendable {
  /// A balanced endpoint of a known destination.
  case endpoint(TicketBox)
  /// A name the destination service does not know: forwarded to the authority as given.
  case passthrough(Authority)
}

/// One authority as the proxy sees it: the latest endpoint set from discovery feeding a P2C balancer, and
/// the requests waiting for endpoints to appear (up to the failfast timeout).
final class Destination: Sendable {
  let authority: Authority
  let balancer: P2CBalancer<BalancedEndpoint>
  /// A federated service's linked clusters' gateways (endpoints flagged `isFallback`): picked from only while
  /// `balancer` has no endpoint that can take a request.
  let fallback: P2CBalancer<BalancedEndpoint>

  private struct State {
    var resolved = false
    var exists = false
    var waiters: [EventLoopPromise<Void>] = []
  }
  private let state = Mutex(State())

  init(authority: Authority) {
    self.authority = authority
    self.balancer = P2CBalancer<BalancedEndpoint>()
    self.fallback = P2CBalancer<BalancedEndpoint>()
  }

  private struct ProfileState {
    /// Whether discovery has said what the profile is (or that there is none).
    var known = false
    var profile: CompiledProfile?
    var waiters: [EventLoopPromise<Void>] = []
  }
  private let profileState = Mutex(ProfileState())

  /// The destination's latest profile (routes, retry budget, traffic split), if it has one.
  var profile: CompiledProfile? { profileState.withLock { $0.profile } }

  /// The profile once discovery has answered (`.some(nil)`: there is none), nil while it has not.
  var knownProfile: CompiledProfile?? {
    profileState.withLock { state in state.known ? .some(state.profile) : .none }
  }

  /// When a request last named this destination (seconds of uptime).
  private let lastUsedSeconds = Atomic<Int64>(Destination.uptimeSeconds)
  var lastUsed: Int64 { lastUsedSeconds.load(ordering: .relaxed) }

  static var uptimeSeconds: Int64 { Int64(NIODeadline.now().uptimeNanoseconds / 1_000_000_000) }

  /// Marks the destination used now.
  func touch(_ now: Int64) {
    if lastUsedSeconds.load(ordering: .relaxed) != now { lastUsedSeconds.store(now, ordering: .relaxed) }
  }

  private struct StopState {
    var stopped = false
    var waiter: CheckedContinuation<Void, Never>?
  }
  private let stopState = Mutex(StopState())

  /// Set by ``stop()``: a request's ``DestinationMemo`` holding this destination looks it up again.
  private let stoppedFlag = Atomic<Bool>(false)
  var isStopped: Bool { stoppedFlag.load(ordering: .relaxed) }

  /// Ends ``follow(_:)``: the router forgot this destination (idle, or over the limit of destinations).
  func stop() {
    stoppedFlag.store(true, ordering: .relaxed)
    let waiter = stopState.withLock { state -> CheckedContinuation<Void, Never>? in
      state.stopped = true
      defer { state.waiter = nil }
      return state.waiter
    }
    waiter?.resume()
  }

  /// Returns once ``stop()`` was called or the task is cancelled.
  private func stopped() async {
    await withTaskCancellationHandler {
      await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let resumeNow = stopState.withLock { state -> Bool in
          if state.stopped || Task.isCancelled { return true }
          state.waiter = continuation
          return false
        }
        if resumeNow { continuation.resume() }
      }
    } onCancel: {
      stop()
    }
  }

  /// Applies every endpoint snapshot and profile from discovery until the task is cancelled or the
  /// destination is stopped.
  func follow(_ discovery: any EndpointDiscovery) async {
    await withTaskGroup(of: Bool.self) { group in
      group.addTask {
        await discovery.follow(self.authority) { [weak self] snapshot in self?.apply(snapshot) }
        return false
      }
      group.addTask {
        await discovery.followProfile(self.authority) { [weak self] profile in self?.apply(profile) }
        // Discovery has no (more) profiles for this name: requests go on without one.
        self.profileSettled()
        return false
      }
      group.addTask {
        await self.stopped()
        return true
      }
      for await stop in group where stop { group.cancelAll() }
    }
  }

  func apply(_ profile: Profile) {
    let waiters = profileState.withLock { state in
      state.profile = CompiledProfile(profile, authority: authority.description, keeping: state.profile)
      state.known = true
      defer { state.waiters = [] }
      return state.waiters
    }
    for waiter in waiters { waiter.succeed() }
  }

  private func profileSettled() {
    let waiters = profileState.withLock { state in
      state.known = true
      defer { state.waiters = [] }
      return state.waiters
    }
    for waiter in waiters { waiter.succeed() }
  }

  /// The profile once discovery has answered for it (a request's route, timeout and split need it), or
  /// whatever is known at `deadline`.
  func profile(on eventLoop: any EventLoop, deadline: NIODeadline) -> EventLoopFuture<CompiledProfile?> {
    if profileState.withLock({ $0.known }) { return eventLoop.makeSucceededFuture(profile) }
    let promise = eventLoop.makePromise(of: Void.self)
    let known = profileState.withLock { state -> Bool in
      if state.known { return true }
      state.waiters.append(promise)
      return false
    }
    if known {
      promise.succeed()
      return eventLoop.makeSucceededFuture(profile)
    }
    let timer = eventLoop.scheduleTask(deadline: deadline) {
      let mine = self.profileState.withLock { state -> Bool in
        guard let index = state.waiters.firstIndex(where: { $0.futureResult === promise.futureResult }) else {
          return false
        }
        state.waiters.remove(at: index)
        return true
      }
      if mine { promise.succeed() }
    }
    return promise.futureResult.map {
      timer.cancel()
      return self.profile
    }
  }

  func apply(_ snapshot: EndpointSet) {
    var weights: [BalancedEndpoint: UInt32] = [:]
    var fallbackWeights: [BalancedEndpoint: UInt32] = [:]
    for endpoint in snapshot.endpoints {
      if endpoint.isFallback {
        fallbackWeights[BalancedEndpoint(endpoint)] = max(endpoint.weight, 1)
      } else {
        weights[BalancedEndpoint(endpoint)] = max(endpoint.weight, 1)
      }
    }
    balancer.replaceEndpoints(with: weights)
    fallback.replaceEndpoints(with: fallbackWeights)
    let waiters = state.withLock { state in
      state.resolved = true
      state.exists = snapshot.exists
      defer { state.waiters = [] }
      return state.waiters
    }
    for waiter in waiters { waiter.succeed() }
  }

  /// Whether discovery knows this name (it resolved, and to a service).
  var isKnown: Bool { state.withLock { $0.resolved && $0.exists } }

  /// Whether a request sent here now could get an endpoint: not yet resolved (unknown: give it a chance), an
  /// unknown name (forwarded as is), or an endpoint that failure accrual has not ejected.
  var canServe: Bool {
    let (resolved, exists) = state.withLock { ($0.resolved, $0.exists) }
    guard resolved, exists else { return true }
    return balancer.availableEndpointCount > 0 || fallback.availableEndpointCount > 0
  }

  /// A balanced endpoint: the primary endpoints' first; a fallback (a linked cluster's gateway) only when
  /// none of them can take the request.
  private func pick() -> TicketBox? {
    // (One `try?` binding of a ticket per function: see `P2CBalancer.pick()`.)
    do { return TicketBox(try balancer.pick()) } catch {}
    do { return TicketBox(try fallback.pick()) } catch { return nil }
  }

  /// Picks a target for one request, waiting for endpoints until `deadline`.
  /// The target when one is at hand without waiting: resolved, and either unknown to discovery or with an
  /// endpoint available now (its ticket taken); else nil.
  func readyTarget() -> Target? {
    let (resolved, exists) = state.withLock { ($0.resolved, $0.exists) }
    guard resolved else { return nil }
    guard exists else { return .passthrough(authority) }
    return pick().map { .endpoint($0) }
  }

  func target(on eventLoop: any EventLoop, deadline: NIODeadline) -> EventLoopFuture<Target> {
    if let ready = readyTarget() { return eventLoop.makeSucceededFuture(ready) }
    if NIODeadline.now() >= deadline {
      let resolved = state.withLock { $0.resolved }
      return eventLoop.makeFailedFuture(
        ProxyError(
          .noEndpoints, resolved ? "\(authority) has no available endpoints" : "\(authority) was not resolved in time"))
    }
    // Wait for the next snapshot or the deadline, then try again.
    let promise = eventLoop.makePromise(of: Void.self)
    state.withLock { $0.waiters.append(promise) }
    let timer = eventLoop.scheduleTask(deadline: deadline) {
      // Only if `apply` has not taken (and completed) it already.
      let mine = self.state.withLock { state -> Bool in
        guard let index = state.waiters.firstIndex(where: { $0.futureResult === promise.futureResult }) else {
          return false
        }
        state.waiters.remove(at: index)
        return true
      }
      if mine { promise.succeed() }
    }
    return promise.futureResult.flatMap {
      timer.cancel()
      return self.target(on: eventLoop, deadline: deadline)
    }
  }
}
