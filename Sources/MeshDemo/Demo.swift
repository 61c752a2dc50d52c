import AsyncHTTPClient
public import Foundation
public import Logging
import MeshCore
import MeshDiscovery
import MeshIdentity
import MeshKube
import MeshKubeLocal
public import MeshMulticluster
import MeshProxy
import MeshTLS
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import Synchronization

/// What `meshctl demo` does, and how.
public struct DemoOptions: Sendable {
  /// Requests sent through east's client proxy. Default 1,000.
  public var requests = 1000
  /// Percent of `backend` traffic split to `backend-west`. Default 50.
  public var split = 50
  /// Requests in flight at once. Default 8.
  public var concurrency = 8
  /// Stop west's gateway half-way, and shift the split to the live leaf once the probe finds it dead.
  public var failover = false
  /// Stop west's gateway half-way and do nothing about it (to see how the mesh copes on its own).
  public var stopGateway = false
  /// Keep everything running after the report, until interrupted.
  public var keepRunning = false
  /// Where the kubeconfigs and trust anchor go (for `--keep-running`). Default: a temporary directory.
  public var directory: String?
  public init() {}
}

/// The demo's result, printed as text or JSON.
public struct DemoSummary: Codable, Sendable {
  public var requests: Int
  public var succeeded: Int
  public var failed: Int
  /// Successful responses by the cluster that served them.
  public var byCluster: [String: Int]
  /// Responses on the client proxy that went over mutual TLS, of all responses.
  public var mutualTLSResponses: Int
  public var leaves: [StatRow]
  public var gateways: [GatewayReport]
  public var elapsedSeconds: Double
  /// What happened when west's gateway was stopped (with `--failover` or `--stop-gateway`).
  public var failover: [String]
  /// Every request succeeded, and over mutual TLS.
  public var ok: Bool
}

/// `meshctl demo`: two clusters (east, west) on this machine, each with an embedded Kubernetes API, its
/// identity and destination services, a gateway, a service mirror linked to the other cluster, and a
/// `backend` behind its inbound proxy; a client in east calls `backend`, split between east and west.
public enum Demo {
  static let namespace = "default"
  static let apex = try! Authority("backend.default.svc.cluster.local:80")

  public static func run(
    _ options: DemoOptions, logger: Logger, say: @escaping @Sendable (String) -> Void
  ) async throws -> DemoSummary {
    let started = ContinuousClock.now
    let directory = try options.directory ?? makeTemporaryDirectory()
    let anchor = try TrustAnchor.makeAnchor(trustDomain: .clusterLocal)
    try PEMFiles.write(PEMFiles.pem([anchor.certificate]), to: "\(directory)/ca.crt")
    say("trust anchor: \(directory)/ca.crt (shared by east and west; one issuer per cluster)")

    let services = ServiceRunner()
    do {
      let summary = try await run(options, anchor: anchor, directory: directory, services: services, logger: logger, say: say, started: started)
      await services.shutdownClients()
      return summary
    } catch {
      services.stopAll()
      await services.shutdownClients()
      throw error
    }
  }

  static func run(
    _ options: DemoOptions, anchor: TrustAnchor.Credentials, directory: String, services: ServiceRunner,
    logger: Logger, say: @escaping @Sendable (String) -> Void, started: ContinuousClock.Instant
  ) async throws -> DemoSummary {
    try await withThrowingTaskGroup(of: Void.self) { group in
      defer { services.stopAll() }
      let east = try await Cluster.start(name: "east", anchor: anchor, directory: directory, in: &group, services, logger)
      let west = try await Cluster.start(name: "west", anchor: anchor, directory: directory, in: &group, services, logger)
      for cluster in [east, west] {
        say(
          "\(cluster.name): kubernetes API \(cluster.apiURL), identity 127.0.0.1:\(cluster.identityPort), "
            + "destination 127.0.0.1:\(cluster.destinationPort), gateway 127.0.0.1:\(cluster.gatewayPorts.inbound) "
            + "(probe :\(cluster.gatewayPorts.admin)), backend via inbound :\(cluster.backendPorts.inbound)")
      }
      // Links both ways, each with its own mirror controller; backend exported in both clusters.
      try east.link(to: west)
      try west.link(to: east)
      for cluster in [east, west] { try await cluster.startMirror(in: &group, services, logger) }
      say("linked east -> west and west -> east; exported backend in both; waiting for mirrors and probes")
      try await east.waitForMirror(of: "backend", from: west)
      try await west.waitForMirror(of: "backend", from: east)
      try await east.waitForGateway(of: west, alive: true)

      // East's client, and the split of backend between east and west.
      let client = try await east.startProxy(
        serviceAccount: "web", namespace: namespace, app: 1, gateway: false, in: &group, services, logger)
      try east.applyProfile()
      try east.applySplit(westPercent: options.split)
      try await east.waitForSplit(westPercent: options.split)
      say("TrafficSplit backend -> {backend: \(100 - options.split), backend-west: \(options.split)} applied in east")
      let clientPorts = try await client.proxy.boundPorts()

      // The load.
      let results = try await sendLoad(
        options: options, port: clientPorts.outbound, east: east, west: west, say: say)

      let metrics = try await scrape(clientPorts.admin)
      let samples = PrometheusText.parse(metrics)
      let leaves = StatTable.rows(
        samples, direction: "outbound", authority: apex.description, groupBy: "dst_service",
        window: results.elapsed)
      let mutualTLS = StatTable.rows(samples, direction: "outbound", groupBy: "tls")
        .first { $0.name == "true" }?.requests ?? 0
      let summary = DemoSummary(
        requests: options.requests, succeeded: results.succeeded, failed: options.requests - results.succeeded,
        byCluster: results.byCluster, mutualTLSResponses: mutualTLS, leaves: leaves, gateways: east.gatewayReports,
        elapsedSeconds: (ContinuousClock.now - started).seconds, failover: results.events,
        ok: results.succeeded == options.requests && mutualTLS >= options.requests)

      if options.keepRunning {
        say(
          """
          still running (interrupt to stop):
            kubectl --kubeconfig \(east.kubeconfigPath) get svc,endpoints,trafficsplits -A
            kubectl --kubeconfig \(west.kubeconfigPath) get svc -A
            curl -H 'Host: backend.default.svc.cluster.local' http://127.0.0.1:\(clientPorts.outbound)/
            meshctl stat ts backend --admin 127.0.0.1:\(clientPorts.admin)
            curl http://127.0.0.1:\(clientPorts.admin)/metrics
          """)
        while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
      }
      services.stopAll()
      group.cancelAll()
      return summary
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
                west.stopGateway()
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
