import Foundation
import Logging
import MeshCore
import MeshDiscovery
import MeshIdentity
import MeshKube
import MeshKubeLocal
import MeshMulticluster
import MeshProxy
import MeshTLS
import Synchronization

/// One demo cluster: an embedded Kubernetes API with the cluster's control plane (identity with its own
/// issuer under the shared anchor, destination), a gateway, and `backend` behind its inbound proxy.
final class Cluster: Sendable {
  let name: String
  let state: LocalKubeState
  let apiURL: String
  let kubeconfig: String
  let kubeconfigPath: String
  let client: KubeClient
  let anchor: TrustAnchor.Credentials
  let identityPort: Int
  let destinationPort: Int
  let resolver: Resolver
  let services: ServiceRunner
  let logger: Logger

  private struct Parts {
    var gateway: MeshProxy.BoundPorts?
    var backend: MeshProxy.BoundPorts?
    var supervisor: LinkSupervisor?
    var backendApp: DemoBackend?
  }
  private let parts = Mutex(Parts())

  var gatewayPorts: MeshProxy.BoundPorts { parts.withLock { $0.gateway! } }
  var backendPorts: MeshProxy.BoundPorts { parts.withLock { $0.backend! } }
  var gatewayReports: [GatewayReport] { parts.withLock { $0.supervisor }?.reports ?? [] }
  var gatewayIdentity: IdentityName {
    try! IdentityName(serviceAccount: "swiftmesh-gateway", namespace: MirrorMetadata.multiclusterNamespace)
  }

  private init(
    name: String, state: LocalKubeState, apiURL: String, kubeconfig: String, kubeconfigPath: String,
    client: KubeClient, anchor: TrustAnchor.Credentials, identityPort: Int, destinationPort: Int, resolver: Resolver,
    services: ServiceRunner, logger: Logger
  ) {
    self.name = name
    self.state = state
    self.apiURL = apiURL
    self.kubeconfig = kubeconfig
    self.kubeconfigPath = kubeconfigPath
    self.client = client
    self.anchor = anchor
    self.identityPort = identityPort
    self.destinationPort = destinationPort
    self.resolver = resolver
    self.services = services
    self.logger = logger
  }

  static func token(cluster: String, serviceAccount: String) -> String { "\(cluster)-\(serviceAccount)-token" }

