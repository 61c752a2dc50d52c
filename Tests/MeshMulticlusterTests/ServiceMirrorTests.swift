import Foundation
import MeshCore
import MeshDestination
import MeshDiscovery
import MeshKube
import MeshKubeLocal
import MeshMulticluster
import Testing
import _MeshTestSupport

@Suite("Service mirror between two embedded clusters")
struct ServiceMirrorTests {
  @Test("3 exported services are mirrored exactly; a port change, an unexport and a remote delete follow")
  func mirrorsExportedServices() async throws {
    try await withClusters { east, west, group in
      try west.addService("alpha", ports: [8080], labels: ["tier": "front", "mirror.swiftmesh.io/private": "x"],
                          annotations: ["team": "a", "kubectl.kubernetes.io/last-applied-configuration": "{}"])
      try west.addService("beta", ports: [9090, 9091])
      try west.addService("gamma", ports: [7070])
      try west.addService("hidden", exported: false)
      try east.linkTo(west, gatewayIdentity: Identities.gateway.description)
      let controller = start(supervisor(for: east), in: &group)
      defer { controller.stop() }

      try await eventually("3 mirrors in east") {
        try east.mirrorNames(of: "west") == ["default/alpha-west", "default/beta-west", "default/gamma-west"]
      }
      let alpha = try #require(try east.mirrors(of: "west")["default/alpha-west"])
      let remoteAlpha = try #require(west.state.get(KubeService.self, name: "alpha", namespace: "default"))
      #expect(alpha.metadata.labels?["tier"] == "front")
      #expect(alpha.metadata.labels?["app"] == "alpha")
      #expect(alpha.metadata.labels?["mirror.swiftmesh.io/private"] == nil, "the mesh's own labels are not copied")
      #expect(alpha.metadata.labels?[MirrorMetadata.exportedLabel] == nil, "a mirror is not itself exported")
      #expect(alpha.metadata.labels?[MirrorMetadata.mirroredServiceLabel] == "true")
      #expect(alpha.metadata.labels?[MirrorMetadata.clusterNameLabel] == "west")
      #expect(alpha.metadata.annotations?["team"] == "a")
      #expect(alpha.metadata.annotations?["kubectl.kubernetes.io/last-applied-configuration"] == nil)
      #expect(alpha.metadata.annotations?[MirrorMetadata.remoteFQNameAnnotation] == "alpha.default.svc.cluster.local")
      #expect(alpha.metadata.annotations?[MirrorMetadata.remoteResourceVersionAnnotation] == remoteAlpha.metadata.resourceVersion)
      #expect(alpha.spec?.ports?.map(\.port) == [8080])
      #expect(alpha.spec?.selector == nil)

      let beta = try #require(try east.mirrors(of: "west")["default/beta-west"])
      #expect(beta.spec?.ports?.map(\.port) == [9090, 9091])
      #expect(beta.spec?.ports?.map(\.name) == ["http", "port-1"])
      try await eventually("endpoints of beta-west") {
        east.state.get(Endpoints.self, name: "beta-west", namespace: "default") != nil
      }
      let endpoints = try #require(east.state.get(Endpoints.self, name: "beta-west", namespace: "default"))
      #expect(endpoints.subsets?.count == 1)
      #expect(endpoints.subsets?.first?.addresses?.map(\.ip) == ["192.0.2.10"])
      #expect(endpoints.subsets?.first?.ports?.map(\.port) == [4143, 4143])
      #expect(endpoints.subsets?.first?.ports?.map(\.name) == ["http", "port-1"])
      #expect(endpoints.metadata.annotations?[MirrorMetadata.gatewayIdentityAnnotation] == Identities.gateway.description)

      // The destination service reads the mirror as a remote endpoint behind the gateway.
      let translator = EndpointTranslator(trustDomain: .clusterLocal, controlPlaneNamespace: "swiftmesh")
      let set = translator.endpointSet(service: beta, endpoints: endpoints, port: 9091) { _, _ in nil }
      let endpoint = try #require(set.endpoints.first)
      #expect(endpoint.address.description == "192.0.2.10:4143")
      #expect(endpoint.tlsIdentity == Identities.gateway)
      #expect(endpoint.authorityOverride?.description == "beta.default.svc.cluster.local:9091")

      // A port change is mirrored.
      try west.state.mergePatch(
        KubeService.self, name: "gamma", namespace: "default",
        patch: ["spec": ["ports": [["name": "http", "port": 7171, "protocol": "TCP"]]]])
      try await eventually("gamma-west on port 7171") {
        try east.mirrors(of: "west")["default/gamma-west"]?.spec?.ports?.map(\.port) == [7171]
      }
      let gammaRV = west.state.get(KubeService.self, name: "gamma", namespace: "default")?.metadata.resourceVersion
      #expect(try east.mirrors(of: "west")["default/gamma-west"]?.metadata.annotations?[MirrorMetadata.remoteResourceVersionAnnotation] == gammaRV)

      // Unexport: the mirror goes (Service and Endpoints).
      try west.setExported("alpha", false)
      try await eventually("alpha-west deleted") {
        try east.mirrorNames(of: "west") == ["default/beta-west", "default/gamma-west"]
          && east.state.get(Endpoints.self, name: "alpha-west", namespace: "default") == nil
      }
      // Delete on west: the mirror goes.
      try west.deleteService("beta")
      try await eventually("beta-west deleted") { try east.mirrorNames(of: "west") == ["default/gamma-west"] }
      try await eventually("status lists the mirror") {
        east.link("west")?.status?.mirroredServices == ["default/gamma-west"]
          && east.condition("west", "MirrorsReady")?.status == "True"
      }
      #expect(east.condition("west", "CredentialsReady")?.status == "True")
      #expect(east.condition("west", "TargetReachable")?.status == "True")
    }
  }

