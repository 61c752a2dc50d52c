import Foundation
import MeshCore
import MeshKube
import MeshKubeLocal
import Synchronization
import Testing
import _MeshTestSupport

/// The embedded server serves `discovery.k8s.io/v1` EndpointSlices as a real API server does: kubectl
/// lists, gets and deletes them with label selectors; watches with a selector see only matching slices.
@Suite("EndpointSlices on the embedded API server")
struct EndpointSliceAPITests {
  static let manifest = """
    apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata:
      name: web-a
      namespace: default
      labels: {kubernetes.io/service-name: web, endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io}
    addressType: IPv4
    endpoints:
    - addresses: [10.1.0.1]
      conditions: {ready: true, serving: true, terminating: false}
      nodeName: node-1
      zone: zone-a
      targetRef: {kind: Pod, namespace: default, name: web-1}
      hints: {forZones: [{name: zone-a}]}
    ports: [{name: http, port: 8080, protocol: TCP}]
    ---
    apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata:
      name: web-b
      namespace: default
      labels: {kubernetes.io/service-name: web}
    addressType: IPv6
    endpoints:
    - addresses: ["fd00::2"]
      conditions: {ready: false, serving: true, terminating: true}
    ports: [{name: http, port: 8080, protocol: TCP}]
    ---
    apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata:
      name: api-a
      namespace: default
      labels: {kubernetes.io/service-name: api}
    addressType: IPv4
    endpoints: []
    ports: []
    """

  @Test("kubectl: api-resources, apply, get with a label selector, -o json, delete", .enabled(if: kubectlAvailable))
  func kubectlSlices() async throws {
    try await withServer(configure: { $0.bookmarkInterval = .milliseconds(500) }) { server, client in
      let dir = try temporaryDirectory()
      defer { try? FileManager.default.removeItem(at: dir) }
      let kubeconfig = dir.appendingPathComponent("kubeconfig").path
      try await server.kubeconfigYAML().write(toFile: kubeconfig, atomically: true, encoding: .utf8)
      let manifest = dir.appendingPathComponent("slices.yaml")
      try Self.manifest.write(to: manifest, atomically: true, encoding: .utf8)
      func kubectl(_ args: [String]) async throws -> (status: Int32, stdout: String, stderr: String) {
        try await Subprocess.run(
          kubectlPath, ["--kubeconfig", kubeconfig, "--cache-dir", dir.appendingPathComponent("cache").path] + args)
      }

      let resources = try await kubectl(["api-resources", "--api-group=discovery.k8s.io", "-o", "name"])
      #expect(resources.status == 0, "\(resources.stderr)")
      #expect(resources.stdout.split(separator: "\n").contains("endpointslices.discovery.k8s.io"), "\(resources.stdout)")

      let apply = try await kubectl(["apply", "-f", manifest.path])
      #expect(apply.status == 0, "kubectl apply failed: \(apply.stderr)")
      #expect(apply.stdout.contains("endpointslice.discovery.k8s.io/web-a created"), "\(apply.stdout)")

      let web = try await kubectl(["get", "endpointslices", "-l", "kubernetes.io/service-name=web", "-o", "name"])
      #expect(web.status == 0, "\(web.stderr)")
      #expect(web.stdout.split(separator: "\n") == ["endpointslice.discovery.k8s.io/web-a", "endpointslice.discovery.k8s.io/web-b"])
      let notWeb = try await kubectl(["get", "endpointslices.discovery.k8s.io", "-l", "kubernetes.io/service-name!=web", "-o", "name"])
      #expect(notWeb.stdout.split(separator: "\n") == ["endpointslice.discovery.k8s.io/api-a"], "\(notWeb.stderr)")

      let table = try await kubectl(["get", "endpointslices", "-A"])
      #expect(table.status == 0, "\(table.stderr)")
      #expect(["web-a", "web-b", "api-a"].allSatisfy { table.stdout.contains($0) }, "\(table.stdout)")

      // What kubectl wrote reads back typed, every field the mesh uses intact.
      let sliceA = try await client.get(EndpointSlice.self, name: "web-a", namespace: "default")
      let endpoint = try #require(sliceA.endpoints.first)
      #expect(endpoint.addresses == ["10.1.0.1"])
      #expect(endpoint.conditions == .init(ready: true, serving: true, terminating: false))
      #expect(endpoint.nodeName == "node-1" && endpoint.zone == "zone-a")
      #expect(endpoint.targetRef?.name == "web-1")
      #expect(endpoint.hints?.forZones == [.init(name: "zone-a")])
      let sliceB = try await client.get(EndpointSlice.self, name: "web-b", namespace: "default")
      #expect(sliceB.addressType == "IPv6" && sliceB.endpoints.first?.addresses == ["fd00::2"])

      let json = try await kubectl(["get", "endpointslice", "web-b", "-o", "json"])
      let object = try JSONValue.parse(Data(json.stdout.utf8))
      #expect(object["apiVersion"]?.stringValue == "discovery.k8s.io/v1")
      #expect(object["kind"]?.stringValue == "EndpointSlice")
      #expect(object["endpoints"]?.arrayValue?.first?["conditions"]?["terminating"] == .bool(true))

      let delete = try await kubectl(["delete", "endpointslices", "-l", "kubernetes.io/service-name=web"])
      #expect(delete.status == 0, "\(delete.stderr)")
      let left = try await client.list(EndpointSlice.self, namespace: "default")
      #expect(left.items.map(\.name) == ["api-a"])
    }
  }