  static func start(
    name: String, anchor: TrustAnchor.Credentials, directory: String,
    in group: inout ThrowingTaskGroup<Void, any Error>, _ services: ServiceRunner, _ baseLogger: Logger
  ) async throws -> Cluster {
    var logger = baseLogger
    logger[metadataKey: "cluster"] = "\(name)"
    let state = LocalKubeState()
    let api = LocalKubeAPIServer(configuration: .defaults { $0.host = "127.0.0.1" }, state: state, logger: logger)
    services.start("\(name)-api", in: &group) { try await api.run() }
    let apiURL = try await api.url()
    let kubeconfig = try await api.kubeconfigYAML(contextName: name)
    let kubeconfigPath = "\(directory)/\(name).kubeconfig"
    try kubeconfig.write(toFile: kubeconfigPath, atomically: true, encoding: .utf8)
    let client = try KubeClient(config: try await api.clientConfig())
    services.track(client)
    _ = try state.create(Namespace(metadata: ObjectMeta(name: MirrorMetadata.multiclusterNamespace)))

    // Identity: this cluster's issuer under the shared anchor; tokens for the demo's service accounts.
    let issuer = try TrustAnchor.makeIssuer(signedBy: anchor, trustDomain: .clusterLocal, clusterName: name)
    let authority = try CertificateAuthority(issuerCertificate: issuer.certificate, issuerKey: issuer.privateKey)
    var tokens: [String: ServiceAccountRef] = [:]
    for (account, namespace) in [
      ("web", "default"), ("backend", "default"), ("swiftmesh-gateway", MirrorMetadata.multiclusterNamespace),
      ("swiftmesh-mirror", MirrorMetadata.multiclusterNamespace),
    ] {
      tokens[token(cluster: name, serviceAccount: account)] = ServiceAccountRef(name: account, namespace: namespace)
    }
    let identity = try IdentityServer(
      configuration: .defaults {
        $0.host = "127.0.0.1"
        $0.port = 0
      }, authority: authority, validator: TokenFileValidator(entries: tokens), logger: logger)
    services.start("\(name)-identity", in: &group) { try await identity.run() }
    let identityPort = try await identity.listeningPort

    let destination = DestinationServer(
      configuration: .defaults {
        $0.host = "127.0.0.1"
        $0.port = 0
      }, client: client, logger: logger)
    services.start("\(name)-destination", in: &group) { try await destination.run() }
    let destinationPort = try await destination.listeningPort
    let resolver = try Resolver(
      configuration: .defaults {
        $0.host = "127.0.0.1"
        $0.port = destinationPort
        $0.initialBackoff = .milliseconds(50)
        $0.maxBackoff = .seconds(1)
      }, logger: logger)
    services.start("\(name)-resolver", in: &group) { try await resolver.run() }

    let cluster = Cluster(
      name: name, state: state, apiURL: apiURL, kubeconfig: kubeconfig, kubeconfigPath: kubeconfigPath,
      client: client, anchor: anchor, identityPort: identityPort, destinationPort: destinationPort, resolver: resolver,
      services: services, logger: logger)

    // backend: the application and its inbound proxy, published as a meshed, exported Service.
    let app = try await DemoBackend(cluster: name, pod: "backend-0")
    let backend = try await cluster.startProxy(
      serviceAccount: "backend", namespace: "default", app: app.port, gateway: false, in: &group, services, logger)
    let gateway = try await cluster.startProxy(
      serviceAccount: "swiftmesh-gateway", namespace: MirrorMetadata.multiclusterNamespace, app: 1, gateway: true,
      in: &group, services, logger)
    let backendPorts = try await backend.proxy.boundPorts()
    let gatewayPorts = try await gateway.proxy.boundPorts()
    cluster.parts.withLock {
      $0.backend = backendPorts
      $0.gateway = gatewayPorts
      $0.backendApp = app
    }
    try cluster.publishBackend(inboundPort: backendPorts.inbound)
    try cluster.publishGateway(gatewayPorts)
    return cluster
  }

  struct RunningProxy {
    let proxy: MeshProxy
  }

  /// Certifies `serviceAccount` with the cluster's identity service, as mesh-proxy does at start.
  func certify(serviceAccount: String, namespace: String) async throws -> WorkloadCertificate {
    let identity = try IdentityName(serviceAccount: serviceAccount, namespace: namespace)
    let client = IdentityClient(
      configuration: .init(
        server: try Authority(host: "127.0.0.1", port: identityPort), trustAnchors: [anchor.certificate],
        serverIdentity: try IdentityServer.serverIdentity()))
    return try await client.certify(identity: identity, token: Self.token(cluster: name, serviceAccount: serviceAccount))
  }

  func startProxy(
    serviceAccount: String, namespace: String, app: Int, gateway: Bool,
    in group: inout ThrowingTaskGroup<Void, any Error>, _ services: ServiceRunner, _ logger: Logger
  ) async throws -> RunningProxy {
    let material = try await certify(serviceAccount: serviceAccount, namespace: namespace)
    let tls = try MeshTLS(material: material, trustAnchors: [anchor.certificate], logger: logger)
    let proxy = MeshProxy(
      configuration: .defaults {
        $0.outboundAddress = try! Authority("127.0.0.1:0")
        $0.inboundAddress = try! Authority("127.0.0.1:0")
        $0.adminAddress = try! Authority("127.0.0.1:0")
        $0.applicationAddress = try! Authority(host: "127.0.0.1", port: app)
        $0.gatewayMode = gateway
        $0.failfastTimeout = .seconds(3)
        $0.shutdownGracePeriod = .seconds(2)
      }, tls: tls, discovery: ResolverDiscovery(resolver: resolver, logger: logger), logger: logger)
    services.start("\(name)-\(gateway ? "gateway" : serviceAccount)", in: &group) { try await proxy.run() }
    _ = try await proxy.boundPorts()
    return RunningProxy(proxy: proxy)
  }