  @Test("An unchanged remote service is not rewritten (updates only when the remote changed)")
  func noWritesWithoutChange() async throws {
    try await withClusters { east, west, group in
      try west.addService("alpha")
      try east.linkTo(west)
      let metrics = MirrorMetrics()
      let controller = start(supervisor(for: east, metrics: metrics) { $0.repairInterval = .milliseconds(200) }, in: &group)
      defer { controller.stop() }
      try await eventually("alpha-west") { try east.mirrorNames(of: "west") == ["default/alpha-west"] }
      try await eventually("endpoints") { east.state.get(Endpoints.self, name: "alpha-west", namespace: "default") != nil }
      let rv = try east.mirrors(of: "west")["default/alpha-west"]?.metadata.resourceVersion
      let epRV = east.state.get(Endpoints.self, name: "alpha-west", namespace: "default")?.metadata.resourceVersion
      // Several repairs pass (every 200 ms) and an unrelated remote change happens.
      try west.addService("unrelated", exported: false)
      try await Task.sleep(for: .seconds(1))
      #expect(try east.mirrors(of: "west")["default/alpha-west"]?.metadata.resourceVersion == rv)
      #expect(east.state.get(Endpoints.self, name: "alpha-west", namespace: "default")?.metadata.resourceVersion == epRV)
      // A manual edit of the mirror is repaired.
      try east.state.mergePatch(
        KubeService.self, name: "alpha-west", namespace: "default", patch: ["metadata": ["labels": ["app": "tampered"]]])
      try await eventually("tampered label repaired") {
        try east.mirrors(of: "west")["default/alpha-west"]?.metadata.labels?["app"] == "alpha"
      }
    }
  }

