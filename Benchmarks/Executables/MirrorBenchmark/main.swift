// Mirror benchmark: time for exported services to be mirrored, and the mirror controller's memory.
//
//   swift run --package-path Benchmarks -c release MirrorBenchmark [services=1000]
//
// Two embedded clusters (east, west) in this process. West exports `services` Services, each with a
// ready Endpoints. Measured:
//   1. initial sync: a Link supervisor starts in east with everything already exported; time until every
//      mirror Service and its Endpoints exist in east;
//   2. live export: `services` more are exported on west while it runs; time until they are all mirrored;
//   3. the controller's memory: when the mesh-mirror executable sits beside this one (same build), it runs
//      as its own process against east and its VmRSS is read from /proc/<pid>/status after it has synced
//      the same set; otherwise the in-process VmRSS growth while the in-process controller synced.
// Prints numbers only (no assertions). Every wait has a deadline.
import Foundation
import Logging
import MeshKube
import MeshKubeLocal
import MeshMulticluster
import ServiceLifecycle

let arguments = CommandLine.arguments.dropFirst().compactMap { Int($0) }
let serviceCount = arguments.first ?? 1000
let deadline = Duration.seconds(600)

struct BenchmarkTimeout: Error, CustomStringConvertible {
  var what: String
  var description: String { "benchmark timed out waiting for \(what)" }
}

func vmRSSKiB(pid: String = "self") -> Int {
  guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return -1 }
  for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
    return Int(line.split(separator: " ").dropFirst().first ?? "") ?? -1
  }
  return -1
}

func seconds(_ d: Duration) -> String {
  String(format: "%.3f s", Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18)
}

/// How many mirror Services and Endpoints of west exist in `state` (raw lists: no decoding).
func mirrored(_ state: LocalKubeState) -> (services: Int, endpoints: Int) {
  let selector = MirrorMetadata.mirrorSelector(cluster: "west")
  let services = (try? state.list(resource: "services", labelSelector: selector).items.count) ?? 0
  let endpoints = (try? state.list(resource: "endpoints", labelSelector: selector).items.count) ?? 0
  return (services, endpoints)
}

func waitUntilMirrored(_ state: LocalKubeState, _ count: Int, what: String) async throws -> Duration {
  let clock = ContinuousClock()
  let start = clock.now
  while true {
    let m = mirrored(state)
    if m.services >= count && m.endpoints >= count { return clock.now - start }
    if clock.now - start > deadline { throw BenchmarkTimeout(what: "\(what) (\(m.services)/\(count) services, \(m.endpoints) endpoints)") }
    try await Task.sleep(for: .milliseconds(20))
  }
}

func export(_ state: LocalKubeState, from: Int, count: Int) throws {
  for i in from..<(from + count) {
    let name = "svc-\(i)"
    _ = try state.create(
      KubeService(
        metadata: ObjectMeta(name: name, namespace: "default", labels: ["app": name, MirrorMetadata.exportedLabel: "true"]),
        spec: .init(selector: ["app": name], ports: [.init(name: "http", port: 8080)])))
    _ = try state.create(
      Endpoints(
        metadata: ObjectMeta(name: name, namespace: "default"),
        subsets: [.init(addresses: [.init(ip: "10.1.\(i / 250 % 250).\(i % 250 + 1)")], ports: [.init(name: "http", port: 8080)])]))
  }
}

func link(_ east: LocalKubeState, westKubeconfig: String) throws {
  _ = try east.create(Namespace(metadata: ObjectMeta(name: MirrorMetadata.multiclusterNamespace)))
  _ = try east.create(
    Secret(
      metadata: ObjectMeta(name: "cluster-credentials-west", namespace: MirrorMetadata.multiclusterNamespace),
      data: [MirrorMetadata.kubeconfigKey: Data(westKubeconfig.utf8)]))
  _ = try east.create(
    Link(
      metadata: ObjectMeta(name: "west", namespace: MirrorMetadata.multiclusterNamespace),
      spec: .init(
        targetClusterName: "west", clusterCredentialsSecret: "cluster-credentials-west", gatewayAddresses: ["192.0.2.10"],
        gatewayPort: 4143, selector: MirrorMetadata.defaultSelector)))
}

