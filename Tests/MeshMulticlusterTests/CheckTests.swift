import Foundation
import MeshCore
import MeshIdentity
import MeshKube
import MeshKubeLocal
import MeshMulticluster
import Synchronization
import Testing
import _MeshTestSupport

extension Cluster {
  /// Publishes `anchor` as the trust-roots ConfigMap in the control plane's namespace (as the walkthrough does).
  func publishTrustRoots(_ anchor: TrustAnchor.Credentials) throws {
    if state.get(Namespace.self, name: "swiftmesh") == nil {
      try state.create(Namespace(metadata: ObjectMeta(name: "swiftmesh")))
    }
    let map = ConfigMap(
      metadata: ObjectMeta(name: MulticlusterCheck.trustRootsConfigMap, namespace: "swiftmesh"),
      data: [MulticlusterCheck.trustRootsKey: try PEMFiles.pem([anchor.certificate])])
    if state.get(ConfigMap.self, name: MulticlusterCheck.trustRootsConfigMap, namespace: "swiftmesh") != nil {
      try state.delete(ConfigMap.self, name: MulticlusterCheck.trustRootsConfigMap, namespace: "swiftmesh")
    }
    try state.create(map)
  }
}

extension [MulticlusterCheck.Result] {
  func result(_ check: String, link: String? = nil) -> MulticlusterCheck.Result? {
    first { $0.check == check && $0.link == link }
  }
  var text: String { map(\.line).joined(separator: "\n") }
}

@Suite("meshctl multicluster check")
struct CheckTests {
  static func check(_ east: Cluster) async -> [MulticlusterCheck.Result] {
    await MulticlusterCheck.run(local: east.client, options: .init(), logger: testLogger)
  }

  /// Runs the check until `condition` holds for its results (bounded), returning the last results.
  static func checkUntil(
    _ east: Cluster, _ what: String, timeout: Duration = .seconds(10),
    _ condition: @escaping ([MulticlusterCheck.Result]) -> Bool
  ) async throws -> [MulticlusterCheck.Result] {
    var last: [MulticlusterCheck.Result] = []
    try await eventually("\(what); last check:\n\(last.text)", timeout: timeout) {
      last = await check(east)
      return condition(last)
    }
    return last
  }

  @Test("Passes on demo-style clusters, as a library and as the meshctl binary (table and json, exit 0)")
  func passes() async throws {
    let pki = try TestPKI()
    let gateway = try await TestGateway(pki: pki)
    let dir = try TemporaryDirectory(prefix: "multicluster-check")
    defer { dir.remove() }
    try await withClusters { east, west, group in
      try east.publishTrustRoots(pki.anchor)
      try west.publishTrustRoots(pki.anchor)
      try west.addService("api")
      try east.linkTo(
        west, gatewayAddresses: ["127.0.0.1"], gatewayIdentity: Identities.gateway.description,
        probe: Link.ProbeSpec(path: "/ready", port: gateway.port, period: "200ms", timeout: "1s", failureThreshold: 3))
      let controller = supervisor(for: east, tls: try mirrorTLS(pki)) {
        $0.endpointsAPI = .endpointSlices
        $0.heartbeatInterval = .milliseconds(500)
      }
      let handle = start(controller, in: &group)
      defer { handle.stop() }

      let results = try await Self.checkUntil(east, "every check passes") { $0.allSatisfy(\.ok) }
      #expect(results.map(\.check) == [
        "Link CRD", "trust anchor", "Link spec", "target credentials", "trust anchor", "mirror controller", "gateway",
        "mirror endpoints", "orphaned mirrors",
      ], "\(results.text)")
      let fingerprint = try #require(MulticlusterCheck.fingerprints(pem: try PEMFiles.pem([pki.anchor.certificate])).first)
      #expect(results.result("trust anchor", link: "west")?.detail.contains("sha256:\(fingerprint.prefix(16))") == true, "\(results.text)")
      #expect(results.result("gateway", link: "west")?.detail.contains("alive at 127.0.0.1, 1/1 addresses answer, p50") == true, "\(results.text)")
      #expect(results.result("mirror endpoints", link: "west")?.detail == "1 mirror with ready endpoints")