  @Test("Restarted after changes on west (one deleted, one created, one changed), east converges exactly")
  func restartConverges() async throws {
    try await withClusters { east, west, group in
      try west.addService("one")
      try west.addService("two")
      try west.addService("three", ports: [3000])
      try east.linkTo(west)
      let first = start(supervisor(for: east), in: &group)
      try await eventually("3 mirrors") {
        try east.mirrorNames(of: "west") == ["default/one-west", "default/three-west", "default/two-west"]
      }
      first.stop()
      try await Task.sleep(for: .milliseconds(300))
      #expect(try east.mirrorNames(of: "west").count == 3, "stopping the controller deletes nothing")

      try west.deleteService("one")
      try west.addService("four")
      try west.state.mergePatch(
        KubeService.self, name: "three", namespace: "default",
        patch: ["spec": ["ports": [["name": "http", "port": 3333, "protocol": "TCP"]]]])
      // A stray mirror-labelled object whose remote never existed is an orphan too.
      try east.state.create(
        KubeService(
          metadata: ObjectMeta(
            name: "ghost-west", namespace: "default",
            labels: [MirrorMetadata.mirroredServiceLabel: "true", MirrorMetadata.clusterNameLabel: "west"]),
          spec: .init(ports: [.init(name: "http", port: 1)])))

      let second = start(supervisor(for: east), in: &group)
      defer { second.stop() }
      try await eventually("exactly one, two(unchanged), three(changed), four") {
        try east.mirrorNames(of: "west") == ["default/four-west", "default/three-west", "default/two-west"]
          && east.mirrors(of: "west")["default/three-west"]?.spec?.ports?.map(\.port) == [3333]
      }
      try await eventually("endpoints of four-west, none of one-west") {
        east.state.get(Endpoints.self, name: "four-west", namespace: "default") != nil
          && east.state.get(Endpoints.self, name: "one-west", namespace: "default") == nil
      }
    }
  }

  @Test("Links both ways at once work independently; removing one Link deletes exactly its mirrors")
  func linksBothWays() async throws {
    try await withClusters { east, west, group in
      try west.addService("backend")
      try west.addService("db", ports: [5432])
      try east.addService("frontend")
      try east.linkTo(west)
      try west.linkTo(east)
      let eastController = start(supervisor(for: east), in: &group)
      let westController = start(supervisor(for: west), in: &group)
      defer {
        eastController.stop()
        westController.stop()
      }
      try await eventually("west's services mirrored in east") {
        try east.mirrorNames(of: "west") == ["default/backend-west", "default/db-west"]
      }
      try await eventually("east's service mirrored in west") {
        try west.mirrorNames(of: "east") == ["default/frontend-east"]
      }
      // Mirrors are never mirrored back.
      try await Task.sleep(for: .milliseconds(500))
      #expect(try east.mirrors(of: "east").isEmpty)
      #expect(try west.mirrors(of: "west").isEmpty)
      #expect(west.state.get(KubeService.self, name: "backend-west-east", namespace: "default") == nil)

      try east.state.delete(Link.self, name: "west", namespace: MirrorMetadata.multiclusterNamespace)
      try await eventually("east's mirrors of west deleted") {
        try east.mirrorNames(of: "west").isEmpty
          && east.state.list(Endpoints.self).allSatisfy { $0.metadata.labels?[MirrorMetadata.clusterNameLabel] != "west" }
      }
      #expect(try west.mirrorNames(of: "east") == ["default/frontend-east"])
      #expect(east.state.get(KubeService.self, name: "frontend", namespace: "default") != nil)
      // The other direction keeps working.
      try east.addService("checkout")
      try await eventually("checkout mirrored in west") {
        try west.mirrorNames(of: "east") == ["default/checkout-east", "default/frontend-east"]
      }
    }
  }

  @Test("No ready remote endpoint: the mirror has no addresses; ready again: the gateway address")
  func readiness() async throws {
    try await withClusters { east, west, group in
      try west.addService("api", ready: false)
      try east.linkTo(west)
      let controller = start(supervisor(for: east), in: &group)
      defer { controller.stop() }
      try await eventually("api-west endpoints without subsets") {
        east.state.get(Endpoints.self, name: "api-west", namespace: "default").map { ($0.subsets ?? []).isEmpty } ?? false
      }
      try west.state.update(
        Endpoints(
          metadata: west.state.get(Endpoints.self, name: "api", namespace: "default")!.metadata,
          subsets: [.init(addresses: [.init(ip: "10.1.0.9")], ports: [.init(name: "http", port: 8080)])]))
      try await eventually("api-west ready at the gateway") {
        east.state.get(Endpoints.self, name: "api-west", namespace: "default")?.subsets?.first?.addresses?.map(\.ip)
          == ["192.0.2.10"]
      }
    }
  }

