import AsyncHTTPClient
import Foundation
import Logging
import MeshCore
import MeshDestination
import MeshDiscovery
import MeshIdentity
import MeshKube
import MeshKubeLocal
import MeshMulticluster
import MeshProxy
import MeshTLS
import NIOCore
import NIOHTTP1
import Synchronization

/// How the demo runs its components: as tasks in this process, or each as its own executable.
enum DemoRuntime: Sendable {
  /// Tasks of this process; the anchor signs each cluster's issuer in memory.
  case tasks(anchor: TrustAnchor.Credentials)
  /// Executables (`meshctl dev kube-api`, `mesh-controller`, `mesh-proxy`, `mesh-mirror`, ...) started from
  /// the command line, as in a real deployment; the anchor is `ca/ca.crt` in the demo's directory.
  case processes(DemoProcesses)
}

/// A proxy's listening ports.
struct ProxyPorts: Sendable, Hashable {
  var inbound: Int
  var outbound: Int
  var admin: Int
  /// The tap API, when the proxy serves it.
  var tap: Int? = nil
}

/// One demo cluster: a Kubernetes API with the cluster's control plane (identity with its own issuer under the
/// shared anchor, destination), a gateway, and `backend` behind its inbound proxy. Every object goes through
/// the cluster's API with a KubeClient, in both runtimes.
final class Cluster: Sendable {
  let name: String
  let apiURL: String
  let kubeconfig: String
  let kubeconfigPath: String
  let client: KubeClient
  let runtime: DemoRuntime
  let identityPort: Int
  let destinationPort: Int
  /// The demo driver's own view of the destination service (to know when a split is published).
  let resolver: Resolver
  let services: ServiceRunner
  let logger: Logger

  private struct Parts {
    var gateway: ProxyPorts?
    var backend: ProxyPorts?
    var supervisor: LinkSupervisor?
    var mirrorAdminPort: Int?
    var backendApp: DemoBackend?
    /// In-process proxies' tap hubs, by component.
    var tapHubs: [String: TapHub] = [:]
  }
  private let parts = Mutex(Parts())

  var gatewayPorts: ProxyPorts { parts.withLock { $0.gateway! } }
  var backendPorts: ProxyPorts { parts.withLock { $0.backend! } }
  var mirrorAdminPort: Int? { parts.withLock { $0.mirrorAdminPort } }
  var gatewayIdentity: IdentityName {
    try! IdentityName(serviceAccount: "swiftmesh-gateway", namespace: MirrorMetadata.multiclusterNamespace)
  }

  private init(
    name: String, apiURL: String, kubeconfig: String, kubeconfigPath: String, client: KubeClient,
    runtime: DemoRuntime, identityPort: Int, destinationPort: Int, resolver: Resolver, services: ServiceRunner,
    logger: Logger
  ) {
    self.name = name
    self.apiURL = apiURL
    self.kubeconfig = kubeconfig
    self.kubeconfigPath = kubeconfigPath
    self.client = client
    self.runtime = runtime
    self.identityPort = identityPort
    self.destinationPort = destinationPort
    self.resolver = resolver
    self.services = services
    self.logger = logger
  }

  static func token(cluster: String, serviceAccount: String) -> String { "\(cluster)-\(serviceAccount)-token" }

  /// The audience of the tokens workloads present to the identity service (`mesh-controller identity`'s default).
  static let identityAudience = "identity.swiftmesh.io"

  /// The service accounts the demo's identity services know, each with its token.
  static let serviceAccounts = [
    ("web", "default"), ("backend", "default"), ("db-0", "default"), ("db-1", "default"), ("swiftmesh-gateway", MirrorMetadata.multiclusterNamespace),
    ("swiftmesh-mirror", MirrorMetadata.multiclusterNamespace),
  ]

