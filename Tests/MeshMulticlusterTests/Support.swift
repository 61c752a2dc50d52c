import AsyncHTTPClient
import Foundation
import Logging
import MeshCore
import MeshIdentity
import MeshKube
import MeshKubeLocal
import MeshMulticluster
import MeshTLS
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Synchronization
import Testing
import _MeshTestSupport

var testLogger: Logger {
  var logger = Logger(label: "test.multicluster")
  logger.logLevel = ProcessInfo.processInfo.environment["MESH_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
  return logger
}

/// One embedded cluster: its state, its API server (restartable on the same port) and a client.
final class Cluster: Sendable {
  let name: String
  let state: LocalKubeState
  let port: Int
  let client: KubeClient
  /// The cluster CA and admin token.
  let credentials: LocalKubeCredentials
  private let servers = Mutex<(current: LocalKubeAPIServer?, handles: [StopHandle])>((nil, []))

  init(name: String, port: Int, state: LocalKubeState = LocalKubeState()) throws {
    self.name = name
    self.port = port
    self.state = state
    let credentials = try state.credentials()
    self.credentials = credentials
    self.client = try KubeClient(
      config: KubeClientConfig(
        server: "https://127.0.0.1:\(port)", certificateAuthorityPEM: Data(credentials.certificateAuthorityPEM.utf8),
        token: credentials.adminToken, namespace: "default"),
      logger: testLogger)
    try state.create(Namespace(metadata: ObjectMeta(name: MirrorMetadata.multiclusterNamespace)))
  }

  /// The admin's kubeconfig (HTTPS, the cluster's CA and admin token).
  var kubeconfig: String { kubeconfig(token: credentials.adminToken) }

  /// A kubeconfig for this cluster with `token`.
  func kubeconfig(token: String) -> String {
    LocalKubeAPIServer.kubeconfigYAML(
      server: "https://127.0.0.1:\(port)", token: token,
      caPEM: Data(credentials.certificateAuthorityPEM.utf8), contextName: name)
  }

  /// Starts the API server in `group` and waits until it listens.
  func start(in group: inout ThrowingTaskGroup<Void, any Error>) async throws {
    let server = LocalKubeAPIServer(
      configuration: .defaults {
        $0.port = self.port
        $0.bookmarkInterval = .milliseconds(500)
      }, state: state, logger: testLogger)
    let handle = _MeshTestSupport.start(server, in: &group)
    servers.withLock {
      $0.current = server
      $0.handles.append(handle)
    }
    _ = try await server.port()
  }

  /// Stops the API server (watches end abruptly); the state stays.
  func stop() {
    let (server, handles) = servers.withLock { s in
      defer {
        s.current = nil
        s.handles = []
      }
      return (s.current, s.handles)
    }
    server?.stop()
    for handle in handles { handle.stop() }
  }

  /// A Service with one named port per entry of `ports`, and its Endpoints (`withEndpoints`) and
  /// EndpointSlice (`withSlice`) with one address, ready or not, as a real cluster's controllers write both.
  func addService(
    _ name: String, namespace: String = "default", ports: [Int] = [8080], exported: Bool = true,
    labels: [String: String] = [:], annotations: [String: String] = [:], ready: Bool = true,
    withEndpoints: Bool = true, withSlice: Bool = true
  ) throws {
    var allLabels = labels
    allLabels["app"] = name
    if exported { allLabels[MirrorMetadata.exportedLabel] = "true" }
    let servicePorts = ports.enumerated().map { i, port in
      KubeService.Port(name: i == 0 ? "http" : "port-\(i)", port: port, targetPort: .int(port), protocol: "TCP")
    }
    try state.create(
      KubeService(
        metadata: ObjectMeta(name: name, namespace: namespace, labels: allLabels, annotations: annotations),
        spec: .init(selector: ["app": name], ports: servicePorts)))
    let address = Endpoints.Address(ip: "10.1.0.\(Int.random(in: 2...250))")
    let subset = Endpoints.Subset(
      addresses: ready ? [address] : nil, notReadyAddresses: ready ? nil : [address],
      ports: servicePorts.map { Endpoints.Port(name: $0.name, port: $0.port, protocol: "TCP") })
    if withEndpoints {
      try state.create(Endpoints(metadata: ObjectMeta(name: name, namespace: namespace), subsets: [subset]))
    }
    if withSlice {
      try state.create(
        EndpointSlice(
          metadata: ObjectMeta(
            name: "\(name)-abcde", namespace: namespace,
            labels: [EndpointSlice.serviceNameLabel: name, EndpointSlice.managedByLabel: "endpointslice-controller.k8s.io"]),
          addressType: "IPv4",
          endpoints: [.init(addresses: [address.ip], conditions: .init(ready: ready, serving: ready, terminating: false))],
          ports: servicePorts.map { EndpointSlice.Port(name: $0.name, port: $0.port, protocol: "TCP") }))
    }
  }

  /// Sets whether the one endpoint of `name`'s slice (see `addService`) is ready.
  func setSliceReady(_ name: String, _ ready: Bool, namespace: String = "default") throws {
    var slice = try #require(state.get(EndpointSlice.self, name: "\(name)-abcde", namespace: namespace))
    for i in slice.endpoints.indices {
      slice.endpoints[i].conditions = .init(ready: ready, serving: ready, terminating: false)
    }
    _ = try state.update(slice)
  }

  func setExported(_ name: String, _ exported: Bool, namespace: String = "default") throws {
    let value: JSONValue = exported ? "true" : .null
    try state.mergePatch(
      KubeService.self, name: name, namespace: namespace,
      patch: ["metadata": ["labels": [MirrorMetadata.exportedLabel: value]]])
  }

  func deleteService(_ name: String, namespace: String = "default") throws {
    try state.delete(KubeService.self, name: name, namespace: namespace)
    if state.get(Endpoints.self, name: name, namespace: namespace) != nil {
      try state.delete(Endpoints.self, name: name, namespace: namespace)
    }
    if state.get(EndpointSlice.self, name: "\(name)-abcde", namespace: namespace) != nil {
      try state.delete(EndpointSlice.self, name: "\(name)-abcde", namespace: namespace)
    }
  }

  /// The mirror Services of `cluster` here, by `namespace/name`.
  func mirrors(of cluster: String) throws -> [String: KubeService] {
    let services = try state.list(KubeService.self).filter {
      $0.metadata.labels?[MirrorMetadata.clusterNameLabel] == cluster
        && $0.metadata.labels?[MirrorMetadata.mirroredServiceLabel] == "true"
    }
    return Dictionary(uniqueKeysWithValues: services.map { ($0.metadata.key, $0) })
  }

  func mirrorNames(of cluster: String) throws -> [String] { try mirrors(of: cluster).keys.sorted() }

  func link(_ name: String) -> Link? { state.get(Link.self, name: name, namespace: MirrorMetadata.multiclusterNamespace) }

  func condition(_ link: String, _ type: String) -> Condition? {
    self.link(link)?.status?.conditions?.first { $0.type == type }
  }

  /// The credentials Secret and the Link to `target` (gateway 192.0.2.10:4143 unless given).
  func linkTo(
    _ target: Cluster, gatewayAddresses: [String] = ["192.0.2.10"], gatewayPort: Int = 4143,
    gatewayIdentity: String? = nil, probe: Link.ProbeSpec? = nil
  ) throws {
    try link(
      name: target.name, kubeconfig: target.kubeconfig, gatewayAddresses: gatewayAddresses, gatewayPort: gatewayPort,
      gatewayIdentity: gatewayIdentity, probe: probe)
  }

  /// The credentials Secret (unless `createSecret` is false) and a Link to a cluster called `name`.
  func link(
    name: String, kubeconfig: String, gatewayAddresses: [String] = ["192.0.2.10"], gatewayPort: Int = 4143,
    gatewayIdentity: String? = nil, probe: Link.ProbeSpec? = nil, createSecret: Bool = true
  ) throws {
    let secret = MirrorMetadata.credentialsSecretName(cluster: name)
    if createSecret {
      try state.create(
        Secret(
          metadata: ObjectMeta(name: secret, namespace: MirrorMetadata.multiclusterNamespace),
          type: MirrorMetadata.credentialsSecretType,
          data: [MirrorMetadata.kubeconfigKey: Data(kubeconfig.utf8)]))
    }
    try state.create(
      Link(
        metadata: ObjectMeta(name: name, namespace: MirrorMetadata.multiclusterNamespace),
        spec: .init(
          targetClusterName: name, targetClusterDomain: "cluster.local", clusterCredentialsSecret: secret,
          gatewayAddresses: gatewayAddresses, gatewayPort: gatewayPort, gatewayIdentity: gatewayIdentity,
          probeSpec: probe, selector: MirrorMetadata.defaultSelector)))
  }
}

/// Short intervals for tests. The tests written for Endpoints run with `endpointsAPI = .endpoints` (as
/// before EndpointSlices); the slice tests set `.endpointSlices`.
let fastMirror = ServiceMirror.Configuration.defaults {
  $0.endpointsAPI = .endpoints
  $0.repairInterval = .seconds(30)
  $0.retryInterval = .milliseconds(300)
  $0.targetCheckInterval = .milliseconds(300)
  $0.remoteConnectTimeout = .seconds(1)
  $0.remoteMaxBackoff = .milliseconds(300)
  $0.statusInterval = .milliseconds(50)
}

/// A Link supervisor (mirror controller) for `cluster`'s Links.
func supervisor(
  for cluster: Cluster, tls: MeshTLS? = nil, metrics: MirrorMetrics = MirrorMetrics(),
  configure: (inout ServiceMirror.Configuration) -> Void = { _ in }
) -> LinkSupervisor {
  var mirror = fastMirror
  configure(&mirror)
  return LinkSupervisor(
    localClient: cluster.client, tls: tls, metrics: metrics,
    configuration: .defaults { $0.mirror = mirror }, logger: testLogger)
}

/// Runs two clusters, east and west, around `body`, and stops everything after.
func withClusters(
  west westState: LocalKubeState = LocalKubeState(),
  _ body: @Sendable (_ east: Cluster, _ west: Cluster, _ group: inout ThrowingTaskGroup<Void, any Error>) async throws -> Void
) async throws {
  let east = try Cluster(name: "east", port: try await StablePorts.free())
  let west = try Cluster(name: "west", port: try await StablePorts.free(), state: westState)
  try await withThrowingTaskGroup(of: Void.self) { group in
    var failure: (any Error)?
    do {
      try await east.start(in: &group)
      try await west.start(in: &group)
      try await body(east, west, &group)
    } catch {
      failure = error
    }
    east.stop()
    west.stop()
    group.cancelAll()
    try? await east.client.shutdown()
    try? await west.client.shutdown()
    if let failure { throw failure }
  }
}

/// The mesh identities the multi-cluster tests use.
enum Identities {
  static let gateway = IdentityName.test("swiftmesh-gateway", MirrorMetadata.multiclusterNamespace)
  static let mirror = IdentityName.test("swiftmesh-service-mirror", MirrorMetadata.multiclusterNamespace)
  static let other = IdentityName.test("someone-else", "default")
}

/// The mirror's probe TLS (HTTP/1.1 only) from `pki`.
func mirrorTLS(_ pki: TestPKI) throws -> MeshTLS {
  try MeshTLS(
    material: try pki.workload(Identities.mirror), trustAnchors: [pki.anchor.certificate],
    configuration: .defaults { $0.clientALPN = [MeshTLS.ALPN.http11] }, logger: testLogger)
}

/// A gateway's admin port for the probe: mutual TLS (client certificate required) with `identity`, answering
/// `GET /ready` with 200 and anything else with 404. `stop()` closes it like a dead gateway.
final class TestGateway: Sendable {
  let port: Int
  private let server: any Channel
  private let sessions = SessionLog()

  final class SessionLog: Sendable {
    let identities = Mutex<[IdentityName?]>([])
  }

  init(pki: TestPKI, identity: IdentityName = Identities.gateway, host: String = "127.0.0.1", port: Int = 0) async throws {
    let tls = try MeshTLS(material: try pki.workload(identity), trustAnchors: [pki.anchor.certificate], logger: testLogger)
    let sessions = self.sessions
    self.server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          let session = try tls.addServerHandlers(to: channel.pipeline.syncOperations, requireClientCertificate: true)
          session.whenSuccess { s in sessions.identities.withLock { $0.append(s.peerIdentity) } }
          try channel.pipeline.syncOperations.configureHTTPServerPipeline()
          try channel.pipeline.syncOperations.addHandler(ReadyResponder())
        }
      }
      .bind(host: host, port: port).get()
    self.port = server.localAddress?.port ?? port
  }

  /// The client identities of finished handshakes.
  var clientIdentities: [IdentityName?] { sessions.identities.withLock { $0 } }

  func stop() async { try? await server.close() }

  final class ReadyResponder: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    var uri = ""
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
      switch unwrapInboundIn(data) {
      case .head(let head): uri = head.uri
      case .body: break
      case .end:
        let ok = uri == "/ready"
        let body = ByteBuffer(string: ok ? "ready\n" : "not found\n")
        var headers = HTTPHeaders()
        headers.add(name: "content-length", value: "\(body.readableBytes)")
        headers.add(name: "connection", value: "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: ok ? .ok : .notFound, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
      }
    }
  }
}

/// GET `http://127.0.0.1:port/path`.
func httpGet(port: Int, _ path: String) async throws -> (status: Int, body: String) {
  let client = HTTPClient(eventLoopGroupProvider: .singleton)
  do {
    let response = try await client.execute(HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)"), timeout: .seconds(10))
    let body = try await response.body.collect(upTo: 16 * 1024 * 1024)
    try await client.shutdown()
    return (Int(response.status.code), String(buffer: body))
  } catch {
    try? await client.shutdown()
    throw error
  }
}

/// The directory of the built products (where `meshctl` is), found from the test binary's path.
let productsDirectory: URL? = {
  let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
  var directory = executable.deletingLastPathComponent()
  for _ in 0..<4 {
    if FileManager.default.isExecutableFile(atPath: directory.appendingPathComponent("meshctl").path) { return directory }
    directory = directory.deletingLastPathComponent()
  }
  return nil
}()
let meshctlPath = productsDirectory?.appendingPathComponent("meshctl").path
let kubectlAvailable = FileManager.default.isExecutableFile(atPath: "/usr/bin/kubectl")