  private func publishBackend(inboundPort: Int) throws {
    _ = try state.create(
      MeshKube.Service(
        metadata: ObjectMeta(
          name: "backend", namespace: "default",
          labels: ["app": "backend", MirrorMetadata.exportedLabel: "true"]),
        spec: .init(selector: ["app": "backend"], ports: [.init(name: "http", port: 80, targetPort: .string("http"))])))
    _ = try state.create(
      Pod(
        metadata: ObjectMeta(
          name: "backend-0", namespace: "default", labels: ["app": "backend", "swiftmesh.io/proxy": "mesh-proxy"]),
        spec: .init(serviceAccountName: "backend")))
    _ = try state.create(
      Endpoints(
        metadata: ObjectMeta(name: "backend", namespace: "default"),
        subsets: [
          .init(
            addresses: [
              .init(ip: "127.0.0.1", targetRef: ObjectReference(kind: "Pod", namespace: "default", name: "backend-0"))
            ],
            ports: [.init(name: "http", port: inboundPort)])
        ]))
  }

  /// The gateway's Service, where `meshctl multicluster link` reads the gateway's address, ports and identity.
  private func publishGateway(_ ports: MeshProxy.BoundPorts) throws {
    _ = try state.create(
      MeshKube.Service(
        metadata: ObjectMeta(
          name: MirrorMetadata.gatewayServiceName, namespace: MirrorMetadata.multiclusterNamespace,
          annotations: [
            MirrorMetadata.gatewayIdentityAnnotation: gatewayIdentity.description,
            MirrorMetadata.gatewayAddressesAnnotation: "127.0.0.1",
          ]),
        spec: .init(ports: [
          .init(name: MirrorMetadata.gatewayPortName, port: ports.inbound),
          .init(name: MirrorMetadata.probePortName, port: ports.admin),
        ])))
  }

  /// The credentials Secret and the Link to `target`, as `meshctl multicluster link` prints them.
  func link(to target: Cluster) throws {
    let secret = MirrorMetadata.credentialsSecretName(cluster: target.name)
    _ = try state.create(
      Secret(
        metadata: ObjectMeta(name: secret, namespace: MirrorMetadata.multiclusterNamespace),
        type: MirrorMetadata.credentialsSecretType,
        data: [MirrorMetadata.kubeconfigKey: Data(target.kubeconfig.utf8)]))
    let gateway = target.gatewayPorts
    _ = try state.create(
      Link(
        metadata: ObjectMeta(name: target.name, namespace: MirrorMetadata.multiclusterNamespace),
        spec: .init(
          targetClusterName: target.name, targetClusterDomain: "cluster.local", clusterCredentialsSecret: secret,
          gatewayAddresses: ["127.0.0.1"], gatewayPort: gateway.inbound,
          gatewayIdentity: target.gatewayIdentity.description,
          probeSpec: .init(path: "/ready", port: gateway.admin, period: "1s", timeout: "1s", failureThreshold: 3),
          selector: MirrorMetadata.defaultSelector)))
  }

  /// This cluster's service mirror controller (mesh-mirror), with its own identity for probing gateways.
  func startMirror(
    in group: inout ThrowingTaskGroup<Void, any Error>, _ services: ServiceRunner, _ logger: Logger
  ) async throws {
    let material = try await certify(serviceAccount: "swiftmesh-mirror", namespace: MirrorMetadata.multiclusterNamespace)
    let supervisor = LinkSupervisor(
      localClient: client, tls: try MeshTLS(material: material, trustAnchors: [anchor.certificate], logger: logger),
      metrics: MirrorMetrics(), logger: logger)
    parts.withLock { $0.supervisor = supervisor }
    services.start("\(name)-mirror", in: &group) { try await supervisor.run() }
  }