  static func start(
    name: String, runtime: DemoRuntime, directory: String,
    in group: inout ThrowingTaskGroup<Void, any Error>, _ services: ServiceRunner, _ baseLogger: Logger
  ) async throws -> Cluster {
    var logger = baseLogger
    logger[metadataKey: "cluster"] = "\(name)"
    let kubeconfigPath = "\(directory)/\(name).kubeconfig"
    let apiURL: String
    let kubeconfig: String
    let clientConfig: KubeClientConfig
    let identityPort: Int
    let destinationPort: Int
    switch runtime {
    case .tasks(let anchor):
      let api = LocalKubeAPIServer(
        configuration: .defaults { $0.host = "127.0.0.1" }, state: LocalKubeState(), logger: logger)
      services.start("\(name)-api", in: &group) { try await api.run() }
      apiURL = try await api.url()
      kubeconfig = try await api.kubeconfigYAML(contextName: name)
      try LocalKubeAPIServer.writeSecret(kubeconfig, to: kubeconfigPath)  // it holds the admin token
      clientConfig = try await api.clientConfig()

      // Identity: this cluster's issuer under the shared anchor; tokens for the demo's service accounts.
      let issuer = try TrustAnchor.makeIssuer(signedBy: anchor, trustDomain: .clusterLocal, clusterName: name)
      let authority = try CertificateAuthority(issuerCertificate: issuer.certificate, issuerKey: issuer.privateKey)
      var tokens: [String: ServiceAccountRef] = [:]
      for (account, namespace) in serviceAccounts {
        tokens[token(cluster: name, serviceAccount: account)] = ServiceAccountRef(name: account, namespace: namespace)
      }
      let identity = try IdentityServer(
        configuration: .defaults {
          $0.host = "127.0.0.1"
          $0.port = 0
        }, authority: authority, validator: TokenFileValidator(entries: tokens), logger: logger)
      services.start("\(name)-identity", in: &group) { try await identity.run() }
      identityPort = try await identity.listeningPort

      // The destination service reads the API as swiftmesh-destination, with that account's role only.
      let admin = try KubeClient(config: clientConfig)
      services.track(admin)
      let destinationToken = try await ComponentAccess.destination.grant(through: admin)
      let client = try KubeClient(config: clientConfig.with(token: destinationToken))
      let destination = DestinationServer(
        configuration: .defaults {
          $0.host = "127.0.0.1"
          $0.port = 0
        }, client: client, logger: logger)
      services.track(client)
      services.start("\(name)-destination", in: &group) { try await destination.run() }
      destinationPort = try await destination.listeningPort

    case .processes(let processes):
      // meshctl dev kube-api: the embedded API server as a process; it writes its kubeconfig when it listens.
      try processes.start(
        "\(name)-api", "meshctl",
        ["dev", "kube-api", "--listen", "127.0.0.1:0", "--kubeconfig-out", kubeconfigPath])
      try await processes.wait(for: "\(name)'s API server to write \(kubeconfigPath)") {
        (try? KubeClientConfig.load(kubeconfig: kubeconfigPath)) != nil
      }
      clientConfig = try KubeClientConfig.load(kubeconfig: kubeconfigPath)
      kubeconfig = try String(contentsOfFile: kubeconfigPath, encoding: .utf8)
      apiURL = clientConfig.server

      // meshctl identity issuer, then mesh-controller identity with this cluster's issuer, authenticating
      // workloads by their service-account tokens (TokenReview against this cluster's API), as in a real
      // cluster: each workload's token is requested from the API for the identity audience, as the kubelet
      // projects it.
      try await processes.run(
        "\(name)-issuer", "meshctl",
        ["identity", "issuer", "--ca-dir", "ca", "--out", "\(name)-issuer", "--cluster-name", name])
      let setup = try KubeClient(config: clientConfig)
      services.track(setup)
      _ = try await setup.create(Namespace(metadata: ObjectMeta(name: MirrorMetadata.multiclusterNamespace)))
      for (account, namespace) in serviceAccounts {
        _ = try await setup.create(ServiceAccount(metadata: ObjectMeta(name: account, namespace: namespace)))
        let token = try await setup.requestToken(
          serviceAccount: account, namespace: namespace, audiences: [identityAudience], expirationSeconds: 7200)
        try (token + "\n").write(
          toFile: processes.path("\(name)-\(account).token"), atomically: true, encoding: .utf8)
      }
      // The controllers read the API as their own service accounts, with the roles of Examples/kubernetes.
      let identityKubeconfig = try await Self.writeKubeconfig(
        for: .identity, cluster: name, through: setup, in: processes)
      let destinationKubeconfig = try await Self.writeKubeconfig(
        for: .destination, cluster: name, through: setup, in: processes)
      let controlPorts = try DemoProcesses.freePorts(2)
      identityPort = controlPorts[0]
      try processes.start(
        "\(name)-identity", "mesh-controller",
        [
          "identity", "--issuer-dir", "\(name)-issuer", "--token-review", "--audience", identityAudience,
          "--kubeconfig", identityKubeconfig, "--listen", "127.0.0.1:\(identityPort)", "--log-level", processes.logLevel,
        ])
      destinationPort = controlPorts[1]
      try processes.start(
        "\(name)-destination", "mesh-controller",
        [
          "destination", "--kubeconfig", destinationKubeconfig, "--listen", "127.0.0.1:\(destinationPort)",
          "--log-level", processes.logLevel,
        ])
      for (what, port) in [("identity", identityPort), ("destination", destinationPort)] {
        try await processes.wait(for: "\(name)'s \(what) service on 127.0.0.1:\(port)") {
          DemoProcesses.isListening(port: port)
        }
      }
    }

    let client = try KubeClient(config: clientConfig)
    services.track(client)
    let resolver = try Resolver(
      configuration: .defaults {
        $0.host = "127.0.0.1"
        $0.port = destinationPort
        $0.initialBackoff = .milliseconds(50)
        $0.maxBackoff = .seconds(1)
      }, logger: logger)
    services.start("\(name)-resolver", in: &group) { try await resolver.run() }

    let cluster = Cluster(
      name: name, apiURL: apiURL, kubeconfig: kubeconfig, kubeconfigPath: kubeconfigPath, client: client,
      runtime: runtime, identityPort: identityPort, destinationPort: destinationPort, resolver: resolver,
      services: services, logger: logger)
    if case .tasks = runtime {
      _ = try await client.create(Namespace(metadata: ObjectMeta(name: MirrorMetadata.multiclusterNamespace)))
    }
    // The shared trust anchor, published where `meshctl multicluster check` compares it.
    let anchorPEM: String
    switch runtime {
    case .tasks(let anchor): anchorPEM = try PEMFiles.pem([anchor.certificate])
    case .processes: anchorPEM = try String(contentsOfFile: "\(directory)/ca/ca.crt", encoding: .utf8)
    }
    try await cluster.publishTrustRoots(anchorPEM)

    // backend: the application and its inbound proxy, published as a meshed, exported Service.
    let appPort = try await cluster.startBackendApp(pod: "backend-0", in: &group)
    let backend = try await cluster.startProxy(
      serviceAccount: "backend", namespace: "default", app: appPort, gateway: false, in: &group)
    let gateway = try await cluster.startProxy(
      serviceAccount: "swiftmesh-gateway", namespace: MirrorMetadata.multiclusterNamespace, app: 1, gateway: true,
      in: &group)
    cluster.parts.withLock {
      $0.backend = backend
      $0.gateway = gateway
    }
    try await cluster.publishBackend(inboundPort: backend.inbound)
    try await cluster.publishGateway(gateway)
    return cluster
  }

