@testable import MeshBalancer
import Testing

@Suite("Failure accrual state machine")
struct FailureAccrualStateMachineTests {
  static let s: UInt64 = 1_000_000_000
  let backoff = ExponentialBackoff(minimum: 1e9, maximum: 4e9, jitter: 0)

  @Test("N consecutive failures eject until now + the first back-off; fewer do not")
  func ejectsAfterThreshold() {
    var machine = FailureAccrualStateMachine(threshold: 3, backoff: self.backoff)
    #expect(machine.recordFailure(isProbe: false, now: 10, jitterUnit: 0) == .none)
    #expect(machine.recordFailure(isProbe: false, now: 20, jitterUnit: 0) == .none)
    #expect(machine.admitsRequests)
    #expect(machine.recordFailure(isProbe: false, now: 30, jitterUnit: 0) == .ejected(until: 30 + Self.s))
    #expect(machine.state == .ejected(until: 30 + Self.s))
    #expect(!machine.admitsRequests)
  }

  @Test("a success resets the consecutive count")
  func successResets() {
    var machine = FailureAccrualStateMachine(threshold: 3, backoff: self.backoff)
    _ = machine.recordFailure(isProbe: false, now: 0, jitterUnit: 0)
    _ = machine.recordFailure(isProbe: false, now: 0, jitterUnit: 0)
    #expect(machine.recordSuccess(isProbe: false) == .none)
    #expect(machine.consecutiveFailures == 0)
    _ = machine.recordFailure(isProbe: false, now: 0, jitterUnit: 0)
    _ = machine.recordFailure(isProbe: false, now: 0, jitterUnit: 0)
    #expect(machine.state == .available)
  }

  @Test("the back-off ends exactly at its deadline, then one probe; its success restores")
  func probeRestores() {
    var machine = FailureAccrualStateMachine(threshold: 1, backoff: self.backoff)
    _ = machine.recordFailure(isProbe: false, now: 0, jitterUnit: 0)
    let earlyPoll = machine.poll(now: Self.s - 1)
    #expect(!earlyPoll)
    let duePoll = machine.poll(now: Self.s)
    #expect(duePoll)
    #expect(machine.state == .probeReady)
    #expect(machine.admitsRequests)
    machine.beginProbe()
    #expect(machine.state == .probing)
    #expect(!machine.admitsRequests)
    #expect(machine.recordSuccess(isProbe: true) == .restored)
    #expect(machine.state == .available)
    #expect(machine.ejectionsInARow == 0)
  }

  @Test("failed probes re-eject with doubling back-off capped at the maximum: 1, 2, 4, 4 s")
  func backoffDoublesAndCaps() {
    var machine = FailureAccrualStateMachine(threshold: 1, backoff: self.backoff)
    var now: UInt64 = 0
    var waits: [UInt64] = []
    _ = machine.recordFailure(isProbe: false, now: now, jitterUnit: 0)
    for _ in 0..<4 {
      let until = machine.ejectedUntil!
      waits.append(until - now)
      now = until
      let due = machine.poll(now: now)
      #expect(due)
      machine.beginProbe()
      _ = machine.recordFailure(isProbe: true, now: now, jitterUnit: 0)
    }
    #expect(waits == [1 * Self.s, 2 * Self.s, 4 * Self.s, 4 * Self.s])
  }

  @Test("a cancelled probe makes the endpoint probe-ready again; non-probe outcomes while ejected or probing are ignored")
  func staleOutcomes() {
    var machine = FailureAccrualStateMachine(threshold: 1, backoff: self.backoff)
    _ = machine.recordFailure(isProbe: false, now: 0, jitterUnit: 0)
    #expect(machine.recordSuccess(isProbe: false) == .none)
    #expect(machine.recordFailure(isProbe: false, now: 0, jitterUnit: 0) == .none)
    #expect(machine.state == .ejected(until: Self.s))
    _ = machine.poll(now: Self.s)
    machine.beginProbe()
    #expect(machine.recordSuccess(isProbe: false) == .none)
    #expect(machine.recordFailure(isProbe: false, now: Self.s, jitterUnit: 0) == .none)
    machine.recordCancellation(isProbe: false)
    #expect(machine.state == .probing)
    machine.recordCancellation(isProbe: true)
    #expect(machine.state == .probeReady)
  }

