import Foundation
import MeshCore
import MeshKube
import MeshMulticluster
import Testing
import _MeshTestSupport

@Suite("Link settings and the mirror planner (pure)")
struct PlannerTests {
  static func link(_ configure: (inout Link.Spec) -> Void = { _ in }) -> Link {
    var spec = Link.Spec(
      targetClusterName: "west", gatewayAddresses: ["192.0.2.10", "192.0.2.11"],
      gatewayIdentity: Identities.gateway.description, selector: MirrorMetadata.defaultSelector)
    configure(&spec)
    return Link(metadata: ObjectMeta(name: "west", namespace: MirrorMetadata.multiclusterNamespace), spec: spec)
  }

  static func remote(
    _ name: String = "api", labels: [String: String] = [MirrorMetadata.exportedLabel: "true"],
    annotations: [String: String]? = nil, ports: [KubeService.Port] = [.init(name: "http", port: 80, protocol: "TCP")]
  ) -> KubeService {
    var meta = ObjectMeta(name: name, namespace: "shop", labels: labels, annotations: annotations)
    meta.resourceVersion = "42"
    return KubeService(metadata: meta, spec: .init(selector: ["app": name], ports: ports))
  }

  @Test("Defaults: domain cluster.local, secret cluster-credentials-<cluster>, port 4143, probe /ready 4191 3s 30s x3")
  func defaults() throws {
    let settings = try LinkSettings(link: Self.link())
    #expect(settings.targetClusterDomain == "cluster.local")
    #expect(settings.credentialsSecret == "cluster-credentials-west")
    #expect(settings.gatewayPort == 4143)
    #expect(settings.probe == ProbeSettings())
    #expect(settings.probe.path == "/ready" && settings.probe.port == 4191)
    #expect(settings.probe.period == .seconds(3) && settings.probe.timeout == .seconds(30))
    #expect(settings.probe.failureThreshold == 3)
    #expect(settings.gatewayIdentity == Identities.gateway)
    let probe = try ProbeSettings(.init(path: "/live", port: 9, period: "1m30s", timeout: "250ms", failureThreshold: 5))
    #expect(probe.period == .seconds(90) && probe.timeout == .milliseconds(250) && probe.failureThreshold == 5)
  }

  @Test("Bad specs are rejected with the field and the value")
  func invalid() {
    let cases: [(field: String, value: String, change: (inout Link.Spec) -> Void)] = [
      ("targetClusterName", "West_1", { $0.targetClusterName = "West_1" }),
      ("gatewayAddresses", "gw example com", { $0.gatewayAddresses = ["gw example com"] }),
      ("gatewayAddresses", "999.1.2.3", { $0.gatewayAddresses = ["999.1.2.3"] }),
      ("gatewayAddresses", "empty", { $0.gatewayAddresses = [] }),
      ("gatewayPort", "70000", { $0.gatewayPort = 70000 }),
      ("gatewayIdentity", "not an identity", { $0.gatewayIdentity = "not an identity" }),
      ("probeSpec.period", "3 parsecs", { $0.probeSpec = .init(period: "3 parsecs") }),
      ("probeSpec.path", "ready", { $0.probeSpec = .init(path: "ready") }),
      ("probeSpec.failureThreshold", "0", { $0.probeSpec = .init(failureThreshold: 0) }),
    ]
    for c in cases {
      do {
        _ = try LinkSettings(link: Self.link(c.change))
        Issue.record("accepted a bad \(c.field)")
      } catch {
        #expect(error.code == .invalidLink)
        #expect(error.message.contains(c.field) && error.message.contains(c.value), "\(error)")
      }
    }
  }

  @Test("Selection: an empty or missing selector exports nothing; mirrors are never exported")
  func selection() throws {
    let settings = try LinkSettings(link: Self.link())
    #expect(settings.exports(Self.remote()))
    #expect(!settings.exports(Self.remote(labels: ["app": "api"])))
    #expect(!settings.exports(Self.remote(labels: [MirrorMetadata.exportedLabel: "true", MirrorMetadata.mirroredServiceLabel: "true"])))
    for selector in [nil, LabelSelector(), LabelSelector(matchLabels: [:], matchExpressions: [])] {
      let none = try LinkSettings(link: Self.link { $0.selector = selector })
      #expect(!none.selectsAnything)
      #expect(!none.exports(Self.remote()))
      #expect(!none.exports(Self.remote(labels: [:])))
    }
    let expression = try LinkSettings(
      link: Self.link { $0.selector = LabelSelector(matchExpressions: [.init(key: "tier", operator: "In", values: ["a", "b"])]) })
    #expect(expression.exports(Self.remote(labels: ["tier": "b"])))
    #expect(!expression.exports(Self.remote(labels: ["tier": "c"])))
  }