  /// Grants `component` its role through an admin `client` and writes a kubeconfig with its token (mode 0600)
  /// as `<cluster>-<account>.kubeconfig`; returns the path.
  static func writeKubeconfig(
    for component: ComponentAccess, cluster: String, through client: KubeClient, in processes: DemoProcesses
  ) async throws -> String {
    let token = try await component.grant(through: client)
    let path = processes.path("\(cluster)-\(component.name).kubeconfig")
    try LocalKubeAPIServer.writeSecret(client.config.kubeconfigYAML(token: token, contextName: cluster), to: path)
    return path
  }

  /// The application: in-process, or `meshctl dev backend` as a process. Returns its port.
  private func startBackendApp(pod: String, in group: inout ThrowingTaskGroup<Void, any Error>) async throws -> Int {
    switch runtime {
    case .tasks:
      let app = try await DemoBackend(cluster: name, pod: pod)
      parts.withLock { $0.backendApp = app }
      return app.port
    case .processes(let processes):
      let port = try DemoProcesses.freePort()
      try processes.start(
        "\(name)-backend", "meshctl",
        ["dev", "backend", "--cluster", name, "--pod", pod, "--listen", "127.0.0.1:\(port)"])
      try await processes.waitReady("\(name)'s \(pod)", url: "http://127.0.0.1:\(port)/")
      return port
    }
  }

  /// Certifies `serviceAccount` with the cluster's identity service, as mesh-proxy does at start.
  private func certify(serviceAccount: String, namespace: String, anchor: TrustAnchor.Credentials) async throws
    -> WorkloadCertificate
  {
    let identity = try IdentityName(serviceAccount: serviceAccount, namespace: namespace)
    let client = IdentityClient(
      configuration: .init(
        server: try Authority(host: "127.0.0.1", port: identityPort), trustAnchors: [anchor.certificate],
        serverIdentity: try IdentityServer.serverIdentity()))
    return try await client.certify(identity: identity, token: Self.token(cluster: name, serviceAccount: serviceAccount))
  }