  @Test("back-off arithmetic: min(1 s * 2^n, 60 s) plus jitter 0.5 * unit of it")
  func backoffArithmetic() {
    let backoff = ExponentialBackoff(BalancerConfiguration.Backoff.defaults)
    // Computed by hand: base + base * 0.5 * 0.5 for base 1, 2, 4, 8, 16, 32, 60, 60 s.
    let expected: [UInt64] = [1_250, 2_500, 5_000, 10_000, 20_000, 40_000, 75_000, 75_000].map { $0 * 1_000_000 }
    #expect((0..<8).map { backoff.delay(attempt: $0, unit: 0.5) } == expected)
    #expect(backoff.delay(attempt: 0, unit: 0) == 1_000_000_000)
    #expect(backoff.delay(attempt: 500, unit: 0) == 60_000_000_000)
  }
}

@Suite("Failure accrual in the balancer")
struct BalancerFailureAccrualTests {
  func makeBalancer(_ endpoints: [String], clock: ManualBalancerClock, jitter: Double = 0) -> P2CBalancer<String> {
    .forTesting(endpoints, clock: clock) {
      $0.failureAccrual.consecutiveFailures = 3
      $0.failureAccrual.backoff = .defaults {
        $0.minimum = .seconds(1)
        $0.maximum = .seconds(4)
        $0.jitter = jitter
      }
    }
  }

  @Test("the default is 7 consecutive failures")
  func defaultThreshold() throws {
    let clock = ManualBalancerClock()
    let balancer = P2CBalancer<String>.forTesting(["a"], clock: clock)
    for _ in 0..<6 { try balancer.request(.failure, clock: clock) }
    #expect(balancer.stats.failureAccrualEjections == 0)
    #expect(balancer.snapshot(of: "a")?.consecutiveFailures == 6)
    try balancer.request(.failure, clock: clock)
    #expect(balancer.stats.failureAccrualEjections == 1)
    #expect(balancer.snapshot(of: "a")?.status.until != nil)
  }

  @Test("one connection failure ejects at once and leaves the RTT estimate alone; the other endpoint takes every request")
  func connectionFailureEjectsAtOnce() throws {
    let clock = ManualBalancerClock()
    let balancer = P2CBalancer<String>.forTesting(["a", "b"], clock: clock)
    let before = balancer.snapshot(of: "a")?.rttEstimate
    // Drive picks until "a" is picked, then fail its connection (an instant refusal).
    var refused = false
    for _ in 0..<64 where !refused {
      let ticket = try balancer.pick()
      if ticket.endpoint == "a" {
        ticket.complete(.connectionFailure)
        refused = true
      } else {
        ticket.complete(.success)
      }
    }
    #expect(refused)
    #expect(balancer.stats.failureAccrualEjections == 1)
    #expect(balancer.snapshot(of: "a")?.status.until != nil)
    #expect(balancer.snapshot(of: "a")?.rttEstimate == before)
    for _ in 0..<50 {
      #expect(try balancer.request(.success, clock: clock) == "b")
    }
  }

  @Test("an ejected endpoint takes no requests; with none left the pick fails fast with noAvailableEndpoints")
  func ejectedTakesNoRequests() throws {
    let clock = ManualBalancerClock()
    let balancer = self.makeBalancer(["a"], clock: clock)
    for _ in 0..<3 { try balancer.request(.failure, clock: clock) }
    let error = #expect(throws: BalancerError.self) { _ = try balancer.pick() }
    #expect(error?.code == .noAvailableEndpoints)
    #expect(error?.backingOff == 1)
    #expect(error?.message == "no available endpoints: all 1 endpoints are ejected by failure accrual (1 backing off, 0 probing)")
    #expect(balancer.stats.failedPicks == 1)
    #expect(balancer.stats.ejectedEndpoints == 1)
    #expect(balancer.stats.availableEndpoints == 0)

    balancer.insert("b")
    for _ in 0..<50 {
      #expect(try balancer.request(.success, clock: clock) == "b")
    }
  }