  @Test("The mirror Service: name, copied labels and annotations minus the mesh's own, mirror metadata, ports")
  func mirrorService() throws {
    let planner = MirrorPlanner(settings: try LinkSettings(link: Self.link { $0.targetClusterDomain = "west.example" }))
    var port = KubeService.Port(name: "grpc", port: 9090, targetPort: .string("grpc"))
    port.appProtocol = "kubernetes.io/h2c"
    let mirror = planner.service(
      for: Self.remote(
        labels: [MirrorMetadata.exportedLabel: "true", "app": "api", "mirror.swiftmesh.io/cluster-name": "spoofed"],
        annotations: ["owner": "team-a", "kubectl.kubernetes.io/last-applied-configuration": "{}", "mirror.swiftmesh.io/x": "y"],
        ports: [.init(name: "http", port: 80), port]))
    #expect(mirror.name == "api-west" && mirror.namespace == "shop")
    #expect(mirror.metadata.labels == [
      "app": "api", MirrorMetadata.mirroredServiceLabel: "true", MirrorMetadata.clusterNameLabel: "west",
    ])
    #expect(mirror.metadata.annotations == [
      "owner": "team-a", MirrorMetadata.remoteFQNameAnnotation: "api.shop.svc.west.example",
      MirrorMetadata.remoteResourceVersionAnnotation: "42",
    ])
    #expect(mirror.spec?.type == "ClusterIP" && mirror.spec?.selector == nil)
    #expect(mirror.spec?.ports?.map(\.name) == ["http", "grpc"])
    #expect(mirror.spec?.ports?.map(\.port) == [80, 9090])
    #expect(mirror.spec?.ports?.map(\.protocol) == ["TCP", "TCP"])
    #expect(mirror.spec?.ports?.last?.appProtocol == "kubernetes.io/h2c")
  }

  @Test("The mirror Endpoints: gateway addresses and port per service port; none without ready remote; not ready when dead")
  func mirrorEndpoints() throws {
    let planner = MirrorPlanner(settings: try LinkSettings(link: Self.link { $0.gatewayPort = 4243 }))
    let remote = Self.remote(ports: [.init(name: "http", port: 80), .init(name: "admin", port: 9990)])
    let ready = Endpoints(
      metadata: ObjectMeta(name: "api", namespace: "shop"),
      subsets: [.init(addresses: [.init(ip: "10.0.0.1")], ports: [.init(name: "http", port: 8080)])])
    let alive = planner.endpoints(for: remote, remoteEndpoints: ready, gatewayAlive: true)
    #expect(alive.name == "api-west")
    #expect(alive.subsets?.count == 1)
    #expect(alive.subsets?.first?.addresses?.map(\.ip) == ["192.0.2.10", "192.0.2.11"])
    #expect(alive.subsets?.first?.notReadyAddresses == nil)
    #expect(alive.subsets?.first?.ports?.map(\.name) == ["http", "admin"])
    #expect(alive.subsets?.first?.ports?.map(\.port) == [4243, 4243])
    #expect(alive.metadata.annotations?[MirrorMetadata.gatewayIdentityAnnotation] == Identities.gateway.description)
    #expect(alive.metadata.labels?[MirrorMetadata.clusterNameLabel] == "west")

    let dead = planner.endpoints(for: remote, remoteEndpoints: ready, gatewayAlive: false)
    #expect(dead.subsets?.first?.addresses == nil)
    #expect(dead.subsets?.first?.notReadyAddresses?.map(\.ip) == ["192.0.2.10", "192.0.2.11"])

    let notReady = Endpoints(
      metadata: ready.metadata, subsets: [.init(notReadyAddresses: [.init(ip: "10.0.0.1")], ports: [.init(port: 8080)])])
    #expect(planner.endpoints(for: remote, remoteEndpoints: notReady, gatewayAlive: true).subsets == [])
    #expect(planner.endpoints(for: remote, remoteEndpoints: nil, gatewayAlive: true).subsets == [])

    let anonymous = MirrorPlanner(settings: try LinkSettings(link: Self.link { $0.gatewayIdentity = nil }))
    #expect(anonymous.endpoints(for: remote, remoteEndpoints: ready, gatewayAlive: true)
      .metadata.annotations?[MirrorMetadata.gatewayIdentityAnnotation] == nil)
  }

  @Test("Comparison ignores what the API server adds (clusterIP, default protocol) and sees real changes")
  func comparison() throws {
    let planner = MirrorPlanner(settings: try LinkSettings(link: Self.link()))
    let desired = planner.service(for: Self.remote())
    var current = desired
    current.metadata.resourceVersion = "7"
    current.metadata.uid = "u"
    current.spec?.clusterIP = "10.96.0.12"
    current.spec?.ports = [.init(name: "http", port: 80)]  // protocol defaulted server-side
    #expect(MirrorPlanner.matches(current, desired))
    var changed = current
    changed.metadata.annotations?[MirrorMetadata.remoteResourceVersionAnnotation] = "43"
    #expect(!MirrorPlanner.matches(changed, desired))
    var port = current
    port.spec?.ports = [.init(name: "http", port: 81)]
    #expect(!MirrorPlanner.matches(port, desired))
    let applied = MirrorPlanner.applying(desired, to: port)
    #expect(applied.spec?.clusterIP == "10.96.0.12" && applied.metadata.resourceVersion == "7")
    #expect(MirrorPlanner.matches(applied, desired))

    let ready = Endpoints(
      metadata: ObjectMeta(name: "api", namespace: "shop"),
      subsets: [.init(addresses: [.init(ip: "10.0.0.1")], ports: [.init(port: 80)])])
    let alive = planner.endpoints(for: Self.remote(), remoteEndpoints: ready, gatewayAlive: true)
    let dead = planner.endpoints(for: Self.remote(), remoteEndpoints: ready, gatewayAlive: false)
    #expect(!MirrorPlanner.matches(alive, dead))
    var empty = alive
    empty.subsets = nil
    #expect(MirrorPlanner.matches(empty, planner.endpoints(for: Self.remote(), remoteEndpoints: nil, gatewayAlive: true)))
  }

  @Test("The gateways table is aligned; values are formatted")
  func table() {
    let reports = [
      GatewayReport(
        link: "swiftmesh-multicluster/west", cluster: "west", alive: true, probed: true, numServices: 12,
        latencyP50: 1.25, latencyP95: 12.4, latencyP99: 130, targetReachable: true, lastError: nil,
        addresses: ["192.0.2.10", "192.0.2.11"], aliveAddresses: 1),
      GatewayReport(
        link: "swiftmesh-multicluster/far-away", cluster: "far-away", alive: false, probed: true, numServices: 3,
        latencyP50: nil, latencyP95: nil, latencyP99: nil, targetReachable: false, lastError: "refused"),
    ]
    #expect(GatewayReport.table(reports) == """
      CLUSTER   ALIVE  ADDRESSES  NUM_SVC  LATENCY_P50  LATENCY_P95  LATENCY_P99
      west      True   1/2        12       1.2ms        12ms         130ms
      far-away  False  -          3        -            -            -

      """)
  }

  @Test("Link manifests: Secret with the kubeconfig, Link with the gateway values; unlink names both")
  func manifests() throws {
    var gateway = GatewayValues()
    gateway.addresses = ["192.0.2.1"]
    gateway.port = 4143
    gateway.identity = Identities.gateway.description
    let manifest = LinkManifest(clusterName: "west", kubeconfig: "apiVersion: v1\nkind: Config\n", gateway: gateway)
    try manifest.validate()
    #expect(manifest.secret.data?["kubeconfig"] == Data("apiVersion: v1\nkind: Config\n".utf8))
    #expect(manifest.secret.type == MirrorMetadata.credentialsSecretType)
    #expect(manifest.link.spec.clusterCredentialsSecret == "cluster-credentials-west")
    #expect(manifest.link.spec.probeSpec?.port == 4191)
    let yaml = try manifest.yaml()
    #expect(yaml.hasPrefix("apiVersion: v1\nkind: Secret\n"), "\(yaml)")
    #expect(yaml.contains("---\napiVersion: multicluster.swiftmesh.io/v1alpha1\nkind: Link\n"), "\(yaml)")
    #expect(yaml.contains(Data("apiVersion: v1\nkind: Config\n".utf8).base64EncodedString()))
    var noGateway = manifest
    noGateway.gateway.addresses = []
    #expect(throws: MulticlusterError.invalidLink("")) { try noGateway.validate() }
    let unlink = try LinkManifest.unlinkYAML(clusterName: "west")
    #expect(unlink.contains("kind: Link") && unlink.contains("name: west") && unlink.contains("name: cluster-credentials-west"))
  }
}
