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
  /// All mutable state. `table` is only touched while this lock is held.
  let state: Mutex<P2CStateMachine>
  let table: EndpointTable<Endpoint>

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
    self.state = Mutex(P2CStateMachine(settings: .init(configuration), random: random))
    self.table = EndpointTable()
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
  /// Bind the ticket with `do { let ticket = try balancer.pick() ... } catch { ... }`. Swift
  /// 6.3.1's compiler hangs on a loop body holding two `if let ticket = try? balancer.pick()`
  /// (an `Optional` of a non-copyable type with a `deinit`); one per function is fine.
  ///
  /// - Throws: ``BalancerError/Code/noEndpoints`` or ``BalancerError/Code/noAvailableEndpoints``
  ///   at once; the proxy answers 503. Never waits.
  public func pick() throws(BalancerError) -> BalancerTicket<Endpoint> {
    let now = self.clock.nanoseconds
    var picked = P2CStateMachine.Picked()
    let endpoint = try self.state.withLock { state throws(BalancerError) -> Endpoint in
      picked = try state.pick(now: now)
      return self.table.endpoint(at: picked.slot)
    }
    return BalancerTicket(
      balancer: self,
      endpoint: endpoint,
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
      let freed = state.finish(
        slot: slot,
        generation: generation,
        startedAt: startedAt,
        isProbe: isProbe,
        outcome: outcome,
        now: now
      )
      if freed {
        self.table.clear(slot: slot)
      }
    }
  }

  // MARK: Endpoint set

  /// Adds `endpoint` (or sets its weight if present). A removed endpoint that is still draining
  /// comes back with its RTT estimate and in-flight requests.
  ///
  /// - Parameters:
  ///   - endpoint: the endpoint to add.
  ///   - weight: relative weight from discovery; default 1.
  public func insert(_ endpoint: Endpoint, weight: UInt32 = 1) {
    let now = self.clock.nanoseconds
    self.state.withLock { state in
      self.insert(endpoint, weight: weight, now: now, state: &state)
    }
  }

  private func insert(_ endpoint: Endpoint, weight: UInt32, now: UInt64, state: inout P2CStateMachine) {
    if let slot = self.table.slot(of: endpoint) {
      state.update(slot: slot, weight: weight)
    } else {
      let slot = state.add(weight: weight, now: now)
      self.table.set(endpoint, at: slot)
    }
  }

  /// Removes `endpoint`: no new requests go to it; requests in flight finish normally.
  ///
  /// - Returns: whether it was in the set.
  @discardableResult
  public func remove(_ endpoint: Endpoint) -> Bool {
    self.state.withLock { state in
      self.remove(endpoint, state: &state)
    }
  }

  private func remove(_ endpoint: Endpoint, state: inout P2CStateMachine) -> Bool {
    guard let slot = self.table.slot(of: endpoint), state.isActive(slot: slot) else {
      return false
    }
    if state.remove(slot: slot) {
      self.table.clear(slot: slot)
    }
    return true
  }

  /// Replaces the endpoint set with `endpoints` (endpoint to weight), as a discovery snapshot
  /// does: endpoints not listed are removed (and drain), new ones added, weights updated.
  public func replaceEndpoints(with endpoints: [Endpoint: UInt32]) {
    let now = self.clock.nanoseconds
    self.state.withLock { state in
      for (endpoint, slot) in self.table.index where endpoints[endpoint] == nil && state.isActive(slot: slot) {
        _ = self.remove(endpoint, state: &state)
      }
      for (endpoint, weight) in endpoints {
        self.insert(endpoint, weight: weight, now: now, state: &state)
      }
    }
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

  /// Endpoints that would take a request now (not ejected), without building the full `stats`: cheap enough
  /// to ask per request.
  public var availableEndpointCount: Int {
    let now = self.clock.nanoseconds
    return self.state.withLock { state in
      state.advance(to: now)
      return state.ready.count
    }
  }

  /// The state of every endpoint, including draining ones.
  public func endpointSnapshots() -> [EndpointSnapshot<Endpoint>] {
    let now = self.clock.nanoseconds
    return self.state.withLock { state in
      state.advance(to: now)
      var snapshots: [EndpointSnapshot<Endpoint>] = []
      for (number, slot) in state.slots.enumerated() where slot.membership != .free {
        let status: EndpointSnapshot<Endpoint>.Status
        if slot.membership == .draining {
          status = .draining
        } else {
          switch slot.accrual.state {
          case .available: status = .available
          case .ejected(let until): status = .backingOff(untilNanoseconds: until)
          case .probeReady: status = .probeReady
          case .probing: status = .probing
          }
        }
        snapshots.append(
          EndpointSnapshot(
            endpoint: self.table.endpoint(at: number),
            weight: slot.weight,
            status: status,
            pending: slot.pending,
            rttEstimate: .nanoseconds(slot.ewma.estimate),
            consecutiveFailures: slot.accrual.consecutiveFailures
          )
        )
      }
      return snapshots
    }
  }

  /// The state of one endpoint, or `nil` if it is neither in the set nor draining.
  public func snapshot(of endpoint: Endpoint) -> EndpointSnapshot<Endpoint>? {
    self.endpointSnapshots().first { $0.endpoint == endpoint }
  }
}
