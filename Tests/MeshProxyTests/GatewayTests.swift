import Foundation
import Logging
import MeshCore
import MeshDestination
import MeshDiscovery
import MeshIdentity
import MeshKube
import MeshKubeLocal
import MeshProxy
import MeshTLS
import NIOHTTP1
import Testing
import _MeshTestSupport

/// One embedded cluster for gateway tests: a Kubernetes API (MeshKubeLocal), its destination service and a
/// resolver the cluster's proxies share.
struct EmbeddedCluster: Sendable {
  let name: String
  let state = LocalKubeState()
  let api: LocalKubeAPIServer
  let logger: Logger

  init(name: String) {
    self.name = name
    var logger = Logger(label: "test.\(name)")
    logger.logLevel = ProcessInfo.processInfo.environment["MESH_TEST_LOG"].flatMap { Logger.Level(rawValue: $0) } ?? .warning
    self.logger = logger
    self.api = LocalKubeAPIServer(state: state, logger: logger)
  }

  /// Runs the API server, a destination server and a resolver around `body`.
  func run(_ body: @Sendable (_ discovery: ResolverDiscovery) async throws -> Void) async throws {
    try await runDestination { port in
      let resolver = try Resolver(
        configuration: .defaults {
          $0.host = "127.0.0.1"
          $0.port = port
          $0.initialBackoff = .milliseconds(20)
        }, logger: logger)
      try await withThrowingTaskGroup { group in
        group.addTask { try await resolver.run() }
        do {
          try await body(ResolverDiscovery(resolver: resolver, logger: logger))
        } catch {
          group.cancelAll()
          throw error
        }
        group.cancelAll()
      }
    }
  }

  /// Runs the API server and a destination server around `body`, which gets the destination port.
  func runDestination(_ body: @Sendable (_ port: Int) async throws -> Void) async throws {
    try await withThrowingTaskGroup { group in
      group.addTask { try await api.run() }
      let client = try KubeClient(config: try await api.clientConfig())
      let destination = DestinationServer(
        configuration: .defaults {
          $0.host = "127.0.0.1"
          $0.port = 0
          $0.endpointsAPI = .endpoints  // publish(_:) and mirror(_:) below write v1 Endpoints
        }, client: client,
        informerConfiguration: .defaults {
          $0.initialBackoff = .milliseconds(20)
          $0.maxBackoff = .milliseconds(200)
        }, logger: logger)
      group.addTask { try await destination.run() }
      func stop() async {
        group.cancelAll()
        api.stop()
        try? await client.shutdown()
      }
      do {
        try await body(try await destination.listeningPort)
      } catch {
        await stop()
        throw error
      }
      await stop()
    }
  }
}

@Suite("Gateway: east reaches west's backend through west's gateway")
struct GatewayTests {
  static let gatewayIdentity = try! IdentityName(
    serviceAccount: "swiftmesh-gateway", namespace: "swiftmesh-multicluster")

  static func proxyConfiguration(gateway: Bool = false, app: Int = 1) -> ProxyConfiguration {
    .defaults {
      $0.outboundAddress = try! Authority("127.0.0.1:0")
      $0.inboundAddress = try! Authority("127.0.0.1:0")
      $0.adminAddress = try! Authority("127.0.0.1:0")
      $0.applicationAddress = try! Authority(host: "127.0.0.1", port: app)
      $0.failfastTimeout = .seconds(3)
      $0.gatewayMode = gateway
    }
  }

  /// A meshed Service `name` on port 80 whose one endpoint is a proxy's inbound port on loopback.
  static func publish(_ name: String, inboundPort: Int, serviceAccount: String, in state: LocalKubeState) throws {
    _ = try state.create(
      KubeService(
        metadata: ObjectMeta(name: name, namespace: "default"),
        spec: .init(selector: ["app": name], ports: [.init(name: "http", port: 80, targetPort: .string("http"))])))
    _ = try state.create(
      Pod(
        metadata: ObjectMeta(name: "\(name)-0", namespace: "default", labels: ["swiftmesh.io/proxy": "mesh-proxy"]),
        spec: .init(serviceAccountName: serviceAccount)))
    _ = try state.create(
      Endpoints(
        metadata: ObjectMeta(name: name, namespace: "default"),
        subsets: [
          .init(
            addresses: [.init(ip: "127.0.0.1", targetRef: ObjectReference(kind: "Pod", namespace: "default", name: "\(name)-0"))],
            ports: [.init(name: "http", port: inboundPort)])
        ]))
  }

