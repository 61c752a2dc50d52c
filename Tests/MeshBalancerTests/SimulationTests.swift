import MeshBalancer
import Testing

@Suite("Balancer simulation: one endpoint of ten is 10x slower")
struct SimulationTests {
  @Test("P2C over Peak-EWMA has at least 2x better p99 than round robin and random, and avoids the slow endpoint")
  func p2cBeatsRoundRobinAndRandom() throws {
    let results = BalancerSimulation.compare(.defaults)
    print(BalancerSimulation.table(results))
    let p2c = try #require(results.first { $0.strategy == .p2cPeakEWMA })
    let roundRobin = try #require(results.first { $0.strategy == .roundRobin })
    let random = try #require(results.first { $0.strategy == .random })

    #expect(p2c.p99 * 2 <= roundRobin.p99)
    #expect(p2c.p99 * 2 <= random.p99)
    // Round robin and random send about 1/10 of the requests to the slow endpoint.
    #expect(roundRobin.slowShare > 0.09 && roundRobin.slowShare < 0.11)
    #expect(random.slowShare > 0.08 && random.slowShare < 0.12)
    #expect(p2c.slowShare < 0.02)
    #expect(p2c.requests == 30_000)
  }
}