var logger = Logger(label: "bench")
logger.logLevel = .warning
let history = LocalKubeState.Configuration.defaults { $0.historyLimit = max(10_000, serviceCount * 8) }
let east = LocalKubeState(configuration: history)
let west = LocalKubeState(configuration: history)
try export(west, from: 0, count: serviceCount)
let eastServer = LocalKubeAPIServer(state: east, logger: logger)
let westServer = LocalKubeAPIServer(state: west, logger: logger)

do {
  try await withThrowingTaskGroup(of: Void.self) { group in
    group.addTask { try await eastServer.run() }
    group.addTask { try await westServer.run() }
    try link(east, westKubeconfig: try await westServer.kubeconfigYAML())
    let eastKubeconfig = try await eastServer.kubeconfigYAML()
    let client = try KubeClient(config: try await eastServer.clientConfig(), logger: logger)
    do {
      let rssBefore = vmRSSKiB()
      let supervisor = LinkSupervisor(
        localClient: client, tls: nil, metrics: MirrorMetrics(),
        configuration: .defaults { $0.mirror.endpointsAPI = .endpoints }, logger: logger)
      let (initial, live, rssSynced) = try await withThrowingTaskGroup(of: Void.self) { controller in
        controller.addTask { try await supervisor.run() }
        let initial = try await waitUntilMirrored(east, serviceCount, what: "initial sync")
        let rssSynced = vmRSSKiB()
        try export(west, from: serviceCount, count: serviceCount)
        let live = try await waitUntilMirrored(east, 2 * serviceCount, what: "live export")
        // Stopping the controller deletes nothing.
        controller.cancelAll()
        return (initial, live, rssSynced)
      }
      let rate = Double(serviceCount) / max(0.001, Double(initial.components.seconds) + Double(initial.components.attoseconds) / 1e18)
      print("services exported:              \(serviceCount) (+\(serviceCount) live)")
      print("initial sync (\(serviceCount) mirrors):     \(seconds(initial))  (\(Int(rate)) mirrors/s)")
      print("live export (\(serviceCount) more):      \(seconds(live))")
      print("in-process VmRSS growth at initial sync (controller): \(rssSynced - rssBefore) KiB (\(rssBefore) -> \(rssSynced))")

      // The controller alone: the mesh-mirror executable beside this one takes over the same Link.
      let binary = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        .appendingPathComponent("mesh-mirror").path
      if FileManager.default.isExecutableFile(atPath: binary) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("mirror-bench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let kubeconfig = directory.appendingPathComponent("east.kubeconfig").path
        try LocalKubeAPIServer.writeSecret(eastKubeconfig, to: kubeconfig)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["--kubeconfig", kubeconfig, "--admin", "127.0.0.1:0", "--log-level", "warning"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        let clock = ContinuousClock()
        let started = clock.now
        try process.run()
        defer {
          process.terminate()
          process.waitUntilExit()
        }
        // Synced once a change made now is mirrored: its caches then hold every object.
        try export(west, from: 2 * serviceCount, count: 1)
        _ = try await waitUntilMirrored(east, 2 * serviceCount + 1, what: "mesh-mirror executable")
        let takeover = clock.now - started
        try await Task.sleep(for: .seconds(1))
        print("mesh-mirror executable: took over \(2 * serviceCount + 1) mirrors in \(seconds(takeover)) (start, list, repair with no writes but one)")
        print("mesh-mirror executable VmRSS:   \(vmRSSKiB(pid: String(process.processIdentifier))) KiB")
      } else {
        print("mesh-mirror executable not found beside the benchmark; only the in-process figure is shown")
      }
    } catch {
      try? await client.shutdown()
      throw error
    }
    try? await client.shutdown()
    eastServer.stop()
    westServer.stop()
    group.cancelAll()
  }
} catch {
  print("benchmark failed: \(error)")
  exit(1)
}