  /// What the service mirror writes for a remote service: `<name>-<cluster>` pointing at the gateway.
  static func mirror(_ name: String, cluster: String, gatewayPort: Int, in state: LocalKubeState) throws {
    _ = try state.create(
      KubeService(
        metadata: ObjectMeta(
          name: "\(name)-\(cluster)", namespace: "default",
          labels: ["mirror.swiftmesh.io/mirrored-service": "true", "mirror.swiftmesh.io/cluster-name": cluster],
          annotations: ["mirror.swiftmesh.io/remote-svc-fq-name": "\(name).default.svc.cluster.local"]),
        spec: .init(ports: [.init(name: "http", port: 80)])))
    _ = try state.create(
      Endpoints(
        metadata: ObjectMeta(
          name: "\(name)-\(cluster)", namespace: "default",
          annotations: ["mirror.swiftmesh.io/gateway-identity": gatewayIdentity.description]),
        subsets: [.init(addresses: [.init(ip: "127.0.0.1")], ports: [.init(name: "http", port: gatewayPort)])]))
  }

  @Test("curl -> east outbound -> west gateway (mTLS) -> west inbound -> backend; refusals at the gateway")
  func eastToWest() async throws {
    let pki = try TestPKI()
    let westIssuer = try pki.siblingIssuer(clusterName: "west")
    let east = EmbeddedCluster(name: "east")
    let west = EmbeddedCluster(name: "west")
    let backend = try await TestHTTPServer(name: "west-backend")
    defer { Task { await backend.stop() } }
    let dir = try TemporaryDirectory()
    defer { dir.remove() }

    try await west.run { westDiscovery in
      try await east.run { eastDiscovery in
        let backendProxy = MeshProxy(
          configuration: Self.proxyConfiguration(app: backend.port),
          tls: try MeshTLS(material: try pki.workload(.test("backend"), issuer: westIssuer), trustAnchors: [pki.anchor.certificate]),
          discovery: westDiscovery, logger: west.logger)
        let gateway = MeshProxy(
          configuration: Self.proxyConfiguration(gateway: true),
          tls: try MeshTLS(material: try pki.workload(Self.gatewayIdentity, issuer: westIssuer), trustAnchors: [pki.anchor.certificate]),
          discovery: westDiscovery, logger: west.logger)
        let webMaterial = try pki.workload(.test("web"))
        let client = MeshProxy(
          configuration: Self.proxyConfiguration(),
          tls: try MeshTLS(material: webMaterial, trustAnchors: [pki.anchor.certificate]),
          discovery: eastDiscovery, logger: east.logger)
        try await withThrowingTaskGroup { group in
          for proxy in [backendProxy, gateway, client] { group.addTask { try await proxy.run() } }
          let backendPorts = try await backendProxy.boundPorts()
          let gatewayPorts = try await gateway.boundPorts()
          let clientPorts = try await client.boundPorts()
          #expect(gatewayPorts.outbound == 0, "a gateway has no outbound listener")
          try Self.publish("backend", inboundPort: backendPorts.inbound, serviceAccount: "backend", in: west.state)
          try Self.mirror("backend", cluster: "west", gatewayPort: gatewayPorts.inbound, in: east.state)

          // The application calls backend-west as a plain service, over HTTP/1.1.
          let out = try await Subprocess.run(
            "curl", ["-s", "-m", "20", "-D", dir.file("headers"), "--connect-to",
              "backend-west.default.svc.cluster.local:80:127.0.0.1:\(clientPorts.outbound)",
              "http://backend-west.default.svc.cluster.local/orders/42?full=1"])
          #expect(out.stdout == "west-backend\n", "\(out) \((try? String(contentsOfFile: dir.file("headers"), encoding: .utf8)) ?? "")")
          // West's backend got the original path and the authority of its own service.
          let seen = backend.lastRequest
          #expect(seen?.uri == "/orders/42?full=1")
          #expect(seen?.headers.first(name: "host") == "backend.default.svc.cluster.local:80")
          #expect(seen?.version == .http1_1)
          #expect(seen?.headers.first(name: "forwarded")?.contains("by=\(Self.gatewayIdentity)") == true)
          // The mesh's own fields end at the backend's inbound proxy (its stream codec takes them out).
          #expect(seen?.headers.contains(name: "swiftmesh-via") == false, "\(String(describing: seen?.headers))")
          #expect(seen?.headers.contains(name: "swiftmesh-orig-proto") == false, "\(String(describing: seen?.headers))")

          // The gateway's metrics name the caller; the client's name the gateway and the target cluster.
          let gatewayMetrics = try await Subprocess.run("curl", ["-s", "http://127.0.0.1:\(gatewayPorts.admin)/metrics"]).stdout
          #expect(gatewayMetrics.contains("direction=\"gateway\""), "\(gatewayMetrics)")
          #expect(gatewayMetrics.contains("client_id=\"\(IdentityName.test("web"))\""))
          #expect(gatewayMetrics.contains("server_id=\"\(IdentityName.test("backend"))\""))
          let clientMetrics = try await Subprocess.run("curl", ["-s", "http://127.0.0.1:\(clientPorts.admin)/metrics"]).stdout
          #expect(clientMetrics.contains("server_id=\"\(Self.gatewayIdentity)\""))
          #expect(clientMetrics.contains("target_cluster=\"west\""))
          let probe = try await Subprocess.run(
            "curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(gatewayPorts.admin)/ready"])
          #expect(probe.stdout == "200")

          // No certificate: plaintext is refused with the error header, TLS without a client certificate fails.
          let plaintext = try await Subprocess.run(
            "curl", ["-s", "-m", "10", "-D", "-", "-o", "/dev/null", "-H", "Host: backend.default.svc.cluster.local",
              "http://127.0.0.1:\(gatewayPorts.inbound)/"])
          #expect(plaintext.stdout.hasPrefix("HTTP/1.1 403"), "\(plaintext)")
          #expect(plaintext.stdout.lowercased().contains("mesh-proxy-error: identity required"))
          try PEMFiles.write(try PEMFiles.pem([pki.anchor.certificate]), to: dir.file("ca.crt"))
          let gatewayURL = "https://\(Self.gatewayIdentity):\(gatewayPorts.inbound)/"
          let resolve = ["--resolve", "\(Self.gatewayIdentity):\(gatewayPorts.inbound):127.0.0.1", "--cacert", dir.file("ca.crt")]
          let noCert = try await Subprocess.run("curl", ["-s", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}"] + resolve + [gatewayURL])
          #expect(noCert.stdout == "000", "a TLS client without a certificate must not get an answer: \(noCert)")

          // A meshed caller (curl with web's certificate): outside the cluster domain -> 404; a loop -> 508.
          try PEMFiles.write(try PEMFiles.pem([webMaterial.leaf] + webMaterial.intermediates), to: dir.file("web.crt"))
          try PEMFiles.write(PEMFiles.pem(webMaterial.privateKey), to: dir.file("web.key"), secret: true)
          let meshed = resolve + ["--http1.1", "--cert", dir.file("web.crt"), "--key", dir.file("web.key"), "-s", "-m", "10", "-D", "-", "-o", "/dev/null"]
          let ok = try await Subprocess.run("curl", meshed + ["-H", "Host: backend.default.svc.cluster.local", gatewayURL])
          #expect(ok.stdout.contains(" 200"), "\(ok)")
          let outside = try await Subprocess.run("curl", meshed + ["-H", "Host: example.com", gatewayURL])
          #expect(outside.stdout.contains(" 404"), "\(outside)")
          #expect(outside.stdout.lowercased().contains("mesh-proxy-error: unknown route"))
          let loop = try await Subprocess.run(
            "curl", meshed + ["-H", "Host: backend.default.svc.cluster.local", "-H", "forwarded: by=\(Self.gatewayIdentity);for=x", gatewayURL])
          #expect(loop.stdout.contains(" 508"), "\(loop)")
          #expect(loop.stdout.lowercased().contains("mesh-proxy-error: loop detected"))
          group.cancelAll()
        }
      }
    }
  }
}
