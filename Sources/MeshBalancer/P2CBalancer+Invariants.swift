import Synchronization

extension P2CBalancer.StateMachine {
  /// Every broken internal invariant, described; empty when the state is consistent.
  /// For tests (O(n), allocates).
  func invariantViolations() -> [String] {
    var violations: [String] = []
    var pending = 0
    var active = 0
    var draining = 0
    for (number, slot) in self.slots.enumerated() {
      pending += slot.pending
      if slot.pending < 0 { violations.append("slot \(number): negative pending \(slot.pending)") }
      switch slot.membership {
      case .active: active += 1
      case .draining:
        draining += 1
        if slot.pending == 0 { violations.append("slot \(number): draining with nothing pending") }
      case .free:
        if slot.endpoint != nil || slot.pending != 0 { violations.append("slot \(number): free but used") }
      }
      if let endpoint = slot.endpoint, self.index[endpoint] != number {
        violations.append("slot \(number): not indexed under its endpoint")
      }
      let shouldBeReady = slot.membership == .active && slot.accrual.admitsRequests
      if shouldBeReady != (slot.readyPosition >= 0) {
        violations.append("slot \(number): ready position \(slot.readyPosition), should be ready \(shouldBeReady)")
      }
      if slot.readyPosition >= 0,
        slot.readyPosition >= self.ready.count || self.ready[slot.readyPosition] != number
      {
        violations.append("slot \(number): ready position \(slot.readyPosition) does not point back")
      }
    }
    if pending != self.counters.pendingRequests {
      violations.append("pending sum \(pending) != counter \(self.counters.pendingRequests)")
    }
    if active != self.activeCount { violations.append("active \(active) != count \(self.activeCount)") }
    if draining != self.drainingCount { violations.append("draining \(draining) != count \(self.drainingCount)") }
    if self.index.count != active + draining {
      violations.append("index has \(self.index.count) entries for \(active + draining) endpoints")
    }
    if Set(self.ready).count != self.ready.count { violations.append("ready list has duplicates") }
    return violations
  }
}

extension P2CBalancer {
  /// Broken internal invariants, for tests.
  func invariantViolations() -> [String] {
    self.state.withLock { $0.invariantViolations() }
  }
}
