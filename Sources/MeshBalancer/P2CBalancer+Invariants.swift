import Synchronization

extension P2CStateMachine {
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
        if slot.pending != 0 { violations.append("slot \(number): free with requests pending") }
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
    if Set(self.ready).count != self.ready.count { violations.append("ready list has duplicates") }
    return violations
  }
}

extension P2CBalancer {
  /// Broken internal invariants of the state and the endpoint table, for tests.
  func invariantViolations() -> [String] {
    self.state.withLock { state in
      var violations = state.invariantViolations()
      for (number, slot) in state.slots.enumerated() {
        let used = slot.membership != .free
        let occupied = number < self.table.occupied.count && self.table.occupied[number]
        if used != occupied {
          violations.append("slot \(number): membership \(slot.membership) but table occupied \(occupied)")
        } else if used, self.table.slot(of: self.table.endpoint(at: number)) != number {
          violations.append("slot \(number): endpoint not indexed under this slot")
        }
      }
      if self.table.index.count != state.activeCount + state.drainingCount {
        violations.append("index has \(self.table.index.count) entries for \(state.activeCount + state.drainingCount) endpoints")
      }
      return violations
    }
  }
}