  /// A proxy for `serviceAccount` (a gateway with `gateway`), forwarding inbound requests to port `app`.
  func startProxy(
    serviceAccount: String, namespace: String, app: Int, gateway: Bool, tap: Bool = false,
    in group: inout ThrowingTaskGroup<Void, any Error>
  ) async throws -> ProxyPorts {
    let component = Self.proxyComponent(cluster: name, serviceAccount: serviceAccount, gateway: gateway)
    switch runtime {
    case .tasks(let anchor):
      let material = try await certify(serviceAccount: serviceAccount, namespace: namespace, anchor: anchor)
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
      services.start(component, in: &group) { try await proxy.run() }
      let bound = try await proxy.boundPorts()
      var ports = ProxyPorts(inbound: bound.inbound, outbound: bound.outbound, admin: bound.admin)
      if tap {
        let server = TapServer(address: try Authority("127.0.0.1:0"), hub: proxy.tap, logger: logger)
        services.start("\(component)-tap", in: &group) { try await server.run() }
        ports.tap = try await server.listeningPort
        parts.withLock { $0.tapHubs[component] = proxy.tap }
      }
      return ports
    case .processes(let processes):
      let free = try DemoProcesses.freePorts(4)
      let ports = ProxyPorts(inbound: free[0], outbound: free[1], admin: free[2], tap: tap ? free[3] : nil)
      let identity = try IdentityName(serviceAccount: serviceAccount, namespace: namespace)
      try processes.start(
        component, "mesh-proxy",
        (gateway ? ["--gateway"] : []) + [
          "--identity", identity.description, "--identity-server", "127.0.0.1:\(identityPort)",
          "--ca", "ca/ca.crt", "--token", "\(name)-\(serviceAccount).token",
          "--destination", "127.0.0.1:\(destinationPort)",
          "--inbound", "127.0.0.1:\(ports.inbound)", "--outbound", "127.0.0.1:\(ports.outbound)",
          "--admin", "127.0.0.1:\(ports.admin)", "--app", "127.0.0.1:\(app)",
          "--failfast-timeout", "3", "--shutdown-grace-period", "2", "--log-level", processes.logLevel,
        ] + (ports.tap.map { ["--tap", "127.0.0.1:\($0)"] } ?? []))
      try await processes.waitReady(component, url: "http://127.0.0.1:\(ports.admin)/ready")
      return ports
    }
  }

  static func proxyComponent(cluster: String, serviceAccount: String, gateway: Bool) -> String {
    gateway ? "\(cluster)-gateway" : "\(cluster)-\(serviceAccount)-proxy"
  }

  /// Waits until someone observes the tap of `serviceAccount`'s proxy (so no request goes by unseen).
  func waitForTapObserver(serviceAccount: String, timeout: Duration = .seconds(30)) async throws {
    let component = Self.proxyComponent(cluster: name, serviceAccount: serviceAccount, gateway: false)
    switch runtime {
    case .tasks:
      let hub = parts.withLock { $0.tapHubs[component] }
      try await poll("\(component): a tap observer", timeout: timeout) { (hub?.observers ?? 0) > 0 }
    case .processes(let processes):
      // mesh-proxy logs each observer it starts serving (at info, the demo's component log level).
      let log = processes.path("\(component).log")
      try await processes.wait(for: "\(component) to log its tap observer", timeout: timeout) {
        ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("tap started")
      }
    }
  }

  private func publishBackend(inboundPort: Int) async throws {
    _ = try await client.create(
      KubeService(
        metadata: ObjectMeta(
          name: "backend", namespace: "default",
          labels: ["app": "backend", MirrorMetadata.exportedLabel: "true"]),
        spec: .init(selector: ["app": "backend"], ports: [.init(name: "http", port: 80, targetPort: .string("http"))])))
    _ = try await client.create(
      Pod(
        metadata: ObjectMeta(
          name: "backend-0", namespace: "default", labels: ["app": "backend", "swiftmesh.io/proxy": "mesh-proxy"]),
        spec: .init(serviceAccountName: "backend")))
    // As a cluster's EndpointSlice controller writes it (and no v1 Endpoints: the demo's clusters hold
    // none, so discovery and the mirror run on slices alone).
    _ = try await client.create(
      EndpointSlice(
        metadata: ObjectMeta(
          name: "backend-\(name)", namespace: "default",
          labels: [
            EndpointSlice.serviceNameLabel: "backend",
            EndpointSlice.managedByLabel: "endpointslice-controller.k8s.io",
          ]),
        addressType: "IPv4",
        endpoints: [
          .init(
            addresses: ["127.0.0.1"], conditions: .init(ready: true, serving: true, terminating: false),
            nodeName: "\(name)-node", targetRef: ObjectReference(kind: "Pod", namespace: "default", name: "backend-0"))
        ],
        ports: [.init(name: "http", port: inboundPort, protocol: "TCP")]))
  }