  @Test("after the back-off one probe goes out, nothing else meanwhile; its success restores the endpoint")
  func probeSuccess() throws {
    let clock = ManualBalancerClock()
    let balancer = self.makeBalancer(["a"], clock: clock)
    for _ in 0..<3 { try balancer.request(.failure, clock: clock) }
    clock.advance(by: .milliseconds(999))
    #expect(throws: BalancerError.self) { _ = try balancer.pick() }
    clock.advance(by: .milliseconds(1))
    #expect(balancer.snapshot(of: "a")?.status == .probeReady)

    let probe = try balancer.hold()
    let isProbe = probe.ticket?.isProbe
    #expect(isProbe == true)
    #expect(balancer.snapshot(of: "a")?.status == .probing)
    #expect(throws: BalancerError.noAvailableEndpoints(endpoints: 1, backingOff: 0, probing: 1)) {
      _ = try balancer.pick()
    }
    probe.ticket.take()?.complete(.success)
    #expect(balancer.snapshot(of: "a")?.status == .available)
    #expect(balancer.stats.failureAccrualRestorations == 1)
    #expect(balancer.stats.probes == 1)
    let next = try balancer.pick()
    let nextIsProbe = next.isProbe
    #expect(!nextIsProbe)
    next.succeed()
  }

  @Test("a failed probe re-ejects with the doubled back-off and counts a second ejection")
  func probeFailure() throws {
    let clock = ManualBalancerClock()
    let balancer = self.makeBalancer(["a"], clock: clock)
    for _ in 0..<3 { try balancer.request(.failure, clock: clock) }
    clock.advance(by: .seconds(1))
    try balancer.request(.failure, latency: .milliseconds(5), clock: clock)
    let now = clock.nanoseconds
    #expect(balancer.snapshot(of: "a")?.status == .backingOff(untilNanoseconds: now + 2_000_000_000))
    #expect(balancer.stats.failureAccrualEjections == 2)
    clock.advance(by: .seconds(2))
    #expect(balancer.stats.availableEndpoints == 1)
  }

  @Test("a cancelled or dropped probe lets the next request probe again")
  func probeCancelled() throws {
    let clock = ManualBalancerClock()
    let balancer = self.makeBalancer(["a"], clock: clock)
    for _ in 0..<3 { try balancer.request(.failure, clock: clock) }
    clock.advance(by: .seconds(1))
    do {
      let probe = try balancer.pick()
      let isProbe = probe.isProbe
      #expect(isProbe)
    }  // dropped: cancelled
    #expect(balancer.snapshot(of: "a")?.status == .probeReady)
    let probe = try balancer.pick()
    let isProbe = probe.isProbe
    #expect(isProbe)
    probe.succeed()
    #expect(balancer.snapshot(of: "a")?.status == .available)
  }

  @Test("responses to requests in flight before the ejection are ignored")
  func staleResponsesIgnored() throws {
    let clock = ManualBalancerClock()
    let balancer = self.makeBalancer(["a"], clock: clock)
    let held = try (0..<4).map { _ in try balancer.hold() }
    for ticket in held.prefix(3) { ticket.ticket.take()?.fail() }
    #expect(balancer.stats.failureAccrualEjections == 1)
    held[3].ticket.take()?.succeed()
    #expect(balancer.snapshot(of: "a")?.status.until != nil)
    #expect(balancer.stats.pendingRequests == 0)
  }

  @Test("jitter adds between 0 and jitter x base to the back-off")
  func jitterBounds() throws {
    for seed: UInt64 in 1...20 {
      let clock = ManualBalancerClock()
      let balancer = P2CBalancer<String>.forTesting(["a"], clock: clock, seed: seed) {
        $0.failureAccrual.consecutiveFailures = 1
        $0.failureAccrual.backoff.jitter = 0.5
      }
      try balancer.request(.failure, clock: clock)
      let until = try #require(balancer.snapshot(of: "a")?.status.until)
      #expect(until >= 1_000_000_000 && until < 1_500_000_000)
    }
  }

  @Test("with failure accrual disabled nothing is ejected")
  func disabled() throws {
    let clock = ManualBalancerClock()
    let balancer = P2CBalancer<String>.forTesting(["a"], clock: clock) { $0.failureAccrual.isEnabled = false }
    for _ in 0..<100 { try balancer.request(.failure, clock: clock) }
    #expect(balancer.stats.failureAccrualEjections == 0)
    #expect(balancer.snapshot(of: "a")?.status == .available)
  }
}

extension EndpointSnapshot.Status {
  var until: UInt64? {
    if case .backingOff(let until) = self { return until }
    return nil
  }
}
