@testable import MeshBalancer
import Testing

@Suite("Power of two choices")
struct P2CBalancerTests {
  @Test("with no endpoints a pick fails at once with noEndpoints")
  func noEndpoints() {
    let balancer = P2CBalancer<String>.forTesting(clock: ManualBalancerClock())
    let error = #expect(throws: BalancerError.noEndpoints()) { _ = try balancer.pick() }
    #expect(error?.message == "no endpoints: the balancer's endpoint set is empty")
    #expect(balancer.stats.failedPicks == 1)
  }

  @Test("with one endpoint every request goes to it, however loaded")
  func oneEndpoint() throws {
    let clock = ManualBalancerClock()
    let balancer = P2CBalancer<String>.forTesting(["only"], clock: clock)
    let held = try (0..<20).map { _ in try balancer.hold() }
    #expect(held.allSatisfy { $0.endpoint == "only" })
    #expect(balancer.stats.pendingRequests == 20)
  }

  @Test("the two candidates are distinct: a much costlier endpoint of two is never chosen")
  func distinctCandidates() throws {
    let clock = ManualBalancerClock()
    let balancer = P2CBalancer<String>.forTesting(["slow"], clock: clock)
    try balancer.request(.success, latency: .milliseconds(500), clock: clock)
    balancer.insert("fast")
    // If both candidates could be "slow" (1 in 4 picks), it would be chosen.
    for _ in 0..<1_000 {
      #expect(try balancer.request(.success, clock: clock) == "fast")
    }
  }

  @Test("pending requests raise the cost: equal endpoints take held requests in turn")
  func pendingRaisesCost() throws {
    let clock = ManualBalancerClock()
    let balancer = P2CBalancer<String>.forTesting(["a", "b"], clock: clock)
    let held = try (0..<10).map { _ in try balancer.hold() }
    let endpoints = held.map { $0.endpoint! }
    for pair in stride(from: 0, to: 10, by: 2) {
      #expect(Set(endpoints[pair..<pair + 2]) == ["a", "b"])
    }
  }

  @Test("the cost is estimate x (pending + 1): 3 held requests on a 30 ms endpoint (120 ms) lose to one at 100 ms (100 ms)")
  func costFormula() throws {
    let clock = ManualBalancerClock()
    let balancer = P2CBalancer<String>.forTesting(["b"], clock: clock)
    try balancer.request(.success, latency: .milliseconds(100), clock: clock)
    balancer.insert("a")
    // a: 30 ms default, not decayed (no time passes). b: 100 ms.
    // Held on a: costs 30, 60, 90, 120 against b's 100, so a takes three, then b.
    let held = try (0..<4).map { _ in try balancer.hold() }
    #expect(held.map { $0.endpoint! } == ["a", "a", "a", "b"])
  }

  @Test("weights divide the cost: weight 3 against 1 takes 3/4 of held requests")
  func weights() throws {
    let clock = ManualBalancerClock()
    let balancer = P2CBalancer<String>.forTesting(clock: clock)
    balancer.insert("heavy", weight: 3)
    balancer.insert("light", weight: 1)
    let held = try (0..<400).map { _ in try balancer.hold() }
    let heavy = held.filter { $0.endpoint == "heavy" }.count
    #expect((299...301).contains(heavy))
  }

  @Test("only weight ratios matter: 30000:10000 picks exactly like 3:1")
  func weightScale() throws {
    func picks(_ heavyWeight: UInt32, _ lightWeight: UInt32) throws -> [String] {
      let clock = ManualBalancerClock()
      let balancer = P2CBalancer<String>.forTesting(clock: clock, seed: 99)
      balancer.insert("heavy", weight: heavyWeight)
      balancer.insert("light", weight: lightWeight)
      return try (0..<200).map { _ in try balancer.hold().endpoint! }
    }
    #expect(try picks(30_000, 10_000) == picks(3, 1))
    #expect(try picks(30_000, 10_000) != picks(1, 1))
  }

  @Test("a weight-0 endpoint is a last resort")
  func zeroWeight() throws {
    let clock = ManualBalancerClock()
    let balancer = P2CBalancer<String>.forTesting(clock: clock)
    balancer.insert("zero", weight: 0)
    balancer.insert("one", weight: 1)
    let held = try (0..<50).map { _ in try balancer.hold() }
    #expect(held.allSatisfy { $0.endpoint == "one" })
    balancer.remove("one")
    let lastResort = try balancer.pick().endpoint
    #expect(lastResort == "zero")
  }

