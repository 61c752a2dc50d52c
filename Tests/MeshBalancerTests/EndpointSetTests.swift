@testable import MeshBalancer
import Synchronization
import Testing

@Suite("Endpoint set updates with requests in flight")
struct EndpointSetTests {
  @Test("a removed endpoint takes no new requests; its in-flight request completes and it is gone")
  func removeDrains() throws {
    let clock = ManualBalancerClock()
    let balancer = P2CBalancer<String>.forTesting(["a"], clock: clock)
    let inFlight = try balancer.hold()
    balancer.insert("b")
    #expect(balancer.remove("a"))
    #expect(balancer.snapshot(of: "a")?.status == .draining)
    #expect(balancer.stats.drainingEndpoints == 1)
    #expect(balancer.stats.endpoints == 1)
    for _ in 0..<100 {
      #expect(try balancer.request(.success, clock: clock) == "b")
    }
    clock.advance(by: .milliseconds(3))
    inFlight.ticket.take()?.fail()
    #expect(balancer.snapshot(of: "a") == nil)
    #expect(balancer.stats.drainingEndpoints == 0)
    #expect(balancer.stats.pendingRequests == 0)
    #expect(balancer.invariantViolations() == [])
  }

  @Test("replacing the set while requests are in flight keeps survivors' counts and drains the rest")
  func replaceInFlight() throws {
    let clock = ManualBalancerClock()
    let balancer = P2CBalancer<String>.forTesting(["a", "b", "c"], clock: clock)
    let held = try (0..<9).map { _ in try balancer.hold() }
    let onC = held.filter { $0.endpoint == "c" }.count
    balancer.replaceEndpoints(with: ["c": 1, "d": 2, "e": 1])
    #expect(balancer.stats.endpoints == 3)
    #expect(balancer.stats.drainingEndpoints == 2)
    #expect(balancer.snapshot(of: "c")?.pending == onC)
    #expect(balancer.snapshot(of: "d")?.weight == 2)
    let newPicks = try (0..<30).map { _ in try balancer.request(.success, clock: clock) }
    #expect(Set(newPicks).isSubset(of: ["c", "d", "e"]))
    #expect(balancer.invariantViolations() == [])

    for ticket in held { ticket.ticket.take()?.succeed() }
    #expect(Set(balancer.endpointSnapshots().map(\.endpoint)) == ["c", "d", "e"])
    #expect(balancer.stats.pendingRequests == 0)
    #expect(balancer.stats.availableEndpoints == 3)
    #expect(balancer.invariantViolations() == [])
  }

  @Test("an endpoint added back while draining returns with its in-flight count and estimate")
  func readdWhileDraining() throws {
    let clock = ManualBalancerClock()
    let balancer = P2CBalancer<String>.forTesting(["a"], clock: clock)
    try balancer.request(.success, latency: .milliseconds(80), clock: clock)
    let inFlight = try balancer.hold()
    balancer.remove("a")
    balancer.insert("a", weight: 5)
    let snapshot = try #require(balancer.snapshot(of: "a"))
    #expect(snapshot.status == .available)
    #expect(snapshot.pending == 1)
    #expect(snapshot.weight == 5)
    #expect(snapshot.rttEstimate == .milliseconds(80))
    inFlight.ticket = nil
    #expect(balancer.snapshot(of: "a")?.pending == 0)
    #expect(balancer.stats.endpoints == 1)
    #expect(balancer.invariantViolations() == [])
  }

  @Test("removing every endpoint with requests in flight: picks fail fast, completions are harmless")
  func removeAll() throws {
    let clock = ManualBalancerClock()
    let balancer = P2CBalancer<String>.forTesting(["a", "b"], clock: clock)
    let held = try (0..<4).map { _ in try balancer.hold() }
    balancer.replaceEndpoints(with: [String]())
    #expect(throws: BalancerError.noEndpoints()) { _ = try balancer.pick() }
    held[0].ticket.take()?.succeed()
    held[1].ticket.take()?.fail()
    held[2].ticket.take()?.cancel()
    held[3].ticket = nil
    #expect(balancer.endpointSnapshots().isEmpty)
    #expect(balancer.stats == BalancerStats(picks: 4, failedPicks: 1))
    #expect(balancer.invariantViolations() == [])
  }

  @Test("a freed slot is reused by a new endpoint, which starts fresh")
  func slotReuse() throws {
    let clock = ManualBalancerClock()
    let balancer = P2CBalancer<String>.forTesting(["a"], clock: clock)
    try balancer.request(.failure, latency: .milliseconds(500), clock: clock)
    balancer.remove("a")
    balancer.insert("z")
    let snapshot = try #require(balancer.snapshot(of: "z"))
    #expect(snapshot.rttEstimate == .milliseconds(30))
    #expect(snapshot.consecutiveFailures == 0)
    let slotCount = balancer.state.withLock { state in state.slots.count }
    #expect(slotCount == 1)
    #expect(balancer.invariantViolations() == [])
  }

  @Test("removing an unknown or already removed endpoint reports false")
  func removeUnknown() throws {
    let balancer = P2CBalancer<String>.forTesting(["a"], clock: ManualBalancerClock())
    let held = try balancer.hold()
    #expect(!balancer.remove("x"))
    #expect(balancer.remove("a"))
    #expect(!balancer.remove("a"))
    held.ticket = nil
    #expect(!balancer.remove("a"))
  }

  @Test("an ejected endpoint removed while draining and added back keeps its back-off")
  func ejectedReadded() throws {
    let clock = ManualBalancerClock()
    let balancer = P2CBalancer<String>.forTesting(["a"], clock: clock) {
      $0.failureAccrual.consecutiveFailures = 1
      $0.failureAccrual.backoff.jitter = 0
    }
    let failing = try balancer.hold()
    let draining = try balancer.hold()
    failing.ticket.take()?.fail()
    balancer.remove("a")
    #expect(balancer.snapshot(of: "a")?.status == .draining)
    balancer.insert("a")
    #expect(balancer.snapshot(of: "a")?.status == .backingOff(untilNanoseconds: 1_000_000_000))
    clock.advance(by: .seconds(1))
    #expect(balancer.snapshot(of: "a")?.status == .probeReady)
    draining.ticket = nil
    #expect(balancer.invariantViolations() == [])
  }

  @Test("an endpoint removed with nothing in flight is forgotten: added back, it starts fresh")
  func removedIdleForgotten() throws {
    let clock = ManualBalancerClock()
    let balancer = P2CBalancer<String>.forTesting(["a"], clock: clock) {
      $0.failureAccrual.consecutiveFailures = 1
    }
    try balancer.request(.failure, clock: clock)
    balancer.remove("a")
    balancer.insert("a")
    #expect(balancer.snapshot(of: "a")?.status == .available)
  }
}
