public import MeshCore

/// How a proxy treats requests to one destination: its routes (for per-route metrics, retries and
/// timeouts), its retry budget, and a traffic split. Every snapshot is complete.
public struct Profile: Hashable, Sendable {
  /// The service's FQDN (`web.emojivoto.svc.cluster.local`); empty for names discovery does not know.
  public var fullyQualifiedName: String
  /// Routes in order; the first whose condition matches applies.
  public var routes: [Route]
  /// Budget that bounds retries; nil means no retries.
  public var retryBudget: RetryBudget?
  /// A traffic split: the backends requests go to instead, weights summing to 10000. Empty: no split.
  public var destinationOverrides: [WeightedDestination]
  /// Whether the port is opaque (no protocol detection).
  public var opaqueProtocol: Bool

  public init(
    fullyQualifiedName: String = "", routes: [Route] = [], retryBudget: RetryBudget? = .default,
    destinationOverrides: [WeightedDestination] = [], opaqueProtocol: Bool = false
  ) {
    self.fullyQualifiedName = fullyQualifiedName
    self.routes = routes
    self.retryBudget = retryBudget
    self.destinationOverrides = destinationOverrides
    self.opaqueProtocol = opaqueProtocol
  }
}

/// A route of a profile.
public struct Route: Hashable, Sendable {
  /// The route's name (its `route` metrics label).
  public var name: String
  public var condition: RequestMatch
  /// Classes in order; the first that matches classifies a response. Empty: 5xx is a failure.
  public var responseClasses: [ResponseClass]
  public var isRetryable: Bool
  /// nil: no timeout.
  public var timeout: Duration?
  /// Labels for the route's metrics (`route` = name, at least).
  public var metricsLabels: [String: String]

  public init(
    name: String, condition: RequestMatch, responseClasses: [ResponseClass] = [], isRetryable: Bool = false,
    timeout: Duration? = nil, metricsLabels: [String: String]? = nil
  ) {
    self.name = name
    self.condition = condition
    self.responseClasses = responseClasses
    self.isRetryable = isRetryable
    self.timeout = timeout
    self.metricsLabels = metricsLabels ?? ["route": name]
  }
}

/// Which requests a route matches.
public indirect enum RequestMatch: Hashable, Sendable {
  case all([RequestMatch])
  case any([RequestMatch])
  case not(RequestMatch)
  /// A regular expression the whole path must match.
  case pathRegex(String)
  /// An HTTP method, upper case.
  case method(String)
}

/// How a response is classified.
public struct ResponseClass: Hashable, Sendable {
  public var condition: ResponseMatch
  public var isFailure: Bool
  public init(condition: ResponseMatch, isFailure: Bool) {
    self.condition = condition
    self.isFailure = isFailure
  }
}

/// Which responses a response class matches.
public indirect enum ResponseMatch: Hashable, Sendable {
  case all([ResponseMatch])
  case any([ResponseMatch])
  case not(ResponseMatch)
  /// Status codes in `min...max` (nil bound: unbounded).
  case status(min: Int?, max: Int?)
}

/// How many retries a proxy may add: `retryRatio` of the requests over `ttl`, and at least
/// `minRetriesPerSecond`.
public struct RetryBudget: Hashable, Sendable {
  public var retryRatio: Double
  public var minRetriesPerSecond: Int
  public var ttl: Duration

  public init(retryRatio: Double, minRetriesPerSecond: Int, ttl: Duration) {
    self.retryRatio = retryRatio
    self.minRetriesPerSecond = minRetriesPerSecond
    self.ttl = ttl
  }

  /// 20 % of requests, at least 10 retries per second, over 10 s (Linkerd's default).
  public static let `default` = RetryBudget(retryRatio: 0.2, minRetriesPerSecond: 10, ttl: .seconds(10))
}

/// One backend of a traffic split.
public struct WeightedDestination: Hashable, Sendable, CustomStringConvertible {
  /// `host:port` of the backend.
  public var authority: Authority
  /// Weight in ten-thousandths of the traffic.
  public var weight: UInt32
  public init(authority: Authority, weight: UInt32) {
    self.authority = authority
    self.weight = weight
  }
  public var description: String { "\(authority)=\(weight)" }
}
