import Foundation
import Logging
import MeshCore
import MeshDestination
import MeshDiscovery
import MeshKube
import MeshKubeLocal
import MeshMulticluster
import Synchronization
import Testing
import _MeshTestSupport

/// Mirrors on clusters that hold EndpointSlices and no Endpoints.
@Suite("Service mirror over EndpointSlices")
struct MirrorSliceTests {
  static let slicesMirror: @Sendable (inout ServiceMirror.Configuration) -> Void = { $0.endpointsAPI = .endpointSlices }

  func mirrorSlices(_ cluster: Cluster, of mirror: String) throws -> [EndpointSlice] {
    try cluster.state.list(EndpointSlice.self, namespace: "default")
      .filter { $0.metadata.labels?[EndpointSlice.serviceNameLabel] == mirror }
  }

  @Test("only slices on both sides: dual-stack mirror slices; east's destination service resolves them to the gateway")
  func slicesEndToEnd() async throws {
    try await withClusters { east, west, group in
      try west.addService("backend", ports: [8080], withEndpoints: false)
      try west.addService("api", ports: [9090, 9091], withEndpoints: false)
      try east.linkTo(
        west, gatewayAddresses: ["192.0.2.10", "2001:db8::10"], gatewayIdentity: Identities.gateway.description)
      let controller = start(supervisor(for: east, configure: Self.slicesMirror), in: &group)
      defer { controller.stop() }

      try await eventually("ready mirror slices for backend-west and api-west") {
        let backend = try mirrorSlices(east, of: "backend-west")
        let api = try mirrorSlices(east, of: "api-west")
        return backend.count == 2 && api.count == 2 && (backend + api).allSatisfy { !$0.endpoints.isEmpty }
      }
      let slices = try mirrorSlices(east, of: "api-west").sorted { $0.name < $1.name }
      #expect(slices.map(\.name) == ["api-west-ipv4", "api-west-ipv6"])
      #expect(slices.map(\.addressType) == ["IPv4", "IPv6"])
      #expect(slices.map { $0.endpoints.flatMap(\.addresses) } == [["192.0.2.10"], ["2001:db8::10"]])
      for slice in slices {
        #expect(slice.endpoints.allSatisfy { $0.conditions == .init(ready: true, serving: true, terminating: false) })
        #expect(slice.ports?.map(\.port) == [4143, 4143])
        #expect(slice.ports?.map(\.name) == ["http", "port-1"])
        #expect(slice.metadata.labels?[EndpointSlice.managedByLabel] == MirrorMetadata.endpointSliceManager)
        #expect(slice.metadata.labels?[MirrorMetadata.clusterNameLabel] == "west")
        #expect(slice.metadata.annotations?[MirrorMetadata.gatewayIdentityAnnotation] == Identities.gateway.description)
      }
      #expect(try east.state.list(Endpoints.self).isEmpty, "the mirror writes no Endpoints")
      #expect(try west.state.list(Endpoints.self).isEmpty)

      // East's destination service, reading slices, resolves the mirror to the gateway.
      let kube = try KubeClient(config: east.client.config)
      let destination = DestinationServer(
        configuration: .defaults {
          $0.host = "127.0.0.1"
          $0.port = 0
        }, client: kube, logger: testLogger)
      let destinationHandle = start(destination, in: &group)
      let port = try await destination.listeningPort
      #expect(destination.endpointsAPI == .endpointSlices)
      let resolver = try Resolver(configuration: .defaults { $0.host = "127.0.0.1"; $0.port = port }, logger: testLogger)
      let resolverHandle = start(resolver, in: &group)
      let latest = Latest<EndpointSet>()
      let target = try Authority("api-west.default.svc.cluster.local:9091")
      group.addTask {
        // Ends when the resolver stops or the test's tasks are cancelled.
        do { for try await set in resolver.endpoints(for: target) { latest.set(set) } } catch {}
      }
      try await eventually("the mirror's gateway endpoints from discovery") { latest.value?.endpoints.count == 2 }
      let set = try #require(latest.value)
      #expect(Set(set.addresses.map(\.description)) == ["192.0.2.10:4143", "[2001:db8::10]:4143"])
      #expect(set.endpoints.allSatisfy { $0.tlsIdentity == Identities.gateway })
      #expect(set.endpoints.allSatisfy { $0.authorityOverride?.description == "api.default.svc.cluster.local:9091" })
      #expect(set.endpoints.allSatisfy { $0.metricLabels["target_cluster"] == "west" })

      // The remote endpoint stops being ready: the mirror slices empty, and so does discovery's set.
      try west.setSliceReady("api", false)
      try await eventually("no endpoints for api-west") {
        try mirrorSlices(east, of: "api-west").allSatisfy { $0.endpoints.isEmpty } && latest.value?.endpoints.isEmpty == true
      }
      try west.setSliceReady("api", true)
      try await eventually("the gateway again") { latest.value?.endpoints.count == 2 }

      // Unexported: the mirror Service and its slices go.
      try west.setExported("api", false)
      try await eventually("api-west's slices deleted") {
        try mirrorSlices(east, of: "api-west").isEmpty && east.mirrorNames(of: "west") == ["default/backend-west"]
      }
      resolverHandle.stop()
      destinationHandle.stop()
      try await kube.shutdown()
    }
  }

