/// A snapshot of a balancer's counters and gauges, for the proxy to export as metrics.
public struct BalancerStats: Hashable, Sendable {
  /// Endpoints in the current set (excludes removed endpoints still draining).
  public var endpoints: Int
  /// Endpoints a pick may choose now: in the set and not ejected (includes probe-ready ones).
  public var availableEndpoints: Int
  /// Endpoints in the set that failure accrual has ejected (backing off or probing).
  public var ejectedEndpoints: Int
  /// Removed endpoints that still have requests in flight.
  public var drainingEndpoints: Int
  /// Requests picked and not yet completed, over all endpoints (draining ones included).
  public var pendingRequests: Int
  /// Successful picks since creation.
  public var picks: UInt64
  /// Picks that failed because no endpoint was available (each a 503 for the proxy).
  public var failedPicks: UInt64
  /// Times failure accrual ejected an endpoint (including re-ejection after a failed probe).
  public var failureAccrualEjections: UInt64
  /// Times a successful probe made an ejected endpoint available again.
  public var failureAccrualRestorations: UInt64
  /// Probe requests sent to endpoints whose back-off ended.
  public var probes: UInt64

  public init(
    endpoints: Int = 0,
    availableEndpoints: Int = 0,
    ejectedEndpoints: Int = 0,
    drainingEndpoints: Int = 0,
    pendingRequests: Int = 0,
    picks: UInt64 = 0,
    failedPicks: UInt64 = 0,
    failureAccrualEjections: UInt64 = 0,
    failureAccrualRestorations: UInt64 = 0,
    probes: UInt64 = 0
  ) {
    self.endpoints = endpoints
    self.availableEndpoints = availableEndpoints
    self.ejectedEndpoints = ejectedEndpoints
    self.drainingEndpoints = drainingEndpoints
    self.pendingRequests = pendingRequests
    self.picks = picks
    self.failedPicks = failedPicks
    self.failureAccrualEjections = failureAccrualEjections
    self.failureAccrualRestorations = failureAccrualRestorations
    self.probes = probes
  }
}

/// The state of one endpoint, for the admin endpoint and for tests.
public struct EndpointSnapshot<Endpoint: Hashable & Sendable>: Hashable, Sendable {
  /// Where the endpoint is in its life cycle.
  public enum Status: Hashable, Sendable {
    /// In the set and taking requests.
    case available
    /// Ejected by failure accrual until the back-off ends, at the given clock reading (ns).
    case backingOff(untilNanoseconds: UInt64)
    /// The back-off ended; the next request picking it is its probe.
    case probeReady
    /// Its probe request is in flight.
    case probing
    /// Removed from the set; finishing its in-flight requests.
    case draining
  }

  public var endpoint: Endpoint
  public var weight: UInt32
  public var status: Status
  /// Requests in flight to this endpoint.
  public var pending: Int
  /// The Peak-EWMA RTT estimate as last updated (not decayed to the snapshot time).
  public var rttEstimate: Duration
  /// Failures in a row counted by failure accrual.
  public var consecutiveFailures: Int
}