  @Test("kubectl get -w with a label selector streams exactly the matching slices' events", .enabled(if: kubectlAvailable))
  func kubectlWatch() async throws {
    try await withServer(configure: { $0.bookmarkInterval = .milliseconds(500) }) { server, client in
      let dir = try temporaryDirectory()
      defer { try? FileManager.default.removeItem(at: dir) }
      let kubeconfig = dir.appendingPathComponent("kubeconfig").path
      try await server.kubeconfigYAML().write(toFile: kubeconfig, atomically: true, encoding: .utf8)
      func slice(_ name: String, service: String) -> EndpointSlice {
        EndpointSlice(
          metadata: ObjectMeta(name: name, namespace: "default", labels: [EndpointSlice.serviceNameLabel: service]),
          endpoints: [.init(addresses: ["10.1.0.1"])], ports: [.init(name: "http", port: 8080)])
      }
      _ = try await client.create(slice("web-a", service: "web"))
      let watch = try BackgroundProcess(
        kubectlPath,
        [
          "--kubeconfig", kubeconfig, "--cache-dir", dir.appendingPathComponent("cache").path, "get", "endpointslices",
          "-l", "kubernetes.io/service-name=web", "--watch", "--output-watch-events",
        ])
      defer { watch.terminate() }
      /// `EVENT NAME` of each line after the header (`EVENT NAME AGE`).
      func events() -> [String] {
        watch.printed.split(separator: "\n").dropFirst().map { $0.split(separator: " ").prefix(2).joined(separator: " ") }
      }
      try await eventually("kubectl prints the listed slice") { events() == ["ADDED web-a"] }
      _ = try await client.create(slice("api-a", service: "api"))
      _ = try await client.create(slice("web-b", service: "web"))
      try await client.delete(EndpointSlice.self, name: "web-a", namespace: "default")
      try await eventually("kubectl prints web-b added and web-a deleted") { events().count >= 3 }
      #expect(events() == ["ADDED web-a", "ADDED web-b", "DELETED web-a"], "\(watch.printed)")
    }
  }

  @Test("a watch with a label selector sees exactly the matching slices come and go")
  func watchWithSelector() async throws {
    try await withServer(configure: { $0.bookmarkInterval = .milliseconds(200) }) { server, client in
      func slice(_ name: String, service: String, ip: String) -> EndpointSlice {
        EndpointSlice(
          metadata: ObjectMeta(name: name, namespace: "default", labels: [EndpointSlice.serviceNameLabel: service]),
          endpoints: [.init(addresses: [ip], conditions: .init(ready: true))], ports: [.init(name: "http", port: 8080)])
      }
      _ = try await client.create(slice("web-a", service: "web", ip: "10.1.0.1"))
      let informer = Informer<EndpointSlice>(
        client: client, configuration: .defaults { $0.labelSelector = "\(EndpointSlice.serviceNameLabel)=web" })
      let log = EventLog<EndpointSlice>()
      let events = informer.events()
      try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await informer.run() }
        group.addTask { for await event in events { log.append(event) } }
        try await eventually("the listed slice") { informer.store.keys == ["default/web-a"] }
        _ = try await client.create(slice("api-a", service: "api", ip: "10.2.0.1"))
        _ = try await client.create(slice("web-b", service: "web", ip: "10.1.0.2"))
        try await client.delete(EndpointSlice.self, name: "web-a", namespace: "default")
        // The store and the event stream are updated separately: wait for both.
        try await eventually("web-b added and web-a deleted") {
          informer.store.keys == ["default/web-b"] && log.all.count >= 3
        }
        #expect(log.all.map(\.object.name) == ["web-a", "web-b", "web-a"], "\(log.summary)")
        #expect(log.all.allSatisfy { $0.object.metadata.labels?[EndpointSlice.serviceNameLabel] == "web" })
        group.cancelAll()
      }
    }
  }

  @Test("a server configured without discovery.k8s.io stands in for an old cluster: clients see it is not served")
  func unserved() async throws {
    let state = LocalKubeState(configuration: .defaults { $0.unservedGroups = ["discovery.k8s.io"] })
    try await withServer(state: state) { _, client in
      let slices = try await client.serves(EndpointSlice.self)
      let endpoints = try await client.serves(Endpoints.self)
      let chosen = try await client.endpointsAPI(preferring: .endpointSlices)
      #expect(!slices)
      #expect(endpoints)
      #expect(chosen == .endpoints)
      await #expect(throws: KubeError.self) { _ = try await client.list(EndpointSlice.self) }
    }
    try await withServer { _, client in
      let preferringSlices = try await client.endpointsAPI(preferring: .endpointSlices)
      let preferringEndpoints = try await client.endpointsAPI(preferring: .endpoints)
      #expect(preferringSlices == .endpointSlices)
      #expect(preferringEndpoints == .endpoints)
    }
  }
}