  @Test("P2C spreads requests over all endpoints and prefers the less loaded")
  func spreads() throws {
    let clock = ManualBalancerClock()
    let balancer = P2CBalancer<String>.forTesting((0..<10).map { "e\($0)" }, clock: clock)
    let held = try (0..<100).map { _ in try balancer.hold() }
    let counts = Dictionary(grouping: held, by: { $0.endpoint! }).mapValues(\.count)
    #expect(counts.count == 10)
    // With equal estimates P2C keeps pending counts close: never more than a few apart.
    #expect(counts.values.max()! - counts.values.min()! <= 4)
  }

  @Test("the same seed gives the same picks; another seed other picks")
  func seeded() throws {
    func picks(seed: UInt64) throws -> [String] {
      let clock = ManualBalancerClock()
      let balancer = P2CBalancer<String>.forTesting((0..<10).map { "e\($0)" }, clock: clock, seed: seed)
      return try (0..<50).map { _ in try balancer.request(.success, latency: .milliseconds(1), clock: clock) }
    }
    #expect(try picks(seed: 1) == picks(seed: 1))
    #expect(try picks(seed: 1) != picks(seed: 2))
  }

  @Test("a slow endpoint's estimate rises at once and its share of traffic collapses")
  func slowEndpointAvoided() throws {
    let clock = ManualBalancerClock()
    let balancer = P2CBalancer<String>.forTesting((0..<10).map { "e\($0)" }, clock: clock)
    var slowPicks = 0
    for _ in 0..<2_000 {
      let ticket = try balancer.pick()
      let slow = ticket.endpoint == "e9"
      clock.advance(by: slow ? .milliseconds(100) : .milliseconds(10))
      ticket.succeed()
      if slow {
        slowPicks += 1
        // The peak: one slow response sets the estimate to its RTT at once.
        #expect(balancer.snapshot(of: "e9")?.rttEstimate == .milliseconds(100))
      }
    }
    // Uniform choice would send it about 200; P2C only re-tries it when its estimate decayed.
    #expect(slowPicks >= 1)
    #expect(slowPicks < 20)
  }
}

@Suite("Tickets")
struct TicketTests {
  @Test("completing a ticket releases its pending count and records the RTT")
  func completeReleases() throws {
    let clock = ManualBalancerClock()
    let balancer = P2CBalancer<String>.forTesting(["a"], clock: clock)
    let ticket = try balancer.pick()
    #expect(balancer.stats.pendingRequests == 1)
    #expect(balancer.snapshot(of: "a")?.pending == 1)
    clock.advance(by: .milliseconds(70))
    ticket.succeed()
    #expect(balancer.stats.pendingRequests == 0)
    #expect(balancer.snapshot(of: "a")?.rttEstimate == .milliseconds(70))
  }

  @Test("a failure also records the RTT, as in tower")
  func failureRecordsRTT() throws {
    let clock = ManualBalancerClock()
    let balancer = P2CBalancer<String>.forTesting(["a"], clock: clock)
    try balancer.request(.failure, latency: .milliseconds(45), clock: clock)
    #expect(balancer.snapshot(of: "a")?.rttEstimate == .milliseconds(45))
    #expect(balancer.snapshot(of: "a")?.consecutiveFailures == 1)
  }

  @Test("a ticket dropped without completing releases its pending count as a cancellation")
  func dropReleases() throws {
    let clock = ManualBalancerClock()
    let balancer = P2CBalancer<String>.forTesting(["a"], clock: clock)
    do {
      let ticket = try balancer.pick()
      let endpoint = ticket.endpoint
      #expect(endpoint == "a")
      #expect(balancer.stats.pendingRequests == 1)
      clock.advance(by: .milliseconds(5))
    }
    #expect(balancer.stats.pendingRequests == 0)
    // Cancelled after 5 ms: no lower estimate, no failure.
    #expect(balancer.snapshot(of: "a")?.rttEstimate == .milliseconds(30))
    #expect(balancer.snapshot(of: "a")?.consecutiveFailures == 0)
  }

