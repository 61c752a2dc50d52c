import Foundation
import MeshCore
import MeshDestination
import MeshDiscovery
import MeshKube
import MeshKubeLocal
import MeshMulticluster
import Testing
import _MeshTestSupport

extension Cluster {
  /// A StatefulSet-style headless Service `name` (exported) whose slice has one endpoint per hostname.
  func addHeadlessService(_ name: String, hostnames: [String?], port: Int = 8080) throws {
    try state.create(
      KubeService(
        metadata: ObjectMeta(name: name, namespace: "default", labels: ["app": name, MirrorMetadata.exportedLabel: "true"]),
        spec: .init(selector: ["app": name], ports: [.init(name: "http", port: port, protocol: "TCP")], clusterIP: "None")))
    try setHeadlessEndpoints(name, hostnames: hostnames, port: port, create: true)
  }

  func setHeadlessEndpoints(_ name: String, hostnames: [String?], port: Int = 8080, create: Bool = false) throws {
    let slice = EndpointSlice(
      metadata: ObjectMeta(
        name: "\(name)-abcde", namespace: "default",
        labels: [EndpointSlice.serviceNameLabel: name, EndpointSlice.managedByLabel: "endpointslice-controller.k8s.io"]),
      addressType: "IPv4",
      endpoints: hostnames.enumerated().map { i, hostname in
        .init(
          addresses: ["10.1.0.\(10 + i)"], conditions: .init(ready: true, serving: true, terminating: false),
          hostname: hostname, targetRef: ObjectReference(kind: "Pod", namespace: "default", name: hostname ?? "\(name)-\(i)"))
      },
      ports: [.init(name: "http", port: port, protocol: "TCP")])
    if create {
      try state.create(slice)
    } else {
      var updated = slice
      updated.metadata.resourceVersion = state.get(EndpointSlice.self, name: slice.name, namespace: "default")?.metadata.resourceVersion
      _ = try state.update(updated)
    }
  }

  func service(_ name: String) -> KubeService? { state.get(KubeService.self, name: name, namespace: "default") }

  func slices(of service: String) -> [EndpointSlice] {
    ((try? state.list(EndpointSlice.self)) ?? []).filter {
      $0.namespace == "default" && $0.metadata.labels?[EndpointSlice.serviceNameLabel] == service
    }
  }
}

@Suite("Headless services mirrored with their hostnames")
struct HeadlessMirrorTests {
  @Test("db (db-0, db-1) from west: a headless db-west whose endpoints keep the hostnames, db-0-west and db-1-west behind the gateway for db-0.db... and db-1.db...; a scale-down and an unexport follow; no hostnames: a ClusterIP mirror")
  func headless() async throws {
    try await withClusters { east, west, group in
      try west.addHeadlessService("db", hostnames: ["db-0", "db-1"])
      try west.addHeadlessService("plain", hostnames: [nil, nil])
      try east.linkTo(west, gatewayIdentity: Identities.gateway.description)
      let controller = start(supervisor(for: east) { $0.endpointsAPI = .endpointSlices }, in: &group)
      defer { controller.stop() }

      try await eventually("db-west, db-0-west, db-1-west and plain-west, the headless one with both hostnames") {
        try east.mirrorNames(of: "west") == ["default/db-0-west", "default/db-1-west", "default/db-west", "default/plain-west"]
          && east.slices(of: "db-west").flatMap(\.endpoints).compactMap(\.hostname).sorted() == ["db-0", "db-1"]
      }
      let headless = try #require(east.service("db-west"))
      #expect(headless.spec?.clusterIP == "None", "the mirror of a headless service is headless")
      #expect(headless.spec?.ports?.map(\.port) == [8080])
      var clusterIPs: [String: String] = [:]
      for hostname in ["db-0", "db-1"] {
        let mirror = try #require(east.service("\(hostname)-west"))
        let ip = try #require(mirror.spec?.clusterIP)
        #expect(ip != "None" && !ip.isEmpty, "an endpoint mirror is a ClusterIP service")
        clusterIPs[hostname] = ip
        #expect(mirror.metadata.annotations?[MirrorMetadata.remoteFQNameAnnotation] == "\(hostname).db.default.svc.cluster.local")
        #expect(mirror.metadata.labels?[MirrorMetadata.headlessMirrorLabel] == "db-west")
        // Behind the gateway, with the remote pod's authority: the target's gateway routes to that pod.
        let slices = east.slices(of: "\(hostname)-west")
        #expect(slices.flatMap(\.endpoints).flatMap(\.addresses) == ["192.0.2.10"])
        #expect(slices.first?.ports?.map(\.port) == [4143])
        let translator = EndpointTranslator(trustDomain: .clusterLocal, controlPlaneNamespace: "swiftmesh")
        let set = translator.endpointSet(service: mirror, slices: slices, port: 8080) { _, _ in nil }
        let endpoint = try #require(set.endpoints.first)
        #expect(endpoint.address.description == "192.0.2.10:4143")
        #expect(endpoint.tlsIdentity == Identities.gateway)
        #expect(endpoint.authorityOverride?.description == "\(hostname).db.default.svc.cluster.local:8080")
      }
      // The headless mirror's endpoints: each hostname at its endpoint mirror's cluster IP, on the service port,
      // so `db-0.db-west.default.svc.<domain>` resolves to db-0-west.
      let members = east.slices(of: "db-west").flatMap(\.endpoints)
      #expect(Dictionary(uniqueKeysWithValues: members.map { ($0.hostname ?? "", $0.addresses.first ?? "") }) == clusterIPs)
      #expect(east.slices(of: "db-west").first?.ports?.map(\.port) == [8080])
      #expect(members.allSatisfy { $0.conditions?.ready == true })

      // Headless without hostnames: an ordinary ClusterIP mirror behind the gateway.
      try await eventually("plain-west behind the gateway") {
        east.slices(of: "plain-west").flatMap(\.endpoints).flatMap(\.addresses) == ["192.0.2.10"]
      }
      let plain = try #require(east.service("plain-west"))
      #expect(plain.spec?.clusterIP != "None")

      // Scale down to db-0: db-1-west goes, the headless mirror keeps db-0 only.
      try west.setHeadlessEndpoints("db", hostnames: ["db-0"])
      try await eventually("db-1-west deleted") {
        try east.mirrorNames(of: "west") == ["default/db-0-west", "default/db-west", "default/plain-west"]
          && east.slices(of: "db-west").flatMap(\.endpoints).compactMap(\.hostname) == ["db-0"]
          && east.slices(of: "db-1-west").isEmpty
      }
      // The check finds no orphan among endpoint mirrors.
      let results = await MulticlusterCheck.run(local: east.client, logger: testLogger)
      #expect(results.first { $0.check == "orphaned mirrors" }?.ok == true, "\(results.map(\.line))")

      // Unexported: the headless mirror and its endpoint mirrors go.
      try west.setExported("db", false)
      try await eventually("db's mirrors deleted") {
        try east.mirrorNames(of: "west") == ["default/plain-west"] && east.slices(of: "db-0-west").isEmpty
          && east.slices(of: "db-west").isEmpty
      }
    }
  }
}
