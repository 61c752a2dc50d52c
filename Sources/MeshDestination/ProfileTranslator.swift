public import MeshCore
public import MeshKube
public import MeshDiscovery

/// Something wrong in a ServiceProfile or TrafficSplit that discovery worked around.
public struct ProfileProblem: Hashable, Sendable, CustomStringConvertible {
  /// `namespace/name` of the resource.
  public var resource: String
  /// The route concerned, if any.
  public var route: String?
  public var message: String
  public init(resource: String, route: String?, message: String) {
    self.resource = resource
    self.route = route
    self.message = message
  }
  public var description: String {
    if let route { return "\(resource) route '\(route)': \(message)" }
    return "\(resource): \(message)"
  }
}

/// Turns a ServiceProfile and a TrafficSplit into the `Profile` of one service port. Pure.
///
/// - Routes keep their order. A route whose path regex does not compile is dropped (and reported);
///   a route timeout that is not a Go duration is ignored (and reported); the other routes are served.
/// - Retry budget: the profile's, else `RetryBudget.default` (0.2, 10/s, 10 s).
/// - TrafficSplit: each backend becomes `<backend>.<ns>.svc.<cluster-domain>:<port>`; weights are
///   normalised to ten-thousandths (the rounding remainder goes to the largest weight); backends with
///   weight 0 are kept with weight 0; a split whose weights are all 0 is reported and ignored.
public struct ProfileTranslator: Sendable {
  public var clusterDomain: String

  public init(clusterDomain: String) { self.clusterDomain = clusterDomain }

  /// The name a service's ServiceProfile has: `<svc>.<ns>.svc.<cluster-domain>`.
  public func profileName(service: String, namespace: String) -> String {
    "\(service).\(namespace).svc.\(clusterDomain)"
  }

  public func profile(
    namespace: String, service: String, port: Int, serviceProfile: ServiceProfile?, split: TrafficSplit?
  ) -> (Profile, [ProfileProblem]) {
    var problems: [ProfileProblem] = []
    var profile = Profile(fullyQualifiedName: profileName(service: service, namespace: namespace))
    if let serviceProfile {
      let resource = serviceProfile.metadata.key
      for route in serviceProfile.spec.routes ?? [] {
        switch Self.requestMatch(route.condition) {
        case .failure(let error):
          problems.append(ProfileProblem(resource: resource, route: route.name, message: error.message))
          continue
        case .success(let condition):
          var timeout: Duration?
          if let text = route.timeout {
            do { timeout = try GoDuration.parse(text) } catch {
              problems.append(ProfileProblem(resource: resource, route: route.name, message: "timeout ignored: \(error.message)"))
            }
          }
          profile.routes.append(
            Route(
              name: route.name, condition: condition,
              responseClasses: (route.responseClasses ?? []).map {
                ResponseClass(
                  condition: .status(min: $0.condition.status?.min, max: $0.condition.status?.max),
                  isFailure: $0.isFailure ?? false)
              },
              isRetryable: route.isRetryable ?? false, timeout: timeout))
        }
      }
      if let budget = serviceProfile.spec.retryBudget {
        do {
          let ttl = try GoDuration.parse(budget.ttl)
          profile.retryBudget = RetryBudget(
            retryRatio: budget.retryRatio, minRetriesPerSecond: budget.minRetriesPerSecond, ttl: ttl)
        } catch {
          problems.append(ProfileProblem(resource: resource, route: nil, message: "retry budget ignored: \(error.message)"))
        }
      }
    }
    if let split {
      switch destinationOverrides(split, namespace: namespace, port: port) {
      case .success(let overrides): profile.destinationOverrides = overrides
      case .failure(let error):
        problems.append(ProfileProblem(resource: split.metadata.key, route: nil, message: error.message))
      }
    }
    return (profile, problems)
  }

  func destinationOverrides(_ split: TrafficSplit, namespace: String, port: Int) -> Result<[WeightedDestination], DiscoveryError> {
    let backends = split.spec.backends
    let total = backends.reduce(0) { $0 + max(0, $1.weight) }
    guard total > 0 else { return .failure(.invalidProfile("traffic split has no backend with a positive weight")) }
    var result: [WeightedDestination] = []
    for backend in backends {
      let name = backend.service.split(separator: ".").first.map(String.init) ?? backend.service
      let host = "\(name).\(namespace).svc.\(clusterDomain)"
      guard let authority = try? Authority(host: host, port: port) else {
        return .failure(.invalidProfile("traffic split backend '\(backend.service)' is not a valid service name"))
      }
      let weight = UInt32(max(0, backend.weight) * 10_000 / total)
      result.append(WeightedDestination(authority: authority, weight: weight))
    }
    let remainder = 10_000 - result.reduce(UInt32(0)) { $0 + $1.weight }
    if remainder > 0, let largest = result.indices.max(by: { result[$0].weight < result[$1].weight }) {
      result[largest].weight += remainder
    }
    return .success(result)
  }

  /// The route condition, or an error naming a path regex that does not compile.
  static func requestMatch(_ match: ServiceProfile.RequestMatch) -> Result<RequestMatch, DiscoveryError> {
    var parts: [RequestMatch] = []
    if let method = match.method, !method.isEmpty { parts.append(.method(method.uppercased())) }
    if let regex = match.pathRegex {
      do {
        _ = try Regex(regex)
      } catch {
        return .failure(.invalidProfile("invalid path regex '\(regex)': \(error)"))
      }
      parts.append(.pathRegex(regex))
    }
    if let all = match.all {
      var inner: [RequestMatch] = []
      for m in all {
        switch requestMatch(m) {
        case .success(let value): inner.append(value)
        case .failure(let error): return .failure(error)
        }
      }
      parts.append(.all(inner))
    }
    if let any = match.any {
      var inner: [RequestMatch] = []
      for m in any {
        switch requestMatch(m) {
        case .success(let value): inner.append(value)
        case .failure(let error): return .failure(error)
        }
      }
      parts.append(.any(inner))
    }
    if let not = match.not {
      switch requestMatch(not) {
      case .success(let value): parts.append(.not(value))
      case .failure(let error): return .failure(error)
      }
    }
    if parts.isEmpty { return .failure(.invalidProfile("route condition matches nothing: set method, pathRegex, all, any or not")) }
    return .success(parts.count == 1 ? parts[0] : .all(parts))
  }
}
