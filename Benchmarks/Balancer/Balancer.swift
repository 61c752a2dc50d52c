// MeshBalancer benchmarks (package-benchmark): `swift package --package-path Benchmarks benchmark --target BalancerBenchmarks`.
//
// - pick+complete with 2, 10, 100 and 1000 endpoints: wall clock, throughput and mallocs per
//   request (the pick path must not allocate: expect 0).
// - the balancer simulation (10 endpoints, one 10x slower): p50 / p99 / max latency and the slow
//   endpoint's share for P2C over Peak-EWMA, round robin and random, as custom metrics, with
//   each strategy's p99 as a percentage of P2C's. (package-benchmark swallows a benchmark's
//   stdout; `swift test --filter SimulationTests` prints the same table, or call
//   `BalancerSimulation.table(BalancerSimulation.compare())`.)

import Benchmark
import MeshBalancer

let benchmarks: @Sendable () -> Void = {
  for endpointCount in [2, 10, 100, 1000] {
    Benchmark(
      "pick+complete/\(endpointCount) endpoints",
      configuration: .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        scalingFactor: .kilo,
        maxDuration: .seconds(2)
      )
    ) { benchmark in
      // Setup outside the measurement: the endpoint set and a warm balancer.
      let balancer = P2CBalancer<Int>(
        endpoints: 0..<endpointCount,
        configuration: .defaults { $0.seed = 1 }
      )
      for _ in 0..<1_000 {
        try balancer.pick().succeed()
      }
      benchmark.startMeasurement()
      for _ in benchmark.scaledIterations {
        let ticket = try balancer.pick()
        blackHole(ticket.endpoint)
        ticket.succeed()
      }
      benchmark.stopMeasurement()
    }
  }

  for strategy in BalancerSimulation.Strategy.allCases {
    Benchmark(
      "simulation/\(strategy)",
      configuration: .init(
        metrics: [
          .custom("p50 (us)", useScalingFactor: false),
          .custom("p99 (us)", useScalingFactor: false),
          .custom("max (us)", useScalingFactor: false),
          .custom("slow share (per 10 000)", useScalingFactor: false),
          .custom("p99 / p2c p99 (%)", useScalingFactor: false),
        ],
        maxIterations: 1
      )
    ) { benchmark in
      // Deterministic (seeded, simulated time): every strategy sees the same workload.
      let results = BalancerSimulation.compare(.defaults)
      guard let result = results.first(where: { $0.strategy == strategy }),
        let p2c = results.first(where: { $0.strategy == .p2cPeakEWMA })
      else { return }
      benchmark.measurement(.custom("p50 (us)", useScalingFactor: false), microseconds(result.p50))
      benchmark.measurement(.custom("p99 (us)", useScalingFactor: false), microseconds(result.p99))
      benchmark.measurement(.custom("max (us)", useScalingFactor: false), microseconds(result.max))
      benchmark.measurement(
        .custom("slow share (per 10 000)", useScalingFactor: false),
        Int((result.slowShare * 10_000).rounded())
      )
      benchmark.measurement(
        .custom("p99 / p2c p99 (%)", useScalingFactor: false),
        microseconds(result.p99) * 100 / max(microseconds(p2c.p99), 1)
      )
    }
  }
}

private func microseconds(_ duration: Duration) -> Int {
  let (seconds, attoseconds) = duration.components
  return Int(seconds) * 1_000_000 + Int(attoseconds / 1_000_000_000_000)
}
