import AsyncHTTPClient
import Foundation
package import Logging
import MeshCore
import MeshDiscovery
import MeshIdentity
import MeshKube
import MeshKubeLocal
package import MeshMulticluster
import MeshAPI
import MeshProxy
import MeshTLS
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import Synchronization

/// What `meshctl demo` does, and how.
package struct DemoOptions: Sendable {
  /// Requests sent through east's client proxy. Default 1,000.
  package var requests = 1000
  /// Percent of `backend` traffic split to `backend-west`. Default 50.
  package var split = 50
  /// Requests in flight at once. Default 8.
  package var concurrency = 8
  /// Stop west's gateway half-way, and shift the split to the live leaf once the probe finds it dead.
  package var failover = false
  /// Stop west's gateway half-way and do nothing about it (to see how the mesh copes on its own).
  package var stopGateway = false
  /// After the load: make backend a federated service in east and west and show local affinity and failover
  /// of a steady stream to `backend-federated` (not with `failover` or `stopGateway`).
  package var federated = false
  /// After the load: a headless `db` (db-0, db-1) in west, reached from east by each pod's name
  /// (`db-0.db-west...`). In-process runtime only.
  package var headless = false
  /// Keep everything running after the report, until interrupted.
  package var keepRunning = false
  /// Where the kubeconfigs and trust anchor go (for `--keep-running`). Default: a temporary directory.
  package var directory: String?
  /// Run each component as its own executable (`meshctl dev kube-api`, `mesh-controller`, `mesh-proxy`,
  /// `mesh-mirror`, `meshctl dev backend`), as in a real deployment, instead of tasks in this process.
  package var processes = false
  /// Where those executables are (default: next to the running executable).
  package var binDirectory: String?
  /// The log level passed to those executables (their logs are `<directory>/<component>.log`).
  package var componentLogLevel = "info"
  package init() {}
}

/// The demo's result, printed as text or JSON.
package struct DemoSummary: Codable, Sendable {
  package var requests: Int
  package var succeeded: Int
  package var failed: Int
  /// Successful responses by the cluster that served them.
  package var byCluster: [String: Int]
  /// Responses on the client proxy that went over mutual TLS, of all responses.
  package var mutualTLSResponses: Int
  package var leaves: [StatRow]
  package var gateways: [GatewayReport]
  package var elapsedSeconds: Double
  /// What happened when west's gateway was stopped (with `--failover` or `--stop-gateway`).
  package var failover: [String]
  /// `meshctl tap` of east's client proxy during the first requests: req, rsp and end lines.
  package var tap: [String]
  /// Every request succeeded, and over mutual TLS.
  package var ok: Bool
  /// How the components ran: `tasks` (in one process) or `processes` (each its own executable).
  package var mode: String
  /// The demo's directory: kubeconfigs, the trust anchor, and with `processes` each component's log.
  package var directory: String
  /// Endpoint objects in both clusters at the end, by kind (`Endpoints`, `EndpointSlice`): the demo writes
  /// EndpointSlices only, as the mirror does, so discovery and mirroring run without any v1 Endpoints.
  package var endpointObjects: [String: Int]
  /// `meshctl multicluster check` of east and of west once linked (before the load): one line per check.
  package var multiclusterCheck: [String]
  /// With `--federated`: what the stream to backend-federated did (empty otherwise).
  package var federated: [String]
  /// With `--headless`: what each pod's name answered (empty otherwise).
  package var headless: [String]
}

