import AsyncHTTPClient
import Foundation
import MeshCore
import MeshKube
import MeshMulticluster
import NIOCore
import NIOHTTP1

/// `meshctl demo --headless`: west runs a StatefulSet-style headless service `db` with pods db-0 and db-1 (each
/// its own app behind its own inbound proxy), exported; east's client proxy asks for
/// `db-0.db-west.default.svc.cluster.local` and `db-1.db-west...`: each name must reach that pod, through
/// west's gateway.
extension Demo {
  static let headlessPods = ["db-0", "db-1"]

  static func headlessPhase(
    port: Int, east: Cluster, west: Cluster, in group: inout ThrowingTaskGroup<Void, any Error>,
    say: @escaping @Sendable (String) -> Void
  ) async throws -> (lines: [String], ok: Bool) {
    let apps = try await west.publishHeadlessDB(pods: headlessPods, in: &group)
    do {
      try await east.waitForHeadlessMirrors(of: "db", from: west, pods: headlessPods)
    } catch {
      for app in apps { await app.stop() }
      throw error
    }
    say("west's headless db (\(headlessPods.joined(separator: ", "))) is mirrored in east as db-west with one endpoint mirror per pod")
    let client = HTTPClient(eventLoopGroupProvider: .singleton)
    var lines: [String] = []
    var ok = true
    for pod in headlessPods {
      let host = "\(pod).db-west.\(namespace).svc.cluster.local"
      var answers: [String: Int] = [:]
      for _ in 0..<10 {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/")
        request.headers.add(name: "host", value: host)
        var answer = "failed"
        if let response = try? await client.execute(request, timeout: .seconds(10)) {
          let body = (try? await response.body.collect(upTo: 4096)).map { String(buffer: $0) } ?? ""
          answer = response.status == .ok
            ? body.trimmingCharacters(in: .whitespacesAndNewlines) : "\(response.status.code) \(body)"
        }
        answers[answer, default: 0] += 1
      }
      let expected = "cluster=\(west.name) pod=\(pod)"
      let right = answers[expected] ?? 0
      ok = ok && right == 10
      let others = answers.filter { $0.key != expected }.map { "\($0.value) x '\($0.key)'" }.sorted()
      lines.append("headless: \(host): \(right)/10 answered by \(pod) in \(west.name)" + (others.isEmpty ? "" : "; " + others.joined(separator: ", ")))
    }
    try? await client.shutdown()
    for app in apps { await app.stop() }
    for line in lines { say(line) }
    return (lines, ok)
  }
}

extension Cluster {
  /// A StatefulSet-style headless Service `db` (exported) with one pod per name, each an app behind its own
  /// inbound proxy, and an EndpointSlice per pod with its hostname (they share 127.0.0.1, so each needs its own
  /// port). In-process runtime only.
  func publishHeadlessDB(pods: [String], in group: inout ThrowingTaskGroup<Void, any Error>) async throws -> [DemoBackend] {
    guard case .tasks = runtime else {
      throw MeshError.invalidArgument("the headless demo runs with the in-process runtime only (not --processes)")
    }
    _ = try await client.create(
      KubeService(
        metadata: ObjectMeta(name: "db", namespace: "default", labels: ["app": "db", MirrorMetadata.exportedLabel: "true"]),
        spec: .init(
          selector: ["app": "db"], ports: [.init(name: "http", port: 80, targetPort: .string("http"))], clusterIP: "None")))
    var apps: [DemoBackend] = []
    for pod in pods {
      let app = try await DemoBackend(cluster: name, pod: pod)
      apps.append(app)
      let ports = try await startProxy(serviceAccount: pod, namespace: "default", app: app.port, gateway: false, in: &group)
      _ = try await client.create(
        Pod(
          metadata: ObjectMeta(name: pod, namespace: "default", labels: ["app": "db", "swiftmesh.io/proxy": "mesh-proxy"]),
          spec: .init(serviceAccountName: pod)))
      _ = try await client.create(
        EndpointSlice(
          metadata: ObjectMeta(
            name: "db-\(pod)", namespace: "default",
            labels: [
              EndpointSlice.serviceNameLabel: "db", EndpointSlice.managedByLabel: "endpointslice-controller.k8s.io",
            ]),
          addressType: "IPv4",
          endpoints: [
            .init(
              addresses: ["127.0.0.1"], conditions: .init(ready: true, serving: true, terminating: false), hostname: pod,
              targetRef: ObjectReference(kind: "Pod", namespace: "default", name: pod))
          ],
          ports: [.init(name: "http", port: ports.inbound, protocol: "TCP")]))
    }
    return apps
  }

  /// Waits until `<service>-<target>` and its endpoint mirrors are here, with a ready gateway endpoint each.
  func waitForHeadlessMirrors(of service: String, from target: Cluster, pods: [String], timeout: Duration = .seconds(30)) async throws {
    let client = self.client
    let names = pods.map { "\($0)-\(target.name)" }
    try await poll("\(name): the headless mirror of \(service) and its endpoint mirrors \(names.joined(separator: ", "))", timeout: timeout) {
      guard (try? await client.get(KubeService.self, name: "\(service)-\(target.name)", namespace: "default")) != nil
      else { return false }
      for mirror in names {
        guard
          let slices = try? await client.list(
            EndpointSlice.self, namespace: "default",
            options: ListOptions(labelSelector: "\(EndpointSlice.serviceNameLabel)=\(mirror)")),
          slices.items.contains(where: { $0.endpoints.contains { $0.conditions?.ready == true } })
        else { return false }
      }
      return true
    }
  }
}
