import AsyncHTTPClient
import Foundation
import MeshCore
import MeshKube
import MeshMulticluster
import NIOCore
import NIOHTTP1
import Synchronization

/// `meshctl demo --federated`: backend joins the federated service `backend-federated` in east and west; a
/// steady stream from east's client proxy stays in east while east's backend is ready, moves to west (through
/// west's gateway) when it is not, and comes home when it is ready again.
extension Demo {
  struct FederatedResults: Sendable {
    var lines: [String] = []
    var sent = 0
    var failed = 0
    var ok = false
  }

  static let federatedAuthority = "backend-federated.default.svc.cluster.local"

  static func requests(_ count: Int) -> String { count == 1 ? "1 request" : "\(count) requests" }

  static func federatedPhase(
    port: Int, east: Cluster, west: Cluster, say: @escaping @Sendable (String) -> Void
  ) async throws -> FederatedResults {
    var results = FederatedResults()
    for cluster in [east, west] {
      _ = try await cluster.client.mergePatch(
        KubeService.self, name: "backend", namespace: namespace,
        patch: ["metadata": ["labels": [MirrorMetadata.federatedLabel: "member"]]])
    }
    try await east.waitForFederated(clusters: ["local", west.name])
    _ = try await east.client.create(
      ServiceProfile(
        metadata: ObjectMeta(name: federatedAuthority, namespace: namespace),
        spec: .init(routes: [
          .init(name: "GET /", condition: .init(method: "GET", pathRegex: "/.*"), isRetryable: true, timeout: "10s")
        ])))
    say("backend labelled \(MirrorMetadata.federatedLabel)=member in east and west: backend-federated in east has east's endpoint and west's gateway")

    let client = HTTPClient(eventLoopGroupProvider: .singleton)
    let counts = Mutex<(sent: Int, failed: Int)>((0, 0))
    /// One request to backend-federated: the cluster that answered, nil on a failure.
    @Sendable func request() async -> String? {
      var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/")
      request.headers.add(name: "host", value: federatedAuthority)
      var cluster: String?
      if let response = try? await client.execute(request, timeout: .seconds(10)), response.status == .ok,
        let body = try? await response.body.collect(upTo: 4096)
      {
        cluster = String(buffer: body).split(separator: " ").first { $0.hasPrefix("cluster=") }.map { String($0.dropFirst(8)) }
      }
      counts.withLock {
        $0.sent += 1
        if cluster == nil { $0.failed += 1 }
      }
      return cluster
    }
    /// Sends until `count` answers in a row come from `cluster` (at most `limit` requests).
    func stream(until cluster: String, count: Int, limit: Int) async -> (sent: Int, fromOthers: Int, reached: Bool) {
      var inARow = 0
      var sent = 0
      var others = 0
      while sent < limit {
        let answer = await request()
        sent += 1
        if answer == cluster {
          inARow += 1
          if inARow == count { return (sent, others, true) }
        } else {
          inARow = 0
          if answer != nil { others += 1 }
        }
      }
      return (sent, others, false)
    }
    do {
      let home = await stream(until: east.name, count: 20, limit: 40)
      results.lines.append(
        "federated: \(home.reached ? "20 requests in a row answered by east" : "east never answered 20 in a row") while east's backend is ready")
      // East's backend stops being ready (as a failing readiness probe or a deleted pod makes it).
      try await east.setBackendReady(false)
      let away = await stream(until: west.name, count: 20, limit: 400)
      results.lines.append(
        "east's backend not ready: \(away.reached ? "the stream moved to west through its gateway after \(Self.requests(away.sent - 20))" : "the stream never moved to west")")
      try await east.setBackendReady(true)
      let back = await stream(until: east.name, count: 20, limit: 400)
      results.lines.append(
        "east's backend ready again: \(back.reached ? "traffic came home after \(Self.requests(back.sent - 20))" : "traffic never came back to east")")
      let (sent, failed) = counts.withLock { $0 }
      results.sent = sent
      results.failed = failed
      results.lines.append("federated stream: \(sent) requests, \(failed) failed")
      results.ok = home.reached && away.reached && back.reached && failed == 0
      for line in results.lines { say(line) }
    } catch {
      try? await client.shutdown()
      throw error
    }
    try await client.shutdown()
    return results
  }
}

extension Cluster {
  /// Waits until `backend-federated` has a slice of each of `clusters` (`local` for this cluster's own).
  func waitForFederated(clusters: Set<String>, timeout: Duration = .seconds(30)) async throws {
    let client = self.client
    try await poll("\(name): backend-federated with slices of \(clusters.sorted().joined(separator: ", "))", timeout: timeout) {
      guard
        let slices = try? await client.list(
          EndpointSlice.self, namespace: "default",
          options: ListOptions(labelSelector: "\(EndpointSlice.serviceNameLabel)=backend-federated"))
      else { return false }
      let present = Set(slices.items.map { $0.metadata.labels?[MirrorMetadata.federatedClusterLabel] ?? "local" })
      return clusters.isSubset(of: present)
    }
  }

  /// Marks this cluster's backend endpoint ready or not (its EndpointSlice's conditions).
  func setBackendReady(_ ready: Bool) async throws {
    _ = try await client.update(EndpointSlice.self, name: "backend-\(name)", namespace: "default") { slice in
      for index in slice.endpoints.indices {
        slice.endpoints[index].conditions = .init(ready: ready, serving: ready, terminating: false)
      }
    }
  }
}