  /// The ConfigMap `swiftmesh-identity-trust-roots` (key `ca.crt`) in the control plane's namespace, as the
  /// Kubernetes walkthrough creates it.
  private func publishTrustRoots(_ pem: String) async throws {
    do {
      _ = try await client.create(MeshKube.Namespace(metadata: ObjectMeta(name: "swiftmesh")))
    } catch let error as KubeError where error.isAlreadyExists {}
    _ = try await client.create(
      ConfigMap(
        metadata: ObjectMeta(name: MulticlusterCheck.trustRootsConfigMap, namespace: "swiftmesh"),
        data: [MulticlusterCheck.trustRootsKey: pem]))
  }

  /// The gateway's Service, where `meshctl multicluster link` reads the gateway's address, ports and identity.
  private func publishGateway(_ ports: ProxyPorts) async throws {
    _ = try await client.create(
      KubeService(
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

  /// The credentials Secret and the Link to `target`, as `meshctl multicluster link` prints them. The Secret's
  /// kubeconfig holds a token of `target`'s swiftmesh-remote-mirror account: what this cluster's mirror may
  /// read there is that account's role, not an admin's.
  func link(to target: Cluster) async throws {
    let secret = MirrorMetadata.credentialsSecretName(cluster: target.name)
    let token = try await ComponentAccess.remoteMirror.grant(through: target.client)
    let targetKubeconfig = target.client.config.kubeconfigYAML(token: token, contextName: target.name)
    _ = try await client.create(
      Secret(
        metadata: ObjectMeta(name: secret, namespace: MirrorMetadata.multiclusterNamespace),
        type: MirrorMetadata.credentialsSecretType,
        data: [MirrorMetadata.kubeconfigKey: Data(targetKubeconfig.utf8)]))
    let gateway = target.gatewayPorts
    _ = try await client.create(
      Link(
        metadata: ObjectMeta(name: target.name, namespace: MirrorMetadata.multiclusterNamespace),
        spec: .init(
          targetClusterName: target.name, targetClusterDomain: "cluster.local", clusterCredentialsSecret: secret,
          gatewayAddresses: ["127.0.0.1"], gatewayPort: gateway.inbound,
          gatewayIdentity: target.gatewayIdentity.description,
          probeSpec: .init(path: "/ready", port: gateway.admin, period: "1s", timeout: "1s", failureThreshold: 3),
          selector: MirrorMetadata.defaultSelector)))
  }

  /// This cluster's service mirror controller (mesh-mirror), with its own identity for probing gateways, reading
  /// and writing this cluster's API as swiftmesh-mirror with that account's role.
  func startMirror(in group: inout ThrowingTaskGroup<Void, any Error>) async throws {
    let account = ComponentAccess.mirror.name
    switch runtime {
    case .tasks(let anchor):
      let material = try await certify(
        serviceAccount: account, namespace: MirrorMetadata.multiclusterNamespace, anchor: anchor)
      let token = try await ComponentAccess.mirror.grant(through: client)
      let mirrorClient = try KubeClient(config: client.config.with(token: token), logger: logger)
      services.track(mirrorClient)
      let supervisor = LinkSupervisor(
        localClient: mirrorClient, tls: try MeshTLS(material: material, trustAnchors: [anchor.certificate], logger: logger),
        metrics: MirrorMetrics(), logger: logger)
      parts.withLock { $0.supervisor = supervisor }
      services.start("\(name)-mirror", in: &group) { try await supervisor.run() }
    case .processes(let processes):
      let admin = try DemoProcesses.freePort()
      let identity = try IdentityName(serviceAccount: account, namespace: MirrorMetadata.multiclusterNamespace)
      let mirrorKubeconfig = try await Self.writeKubeconfig(for: .mirror, cluster: name, through: client, in: processes)
      try processes.start(
        "\(name)-mirror", "mesh-mirror",
        [
          "--kubeconfig", mirrorKubeconfig, "--admin", "127.0.0.1:\(admin)", "--identity", identity.description,
          "--identity-server", "127.0.0.1:\(identityPort)", "--ca", "ca/ca.crt", "--token", "\(name)-\(account).token",
          "--log-level", processes.logLevel,
        ])
      try await processes.waitReady("\(name)'s mirror", url: "http://127.0.0.1:\(admin)/ready")
      parts.withLock { $0.mirrorAdminPort = admin }
    }
  }

  /// The linked gateways as this cluster's mirror sees them (what `meshctl multicluster gateways` shows).
  func gatewayReports() async -> [GatewayReport] {
    switch runtime {
    case .tasks:
      return parts.withLock { $0.supervisor }?.reports ?? []
    case .processes:
      guard let port = mirrorAdminPort,
        let response = try? await HTTPClient.shared.execute(
          HTTPClientRequest(url: "http://127.0.0.1:\(port)/gateways"), timeout: .seconds(5)),
        response.status == .ok,
        let body = try? await response.body.collect(upTo: 16 << 20)
      else { return [] }
      return (try? JSONDecoder().decode([GatewayReport].self, from: Data(body.readableBytesView))) ?? []
    }
  }

  /// Stops this cluster's gateway (the task, or the mesh-proxy process with SIGTERM).
  func stopGateway() async {
    switch runtime {
    case .tasks: services.stop("\(name)-gateway")
    case .processes(let processes): await processes.stop("\(name)-gateway", grace: .seconds(5))
    }
  }

  func waitForMirror(of service: String, from target: Cluster, timeout: Duration = .seconds(30)) async throws {
    let mirror = "\(service)-\(target.name)"
    try await poll("\(name): mirror \(mirror) with the gateway as endpoint", timeout: timeout) {
      let slices = try? await self.client.list(
        EndpointSlice.self, namespace: "default",
        options: ListOptions(labelSelector: "\(EndpointSlice.serviceNameLabel)=\(mirror)"))
      return (slices?.items ?? []).contains { slice in slice.endpoints.contains { $0.conditions?.ready ?? true } }
    }
  }

  func waitForGateway(of target: Cluster, alive: Bool, timeout: Duration = .seconds(30)) async throws {
    try await poll("\(name): \(target.name)'s gateway probed \(alive ? "alive" : "dead")", timeout: timeout) {
      await self.gatewayReports().contains { $0.cluster == target.name && $0.alive == alive }
    }
  }

  static let splitName = "backend-split"

  /// backend's ServiceProfile: GET is retryable (an idempotent read), so a request whose leaf dies under it
  /// is sent again, within the retry budget, to a leaf that can serve it.
  func applyProfile() async throws {
    _ = try await client.create(
      ServiceProfile(
        metadata: ObjectMeta(name: "backend.default.svc.cluster.local", namespace: "default"),
        spec: .init(routes: [
          .init(name: "GET /", condition: .init(method: "GET", pathRegex: "/.*"), isRetryable: true, timeout: "10s")
        ])))
  }

  func applySplit(westPercent: Int) async throws {
    let west = max(0, min(100, westPercent))
    let split = TrafficSplit(
      metadata: ObjectMeta(name: Self.splitName, namespace: "default"),
      spec: .init(
        service: "backend",
        backends: [.init(service: "backend", weight: 100 - west), .init(service: "backend-west", weight: west)]))
    do {
      var existing = try await client.get(TrafficSplit.self, name: Self.splitName, namespace: "default")
      existing.spec = split.spec
      _ = try await client.update(existing)
    } catch let error as KubeError where error.isNotFound {
      _ = try await client.create(split)
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
      try await applySplit(westPercent: 0)
      return "failover: \(target.name)'s gateway probed dead after \(String(format: "%.1f", (ContinuousClock.now - started).seconds)) s; "
        + "split shifted to backend 100, backend-\(target.name) 0"
    } catch {
      return "failover did not happen: \(error)"
    }
  }

  /// Polls `condition` every 50 ms; with processes, fails as soon as a component exits unasked.
  func poll(_ what: String, timeout: Duration, _ condition: @escaping @Sendable () async -> Bool) async throws {
    if case .processes(let processes) = runtime {
      try await processes.wait(for: what, timeout: timeout, condition)
      return
    }
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
      if await condition() { return }
      try await Task.sleep(for: .milliseconds(50))
    }
    throw MeshError.unavailable("timed out after \(timeout) waiting for \(what)")
  }
}
