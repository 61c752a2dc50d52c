/// The balancer's state over endpoint *slots* (integers): load estimates, pending counts,
/// failure accrual, the list of pickable slots, counters and the random generator. A plain,
/// non-generic value with no clock, no lock and no I/O; ``P2CBalancer`` wraps it in a `Mutex`,
/// passes the time in, and maps its endpoints to slots (see `EndpointTable`).
///
/// Non-generic on purpose: the pick path is compiled fully specialized in this module, with
/// no generic-metadata look-ups, whatever the endpoint type.
///
/// Layout: every endpoint occupies a slot of `slots` (freed slots are reused, their generation
/// bumped). `ready` lists the slots a pick may choose, each slot remembering its position there,
/// so adding and removing is O(1) and picking allocates nothing.
struct P2CStateMachine {
  /// Whether a slot holds an endpoint of the set, a removed endpoint with requests in flight,
  /// or nothing.
  enum Membership: Hashable, Sendable {
    case active
    case draining
    case free
  }

  struct Slot {
    var generation: UInt32
    var membership: Membership
    var weight: UInt32
    var ewma: PeakEWMA
    var pending: Int
    var accrual: FailureAccrualStateMachine
    /// Index in `ready`, or -1.
    var readyPosition: Int
  }

  /// What a successful pick hands to the ticket.
  struct Picked {
    var slot: Int = 0
    var generation: UInt32 = 0
    var isProbe: Bool = false
  }

  struct Settings {
    var defaultRTT: Double
    var decay: Double
    var accrualEnabled: Bool
    var accrualThreshold: Int
    var backoff: ExponentialBackoff

    init(_ configuration: BalancerConfiguration) {
      self.defaultRTT = Double(configuration.defaultRTT.clampedNanoseconds)
      self.decay = max(Double(configuration.decay.clampedNanoseconds), 1)
      self.accrualEnabled = configuration.failureAccrual.isEnabled
      self.accrualThreshold = configuration.failureAccrual.consecutiveFailures
      self.backoff = ExponentialBackoff(configuration.failureAccrual.backoff)
    }
  }

  let settings: Settings
  private(set) var slots: [Slot] = []
  private var freeSlots: [Int] = []
  private(set) var ready: [Int] = []
  private(set) var activeCount = 0
  private(set) var drainingCount = 0
  /// The earliest time a back-off may end; `.max` if none is running. May be early (stale),
  /// never late.
  private var nextBackoffEnd: UInt64 = .max
  private(set) var counters = BalancerStats()
  var random: BalancerRandom

  init(settings: Settings, random: BalancerRandom) {
    self.settings = settings
    self.random = random
  }

  // MARK: Picking

  /// Power of two choices: two distinct random pickable slots, the one with the lower
  /// `cost / weight` wins (ties: the first drawn), where cost is the Peak-EWMA estimate decayed
  /// to `now` times `pending + 1`. One pickable slot is used directly.
  mutating func pick(now: UInt64) throws(BalancerError) -> Picked {
    if now >= self.nextBackoffEnd {
      self.endBackoffs(now: now)
    }
    let chosen: Int
    switch self.ready.count {
    case 0:
      self.counters.failedPicks &+= 1
      throw self.unavailableError()
    case 1:
      chosen = self.ready[0]
    case let count:
      let first = Int.random(in: 0..<count, using: &self.random)
      var second = Int.random(in: 0..<(count - 1), using: &self.random)
      if second >= first { second += 1 }
      let a = self.ready[first]
      let b = self.ready[second]
      chosen = self.weightedCost(slot: b, now: now) < self.weightedCost(slot: a, now: now) ? b : a
    }

    self.slots[chosen].pending += 1
    self.counters.pendingRequests += 1
    self.counters.picks &+= 1
    var isProbe = false
    if self.slots[chosen].accrual.state == .probeReady {
      self.slots[chosen].accrual.beginProbe()
      self.syncReadiness(slot: chosen)
      self.counters.probes &+= 1
      isProbe = true
    }
    return Picked(slot: chosen, generation: self.slots[chosen].generation, isProbe: isProbe)
  }