  @Test("a mirror written as Endpoints is converted to slices (and back) when the setting changes")
  func conversion() async throws {
    try await withClusters { east, west, group in
      try west.addService("backend", ports: [8080])
      try east.linkTo(west)
      let first = start(supervisor(for: east), in: &group)
      try await eventually("the Endpoints mirror") {
        east.state.get(Endpoints.self, name: "backend-west", namespace: "default")?.subsets?.isEmpty == false
      }
      #expect(try mirrorSlices(east, of: "backend-west").isEmpty)
      first.stop()
      let second = start(supervisor(for: east, configure: Self.slicesMirror), in: &group)
      try await eventually("the slice mirror, and no Endpoints") {
        try mirrorSlices(east, of: "backend-west").map(\.name) == ["backend-west-ipv4"]
          && east.state.get(Endpoints.self, name: "backend-west", namespace: "default") == nil
      }
      second.stop()
      let third = start(supervisor(for: east), in: &group)
      defer { third.stop() }
      try await eventually("Endpoints again, and no slices") {
        try mirrorSlices(east, of: "backend-west").isEmpty
          && east.state.get(Endpoints.self, name: "backend-west", namespace: "default") != nil
      }
    }
  }

  @Test("slices kube's endpointslice-mirroring controller made from mirror Endpoints are left alone")
  func foreignSlicesLeftAlone() async throws {
    try await withClusters { east, west, group in
      try west.addService("backend", ports: [8080])
      // What the controller makes from the mirror's Endpoints on a real cluster: the Endpoints' labels, its own manager.
      try east.state.create(
        EndpointSlice(
          metadata: ObjectMeta(
            name: "backend-west-x7k2p", namespace: "default",
            labels: [
              MirrorMetadata.mirroredServiceLabel: "true", MirrorMetadata.clusterNameLabel: "west",
              EndpointSlice.serviceNameLabel: "backend-west",
              EndpointSlice.managedByLabel: "endpointslicemirroring-controller.k8s.io",
            ]),
          endpoints: [.init(addresses: ["192.0.2.10"])], ports: [.init(name: "http", port: 4143)]))
      try east.linkTo(west)
      let controller = start(supervisor(for: east), in: &group)
      defer { controller.stop() }
      try await eventually("the Endpoints mirror") {
        east.state.get(Endpoints.self, name: "backend-west", namespace: "default")?.subsets?.isEmpty == false
      }
      try west.state.mergePatch(
        KubeService.self, name: "backend", namespace: "default",
        patch: ["spec": ["ports": [["name": "http", "port": 8181, "protocol": "TCP"]]]])
      try await eventually("the port change mirrored") {
        try east.mirrors(of: "west")["default/backend-west"]?.spec?.ports?.map(\.port) == [8181]
      }
      #expect(east.state.get(EndpointSlice.self, name: "backend-west-x7k2p", namespace: "default") != nil)
    }
  }

  @Test("a target without discovery.k8s.io/v1 is followed through its Endpoints; mirrors are still slices")
  func targetWithoutSlices() async throws {
    let old = LocalKubeState(configuration: .defaults { $0.unservedGroups = ["discovery.k8s.io"] })
    try await withClusters(west: old) { east, west, group in
      try west.addService("backend", ports: [8080], withSlice: false)
      try east.linkTo(west)
      let controller = start(supervisor(for: east, configure: Self.slicesMirror), in: &group)
      defer { controller.stop() }
      try await eventually("a ready mirror slice") {
        try mirrorSlices(east, of: "backend-west").first?.endpoints.first?.addresses == ["192.0.2.10"]
      }
      #expect(east.state.get(Endpoints.self, name: "backend-west", namespace: "default") == nil)
    }
  }

