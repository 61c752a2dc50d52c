import Synchronization

/// A power-of-two-choices load balancer over Peak-EWMA load, as Linkerd's proxy balances.
///
/// Each pick draws two distinct available endpoints at random and sends the request to the one
/// with the lower `cost / weight`, where cost is the endpoint's Peak-EWMA RTT estimate times its
/// pending requests plus one (see ``BalancerConfiguration`` for the defaults). Weights come from
/// discovery: they divide the cost, so an endpoint of weight 2 is preferred until it carries
/// about twice the load of an endpoint of weight 1; only their ratios matter (1 or 10 000 per
/// endpoint are the same). Weight 0 makes an endpoint a last resort.
///
/// A pick returns a ``BalancerTicket``, which must be completed with the request's
/// ``RequestOutcome``; a ticket dropped without completing counts as cancelled, so a pending
/// count can never leak. ``withRequest(isolation:_:)`` does all of it for async code.
///
/// Endpoints that fail ``BalancerConfiguration/FailureAccrual/consecutiveFailures`` times in a
/// row are ejected for an exponential back-off, then get one probe request.
///
/// Thread-safe; one `Mutex` guards the state, and a pick allocates nothing.
public final class P2CBalancer<Endpoint: Hashable & Sendable>: Sendable {
  /// The configuration the balancer was created with.
  public let configuration: BalancerConfiguration

  private let clock: any BalancerClock
  let state: Mutex<StateMachine>

  /// Creates an empty balancer.
  ///
  /// - Parameters:
  ///   - configuration: RTT defaults, decay, failure accrual and the random seed.
  ///   - clock: the time source; ``ManualBalancerClock`` in tests.
  public init(
    configuration: BalancerConfiguration = .defaults,
    clock: any BalancerClock = SystemBalancerClock()
  ) {
    self.configuration = configuration
    self.clock = clock
    let random = configuration.seed.map { BalancerRandom(seed: $0) } ?? BalancerRandom()
    self.state = Mutex(StateMachine(settings: .init(configuration), random: random))
  }

  /// Creates a balancer over `endpoints`, each of weight 1.
  public convenience init(
    endpoints: some Sequence<Endpoint>,
    configuration: BalancerConfiguration = .defaults,
    clock: any BalancerClock = SystemBalancerClock()
  ) {
    self.init(configuration: configuration, clock: clock)
    for endpoint in endpoints {
      self.insert(endpoint)
    }
  }

  // MARK: Picking

  /// Picks an endpoint for one request and counts the request as pending there.
  ///
  /// Complete the returned ticket when the request ends; dropping it counts as a cancellation.
  ///
  /// - Throws: ``BalancerError/Code/noEndpoints`` or ``BalancerError/Code/noAvailableEndpoints``
  ///   at once; the proxy answers 503. Never waits.
  public func pick() throws(BalancerError) -> BalancerTicket<Endpoint> {
    let now = self.clock.nanoseconds
    let picked = try self.state.withLock { state throws(BalancerError) in
      try state.pick(now: now)
    }
    return BalancerTicket(
      balancer: self,
      endpoint: picked.endpoint,
      slot: picked.slot,
      generation: picked.generation,
      startedAt: now,
      isProbe: picked.isProbe
    )
  }

  /// Picks an endpoint, runs `body` with it, and records the outcome: returning is a success,
  /// throwing `CancellationError` (or throwing from a cancelled task) a cancellation, any other
  /// error a failure. The error is rethrown.
  ///
  /// To classify outcomes differently (say, a 503 response is a failure), use ``pick()`` and
  /// complete the ticket yourself.
  ///
  /// - Throws: ``BalancerError`` if no endpoint is available (before `body` runs), or what
  ///   `body` throws.
  public func withRequest<Result>(
    isolation: isolated (any Actor)? = #isolation,
    _ body: (Endpoint) async throws -> Result
  ) async throws -> Result {
    let ticket = try self.pick()
    let outcome: Swift.Result<Result, any Error>
    do {
      outcome = .success(try await body(ticket.endpoint))
    } catch {
      outcome = .failure(error)
    }
    switch outcome {
    case .success(let value):
      ticket.complete(.success)
      return value
    case .failure(let error):
      if error is CancellationError || Task.isCancelled {
        ticket.complete(.cancelled)
      } else {
        ticket.complete(.failure)
      }
      throw error
    }
  }

  /// Records the end of a ticket's request. Called by ``BalancerTicket`` only.
  func finish(slot: Int, generation: UInt32, startedAt: UInt64, isProbe: Bool, outcome: RequestOutcome) {
    let now = self.clock.nanoseconds
    self.state.withLock { state in
      state.finish(
        slot: slot,
        generation: generation,
        startedAt: startedAt,
        isProbe: isProbe,
        outcome: outcome,
        now: now
      )
    }
  }

  // MARK: Endpoint set

  /// Adds `endpoint` (or sets its weight if present). A removed endpoint that is still draining
  /// comes back with its RTT estimate and in-flight requests.
  ///
  /// - Parameter weight: relative weight from discovery; default 1.
  public func insert(_ endpoint: Endpoint, weight: UInt32 = 1) {
    let now = self.clock.nanoseconds
    self.state.withLock { $0.insert(endpoint, weight: weight, now: now) }
  }

  /// Removes `endpoint`: no new requests go to it; requests in flight finish normally.
  ///
  /// - Returns: whether it was in the set.
  @discardableResult
  public func remove(_ endpoint: Endpoint) -> Bool {
    self.state.withLock { $0.remove(endpoint) }
  }

  /// Replaces the endpoint set with `endpoints` (endpoint to weight), as a discovery snapshot
  /// does: endpoints not listed are removed (and drain), new ones added, weights updated.
  public func replaceEndpoints(with endpoints: [Endpoint: UInt32]) {
    let now = self.clock.nanoseconds
    self.state.withLock { $0.replace(with: endpoints, now: now) }
  }

  /// Replaces the endpoint set with `endpoints`, each of weight 1.
  public func replaceEndpoints(with endpoints: some Sequence<Endpoint>) {
    var weighted: [Endpoint: UInt32] = [:]
    for endpoint in endpoints {
      weighted[endpoint] = 1
    }
    self.replaceEndpoints(with: weighted)
  }

  // MARK: Observation

  /// Counters and gauges now, for metrics.
  public var stats: BalancerStats {
    let now = self.clock.nanoseconds
    return self.state.withLock { $0.stats(now: now) }
  }

  /// The state of every endpoint, including draining ones.
  public func endpointSnapshots() -> [EndpointSnapshot<Endpoint>] {
    let now = self.clock.nanoseconds
    return self.state.withLock { $0.snapshots(now: now) }
  }

  /// The state of one endpoint, or `nil` if it is neither in the set nor draining.
  public func snapshot(of endpoint: Endpoint) -> EndpointSnapshot<Endpoint>? {
    self.endpointSnapshots().first { $0.endpoint == endpoint }
  }
}
