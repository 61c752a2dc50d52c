import Foundation
import MeshCore
import MeshDestination
import MeshDiscovery
import MeshKube
import MeshKubeLocal
import MeshMulticluster
import Testing
import _MeshTestSupport

@Suite("Federated services across three embedded clusters")
struct FederatedServiceTests {
  static let member = [MirrorMetadata.federatedLabel: "member"]

  @Test("backend in east, west and north: backend-federated in east serves east's endpoint while it is ready, the gateways of west and north when not, and comes home; north's ports differing leave north out with a clear condition")
  func federated() async throws {
    try await withClusters { east, west, group in
      let north = try Cluster(name: "north", port: try await StablePorts.free())
      try await north.start(in: &group)
      defer { north.stop() }
      for cluster in [east, west, north] {
        try cluster.addService("backend", exported: false, labels: Self.member, withEndpoints: false)
      }
      try east.linkTo(west, gatewayAddresses: ["192.0.2.10"], gatewayIdentity: Identities.gateway.description)
      try east.linkTo(north, gatewayAddresses: ["192.0.2.20"], gatewayIdentity: Identities.gateway.description)
      let controller = start(supervisor(for: east) { $0.endpointsAPI = .endpointSlices }, in: &group)
      defer { controller.stop() }
      let local = try #require(east.slices(of: "backend").first?.endpoints.first?.addresses.first)

      try await eventually("backend-federated with the local, west and north slices") {
        Set(east.slices(of: "backend-federated").map(\.name))
          == ["backend-federated-local-ipv4", "backend-federated-west-ipv4", "backend-federated-north-ipv4"]
      }
      let federated = try #require(east.service("backend-federated"))
      #expect(federated.metadata.labels?[MirrorMetadata.federatedServiceLabel] == "true")
      #expect(federated.spec?.ports?.map(\.port) == [8080])
      #expect(try east.mirrorNames(of: "west").isEmpty, "a member that is not exported is not mirrored")
      let translator = EndpointTranslator(trustDomain: .clusterLocal, controlPlaneNamespace: "swiftmesh")
      func all() throws -> [Endpoint] {
        let service = try #require(east.service("backend-federated"))
        return translator.endpointSet(service: service, slices: east.slices(of: "backend-federated"), port: 8080) { _, _ in nil }
          .endpoints.sorted { $0.address.description < $1.address.description }
      }
      /// Where a proxy sends requests while no endpoint is ejected: the endpoints not flagged as fallbacks,
      /// else the fallbacks.
      func served() throws -> [Endpoint] {
        let endpoints = try all()
        let primary = endpoints.filter { !$0.isFallback }
        return primary.isEmpty ? endpoints : primary
      }
      #expect(try served().map(\.address.description) == ["\(local):8080"], "local affinity: only east's endpoint")
      // The gateways go along as fallbacks, for the proxy to fail over to before readiness changes.
      #expect(try all().filter(\.isFallback).map(\.address.description) == ["192.0.2.10:4143", "192.0.2.20:4143"])

      // East's backend is not ready: the gateways of west and north, with the remote authority.
      try east.setSliceReady("backend", false)
      try await eventually("the gateways serve") {
        try served().map(\.address.description) == ["192.0.2.10:4143", "192.0.2.20:4143"]
      }
      let remote = try served()
      #expect(remote.allSatisfy { $0.authorityOverride?.description == "backend.default.svc.cluster.local:8080" })
      #expect(remote.allSatisfy { $0.tlsIdentity == Identities.gateway })
      #expect(remote.map { $0.metricLabels["target_cluster"] ?? "" } == ["west", "north"])

      // `meshctl diagnostics endpoints` against a destination service of east shows each endpoint's cluster.
      if let meshctl = meshctlPath {
        let destination = DestinationServer(
          configuration: .defaults {
            $0.host = "127.0.0.1"
            $0.port = 0
          }, client: east.client, logger: testLogger)
        let handle = start(destination, in: &group)
        defer { handle.stop() }
        let port = try await destination.listeningPort
        var output: Subprocess.Output?
        try await eventually("diagnostics shows west's and north's gateways: \(output?.description ?? "-")") {
          output = try await Subprocess.run(
            meshctl,
            ["diagnostics", "endpoints", "--destination", "127.0.0.1:\(port)", "backend-federated.default.svc.cluster.local:8080"])
          let lines = output?.stdout.split(separator: "\n") ?? []
          return lines.first?.hasSuffix("CLUSTER") == true && lines.first?.contains("AUTHORITY_OVERRIDE") == true
            && lines.contains { $0.hasPrefix("192.0.2.10:4143") && $0.hasSuffix("west") }
            && lines.contains { $0.hasPrefix("192.0.2.20:4143") && $0.hasSuffix("north") }
        }
      }

      // Ready again: traffic comes home.
      try east.setSliceReady("backend", true)
      try await eventually("east's endpoint again") { try served().map(\.address.description) == ["\(local):8080"] }

      // North's member changes its ports: north is left out, with a clear condition; west and east stay.
      try north.state.mergePatch(
        KubeService.self, name: "backend", namespace: "default",
        patch: ["spec": ["ports": [["name": "http", "port": 9090, "protocol": "TCP"]]]])
      try await eventually("north left out, FederatedReady False") {
        Set(east.slices(of: "backend-federated").map(\.name)) == ["backend-federated-local-ipv4", "backend-federated-west-ipv4"]
          && east.condition("north", "FederatedReady")?.status == "False"
      }
      let condition = try #require(east.condition("north", "FederatedReady"))
      #expect(condition.reason == "FederatedPortMismatch")
      #expect(condition.message?.contains("http/9090/TCP") == true && condition.message?.contains("http/8080/TCP") == true, "\(condition)")
      try await eventually("west's FederatedReady True") { east.condition("west", "FederatedReady")?.status == "True" }
      // multicluster check says so too.
      let results = await MulticlusterCheck.run(local: east.client, logger: testLogger)
      let cross = try #require(results.first { $0.check == "federated services" && $0.link == "north" }, "\(results.map(\.line))")
      #expect(!cross.ok && cross.detail.hasPrefix("FederatedPortMismatch: "), "\(cross.line)")
      #expect(cross.hint?.contains("same ports") == true)
      #expect(!results.contains { $0.check == "federated services" && $0.link == "west" }, "\(results.map(\.line))")
      try east.setSliceReady("backend", false)
      try await eventually("only west's gateway now") { try served().map(\.address.description) == ["192.0.2.10:4143"] }

      // The member leaves the federation in west: its slice goes.
      try west.state.mergePatch(
        KubeService.self, name: "backend", namespace: "default",
        patch: ["metadata": ["labels": [MirrorMetadata.federatedLabel: .null]]])
      try await eventually("west's slice deleted") {
        Set(east.slices(of: "backend-federated").map(\.name)) == ["backend-federated-local-ipv4"]
      }
      try? await north.client.shutdown()
    }
  }
}