  @Test("deleting the Link deletes the mirror slices too")
  func unlink() async throws {
    try await withClusters { east, west, group in
      try west.addService("backend", ports: [8080], withEndpoints: false)
      try east.linkTo(west)
      let controller = start(supervisor(for: east, configure: Self.slicesMirror), in: &group)
      defer { controller.stop() }
      try await eventually("the mirror slice") { try !mirrorSlices(east, of: "backend-west").isEmpty }
      try east.state.delete(Link.self, name: "west", namespace: MirrorMetadata.multiclusterNamespace)
      try await eventually("no mirror left") {
        try mirrorSlices(east, of: "backend-west").isEmpty && east.mirrorNames(of: "west").isEmpty
      }
    }
  }
}

@Suite("Mirror planner: EndpointSlices (pure)")
struct MirrorSlicePlannerTests {
  @Test("one slice per gateway address family; gateway dead: not ready, not serving; remote not ready: no endpoints")
  func plan() throws {
    let dualStack = PlannerTests.link { $0.gatewayAddresses = ["192.0.2.10", "2001:db8::10", "192.0.2.11"] }
    let planner = MirrorPlanner(settings: try LinkSettings(link: dualStack))
    let remote = PlannerTests.remote()
    let alive = planner.endpointSlices(for: remote, remoteReady: true, gatewayAlive: true)
    #expect(alive.map(\.name) == ["api-west-ipv4", "api-west-ipv6"])
    #expect(alive.map(\.addressType) == ["IPv4", "IPv6"])
    #expect(alive[0].endpoints.map(\.addresses) == [["192.0.2.10"], ["192.0.2.11"]])
    #expect(alive[1].endpoints.map(\.addresses) == [["2001:db8::10"]])
    #expect(alive.allSatisfy { $0.metadata.namespace == "shop" && $0.metadata.labels?[EndpointSlice.serviceNameLabel] == "api-west" })
    #expect(alive.allSatisfy { $0.ports == [EndpointSlice.Port(name: "http", port: 4143, protocol: "TCP")] })

    let dead = planner.endpointSlices(for: remote, remoteReady: true, gatewayAlive: false)
    #expect(dead.flatMap(\.endpoints).allSatisfy { $0.conditions == .init(ready: false, serving: false, terminating: false) })
    #expect(!MirrorPlanner.matches(alive[0], dead[0]), "a change of readiness is a change to write")
    #expect(MirrorPlanner.matches(dead[0], MirrorPlanner.applying(dead[0], to: alive[0])))

    let drained = planner.endpointSlices(for: remote, remoteReady: false, gatewayAlive: true)
    #expect(drained.allSatisfy { $0.endpoints.isEmpty })
    #expect(drained.count == 2, "the slices stay, empty, so the mirror says 'no endpoints' rather than vanishing")
  }

  @Test("a remote service is serving with a ready endpoint, or a serving one that terminates; not with neither")
  func remoteServing() {
    func slice(_ conditions: EndpointSlice.Conditions?) -> EndpointSlice {
      EndpointSlice(metadata: ObjectMeta(name: "api-x", namespace: "shop"), endpoints: [.init(addresses: ["10.0.0.1"], conditions: conditions)])
    }
    #expect(MirrorPlanner.hasServingEndpoint([slice(.init(ready: true))]))
    #expect(MirrorPlanner.hasServingEndpoint([slice(nil)]), "unknown readiness counts as ready")
    #expect(MirrorPlanner.hasServingEndpoint([slice(.init(ready: false, serving: true, terminating: true))]))
    #expect(!MirrorPlanner.hasServingEndpoint([slice(.init(ready: false, serving: false, terminating: true))]))
    #expect(!MirrorPlanner.hasServingEndpoint([slice(.init(ready: false))]))
    #expect(!MirrorPlanner.hasServingEndpoint([]))
  }
}

/// The latest value a stream produced.
final class Latest<T: Sendable>: Sendable {
  private let box = Mutex<T?>(nil)
  func set(_ value: T) { box.withLock { $0 = value } }
  var value: T? { box.withLock { $0 } }
}
