/// Peak-EWMA round-trip-time estimate of one endpoint, with tower's (and so Linkerd's) semantics.
///
/// - An observation slower than the estimate replaces it at once (the peak).
/// - An observation not slower is blended in: `estimate = estimate * w + rtt * (1 - w)` with
///   `w = exp(-elapsed / decay)`, `elapsed` being the time since the estimate was last updated.
/// - Reading the estimate (``decayedEstimate(at:)``, as the balancer does for the two candidates
///   of a pick) decays it towards zero the same way, as if a zero RTT had been observed, and
///   counts as an update. An endpoint that stops answering slowly therefore becomes attractive
///   again over time.
///
/// Plain value, no clock and no I/O: times are passed in, in nanoseconds.
struct PeakEWMA: Hashable, Sendable {
  /// The current estimate in nanoseconds.
  private(set) var estimate: Double

  /// When the estimate was last updated (observed or read), in nanoseconds.
  private(set) var updatedAt: UInt64

  /// The decay window in nanoseconds.
  let decay: Double

  /// Creates an estimate of `initial` nanoseconds (the default RTT) at time `now`.
  init(initial: Double, decay: Double, now: UInt64) {
    precondition(decay > 0, "the Peak-EWMA decay window must be positive")
    self.estimate = max(initial, 0)
    self.updatedAt = now
    self.decay = decay
  }

  /// Records a response that took `rtt` nanoseconds and arrived at `now`.
  mutating func observe(rtt: UInt64, at now: UInt64) {
    let rtt = Double(rtt)
    if self.estimate < rtt {
      self.estimate = rtt
    } else {
      let weight = self.weight(at: now)
      self.estimate = self.estimate * weight + rtt * (1 - weight)
    }
    self.updatedAt = max(self.updatedAt, now)
  }

  /// Records a request that was abandoned after `elapsed` nanoseconds, at `now`.
  ///
  /// The real RTT is unknown but at least `elapsed`, so this only ever raises the estimate (as a
  /// peak). Tower records a dropped request like a response; we do not let a request the
  /// client cancelled early pull the estimate down.
  mutating func observeLowerBound(_ elapsed: UInt64, at now: UInt64) {
    if self.estimate < Double(elapsed) {
      self.observe(rtt: elapsed, at: now)
    }
  }

  /// The estimate decayed towards zero for the time since the last update, recorded as of `now`.
  mutating func decayedEstimate(at now: UInt64) -> Double {
    self.estimate *= self.weight(at: now)
    self.updatedAt = max(self.updatedAt, now)
    return self.estimate
  }

  /// The load: the decayed estimate times `pending + 1`.
  mutating func cost(pending: Int, at now: UInt64) -> Double {
    self.decayedEstimate(at: now) * Double(pending + 1)
  }

  /// `exp(-elapsed / decay)` for the time since the last update (1 if the clock went backwards).
  private func weight(at now: UInt64) -> Double {
    guard now > self.updatedAt else { return 1 }
    return naturalExp(-Double(now - self.updatedAt) / self.decay)
  }
}
