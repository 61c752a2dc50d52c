package import MeshCore
package import MeshDiscovery
import NIOCore
import NIOHTTP1
import Synchronization

/// What the destination's profile says about one request: its route (for route metrics), its timeout,
/// whether and within which budget it may be retried, and how its response is classified.
///
/// A class, never changed once made: a request handler keeps its policy and hands it on several times a
/// request, and as a struct each copy retained its two strings, its array and its budget (about 1,000
/// instructions a request on each proxy of the pair, Benchmarks/load/instructions.sh). A profile without
/// routes gives every request the same one (``CompiledProfile``).
package final class RequestPolicy: Sendable {
  /// The matched route's name (`rt_route`); empty when no route matched.
  package let routeName: String
  /// The authority whose profile applied (`dst` of route metrics).
  package let authority: String
  /// From the request's headers to the response's headers, retries included; nil: none.
  package let timeout: Duration?
  /// Whether failed responses of this route may be sent again.
  package let isRetryable: Bool
  /// The route's response classes, first match wins; none matching: 5xx is a failure.
  package let responseClasses: [ResponseClass]
  /// The destination's retry budget; nil: no retries.
  package let budget: RetryBudgetTracker?

  package init(
    routeName: String = "", authority: String = "", timeout: Duration? = nil, isRetryable: Bool = false,
    responseClasses: [ResponseClass] = [], budget: RetryBudgetTracker? = nil
  ) {
    self.routeName = routeName
    self.authority = authority
    self.timeout = timeout
    self.isRetryable = isRetryable
    self.responseClasses = responseClasses
    self.budget = budget
  }

  /// No profile: no route, no timeout, no retries, 5xx are failures.
  package static let none = RequestPolicy()

  /// Whether a response with `status` is a failure on this route.
  package func isFailure(status: Int) -> Bool {
    for responseClass in responseClasses where responseClass.condition.matches(status: status) {
      return responseClass.isFailure
    }
    return status >= 500
  }

  /// Whether route metrics apply (a route matched).
  var hasRoute: Bool { !routeName.isEmpty }
}

extension ResponseMatch {
  func matches(status: Int) -> Bool {
    switch self {
    case .all(let matches): matches.allSatisfy { $0.matches(status: status) }
    case .any(let matches): matches.contains { $0.matches(status: status) }
    case .not(let inner): !inner.matches(status: status)
    case .status(let min, let max): status >= (min ?? 0) && status <= (max ?? Int.max)
    }
  }
}

/// A profile made ready for requests: route conditions compiled once per snapshot.
final class CompiledProfile: @unchecked Sendable {
  // @unchecked: immutable after init; `Regex` is not declared Sendable but is only read.
  let profile: Profile
  let budget: RetryBudgetTracker?
  private let routes: [(route: Route, matcher: CompiledMatch)]

  /// The policy of a request no route matches, when it is to ``authority``: made once.
  private let unrouted: RequestPolicy

  /// Compiles `profile` for `authority` (the destination's); routes whose regular expression does not compile
  /// are left out (the destination service validates them, so this only guards against a broken peer).
  init(_ profile: Profile, authority: String, keeping previous: CompiledProfile?) {
    self.profile = profile
    if let budget = profile.retryBudget {
      self.budget =
        previous?.budget.flatMap { $0.budget == budget ? $0 : nil } ?? RetryBudgetTracker(budget)
    } else {
      self.budget = nil
    }
    self.routes = profile.routes.compactMap { route in
      (try? CompiledMatch(route.condition)).map { (route, $0) }
    }
    self.unrouted = RequestPolicy(authority: authority, budget: budget)
  }

  /// The policy for a request with `method` and `path` to `authority`.
  func policy(method: String, path: String, authority: String) -> RequestPolicy {
    guard !routes.isEmpty else { return unrouted(authority) }
    let pathOnly = path.firstIndex(of: "?").map { String(path[..<$0]) } ?? path
    for (route, matcher) in routes where matcher.matches(method: method, path: pathOnly) {
      return RequestPolicy(
        routeName: route.name.isEmpty ? "\(method) \(pathOnly)" : route.name, authority: authority,
        timeout: route.timeout, isRetryable: route.isRetryable, responseClasses: route.responseClasses,
        budget: budget)
    }
    return unrouted(authority)
  }

  private func unrouted(_ authority: String) -> RequestPolicy {
    authority == unrouted.authority ? unrouted : RequestPolicy(authority: authority, budget: budget)
  }