  @Test("A missing local namespace is a condition; the mirror appears when the namespace does")
  func missingNamespace() async throws {
    try await withClusters { east, west, group in
      try west.state.create(Namespace(metadata: ObjectMeta(name: "shop")))
      try west.addService("cart", namespace: "shop")
      try west.addService("web")
      try east.linkTo(west)
      let controller = start(supervisor(for: east), in: &group)
      defer { controller.stop() }
      try await eventually("web mirrored, MirrorsReady NamespaceMissing") {
        try east.mirrorNames(of: "west") == ["default/web-west"]
          && east.condition("west", "MirrorsReady")?.reason == "NamespaceMissing"
      }
      let message = east.condition("west", "MirrorsReady")?.message ?? ""
      #expect(message.contains("shop") && message.contains("shop/cart"), "\(message)")
      #expect(east.condition("west", "MirrorsReady")?.status == "False")
      try east.state.create(Namespace(metadata: ObjectMeta(name: "shop")))
      try await eventually("cart mirrored once shop exists") {
        try east.mirrorNames(of: "west") == ["default/web-west", "shop/cart-west"]
          && east.condition("west", "MirrorsReady")?.status == "True"
      }
    }
  }

  @Test("Target unreachable: mirrors stay, status and metrics say so; back: changes flow again")
  func targetUnreachable() async throws {
    try await withClusters { east, west, group in
      try west.addService("alpha")
      try west.addService("beta")
      try east.linkTo(west)
      let metrics = MirrorMetrics()
      let controller = start(supervisor(for: east, metrics: metrics) { $0.repairInterval = .milliseconds(500) }, in: &group)
      defer { controller.stop() }
      try await eventually("2 mirrors") { try east.mirrorNames(of: "west").count == 2 }
      west.stop()
      try await eventually("TargetReachable False") {
        east.condition("west", "TargetReachable")?.status == "False"
      }
      #expect(east.condition("west", "TargetReachable")?.reason == "TargetUnreachable")
      #expect(String(decoding: metrics.exposition(), as: UTF8.self).contains("mirror_target_reachable{target_cluster_name=\"west\"} 0"))
      // Several checks and repairs later, nothing flapped.
      try await Task.sleep(for: .seconds(1.5))
      #expect(try east.mirrorNames(of: "west") == ["default/alpha-west", "default/beta-west"])

      try west.state.delete(KubeService.self, name: "alpha", namespace: "default")
      try west.addService("gamma")
      try await west.start(in: &group)
      try await eventually("changes made while unreachable arrive", timeout: .seconds(15)) {
        try east.mirrorNames(of: "west") == ["default/beta-west", "default/gamma-west"]
      }
      try await eventually("TargetReachable True") { east.condition("west", "TargetReachable")?.status == "True" }
    }
  }