  @Test("a request cancelled after longer than the estimate raises it")
  func slowCancellationRaises() throws {
    let clock = ManualBalancerClock()
    let balancer = P2CBalancer<String>.forTesting(["a"], clock: clock)
    try balancer.request(.cancelled, latency: .milliseconds(300), clock: clock)
    #expect(balancer.snapshot(of: "a")?.rttEstimate == .milliseconds(300))
  }

  @Test("a stored ticket taken twice completes once: other requests stay counted")
  func takeTwice() throws {
    let clock = ManualBalancerClock()
    let balancer = P2CBalancer<String>.forTesting(["a"], clock: clock)
    let other = try balancer.hold()
    let stored = try balancer.hold()
    stored.ticket.take()?.succeed()
    stored.ticket.take()?.succeed()
    stored.ticket.take()?.fail()
    #expect(balancer.stats.pendingRequests == 1)
    #expect(balancer.snapshot(of: "a")?.consecutiveFailures == 0)
    other.ticket = nil
    #expect(balancer.stats.pendingRequests == 0)
  }

  @Test("withRequest: returning is a success and releases the pending count")
  func withRequestSuccess() async throws {
    let clock = ManualBalancerClock()
    let balancer = P2CBalancer<String>.forTesting(["a"], clock: clock)
    let value = try await balancer.withRequest { endpoint in
      #expect(balancer.stats.pendingRequests == 1)
      clock.advance(by: .milliseconds(40))
      return endpoint + "!"
    }
    #expect(value == "a!")
    #expect(balancer.stats.pendingRequests == 0)
    #expect(balancer.snapshot(of: "a")?.rttEstimate == .milliseconds(40))
  }

  struct Boom: Error {}

  @Test("withRequest: an error is a failure, rethrown, and releases the pending count")
  func withRequestFailure() async throws {
    let balancer = P2CBalancer<String>.forTesting(["a"], clock: ManualBalancerClock())
    await #expect(throws: Boom.self) {
      try await balancer.withRequest { _ in throw Boom() }
    }
    #expect(balancer.stats.pendingRequests == 0)
    #expect(balancer.snapshot(of: "a")?.consecutiveFailures == 1)
  }

  @Test("withRequest: CancellationError is a cancellation, not a failure")
  func withRequestCancellationError() async throws {
    let balancer = P2CBalancer<String>.forTesting(["a"], clock: ManualBalancerClock())
    await #expect(throws: CancellationError.self) {
      try await balancer.withRequest { _ in throw CancellationError() }
    }
    #expect(balancer.stats.pendingRequests == 0)
    #expect(balancer.snapshot(of: "a")?.consecutiveFailures == 0)
  }

  @Test("withRequest: cancelling the task during the request releases the pending count")
  func withRequestTaskCancelled() async throws {
    let balancer = P2CBalancer<String>.forTesting(["a"], clock: ManualBalancerClock())
    let (started, startedContinuation) = AsyncStream<Void>.makeStream()
    let task = Task {
      try await balancer.withRequest { _ in
        startedContinuation.yield()
        // Suspends until the task is cancelled (a request that never answers).
        let (never, keepOpen) = AsyncStream<Void>.makeStream()
        for await _ in never {}
        withExtendedLifetime(keepOpen) {}
        try Task.checkCancellation()
      }
    }
    var iterator = started.makeAsyncIterator()
    _ = await iterator.next()
    #expect(balancer.stats.pendingRequests == 1)
    task.cancel()
    await #expect(throws: CancellationError.self) { try await task.value }
    #expect(balancer.stats.pendingRequests == 0)
    #expect(balancer.snapshot(of: "a")?.consecutiveFailures == 0)
  }

  @Test("withRequest with no endpoints throws noEndpoints without running the body")
  func withRequestNoEndpoints() async throws {
    let balancer = P2CBalancer<String>.forTesting(clock: ManualBalancerClock())
    await #expect(throws: BalancerError.noEndpoints()) {
      try await balancer.withRequest { _ in Issue.record("body ran") }
    }
  }

  @Test("the system clock moves forward")
  func systemClock() {
    let clock = SystemBalancerClock()
    let first = clock.nanoseconds
    var later = clock.nanoseconds
    // Spins at most until the clock ticks once (nanosecond resolution: immediately).
    while later == first { later = clock.nanoseconds }
    #expect(later > first)
  }
}