      // The binary: one line per check, exit 0; json with ok true.
      guard let meshctl = meshctlPath else { return }
      let kubeconfig = dir.file("east.kubeconfig")
      try east.kubeconfig.write(toFile: kubeconfig, atomically: true, encoding: .utf8)
      let table = try await Subprocess.run(meshctl, ["multicluster", "check", "--kubeconfig", kubeconfig])
      #expect(table.status == 0, "\(table)")
      let lines = table.stdout.split(separator: "\n")
      #expect(lines.filter { $0.hasPrefix("√ ") }.count == 9, "\(table.stdout)")
      #expect(!table.stdout.contains("×"), "\(table.stdout)")
      #expect(table.stdout.contains("√ trust anchor (west): both clusters use anchor sha256:"), "\(table.stdout)")
      let json = try await Subprocess.run(meshctl, ["multicluster", "check", "--kubeconfig", kubeconfig, "-o", "json"])
      #expect(json.status == 0, "\(json)")
      let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
      #expect(object?["ok"] as? Bool == true, "\(json.stdout)")
      #expect((object?["checks"] as? [[String: Any]])?.count == 9, "\(json.stdout)")
    }
    await gateway.stop()
  }

  @Test("Fails with the right cross and hint: an orphaned mirror, another trust anchor, a dead gateway, a broken kubeconfig Secret, a stopped mirror controller")
  func failures() async throws {
    let pki = try TestPKI()
    let gateways = GatewayBox()
    let port = try await StablePorts.free()
    gateways.set(try await TestGateway(pki: pki, port: port))
    let dir = try TemporaryDirectory(prefix: "multicluster-check-fail")
    defer { dir.remove() }
    try await withClusters { east, west, group in
      try east.publishTrustRoots(pki.anchor)
      try west.publishTrustRoots(pki.anchor)
      try west.addService("api")
      try east.linkTo(
        west, gatewayAddresses: ["127.0.0.1"], gatewayIdentity: Identities.gateway.description,
        probe: Link.ProbeSpec(path: "/ready", port: port, period: "200ms", timeout: "1s", failureThreshold: 2))
      let controller = supervisor(for: east, tls: try mirrorTLS(pki)) {
        $0.endpointsAPI = .endpointSlices
        $0.heartbeatInterval = .milliseconds(500)
      }
      let handle = start(controller, in: &group)
      defer { handle.stop() }
      _ = try await Self.checkUntil(east, "every check passes first") { $0.allSatisfy(\.ok) }

      // 1. Orphaned mirrors: one whose remote service is gone, one whose Link is gone.
      for (name, cluster) in [("gone-west", "west"), ("api-north", "north")] {
        try east.state.create(
          KubeService(
            metadata: ObjectMeta(
              name: name, namespace: "default",
              labels: [MirrorMetadata.mirroredServiceLabel: "true", MirrorMetadata.clusterNameLabel: cluster]),
            spec: .init(type: "ClusterIP", ports: [.init(name: "http", port: 80)])))
      }
      var results = await Self.check(east)
      let orphans = try #require(results.result("orphaned mirrors"), "\(results.text)")
      #expect(!orphans.ok)
      #expect(orphans.detail.contains("default/gone-west (default/gone is gone from west)"), "\(orphans.detail)")
      #expect(orphans.detail.contains("default/api-north (no Link to cluster 'north')"), "\(orphans.detail)")
      #expect(orphans.hint?.contains("kubectl delete service") == true)
      #expect(results.result("trust anchor", link: "west")?.ok == true, "only the orphans fail:\n\(results.text)")
      try east.state.delete(KubeService.self, name: "gone-west", namespace: "default")
      try east.state.delete(KubeService.self, name: "api-north", namespace: "default")

      // 2. The target publishes another trust anchor.
      let other = try TestPKI()
      try west.publishTrustRoots(other.anchor)
      results = await Self.check(east)
      let anchor = try #require(results.result("trust anchor", link: "west"), "\(results.text)")
      #expect(!anchor.ok)
      #expect(anchor.detail.contains("no anchor in common"), "\(anchor.detail)")
      let theirs = try MulticlusterCheck.fingerprints(pem: try PEMFiles.pem([other.anchor.certificate]))[0]
      #expect(anchor.detail.contains("the target publishes anchor sha256:\(theirs.prefix(16))"), "\(anchor.detail)")
      #expect(anchor.hint?.contains("one trust anchor") == true)
      #expect(anchor.line.hasPrefix("× trust anchor (west): "), "\(anchor.line)")
      try west.publishTrustRoots(pki.anchor)

      // 3. The gateway dies.
      await gateways.stop()
      results = try await Self.checkUntil(east, "the gateway reported dead") { $0.result("gateway", link: "west")?.ok == false
        && $0.result("gateway", link: "west")?.detail.hasPrefix("dead") == true }
      let gateway = try #require(results.result("gateway", link: "west"))
      #expect(gateway.detail.contains("dead at 127.0.0.1"), "\(gateway.detail)")
      #expect(gateway.hint?.contains("gateway") == true)
      #expect(results.result("mirror controller", link: "west")?.ok == true, "\(results.text)")
      results = try await Self.checkUntil(east, "the mirror's endpoints not ready") {
        $0.result("mirror endpoints", link: "west")?.ok == false
      }
      #expect(results.result("mirror endpoints", link: "west")?.detail.contains("default/api-west") == true, "\(results.text)")

      // The binary says the same and exits 1.
      if let meshctl = meshctlPath {
        let kubeconfig = dir.file("east.kubeconfig")
        try east.kubeconfig.write(toFile: kubeconfig, atomically: true, encoding: .utf8)
        let output = try await Subprocess.run(meshctl, ["multicluster", "check", "--kubeconfig", kubeconfig])
        #expect(output.status == 1, "\(output)")
        #expect(output.stdout.contains("× gateway (west): dead at 127.0.0.1"), "\(output.stdout)")
        #expect(output.stdout.contains("    hint: check the target's gateway"), "\(output.stdout)")
      }

      // 4. The credentials Secret holds a broken kubeconfig.
      try east.state.mergePatch(
        Secret.self, name: MirrorMetadata.credentialsSecretName(cluster: "west"), namespace: MirrorMetadata.multiclusterNamespace,
        patch: ["data": [MirrorMetadata.kubeconfigKey: .string(Data("clusters: [this is not: a kubeconfig".utf8).base64EncodedString())]])
      results = await Self.check(east)
      let credentials = try #require(results.result("target credentials", link: "west"), "\(results.text)")
      #expect(!credentials.ok)
      #expect(credentials.detail.hasPrefix("InvalidCredentials:"), "\(credentials.detail)")
      #expect(credentials.detail.contains("not a usable kubeconfig"), "\(credentials.detail)")
      #expect(credentials.hint?.contains("meshctl multicluster link --cluster-name west") == true)

      // 5. The mirror controller stops: its heartbeat goes stale.
      handle.stop()
      results = try await Self.checkUntil(east, "the mirror controller reported stopped") {
        $0.result("mirror controller", link: "west")?.ok == false
          && $0.result("mirror controller", link: "west")?.detail.contains("stale") == true
      }
      let mirror = try #require(results.result("mirror controller", link: "west"))
      #expect(mirror.detail.contains("the mirror controller stopped"), "\(mirror.detail)")
      #expect(mirror.hint?.contains("restart the mirror controller") == true)
      #expect(results.result("gateway", link: "west")?.detail.contains("no running mirror controller") == true)
    }
    await gateways.stop()
  }
}