/// `meshctl demo`: two clusters (east, west) on this machine, each with an embedded Kubernetes API, its
/// identity and destination services, a gateway, a service mirror linked to the other cluster, and a
/// `backend` behind its inbound proxy; a client in east calls `backend`, split between east and west.
package enum Demo {
  static let namespace = "default"
  static let apex = try! Authority("backend.default.svc.cluster.local:80")

  /// Runs the demo and returns its summary; `report` gets the summary as soon as the load is done (before
  /// `keepRunning` waits for cancellation).
  package static func run(
    _ options: DemoOptions, logger: Logger, say: @escaping @Sendable (String) -> Void,
    report: @escaping @Sendable (DemoSummary) -> Void = { _ in }
  ) async throws -> DemoSummary {
    let started = ContinuousClock.now
    let binDirectory = options.processes ? try DemoProcesses.locate(binDirectory: options.binDirectory) : nil
    let directory = try options.directory ?? makeTemporaryDirectory()
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    let services = ServiceRunner()
    var processes: DemoProcesses?
    let result: Result<DemoSummary, any Error>
    do {
      let runtime: DemoRuntime
      if let binDirectory {
        let spawner = DemoProcesses(binDirectory: binDirectory, directory: directory, logLevel: options.componentLogLevel)
        processes = spawner
        say("components run as processes from \(binDirectory); logs in \(directory)/*.log")
        try await spawner.run("identity-init", "meshctl", ["identity", "init", "--out", "ca"])
        runtime = .processes(spawner)
        say("trust anchor: \(directory)/ca/ca.crt (meshctl identity init; shared by east and west; one issuer per cluster)")
      } else {
        let anchor = try TrustAnchor.makeAnchor(trustDomain: .clusterLocal)
        try PEMFiles.write(PEMFiles.pem([anchor.certificate]), to: "\(directory)/ca.crt")
        runtime = .tasks(anchor: anchor)
        say("trust anchor: \(directory)/ca.crt (shared by east and west; one issuer per cluster)")
      }
      result = .success(
        try await run(
          options, runtime: runtime, directory: directory, services: services, logger: logger, say: say,
          report: report, started: started))
    } catch {
      result = .failure(error)
    }
    services.stopAll()
    if let processes {
      await processes.stopAll()
      say("stopped every component process")
    }
    await services.shutdownClients()
    // A directory the demo made for itself goes away after a good run; after a bad one it holds the evidence.
    if options.directory == nil {
      if case .success(let summary) = result, summary.ok {
        try? FileManager.default.removeItem(atPath: directory)
      } else {
        say("the demo's files\(options.processes ? " and logs" : "") are kept in \(directory)")
      }
    }
    return try result.get()
  }

  static func run(
    _ options: DemoOptions, runtime: DemoRuntime, directory: String, services: ServiceRunner,
    logger: Logger, say: @escaping @Sendable (String) -> Void, report: @Sendable (DemoSummary) -> Void,
    started: ContinuousClock.Instant
  ) async throws -> DemoSummary {
    try await withThrowingTaskGroup(of: Void.self) { group in
      defer { services.stopAll() }
      let east = try await Cluster.start(name: "east", runtime: runtime, directory: directory, in: &group, services, logger)
      let west = try await Cluster.start(name: "west", runtime: runtime, directory: directory, in: &group, services, logger)
      for cluster in [east, west] {
        say(
          "\(cluster.name): kubernetes API \(cluster.apiURL), identity 127.0.0.1:\(cluster.identityPort), "
            + "destination 127.0.0.1:\(cluster.destinationPort), gateway 127.0.0.1:\(cluster.gatewayPorts.inbound) "
            + "(probe :\(cluster.gatewayPorts.admin)), backend via inbound :\(cluster.backendPorts.inbound)")
      }
      // Links both ways, each with its own mirror controller; backend exported in both clusters.
      try await east.link(to: west)
      try await west.link(to: east)
      for cluster in [east, west] { try await cluster.startMirror(in: &group) }
      say("linked east -> west and west -> east; exported backend in both; waiting for mirrors and probes")
      try await east.waitForMirror(of: "backend", from: west)
      try await west.waitForMirror(of: "backend", from: east)
      try await east.waitForGateway(of: west, alive: true)
      try await west.waitForGateway(of: east, alive: true)
      // What `meshctl multicluster check` says of each cluster, now that both are linked.
      var checkLines: [String] = []
      var checksPassed = true
      // The mirrors write their status and heartbeat a moment after the probe: a few tries, 15 s at most.
      let checkDeadline = ContinuousClock.now + .seconds(15)
      repeat {
        checkLines = []
        checksPassed = true
        for cluster in [east, west] {
          let results = await MulticlusterCheck.run(local: cluster.client, logger: logger)
          checksPassed = checksPassed && results.allSatisfy(\.ok)
          checkLines += results.map { "\(cluster.name): \($0.line)" }
        }
        if checksPassed { break }
        try await Task.sleep(for: .milliseconds(250))
      } while ContinuousClock.now < checkDeadline
      say("meshctl multicluster check: \(checksPassed ? "every check passes in east and west" : "some checks fail")")
      if !checksPassed { for line in checkLines { say("  \(line)") } }

      // East's client, and the split of backend between east and west.
      let clientPorts = try await east.startProxy(
        serviceAccount: "web", namespace: namespace, app: 1, gateway: false, tap: true, in: &group)
      try await east.applyProfile()
      try await east.applySplit(westPercent: options.split)
      try await east.waitForSplit(westPercent: options.split)
      say("TrafficSplit backend -> {backend: \(100 - options.split), backend-west: \(options.split)} applied in east")

      // `meshctl tap` on the client proxy, for the first requests of the load.
      let tapped = min(3, options.requests)
      let tap = startTap(runtime: runtime, port: clientPorts.tap ?? 0, requests: tapped)
      defer { tap.cancel() }
      var tapProblem: String?
      do { try await east.waitForTapObserver(serviceAccount: "web") } catch { tapProblem = "tap: \(error)" }

      // The load.
      var results = try await sendLoad(
        options: options, port: clientPorts.outbound, east: east, west: west, say: say)
      let tapLines: [String]
      switch await tap.result {
      case .success(let lines): tapLines = lines
      case .failure(let error):
        tapLines = []
        results.events.append(tapProblem ?? "tap: \(error)")
      }
      var headless: (lines: [String], ok: Bool) = ([], true)
      if options.headless {
        headless = try await headlessPhase(port: clientPorts.outbound, east: east, west: west, in: &group, say: say)
      }
      var federated = FederatedResults(ok: true)
      if options.federated {
        federated = try await federatedPhase(port: clientPorts.outbound, east: east, west: west, say: say)
      }
      var healthy = true
      if case .processes(let processes) = runtime {
        do { try processes.checkAlive() } catch {
          healthy = false
          results.events.append("\(error)")
        }
      }

      let metrics = try await scrape(clientPorts.admin)
      let samples = PrometheusText.parse(metrics)
      let leaves = StatTable.rows(
        samples, direction: "outbound", authority: apex.description, groupBy: "dst_service",
        window: results.elapsed)
      let mutualTLS = StatTable.rows(samples, direction: "outbound", groupBy: "tls")
        .first { $0.name == "true" }?.requests ?? 0
      var endpointObjects = ["Endpoints": 0, "EndpointSlice": 0]
      for cluster in [east, west] {
        endpointObjects["Endpoints", default: 0] += try await cluster.client.list(Endpoints.self).items.count
        endpointObjects["EndpointSlice", default: 0] += try await cluster.client.list(EndpointSlice.self).items.count
      }
      let summary = DemoSummary(
        requests: options.requests, succeeded: results.succeeded, failed: options.requests - results.succeeded,
        byCluster: results.byCluster, mutualTLSResponses: mutualTLS, leaves: leaves,
        gateways: await east.gatewayReports(), elapsedSeconds: (ContinuousClock.now - started).seconds,
        failover: results.events, tap: tapLines,
        ok: healthy && checksPassed && federated.ok && headless.ok && results.succeeded == options.requests
          && mutualTLS >= options.requests,
        mode: options.processes ? "processes" : "tasks", directory: directory, endpointObjects: endpointObjects,
        multiclusterCheck: checkLines, federated: federated.lines, headless: headless.lines)

      report(summary)
      if options.keepRunning {
        var lines = [
          "still running (interrupt to stop):",
          "  kubectl --kubeconfig \(east.kubeconfigPath) get svc,endpointslices,trafficsplits -A",
          "  kubectl --kubeconfig \(west.kubeconfigPath) get svc -A",
          "  curl -H 'Host: backend.default.svc.cluster.local' http://127.0.0.1:\(clientPorts.outbound)/",
          "  meshctl stat ts backend --admin 127.0.0.1:\(clientPorts.admin)",
          "  curl http://127.0.0.1:\(clientPorts.admin)/metrics",
        ]
        if let tap = clientPorts.tap {
          lines.append("  meshctl tap --proxy 127.0.0.1:\(tap) --authority backend.default.svc.cluster.local")
        }
        if let mirror = east.mirrorAdminPort {
          lines.append("  meshctl multicluster gateways --admin 127.0.0.1:\(mirror)")
        }
        lines.append("  meshctl multicluster check --kubeconfig \(east.kubeconfigPath)")
        if case .processes(let processes) = runtime {
          lines.append("processes (logs in \(directory)/NAME.log):")
          for (name, pid) in processes.running.sorted(by: { $0.key < $1.key }) { lines.append("  \(name)  pid \(pid)") }
        }
        say(lines.joined(separator: "\n"))
        while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
      }
      services.stopAll()
      group.cancelAll()
      return summary
    }
  }

  /// Observes the first `requests` requests to `backend` on the client proxy's tap: with `meshctl tap` as a
  /// process, or in this process with the same client. Ends by itself once they ended (bounded at 60 s).
  static func startTap(runtime: DemoRuntime, port: Int, requests: Int) -> Task<[String], any Error> {
    Task { firstRequests(requests, of: try await observeTap(runtime: runtime, port: port, requests: requests)) }
  }

  /// The lines of the first `count` requests seen (a tap stream interleaves the requests in flight).
  static func firstRequests(_ count: Int, of lines: [String]) -> [String] {
    var ids: [Substring] = []
    return lines.filter { line in
      guard let id = line.split(separator: " ").first(where: { $0.hasPrefix("id=") }) else { return false }
      if ids.contains(id) { return true }
      guard ids.count < count else { return false }
      ids.append(id)
      return true
    }
  }

  static func observeTap(runtime: DemoRuntime, port: Int, requests: Int) async throws -> [String] {
    do {
      let authority = "backend.default.svc.cluster.local"
      switch runtime {
      case .processes(let processes):
        try await processes.run(
          "east-tap", "meshctl",
          ["tap", "--proxy", "127.0.0.1:\(port)", "--authority", authority, "--max", "\(requests)"],
          timeout: .seconds(60))
        let text = try String(contentsOfFile: processes.path("east-tap.log"), encoding: .utf8)
        return text.split(separator: "\n").map(String.init)
      case .tasks:
        let match: Swiftmesh_Tap_Match = {
          var match = Swiftmesh_Tap_Match()
          match.authority = authority
          return match
        }()
        let lines = LoadShared.Lines()
        try await withThrowingTaskGroup(of: Void.self) { group in
          group.addTask {
            try await TapClient.observe(
              proxy: try Authority(host: "127.0.0.1", port: port), match: match, maxRequests: UInt32(requests)
            ) { event in lines.value.withLock { $0.append(TapClient.line(event)) } }
          }
          group.addTask {
            try await Task.sleep(for: .seconds(60))
            throw MeshError.unavailable("meshctl tap saw fewer than \(requests) requests in 60 s")
          }
          try await group.next()
          group.cancelAll()
        }
        return lines.value.withLock { $0 }
      }
    }
  }

  struct LoadResults: Sendable {
    var completed = 0
    var succeeded = 0
    var byCluster: [String: Int] = [:]
    var events: [String] = []
    var elapsed: Double = 0
  }

  static func sendLoad(
    options: DemoOptions, port: Int, east: Cluster, west: Cluster, say: @escaping @Sendable (String) -> Void
  ) async throws -> LoadResults {
    let client = HTTPClient(eventLoopGroupProvider: .singleton)
    let shared = LoadShared()
    let total = options.requests
    let started = ContinuousClock.now
    let stopAt = (options.failover || options.stopGateway) ? total / 2 : Int.max
    do {
      try await withThrowingTaskGroup(of: Void.self) { group in
        for _ in 0..<max(1, options.concurrency) {
          group.addTask {
            while true {
              let index = shared.next.add(1, ordering: .relaxed).oldValue
              if index >= total { return }
              if index == stopAt, !shared.stopped.exchange(true, ordering: .relaxed) {
                say("stopping west's gateway after \(index) requests")
                shared.results.withLock { $0.events.append("west's gateway stopped after \(index) requests") }
                await west.stopGateway()
                if options.failover {
                  shared.failover.withLock {
                    $0 = Task {
                      let event = await east.failOver(from: west)
                      say(event)
                      shared.results.withLock { $0.events.append(event) }
                    }
                  }
                } else {
                  shared.failover.withLock {
                    $0 = Task {
                      try? await east.waitForGateway(of: west, alive: false)
                      let event = "west's gateway probed dead; the split still sends \(options.split) % to backend-west"
                      say(event)
                      shared.results.withLock { $0.events.append(event) }
                    }
                  }
                }
              }
              var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/")
              request.headers.add(name: "host", value: "backend.default.svc.cluster.local")
              var cluster: String?
              if let response = try? await client.execute(request, timeout: .seconds(10)), response.status == .ok,
                let body = try? await response.body.collect(upTo: 4096)
              {
                let text = String(buffer: body)
                cluster = text.split(separator: " ").first { $0.hasPrefix("cluster=") }.map { String($0.dropFirst(8)) }
              }
              let done = shared.results.withLock { results -> Int in
                results.completed += 1
                if let cluster {
                  results.succeeded += 1
                  results.byCluster[cluster, default: 0] += 1
                }
                return results.completed
              }
              if done % max(1, total / 10) == 0 || done == total {
                let snapshot = shared.results.withLock { $0 }
                say(
                  "progress: \(done)/\(total) done, \(snapshot.succeeded) ok: "
                    + snapshot.byCluster.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
              }
            }
          }
        }
        try await group.waitForAll()
      }
    } catch {
      try? await client.shutdown()
      throw error
    }
    try await client.shutdown()
    // The probe needs a few periods to call the gateway dead: wait for that part of the story to finish.
    if let pending = shared.failover.withLock({ $0 }) { await pending.value }
    var results = shared.results.withLock { $0 }
    results.elapsed = (ContinuousClock.now - started).seconds
    return results
  }

  static func scrape(_ adminPort: Int) async throws -> String {
    let client = HTTPClient(eventLoopGroupProvider: .singleton)
    do {
      let response = try await client.execute(
        HTTPClientRequest(url: "http://127.0.0.1:\(adminPort)/metrics"), timeout: .seconds(10))
      let text = String(buffer: try await response.body.collect(upTo: 16 << 20))
      try await client.shutdown()
      return text
    } catch {
      try? await client.shutdown()
      throw error
    }
  }

  static func makeTemporaryDirectory() throws -> String {
    let path = NSTemporaryDirectory() + "swiftmesh-demo-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
  }
}

/// The load loop's shared state.
final class LoadShared: Sendable {
  /// Lines collected by concurrent tasks.
  final class Lines: Sendable { let value = Mutex<[String]>([]) }

  let results = Mutex(Demo.LoadResults())
  let next = Atomic<Int>(0)
  let stopped = Atomic<Bool>(false)
  let failover = Mutex<Task<Void, Never>?>(nil)
}

extension Duration {
  var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// Long-running services of the demo, each stoppable on its own.
final class ServiceRunner: Sendable {
  private let handles = Mutex<[String: AsyncStream<Void>.Continuation]>([:])
  private let clients = Mutex<[KubeClient]>([])

  /// Kubernetes clients to shut down at the end.
  func track(_ client: KubeClient) { clients.withLock { $0.append(client) } }

  func shutdownClients() async {
    let all = clients.withLock { clients in
      defer { clients = [] }
      return clients
    }
    for client in all { try? await client.shutdown() }
  }

  /// Runs `work` in `group` until `stop(name)` or `stopAll()`.
  func start(
    _ name: String, in group: inout ThrowingTaskGroup<Void, any Error>,
    _ work: @escaping @Sendable () async throws -> Void
  ) {
    let (signal, continuation) = AsyncStream<Void>.makeStream()
    handles.withLock { $0[name] = continuation }
    group.addTask {
      await withTaskGroup(of: Void.self) { inner in
        inner.addTask { try? await work() }
        inner.addTask { for await _ in signal {} }
        await inner.next()
        inner.cancelAll()
      }
    }
  }

  func stop(_ name: String) {
    let continuation = handles.withLock { $0.removeValue(forKey: name) }
    continuation?.finish()
  }

  func stopAll() {
    let all = handles.withLock { handles in
      defer { handles = [:] }
      return Array(handles.values)
    }
    for continuation in all { continuation.finish() }
  }
}