  /// Picks a leaf of the traffic split by weight, or nil when there is no split. Leaves `isAvailable`
  /// rejects are passed over while another leaf with weight is available; with none available, all leaves
  /// with weight are candidates (the request then waits or fails on its leaf as usual).
  /// `random` (in 0..<1) is drawn only when there is a split: a draw from the system generator is a
  /// `getrandom` syscall, which every request paid while it was a default argument.
  func pickLeaf(
    random: Double? = nil, isAvailable: (Authority) -> Bool = { _ in true }
  ) -> Authority? {
    // Most destinations have no split: nothing is built for them, and nothing drawn.
    guard profile.destinationOverrides.contains(where: { $0.weight > 0 }) else { return nil }
    let random = random ?? Double.random(in: 0..<1)
    let weighted = profile.destinationOverrides.filter { $0.weight > 0 }
    let available = weighted.filter { isAvailable($0.authority) }
    let leaves = available.isEmpty ? weighted : available
    let total = leaves.reduce(0.0) { $0 + Double($1.weight) }
    var point = random * total
    for leaf in leaves {
      point -= Double(leaf.weight)
      if point < 0 { return leaf.authority }
    }
    return leaves[leaves.count - 1].authority
  }
}

/// A request condition with its regular expressions compiled.
indirect enum CompiledMatch {
  case all([CompiledMatch])
  case any([CompiledMatch])
  case not(CompiledMatch)
  case path(Regex<AnyRegexOutput>)
  case method(String)

  init(_ match: RequestMatch) throws {
    switch match {
    case .all(let matches): self = .all(try matches.map(CompiledMatch.init))
    case .any(let matches): self = .any(try matches.map(CompiledMatch.init))
    case .not(let inner): self = .not(try CompiledMatch(inner))
    case .pathRegex(let pattern): self = .path(try Regex(pattern))
    case .method(let method): self = .method(method.uppercased())
    }
  }

  func matches(method: String, path: String) -> Bool {
    switch self {
    case .all(let matches): matches.allSatisfy { $0.matches(method: method, path: path) }
    case .any(let matches): matches.contains { $0.matches(method: method, path: path) }
    case .not(let inner): !inner.matches(method: method, path: path)
    case .path(let regex): (try? regex.wholeMatch(in: path)) != nil
    case .method(let expected): method.uppercased() == expected
    }
  }
}

/// Linkerd's retry budget: retries may add `retryRatio` of the requests seen over `ttl`, plus
/// `minRetriesPerSecond` x `ttl` in any case. Counts live in one-second buckets over the window.
package final class RetryBudgetTracker: Sendable {
  let budget: RetryBudget
  private let window: Int
  private let clock: @Sendable () -> Int64

  private struct Bucket {
    var second: Int64 = .min
    var requests = 0
    var retries = 0
  }
  private let buckets: Mutex<[Bucket]>

  package init(_ budget: RetryBudget, clock: @escaping @Sendable () -> Int64 = RetryBudgetTracker.monotonicSeconds) {
    self.budget = budget
    let seconds = Int((budget.ttl.components.seconds)) + (budget.ttl.components.attoseconds > 0 ? 1 : 0)
    self.window = max(1, seconds)
    self.clock = clock
    self.buckets = Mutex(Array(repeating: Bucket(), count: max(1, seconds)))
  }

  /// Whole seconds on the monotonic clock (since boot). Read for every request with a budget: NIO's clock in
  /// nanoseconds divided once, where `ContinuousClock`'s `Duration` arithmetic cost about 400 instructions.
  package static func monotonicSeconds() -> Int64 { Int64(NIODeadline.now().uptimeNanoseconds / 1_000_000_000) }

  /// Records a request (its first attempt).
  package func deposit() {
    let now = clock()
    buckets.withLock { buckets in Self.bucket(&buckets, now: now, window: window) { $0.requests += 1 } }
  }

  /// Takes one retry from the budget if it has one left.
  package func withdraw() -> Bool {
    let now = clock()
    return buckets.withLock { buckets in
      var requests = 0
      var retries = 0
      for bucket in buckets where bucket.second > now - Int64(window) {
        requests += bucket.requests
        retries += bucket.retries
      }
      let allowed = Double(budget.minRetriesPerSecond * window) + budget.retryRatio * Double(requests)
      guard Double(retries) < allowed.rounded(.down) else { return false }
      Self.bucket(&buckets, now: now, window: window) { $0.retries += 1 }
      return true
    }
  }

  private static func bucket(_ buckets: inout [Bucket], now: Int64, window: Int, _ change: (inout Bucket) -> Void) {
    let index = Int(((now % Int64(window)) + Int64(window)) % Int64(window))
    if buckets[index].second != now { buckets[index] = Bucket(second: now) }
    change(&buckets[index])
  }
}