  /// `cost / weight`; a zero weight costs infinity (chosen only if both candidates have it).
  private mutating func weightedCost(slot: Int, now: UInt64) -> Double {
    let weight = self.slots[slot].weight
    let pending = self.slots[slot].pending
    let cost = self.slots[slot].ewma.cost(pending: pending, at: now)
    return weight == 0 ? .infinity : cost / Double(weight)
  }

  private func unavailableError() -> BalancerError {
    if self.activeCount == 0 {
      return .noEndpoints()
    }
    var backingOff = 0
    var probing = 0
    for slot in self.slots where slot.membership == .active {
      switch slot.accrual.state {
      case .ejected: backingOff += 1
      case .probing: probing += 1
      case .available, .probeReady: break
      }
    }
    return .noAvailableEndpoints(endpoints: self.activeCount, backingOff: backingOff, probing: probing)
  }

  /// Makes every endpoint whose back-off is over probe-ready.
  private mutating func endBackoffs(now: UInt64) {
    var next = UInt64.max
    for slot in self.slots.indices where self.slots[slot].membership != .free {
      if self.slots[slot].accrual.poll(now: now) {
        self.syncReadiness(slot: slot)
      } else if let until = self.slots[slot].accrual.ejectedUntil {
        next = min(next, until)
      }
    }
    self.nextBackoffEnd = next
  }

  // MARK: Completion

  /// Ends a request picked at `startedAt` from `slot` (of `generation`), at `now`.
  ///
  /// Ignores a ticket whose slot no longer matches (cannot happen while pending counts are
  /// right, since a slot with requests in flight is never reused; checked anyway).
  ///
  /// - Returns: whether the slot was freed (a drained endpoint's last request ended).
  mutating func finish(
    slot: Int,
    generation: UInt32,
    startedAt: UInt64,
    isProbe: Bool,
    outcome: RequestOutcome,
    now: UInt64
  ) -> Bool {
    guard self.slots.indices.contains(slot),
      self.slots[slot].generation == generation,
      self.slots[slot].membership != .free,
      self.slots[slot].pending > 0
    else { return false }

    self.slots[slot].pending -= 1
    self.counters.pendingRequests -= 1
    let elapsed = now > startedAt ? now - startedAt : 0

    switch outcome {
    case .success:
      self.slots[slot].ewma.observe(rtt: elapsed, at: now)
      if self.slots[slot].accrual.recordSuccess(isProbe: isProbe) == .restored {
        self.counters.failureAccrualRestorations &+= 1
      }
    case .failure:
      self.slots[slot].ewma.observe(rtt: elapsed, at: now)
      if self.settings.accrualEnabled {
        let unit = self.random.nextUnit()
        let transition = self.slots[slot].accrual.recordFailure(isProbe: isProbe, now: now, jitterUnit: unit)
        if case .ejected(let until) = transition {
          self.counters.failureAccrualEjections &+= 1
          self.nextBackoffEnd = min(self.nextBackoffEnd, until)
        }
      }
    case .connectionFailure:
      if self.settings.accrualEnabled {
        let unit = self.random.nextUnit()
        let transition = self.slots[slot].accrual.recordConnectionFailure(
          isProbe: isProbe, now: now, jitterUnit: unit)
        if case .ejected(let until) = transition {
          self.counters.failureAccrualEjections &+= 1
          self.nextBackoffEnd = min(self.nextBackoffEnd, until)
        }
      }
    case .cancelled:
      self.slots[slot].ewma.observeLowerBound(elapsed, at: now)
      self.slots[slot].accrual.recordCancellation(isProbe: isProbe)
    }

    self.syncReadiness(slot: slot)
    if self.slots[slot].membership == .draining, self.slots[slot].pending == 0 {
      self.release(slot: slot)
      return true
    }
    return false
  }

  // MARK: Endpoint set

