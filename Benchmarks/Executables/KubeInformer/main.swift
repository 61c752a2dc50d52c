// KubeInformer benchmark: list+watch of many Services through the embedded API server.
//
//   swift run --package-path Benchmarks -c release KubeInformerBenchmark [services] [updates]
//
// Prints time to sync, resident memory (VmRSS from /proc/self/status) before and after, and
// events per second through an informer. Bounded: fixed counts, and every wait has a deadline.
import Foundation
import Logging
import MeshKube
import MeshKubeLocal

let arguments = CommandLine.arguments
let serviceCount = arguments.count > 1 ? Int(arguments[1]) ?? 10_000 : 10_000
let updateCount = arguments.count > 2 ? Int(arguments[2]) ?? 20_000 : 20_000

func residentKiB() -> Int {
  guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return -1 }
  for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
    return Int(line.split(separator: " ").dropFirst().first ?? "") ?? -1
  }
  return -1
}

struct BenchmarkTimeout: Error, CustomStringConvertible {
  var what: String
  var description: String { "benchmark timed out waiting for \(what)" }
}

func waitFor(_ what: String, timeout: Duration = .seconds(300), _ condition: @Sendable () -> Bool) async throws {
  let deadline = ContinuousClock.now + timeout
  while !condition() {
    if ContinuousClock.now > deadline { throw BenchmarkTimeout(what: what) }
    try await Task.sleep(for: .milliseconds(5))
  }
}

var logger = Logger(label: "bench")
logger.logLevel = .warning
let state = LocalKubeState(configuration: .defaults { $0.historyLimit = max(10_000, updateCount + serviceCount) })
let rssStart = residentKiB()
for i in 0..<serviceCount {
  let svc = KubeService(metadata: ObjectMeta(name: "svc-\(i)", namespace: "ns-\(i % 50)", labels: ["app": "app-\(i % 100)"]),
                    spec: .init(selector: ["app": "app-\(i % 100)"], ports: [.init(name: "http", port: 80)]))
  _ = try state.create(svc)
}
let rssLoaded = residentKiB()
let server = LocalKubeAPIServer(state: state, logger: logger)

try await withThrowingTaskGroup(of: Void.self) { group in
  group.addTask { try await server.run() }
  let client = try KubeClient(config: try await server.clientConfig(), logger: logger)
  let informer = Informer<KubeService>(client: client, configuration: .defaults { $0.pageSize = 500 }, logger: logger)
  let events = informer.events()
  let clock = ContinuousClock()
  let start = clock.now
  group.addTask { try await informer.run() }
  group.addTask { for await _ in events {} }
  try await waitFor("sync") { informer.store.hasSynced && informer.store.count == serviceCount }
  let syncTime = clock.now - start
  let rssSynced = residentKiB()

  let deliveredBefore = informer.statistics.eventsDelivered
  let updateStart = clock.now
  for i in 0..<updateCount {
    let n = i % serviceCount
    _ = try state.patch(resource: "services", namespace: "ns-\(n % 50)", name: "svc-\(n)",
                        patch: ["metadata": ["labels": ["rev": .string(String(i))]]])
  }
  try await waitFor("\(updateCount) events") { informer.statistics.eventsDelivered - deliveredBefore >= updateCount }
  let updateTime = clock.now - updateStart
  let seconds = Double(updateTime.components.seconds) + Double(updateTime.components.attoseconds) / 1e18

  print("services:            \(serviceCount)")
  print("list+watch sync:     \(syncTime)")
  print("VmRSS start/loaded/synced: \(rssStart) / \(rssLoaded) / \(rssSynced) KiB")
  print("updates:             \(updateCount) in \(updateTime)")
  print("events/s (informer): \(Int(Double(updateCount) / seconds))")

  server.stop()
  group.cancelAll()
  try await client.shutdown()
}