  func stopGateway() { services.stop("\(name)-gateway") }

  func waitForMirror(of service: String, from target: Cluster, timeout: Duration = .seconds(30)) async throws {
    let mirror = "\(service)-\(target.name)"
    try await poll("\(name): mirror \(mirror) with the gateway as endpoint", timeout: timeout) {
      let endpoints = self.state.get(Endpoints.self, name: mirror, namespace: "default")
      return endpoints?.subsets?.contains { !($0.addresses ?? []).isEmpty } ?? false
    }
  }

  func waitForGateway(of target: Cluster, alive: Bool, timeout: Duration = .seconds(30)) async throws {
    try await poll("\(name): \(target.name)'s gateway probed \(alive ? "alive" : "dead")", timeout: timeout) {
      self.gatewayReports.contains { $0.cluster == target.name && $0.alive == alive }
    }
  }

  static let splitName = "backend-split"

  /// backend's ServiceProfile: GET is retryable (an idempotent read), so a request whose leaf dies under it
  /// is sent again, within the retry budget, to a leaf that can serve it.
  func applyProfile() throws {
    _ = try state.create(
      ServiceProfile(
        metadata: ObjectMeta(name: "backend.default.svc.cluster.local", namespace: "default"),
        spec: .init(routes: [
          .init(name: "GET /", condition: .init(method: "GET", pathRegex: "/.*"), isRetryable: true, timeout: "10s")
        ])))
  }

  func applySplit(westPercent: Int) throws {
    let west = max(0, min(100, westPercent))
    let split = TrafficSplit(
      metadata: ObjectMeta(name: Self.splitName, namespace: "default"),
      spec: .init(
        service: "backend",
        backends: [.init(service: "backend", weight: 100 - west), .init(service: "backend-west", weight: west)]))
    if var existing = state.get(TrafficSplit.self, name: Self.splitName, namespace: "default") {
      existing.spec = split.spec
      _ = try state.update(existing)
    } else {
      _ = try state.create(split)
    }
  }

  /// Waits until the destination service publishes the split with these weights.
  func waitForSplit(westPercent: Int, timeout: Duration = .seconds(30)) async throws {
    let apex = try Authority("backend.default.svc.cluster.local:80")
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask {
        for try await profile in self.resolver.profile(for: apex) {
          let west = profile.destinationOverrides.first { $0.authority.host.hasPrefix("backend-west.") }?.weight ?? 0
          let total = profile.destinationOverrides.reduce(UInt32(0)) { $0 + $1.weight }
          if total > 0, Int((Double(west) / Double(total) * 100).rounded()) == westPercent { return }
        }
      }
      group.addTask {
        try await Task.sleep(for: timeout)
        throw MeshError.unavailable("\(self.name): the destination service did not publish the split within \(timeout)")
      }
      try await group.next()
      group.cancelAll()
    }
  }

  /// Waits for the probe to find `target`'s gateway dead, then moves the split to the local leaf.
  func failOver(from target: Cluster) async -> String {
    let started = ContinuousClock.now
    do {
      try await waitForGateway(of: target, alive: false)
      try applySplit(westPercent: 0)
      return "failover: \(target.name)'s gateway probed dead after \(String(format: "%.1f", (ContinuousClock.now - started).seconds)) s; "
        + "split shifted to backend 100, backend-\(target.name) 0"
    } catch {
      return "failover did not happen: \(error)"
    }
  }

  private func poll(_ what: String, timeout: Duration, _ condition: @Sendable () -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
      if condition() { return }
      try await Task.sleep(for: .milliseconds(50))
    }
    throw MeshError.unavailable("timed out after \(timeout) waiting for \(what)")
  }
}