  /// Occupies a slot for a new endpoint of `weight`, estimated at the default RTT as of `now`.
  mutating func add(weight: UInt32, now: UInt64) -> Int {
    let fresh = Slot(
      generation: 0,
      membership: .active,
      weight: weight,
      ewma: PeakEWMA(initial: self.settings.defaultRTT, decay: self.settings.decay, now: now),
      pending: 0,
      accrual: FailureAccrualStateMachine(
        threshold: self.settings.accrualThreshold,
        backoff: self.settings.backoff
      ),
      readyPosition: -1
    )
    let slot: Int
    if let reused = self.freeSlots.popLast() {
      slot = reused
      let generation = self.slots[slot].generation
      self.slots[slot] = fresh
      self.slots[slot].generation = generation
    } else {
      slot = self.slots.count
      self.slots.append(fresh)
      // Keep `ready` able to hold every slot, so completions never allocate.
      self.ready.reserveCapacity(self.slots.capacity)
    }
    self.activeCount += 1
    self.syncReadiness(slot: slot)
    return slot
  }

  /// Sets the weight of an occupied slot; a draining one becomes active again with its
  /// estimate, accrual state and in-flight requests.
  mutating func update(slot: Int, weight: UInt32) {
    precondition(self.slots[slot].membership != .free, "update of a free slot")
    self.slots[slot].weight = weight
    if self.slots[slot].membership == .draining {
      self.slots[slot].membership = .active
      self.drainingCount -= 1
      self.activeCount += 1
      if let until = self.slots[slot].accrual.ejectedUntil {
        self.nextBackoffEnd = min(self.nextBackoffEnd, until)
      }
      self.syncReadiness(slot: slot)
    }
  }

  /// Whether the slot holds an endpoint of the current set.
  func isActive(slot: Int) -> Bool {
    self.slots[slot].membership == .active
  }

  /// Takes an active slot out of the set: freed at once if idle, else draining until its
  /// requests complete.
  ///
  /// - Returns: whether the slot was freed.
  mutating func remove(slot: Int) -> Bool {
    precondition(self.slots[slot].membership == .active, "remove of an inactive slot")
    self.activeCount -= 1
    if self.slots[slot].pending == 0 {
      self.release(slot: slot)
      return true
    }
    self.slots[slot].membership = .draining
    self.drainingCount += 1
    self.syncReadiness(slot: slot)
    return false
  }

  private mutating func release(slot: Int) {
    if self.slots[slot].membership == .draining {
      self.drainingCount -= 1
    }
    self.slots[slot].membership = .free
    self.syncReadiness(slot: slot)
    self.slots[slot].generation &+= 1
    self.freeSlots.append(slot)
  }

  /// Puts the slot into `ready` or takes it out, to match its membership and accrual state.
  private mutating func syncReadiness(slot: Int) {
    let shouldBeReady = self.slots[slot].membership == .active && self.slots[slot].accrual.admitsRequests
    let position = self.slots[slot].readyPosition
    if shouldBeReady, position < 0 {
      self.slots[slot].readyPosition = self.ready.count
      self.ready.append(slot)
    } else if !shouldBeReady, position >= 0 {
      let last = self.ready.removeLast()
      if last != slot {
        self.ready[position] = last
        self.slots[last].readyPosition = position
      }
      self.slots[slot].readyPosition = -1
    }
  }

  // MARK: Observation

  /// Ends the back-offs that are over at `now`, so observations see them as probe-ready.
  mutating func advance(to now: UInt64) {
    if now >= self.nextBackoffEnd {
      self.endBackoffs(now: now)
    }
  }

  /// Counters and gauges at `now` (back-offs that are over count as available).
  mutating func stats(now: UInt64) -> BalancerStats {
    self.advance(to: now)
    var stats = self.counters
    stats.endpoints = self.activeCount
    stats.availableEndpoints = self.ready.count
    stats.drainingEndpoints = self.drainingCount
    stats.ejectedEndpoints = self.slots.lazy.filter {
      $0.membership == .active && ($0.accrual.state == .probing || $0.accrual.ejectedUntil != nil)
    }.count
    return stats
  }
}
