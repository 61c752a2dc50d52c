/// Consecutive-failure accrual for one endpoint: a plain state machine with no clock and no I/O.
///
/// ```
/// available --N consecutive failures--> ejected(until) --time passes (poll)--> probeReady
/// probeReady --picked (beginProbe)--> probing
/// probing --probe succeeds--> available        probing --probe fails--> ejected (longer back-off)
/// probing --probe cancelled--> probeReady
/// ```
///
/// Only outcomes of requests that started while the endpoint was available move an available
/// endpoint, and only the probe's outcome moves a probing one: responses to requests that were
/// already in flight when the endpoint was ejected are stale evidence and are ignored.
struct FailureAccrualStateMachine: Hashable, Sendable {
  enum State: Hashable, Sendable {
    /// Takes requests; counts consecutive failures.
    case available
    /// Takes no requests until the given time (nanoseconds).
    case ejected(until: UInt64)
    /// The back-off is over: the next request to pick it is its single probe.
    case probeReady
    /// The probe request is in flight; takes no other requests.
    case probing
  }

  /// What a recorded outcome changed, for the balancer's counters.
  enum Transition: Hashable, Sendable {
    case none
    /// The endpoint was (re-)ejected until the given time.
    case ejected(until: UInt64)
    /// The probe succeeded and the endpoint is available again.
    case restored
  }

  private(set) var state: State = .available

  /// Failures in a row while available.
  private(set) var consecutiveFailures = 0

  /// Ejections since the endpoint was last available; selects the back-off step.
  private(set) var ejectionsInARow = 0

  /// The failures in a row that eject (at least 1).
  let threshold: Int

  /// The back-off after an ejection.
  let backoff: ExponentialBackoff

  init(threshold: Int, backoff: ExponentialBackoff) {
    self.threshold = max(threshold, 1)
    self.backoff = backoff
  }

  /// Whether the balancer may send this endpoint a new request.
  var admitsRequests: Bool {
    switch self.state {
    case .available, .probeReady: true
    case .ejected, .probing: false
    }
  }

  /// A request succeeded. `isProbe`: it was this endpoint's probe.
  mutating func recordSuccess(isProbe: Bool) -> Transition {
    switch self.state {
    case .available:
      self.consecutiveFailures = 0
      return .none
    case .probing where isProbe:
      self.state = .available
      self.consecutiveFailures = 0
      self.ejectionsInARow = 0
      return .restored
    case .probing, .probeReady, .ejected:
      return .none
    }
  }

  /// A request failed at `now`; `jitterUnit` is a random value in `0..<1` for the back-off.
  mutating func recordFailure(isProbe: Bool, now: UInt64, jitterUnit: Double) -> Transition {
    switch self.state {
    case .available:
      self.consecutiveFailures += 1
      if self.consecutiveFailures >= self.threshold {
        return self.eject(now: now, jitterUnit: jitterUnit)
      }
      return .none
    case .probing where isProbe:
      return self.eject(now: now, jitterUnit: jitterUnit)
    case .probing, .probeReady, .ejected:
      return .none
    }
  }

  /// The endpoint could not be connected to: ejects it now whatever the count (a probe that cannot
  /// connect re-ejects it with a longer back-off). Already-ejected endpoints stay as they are.
  mutating func recordConnectionFailure(isProbe: Bool, now: UInt64, jitterUnit: Double) -> Transition {
    switch self.state {
    case .available:
      return self.eject(now: now, jitterUnit: jitterUnit)
    case .probing where isProbe:
      return self.eject(now: now, jitterUnit: jitterUnit)
    case .probing, .probeReady, .ejected:
      return .none
    }
  }

  /// A request was cancelled: says nothing about health, but a cancelled probe must be retried.
  mutating func recordCancellation(isProbe: Bool) {
    if isProbe, self.state == .probing {
      self.state = .probeReady
    }
  }

  /// Ends the back-off if it is over at `now`. Returns whether the endpoint became probe-ready.
  mutating func poll(now: UInt64) -> Bool {
    if case .ejected(let until) = self.state, until <= now {
      self.state = .probeReady
      return true
    }
    return false
  }

  /// The probe-ready endpoint was picked: this request is its probe.
  mutating func beginProbe() {
    precondition(self.state == .probeReady, "beginProbe in state \(self.state)")
    self.state = .probing
  }

  /// When the back-off ends, if ejected.
  var ejectedUntil: UInt64? {
    if case .ejected(let until) = self.state { return until }
    return nil
  }

  private mutating func eject(now: UInt64, jitterUnit: Double) -> Transition {
    let delay = self.backoff.delay(attempt: self.ejectionsInARow, unit: jitterUnit)
    let (until, overflow) = now.addingReportingOverflow(delay)
    let deadline = overflow ? UInt64.max : until
    self.ejectionsInARow += 1
    self.consecutiveFailures = 0
    self.state = .ejected(until: deadline)
    return .ejected(until: deadline)
  }
}