  @Test("Link spec changes: new gateway address and port re-plan every mirror; a narrower selector deletes the rest")
  func linkSpecChanges() async throws {
    try await withClusters { east, west, group in
      try west.addService("alpha", labels: ["tier": "gold"])
      try west.addService("beta")
      try east.linkTo(west)
      let controller = start(supervisor(for: east), in: &group)
      defer { controller.stop() }
      try await eventually("2 mirrors at 192.0.2.10:4143") {
        try east.mirrorNames(of: "west") == ["default/alpha-west", "default/beta-west"]
          && east.state.get(Endpoints.self, name: "beta-west", namespace: "default")?.subsets?.first?.addresses?.map(\.ip) == ["192.0.2.10"]
      }
      try east.state.mergePatch(
        Link.self, name: "west", namespace: MirrorMetadata.multiclusterNamespace,
        patch: ["spec": ["gatewayAddresses": ["192.0.2.20", "192.0.2.21"], "gatewayPort": 4200]])
      try await eventually("every mirror's endpoints at the new gateway") {
        ["alpha-west", "beta-west"].allSatisfy { name in
          let subset = east.state.get(Endpoints.self, name: name, namespace: "default")?.subsets?.first
          return subset?.addresses?.map(\.ip) == ["192.0.2.20", "192.0.2.21"] && subset?.ports?.map(\.port) == [4200]
        }
      }
      try east.state.mergePatch(
        Link.self, name: "west", namespace: MirrorMetadata.multiclusterNamespace,
        patch: ["spec": ["selector": ["matchLabels": ["tier": "gold", MirrorMetadata.exportedLabel: "true"]]]])
      try await eventually("only alpha stays") { try east.mirrorNames(of: "west") == ["default/alpha-west"] }
      // An invalid update keeps the mirrors as they are and says why.
      try east.state.mergePatch(
        Link.self, name: "west", namespace: MirrorMetadata.multiclusterNamespace,
        patch: ["spec": ["gatewayAddresses": ["not an ip!"]]])
      try await eventually("LinkValid False") { east.condition("west", "LinkValid")?.status == "False" }
      #expect(east.condition("west", "LinkValid")?.message?.contains("not an ip!") == true)
      #expect(try east.mirrorNames(of: "west") == ["default/alpha-west"])
    }
  }

  @Test("Bad input (missing Secret, broken kubeconfig, invalid spec): clear conditions; a good Link keeps mirroring")
  func badInput() async throws {
    try await withClusters { east, west, group in
      try west.addService("alpha")
      // Good: east -> west.
      try east.linkTo(west)
      // Missing Secret.
      try east.link(name: "ghost", kubeconfig: "", createSecret: false)
      // Broken kubeconfig.
      try east.link(name: "broken", kubeconfig: "apiVersion: v1\nkind: Config\nclusters: [this is not: a kubeconfig")
      // Invalid spec (a gateway address that is neither an IP nor a DNS name).
      try east.link(name: "invalid", kubeconfig: west.kubeconfig, gatewayAddresses: ["https://gateway.example.com"])
      let controller = start(supervisor(for: east), in: &group)
      defer { controller.stop() }

      try await eventually("the good link mirrors") { try east.mirrorNames(of: "west") == ["default/alpha-west"] }
      try await eventually("SecretNotFound on ghost") {
        east.condition("ghost", "CredentialsReady")?.reason == "SecretNotFound"
      }
      let missing = try #require(east.condition("ghost", "CredentialsReady"))
      #expect(missing.status == "False")
      #expect(missing.message?.contains("cluster-credentials-ghost") == true, "\(missing)")
      try await eventually("InvalidCredentials on broken") {
        east.condition("broken", "CredentialsReady")?.reason == "InvalidCredentials"
      }
      #expect(east.condition("broken", "CredentialsReady")?.message?.contains("not a usable kubeconfig") == true)
      try await eventually("InvalidLink on invalid") { east.condition("invalid", "LinkValid")?.reason == "InvalidLink" }
      #expect(east.condition("invalid", "LinkValid")?.message?.contains("https://gateway.example.com") == true)

      // The good link is untouched and keeps following.
      try west.addService("beta")
      try await eventually("beta mirrored despite the bad links") {
        try east.mirrorNames(of: "west") == ["default/alpha-west", "default/beta-west"]
      }
      // Fixing the missing Secret (pointing at west under the name ghost) heals that Link.
      try east.state.create(
        Secret(
          metadata: ObjectMeta(name: "cluster-credentials-ghost", namespace: MirrorMetadata.multiclusterNamespace),
          data: [MirrorMetadata.kubeconfigKey: Data(west.kubeconfig.utf8)]))
      try await eventually("ghost link recovers") {
        east.condition("ghost", "CredentialsReady")?.status == "True"
          && (try? east.mirrorNames(of: "ghost")) == ["default/alpha-ghost", "default/beta-ghost"]
      }
    }
  }
}
