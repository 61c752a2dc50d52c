@testable import MeshBalancer
import Testing

/// A tiny deterministic generator for the tests' own choices (independent of the balancer's).
struct TestRandom: RandomNumberGenerator {
  var state: UInt64
  mutating func next() -> UInt64 {
    self.state &+= 0x9E37_79B9_7F4A_7C15
    var z = self.state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}

@Suite("Pending counts never leak")
struct PropertyTests {
  static let outcomes: [RequestOutcome] = [.success, .failure, .cancelled]

  @Test("random pick / complete / drop / add / remove / replace / time sequences keep counts consistent and end at zero", arguments: 0..<100)
  func randomSequences(seed: UInt64) throws {
    var random = TestRandom(state: seed)
    let clock = ManualBalancerClock()
    let balancer = P2CBalancer<String>.forTesting(["e0", "e1", "e2"], clock: clock, seed: seed) {
      $0.failureAccrual.consecutiveFailures = 2
      $0.failureAccrual.backoff.minimum = .milliseconds(50)
    }
    let universe: [String] = ["e0", "e1", "e2", "e3", "e4", "e5"]
    var held: [HeldTicket] = []

    for step in 0..<300 {
      switch Int.random(in: 0..<100, using: &random) {
      case 0..<40:
        do {
          held.append(try balancer.hold())
        } catch {
          #expect(balancer.stats.availableEndpoints == 0, "step \(step): pick failed with \(error)")
        }
      case 40..<65 where !held.isEmpty:
        let ticket = held.remove(at: Int.random(in: 0..<held.count, using: &random))
        let outcome: RequestOutcome = Self.outcomes.randomElement(using: &random)!
        ticket.ticket.take()?.complete(outcome)
      case 65..<72 where !held.isEmpty:
        // Dropped without completing.
        held.remove(at: Int.random(in: 0..<held.count, using: &random)).ticket = nil
      case 72..<82:
        let endpoint: String = universe.randomElement(using: &random)!
        let weight: UInt32 = UInt32.random(in: 0...3, using: &random)
        balancer.insert(endpoint, weight: weight)
      case 82..<90:
        let endpoint: String = universe.randomElement(using: &random)!
        balancer.remove(endpoint)
      case 90..<93:
        var subset: [String] = []
        for endpoint in universe where Bool.random(using: &random) {
          subset.append(endpoint)
        }
        balancer.replaceEndpoints(with: subset)
      default:
        clock.advance(by: .milliseconds(Int64.random(in: 0...40, using: &random)))
      }
      let stats = balancer.stats
      #expect(stats.pendingRequests == held.count, "step \(step)")
      let pendingSum: Int = balancer.endpointSnapshots().map(\.pending).reduce(0, +)
      #expect(pendingSum == held.count, "step \(step)")
      for ticket in held {
        // Every endpoint with a request in flight is still known (active or draining).
        #expect(balancer.snapshot(of: ticket.endpoint!) != nil, "step \(step)")
      }
      #expect(balancer.invariantViolations() == [], "step \(step)")
    }

    for ticket in held.shuffled(using: &random) {
      if Bool.random(using: &random) {
        let outcome: RequestOutcome = Self.outcomes.randomElement(using: &random)!
        ticket.ticket.take()?.complete(outcome)
      } else {
        ticket.ticket = nil
      }
    }
    let stats = balancer.stats
    #expect(stats.pendingRequests == 0)
    #expect(stats.drainingEndpoints == 0)
    let snapshots: [EndpointSnapshot<String>] = balancer.endpointSnapshots()
    #expect(snapshots.allSatisfy { $0.pending == 0 })
    #expect(!snapshots.contains { $0.status == .draining })
    #expect(balancer.invariantViolations() == [])
  }

  /// One worker of the concurrent test: 2 000 random requests. Returns how many it completed.
  static func worker(_ balancer: P2CBalancer<String>, seed: UInt64) async -> Int {
    var random = TestRandom(state: seed)
    var completed = 0
    for _ in 0..<2_000 {
      let action = Int.random(in: 0..<4, using: &random)
      let outcome: RequestOutcome = Self.outcomes.randomElement(using: &random)!
      let throwsCancellation = Bool.random(using: &random)
      switch action {
      case 0: await Self.scopedRequest(balancer, throwsCancellation: throwsCancellation)
      case 1: completed += Self.completeAtOnce(balancer, outcome) ? 1 : 0
      case 2: Self.pickAndDrop(balancer)
      default: completed += await Self.failAfterYield(balancer) ? 1 : 0
      }
    }
    return completed
  }

  /// Scoped: errors and cancellations are recorded by withRequest.
  static func scopedRequest(_ balancer: P2CBalancer<String>, throwsCancellation: Bool) async {
    do {
      try await balancer.withRequest { _ in
        if throwsCancellation { throw CancellationError() }
      }
    } catch {}
  }

  static func completeAtOnce(_ balancer: P2CBalancer<String>, _ outcome: RequestOutcome) -> Bool {
    guard let ticket = try? balancer.pick() else { return false }
    ticket.complete(outcome)
    return true
  }

  static func pickAndDrop(_ balancer: P2CBalancer<String>) {
    if let ticket = try? balancer.pick() {
      _ = ticket.endpoint
    }
  }

  static func failAfterYield(_ balancer: P2CBalancer<String>) async -> Bool {
    guard let ticket = try? balancer.pick() else { return false }
    await Task.yield()
    ticket.fail()
    return true
  }

  /// Replaces the endpoint set 500 times with random subsets, then restores e0...e7.
  static func churn(_ balancer: P2CBalancer<String>) async {
    var random = TestRandom(state: 99)
    for _ in 0..<500 {
      var endpoints: [String] = []
      for number in 0..<10 where Int.random(in: 0..<4, using: &random) != 0 {
        endpoints.append("e\(number)")
      }
      balancer.replaceEndpoints(with: endpoints)
      await Task.yield()
    }
    balancer.replaceEndpoints(with: ["e0", "e1", "e2", "e3", "e4", "e5", "e6", "e7"])
  }

  @Test("concurrent tasks picking, completing, cancelling and changing the set leave nothing pending")
  func concurrent() async throws {
    let configuration = BalancerConfiguration.defaults {
      $0.seed = 3
      $0.failureAccrual.consecutiveFailures = 3
      $0.failureAccrual.backoff.minimum = .microseconds(100)
      $0.failureAccrual.backoff.maximum = .milliseconds(1)
    }
    let balancer = P2CBalancer<String>(
      endpoints: ["e0", "e1", "e2", "e3", "e4", "e5", "e6", "e7"],
      configuration: configuration
    )
    let completed = await withTaskGroup(of: Int.self) { group in
      for worker in 0..<8 {
        group.addTask { await Self.worker(balancer, seed: UInt64(worker)) }
      }
      group.addTask {
        await Self.churn(balancer)
        return 0
      }
      var total = 0
      for await count in group { total += count }
      return total
    }
    #expect(completed > 0)
    let stats = balancer.stats
    #expect(stats.pendingRequests == 0)
    #expect(stats.drainingEndpoints == 0)
    #expect(stats.endpoints == 8)
    #expect(stats.picks > 8_000)
    let snapshots: [EndpointSnapshot<String>] = balancer.endpointSnapshots()
    #expect(snapshots.allSatisfy { $0.pending == 0 })
    #expect(balancer.invariantViolations() == [])
  }
}
