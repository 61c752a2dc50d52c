import Foundation
import Logging
import MeshCore
import MeshDestination
import MeshDiscovery
import MeshIdentity
import MeshInject
import MeshKube
import MeshKubeLocal
import Testing
import _MeshTestSupport

/// Two pods as network namespaces on a bridge, each with `mesh-proxy-init`'s rules and a `mesh-proxy
/// --transparent` running as uid 2102, and the control plane (Kubernetes API, identity, destination) in this
/// process on the bridge's host address. Addresses: host 198.18.0.254, pod `web` 198.18.0.2, pod `backend`
/// 198.18.0.3, a multi-cluster gateway pod 198.18.0.4, Service ClusterIPs from 198.18.1.0/24 (`backend` is
/// 198.18.1.10). The gateway stands for a linked cluster's: `backend-west` (198.18.1.11) is the mirror the
/// service mirror would write for a `backend` exported from "west", and west's gateway routes to this
/// cluster's `backend`; the path is the one two clusters take (mirror -> gateway by mutual TLS -> service).
///
/// The `web` and `backend` pods are what injection makes of them: their specs go through `PodInjector` (the
/// webhook's and `meshctl inject`'s patch builder) and are stored so in the API; each pod namespace runs the
/// injected init container's `mesh-proxy-init` arguments and the sidecar's `mesh-proxy` arguments, as its user,
/// with only what the kubelet fills in (the downward-API variables and the mounted token and trust anchors).
///
/// `backend` runs `Peers/tcp_peer.py serve`: HTTP on 8080 (Service port 80), a server-speaks-first protocol on
/// 7000 (opaque by the Service's annotation) and 7002 (not opaque: detection waits), an echo on 7001 (the
/// client speaks first, not HTTP), and `redis-server` on 6379 (opaque by default) when Debian's is installed.
struct TransparentMesh: Sendable {
  static let host = "198.18.0.254"
  static let webIP = "198.18.0.2"
  static let backendIP = "198.18.0.3"
  static let clusterIP = "198.18.1.10"
  static let gatewayIP = "198.18.0.4"
  static let mirrorClusterIP = "198.18.1.11"
  static let gatewayIdentity = try! IdentityName(serviceAccount: "swiftmesh-gateway", namespace: "swiftmesh-multicluster")
  static let backendName = "backend.default.svc.cluster.local"
  static let peer = PythonPeer.path("tcp_peer.py")
  static var hasRedis: Bool { Subprocess.which("redis-server") != nil && Subprocess.which("redis-cli") != nil }

  let web: String
  let backend: String
  /// A server in this process's namespace, which the mesh does not know (`host:port`).
  let outsidePort: Int

  static var available: Bool {
    Namespaces.available && BuiltProduct.exists("mesh-proxy") && BuiltProduct.exists("mesh-proxy-init")
      && FileManager.default.isExecutableFile(atPath: PythonPeer.python)
  }

  /// Runs `command` in namespace `namespace` (as `uid` when given), bounded by `seconds`.
  func exec(_ namespace: String, _ command: [String], seconds: Int = 60) async throws -> Subprocess.Output {
    try await Subprocess.run("timeout", ["\(seconds)", "ip", "netns", "exec", namespace] + command)
  }

  /// `curl` from the web pod, as an unmodified client: body, or the error.
  func curl(_ arguments: [String]) async throws -> Subprocess.Output {
    try await exec(web, ["curl", "-sS", "-m", "20"] + arguments)
  }

  /// The JSON line `tcp_peer.py client` prints.
  func tcpClient(_ host: String, _ port: Int, bytes: Int, greet: Bool) async throws -> [String: Any] {
    let out = try await exec(
      web, [PythonPeer.python, Self.peer, "client", host, "\(port)", "\(bytes)"] + (greet ? ["greet"] : []))
    guard out.status == 0, let line = out.stdout.split(separator: "\n").last,
      let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
    else { throw TestFailure("tcp client \(host):\(port): \(out)") }
    return object
  }

  /// A proxy's Prometheus exposition, read from this namespace (the admin port is not redirected).
  func metrics(_ podIP: String) async throws -> String {
    try await Subprocess.run("curl", ["-sS", "-m", "5", "http://\(podIP):4191/metrics"]).stdout
  }

  static func with(_ body: @Sendable (TransparentMesh) async throws -> Void) async throws {
    var logger = Logger(label: "test.transparent")
    logger.logLevel = ProcessInfo.processInfo.environment["MESH_TEST_LOG"].flatMap { Logger.Level(rawValue: $0) } ?? .warning
    try await Namespaces.with(["smt-node", "smt-web", "smt-backend", "smt-gw"]) { names in
      let (node, web, backend, gateway) = (names[0], names[1], names[2], names[3])
      try await Namespaces.bridge(
        node: node, host: host, pods: [(web, webIP), (backend, backendIP), (gateway, gatewayIP)], gateway: host)
      let files = try TemporaryDirectory(prefix: "smt")
      defer { files.remove() }
      let pki = try TestPKI()
      try PEMFiles.write(PEMFiles.pem([pki.anchor.certificate]), to: files.file("ca.crt"))
      for account in ["web", "backend", "swiftmesh-gateway"] {
        try "\(account)-token\n".write(toFile: files.file("\(account).token"), atomically: true, encoding: .utf8)
      }
      // The proxies run as uid 2102: they read these.
      _ = try await Subprocess.run("chmod", ["-R", "a+rX", files.path])

      let state = LocalKubeState(configuration: .defaults { $0.serviceCIDR = "198.18.1.0/24" })
      let api = LocalKubeAPIServer(state: state, logger: logger)
      try await withThrowingTaskGroup { group in
        group.addTask { try await api.run() }
        let client = try KubeClient(config: try await api.clientConfig())
        let destination = DestinationServer(
          configuration: .defaults {
            $0.host = host
            $0.port = 0
            $0.endpointsAPI = .endpoints
          }, client: client, logger: logger)
        group.addTask { try await destination.run() }
        let identity = try IdentityServer(
          configuration: .defaults {
            $0.host = host
            $0.port = 0
          }, authority: try pki.authority(),
          validator: TokenFileValidator(entries: [
            "web-token": ServiceAccountRef(name: "web", namespace: "default"),
            "backend-token": ServiceAccountRef(name: "backend", namespace: "default"),
            "swiftmesh-gateway-token": ServiceAccountRef(name: "swiftmesh-gateway", namespace: "swiftmesh-multicluster"),
          ]), logger: logger)
        group.addTask { try await identity.run() }
        let identityPort = try await identity.listeningPort
        let destinationPort = try await destination.listeningPort
        let anchorPEM = try PEMFiles.pem([pki.anchor.certificate])
        let injector = PodInjector(
          configuration: .defaults {
            $0.trustRootsPEM = anchorPEM
            $0.identityServer = "\(host):\(identityPort)"
            $0.destination = "\(host):\(destinationPort)"
          })
        let sidecars = try publish(in: state, injector: injector)
        let outside = try await StablePorts.free()

        func stop() async {
          group.cancelAll()
          api.stop()
          try? await client.shutdown()
        }
        var processes: [BackgroundProcess] = []
        defer { for process in processes { process.terminate() } }
        do {
          let apps = try BackgroundProcess(
            "ip", ["netns", "exec", backend, PythonPeer.python, peer, "serve", "8080", "7000,7002", "7001"])
          processes.append(apps)
          try await apps.waitForOutput(containing: "ready", timeout: .seconds(20))
          if hasRedis {
            processes.append(
              try BackgroundProcess(
                "ip", ["netns", "exec", backend, "redis-server", "--port", "6379", "--bind", "0.0.0.0",
                  "--protected-mode", "no", "--save", "", "--appendonly", "no"]))
          }
          let outsideServer = try BackgroundProcess(
            PythonPeer.python, ["-m", "http.server", "--bind", host, "\(outside)", "--directory", files.path])
          processes.append(outsideServer)
          let pods = [
            (web, "web", webIP, IdentityName.test("web")), (backend, "backend", backendIP, IdentityName.test("backend")),
            (gateway, "swiftmesh-gateway", gatewayIP, gatewayIdentity),
          ]
          for (namespace, account, ip, identity) in pods {
            let arguments: [String]
            var uid = 2102
            if let sidecar = sidecars[account] {
              // An injected pod: its init container's rules, then its sidecar, as the kubelet runs them.
              let rules = try await Subprocess.run(
                "timeout", ["30", "ip", "netns", "exec", namespace, BuiltProduct.path("mesh-proxy-init")] + sidecar.initArguments)
              guard rules.status == 0 else { throw TestFailure("mesh-proxy-init in \(namespace): \(rules)") }
              arguments = sidecar.proxyArguments.map {
                $0.replacingOccurrences(of: "$(SWIFTMESH_POD_SERVICE_ACCOUNT)", with: account)
                  .replacingOccurrences(of: "$(SWIFTMESH_POD_NAMESPACE)", with: "default")
                  .replacingOccurrences(of: "/var/run/swiftmesh/identity/ca.crt", with: files.file("ca.crt"))
                  .replacingOccurrences(of: "/var/run/swiftmesh/token/token", with: files.file("\(account).token"))
              }
              uid = sidecar.uid
            } else {
              // The gateway is installed, not injected: called on its port, it forwards by what callers name.
              arguments = [
                "--gateway", "--identity", identity.description,
                "--identity-server", "\(host):\(identityPort)", "--destination", "\(host):\(destinationPort)",
                "--ca", files.file("ca.crt"), "--token", files.file("\(account).token"),
                "--inbound", "0.0.0.0:4143", "--admin", "0.0.0.0:4191",
              ]
            }
            let proxy = try BackgroundProcess(
              "ip",
              [
                "netns", "exec", namespace, "setpriv", "--reuid=\(uid)", "--regid=\(uid)", "--clear-groups",
                BuiltProduct.path("mesh-proxy"),
              ] + arguments)
            processes.append(proxy)
            try await waitForReady(ip, proxy: proxy)
          }
          // MESH_TEST_PAUSE=SECONDS keeps the pods up before the test body, to look at them by hand.
          if let pause = ProcessInfo.processInfo.environment["MESH_TEST_PAUSE"].flatMap(Int.init) {
            print("PAUSED: web=\(web) backend=\(backend)")
            try await Task.sleep(for: .seconds(pause))
          }
          try await body(TransparentMesh(web: web, backend: backend, outsidePort: outside))
        } catch {
          for process in processes { print("--- \(process.command)\n\(process.printed.suffix(4000))") }
          await stop()
          throw error
        }
        await stop()
      }
    }
  }

  /// Polls the proxy's `/ready` (through the bridge) until it answers 200.
  private static func waitForReady(_ ip: String, proxy: BackgroundProcess) async throws {
    let deadline = ContinuousClock.now + .seconds(60)
    while ContinuousClock.now < deadline {
      let out = try await Subprocess.run("curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "2", "http://\(ip):4191/ready"])
      if out.stdout == "200" { return }
      guard proxy.isRunning else { throw TestFailure("mesh-proxy at \(ip) exited: \(proxy.printed)") }
      try await Task.sleep(for: .milliseconds(200))
    }
    throw TestFailure("mesh-proxy at \(ip) not ready within 60 s: \(proxy.printed)")
  }

  /// What a pod's injected containers run.
  struct Sidecar {
    var initArguments: [String]
    var proxyArguments: [String]
    var uid: Int
  }

  /// The `backend` Service (ClusterIP 198.18.1.10), its pod and Endpoints, and the `web` pod, as a cluster's
  /// controllers would have written them, the pods as injection made them. Returns each injected pod's
  /// sidecar, by service account.
  private static func publish(in state: LocalKubeState, injector: PodInjector) throws -> [String: Sidecar] {
    let ports: [(String, Int, Int)] = [
      ("http", 80, 8080), ("greet", 7000, 7000), ("echo", 7001, 7001), ("greet-detect", 7002, 7002),
      ("redis", 6379, 6379),
    ]
    _ = try state.create(
      KubeService(
        metadata: ObjectMeta(
          name: "backend", namespace: "default", annotations: [OpaquePorts.annotation: "7000,6379"]),
        spec: .init(
          selector: ["app": "backend"],
          ports: ports.map { .init(name: $0.0, port: $0.1, targetPort: .int($0.2)) }, clusterIP: clusterIP)))
    var sidecars: [String: Sidecar] = [:]
    for (name, ip) in [("backend", backendIP), ("web", webIP)] {
      let manifest: JSONValue = [
        "apiVersion": "v1", "kind": "Pod",
        "metadata": [
          "name": .string("\(name)-0"), "namespace": "default", "labels": ["app": .string(name)],
          "annotations": ["swiftmesh.io/inject": "enabled"],
        ],
        "spec": [
          "serviceAccountName": .string(name),
          "containers": [["name": "app", "image": "tcp-peer"]],
        ],
      ]
      guard case .inject(let patch) = try injector.decide(manifest) else { throw TestFailure("\(name)-0 was not injected") }
      let injected = try patch.applied(to: manifest)
      func container(_ name: String) -> JSONValue? {
        injected["spec"]?["initContainers"]?.arrayValue?.first { $0["name"]?.stringValue == name }
      }
      func arguments(_ container: JSONValue?) -> [String] { container?["args"]?.arrayValue?.compactMap(\.stringValue) ?? [] }
      let proxy = container("swiftmesh-proxy")
      sidecars[name] = Sidecar(
        initArguments: arguments(container("swiftmesh-init")), proxyArguments: arguments(proxy),
        uid: Int(proxy?["securityContext"]?["runAsUser"]?.intValue ?? -1))
      var pod = try JSONDecoder().decode(Pod.self, from: try JSONEncoder().encode(injected))
      pod.status = .init(phase: "Running", podIP: ip)
      _ = try state.create(pod)
    }
    // As the service mirror writes an exported `backend` of cluster "west": the gateway is its endpoint.
    _ = try state.create(
      KubeService(
        metadata: ObjectMeta(
          name: "backend-west", namespace: "default",
          labels: ["mirror.swiftmesh.io/mirrored-service": "true", "mirror.swiftmesh.io/cluster-name": "west"],
          annotations: [
            OpaquePorts.annotation: "7000,6379",
            "mirror.swiftmesh.io/remote-svc-fq-name": "backend.default.svc.cluster.local",
          ]),
        spec: .init(ports: ports.map { .init(name: $0.0, port: $0.1) }, clusterIP: mirrorClusterIP)))
    _ = try state.create(
      Endpoints(
        metadata: ObjectMeta(
          name: "backend-west", namespace: "default",
          annotations: ["mirror.swiftmesh.io/gateway-identity": gatewayIdentity.description]),
        subsets: [.init(addresses: [.init(ip: gatewayIP)], ports: ports.map { .init(name: $0.0, port: 4143) })]))
    _ = try state.create(
      Endpoints(
        metadata: ObjectMeta(name: "backend", namespace: "default"),
        subsets: [
          .init(
            addresses: [.init(ip: backendIP, targetRef: ObjectReference(kind: "Pod", namespace: "default", name: "backend-0"))],
            ports: ports.map { .init(name: $0.0, port: $0.2) })
        ]))
    return sidecars
  }
}

@Suite(
  "Transparent proxying: pods in network namespaces, mesh-proxy-init's iptables, mesh-proxy --transparent as uid 2102",
  .serialized, .enabled(if: TransparentMesh.available))
struct TransparentProxyTests {
  @Test("unmodified clients reach the backend through both proxies over mutual TLS: HTTP by name and by ClusterIP, opaque TCP both ways, redis, and an address the mesh does not know")
  func transparentMesh() async throws {
    try await TransparentMesh.with { mesh in
      let web = IdentityName.test("web").description

      // HTTP by the Service's name (resolved to its ClusterIP, as cluster DNS would) and by the ClusterIP.
      let byName = try await mesh.curl([
        "--resolve", "\(TransparentMesh.backendName):80:\(TransparentMesh.clusterIP)",
        "http://\(TransparentMesh.backendName)/hello",
      ])
      #expect(byName.stdout == "backend /hello host=\(TransparentMesh.backendName)", "\(byName)")
      let byIP = try await mesh.curl(["http://\(TransparentMesh.clusterIP)/by-ip"])
      #expect(byIP.stdout == "backend /by-ip host=\(TransparentMesh.clusterIP)", "\(byIP)")

      // The backend's proxy saw both requests arrive over mutual TLS from web's identity.
      let backendMetrics = try await mesh.metrics(TransparentMesh.backendIP)
      #expect(
        backendMetrics.split(separator: "\n").contains {
          $0.hasPrefix("request_total{") && $0.contains("direction=\"inbound\"") && $0.contains("client_id=\"\(web)\"")
            && $0.contains("tls=\"true\"")
        }, "\(backendMetrics)")

      // Opaque, server speaks first (an opaque port: no detection), 24 MB each way, checksummed, half-closed.
      let size = 24 * 1024 * 1024
      let greet = try await mesh.tcpClient(TransparentMesh.clusterIP, 7000, bytes: size, greet: true)
      #expect(greet["greeting"] as? String == "HELLO")
      #expect(greet["echo_ok"] as? Bool == true, "\(greet)")
      #expect(greet["bye"] as? String == "BYE \(greet["sent"] as? String ?? "?") \(size)", "\(greet)")
      #expect(greet["eof"] as? Bool == true)

      // Not HTTP on a port that is not opaque: detection sees it at once and carries it as opaque TCP.
      let clock = ContinuousClock()
      let start = clock.now
      let echo = try await mesh.tcpClient(TransparentMesh.clusterIP, 7001, bytes: 1 << 20, greet: false)
      #expect(echo["echo_ok"] as? Bool == true, "\(echo)")
      #expect(clock.now - start < .seconds(2), "no detect timeout for bytes that are not HTTP")
      // Short connections: the client's bytes and FIN reach the backend's proxy together with the end of the
      // TLS handshake, while it still verifies web's certificate. Each is heard in full (the FIN is held
      // until the handshake is over, not taken for a failed one).
      for round in 0..<10 {
        let short = try await mesh.tcpClient(TransparentMesh.clusterIP, 7001, bytes: 100 + round, greet: false)
        try #require(short["echo_ok"] as? Bool == true, "round \(round): \(short)")
      }

      // Server speaks first on a port that is not opaque: after the detect timeout (10 s), opaque.
      let late = try await mesh.tcpClient(TransparentMesh.clusterIP, 7002, bytes: 4096, greet: true)
      #expect(late["greeting"] as? String == "HELLO", "\(late)")
      #expect(late["echo_ok"] as? Bool == true, "\(late)")
      let webMetrics = try await mesh.metrics(TransparentMesh.webIP)
      #expect(webMetrics.contains("protocol_detect_timeout_total{direction=\"outbound\"} 1"), "\(webMetrics)")

      // The opaque connections went over mutual TLS: the backend's inbound names web as their client.
      let tcpInbound = try await mesh.metrics(TransparentMesh.backendIP).split(separator: "\n").filter {
        $0.hasPrefix("tcp_write_bytes_total{") && $0.contains("direction=\"inbound\"") && $0.contains("client_id=\"\(web)\"")
      }
      let inboundBytes = tcpInbound.compactMap { $0.split(separator: " ").last.flatMap { Double($0) } }.reduce(0, +)
      #expect(inboundBytes >= Double(size), "\(tcpInbound)")

      // The same opaque service exported from another cluster, through its gateway, by its mirror's ClusterIP.
      let remote = try await mesh.tcpClient(TransparentMesh.mirrorClusterIP, 7000, bytes: 4 << 20, greet: true)
      #expect(remote["greeting"] as? String == "HELLO", "\(remote)")
      #expect(remote["echo_ok"] as? Bool == true, "\(remote)")
      #expect(remote["bye"] as? String == "BYE \(remote["sent"] as? String ?? "?") \(4 << 20)", "\(remote)")
      let gatewayMetrics = try await mesh.metrics(TransparentMesh.gatewayIP).split(separator: "\n")
      #expect(
        gatewayMetrics.contains {
          $0.hasPrefix("tcp_write_bytes_total{") && $0.contains("direction=\"gateway\"") && $0.contains("peer=\"dst\"")
            && $0.contains("dst_service=\"backend\"") && $0.contains("client_id=\"\(web)\"")
        }, "\(gatewayMetrics.filter { $0.hasPrefix("tcp_") })")

      // An unmodified redis client against Debian's redis-server (6379 is opaque by default).
      if TransparentMesh.hasRedis {
        let set = try await mesh.exec(mesh.web, ["redis-cli", "-h", TransparentMesh.clusterIP, "SET", "mesh", "swift"])
        #expect(set.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "OK", "\(set)")
        let get = try await mesh.exec(mesh.web, ["redis-cli", "-h", TransparentMesh.clusterIP, "GET", "mesh"])
        #expect(get.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "swift", "\(get)")
      }

      // An address the mesh does not know is forwarded as is (plaintext, straight to it).
      let outside = try await mesh.curl(["-o", "/dev/null", "-w", "%{http_code}", "http://\(TransparentMesh.host):\(mesh.outsidePort)/ca.crt"])
      #expect(outside.stdout == "200", "\(outside)")

      // Bad input: an opaque connection to an address where nothing listens is closed, not left hanging.
      let refused = try await mesh.exec(
        mesh.web,
        [PythonPeer.python, "-c", """
          import socket, sys
          s = socket.create_connection(("\(TransparentMesh.host)", 9), timeout=10)
          s.sendall(b"\\x00\\x01 not http\\r\\n")
          print("closed" if s.recv(10) == b"" else "data")
          """], seconds: 30)
      #expect(refused.stdout.contains("closed") || refused.stderr.contains("Connection reset"), "\(refused)")
      let refusals = try await mesh.metrics(TransparentMesh.webIP)
      #expect(refusals.contains("tcp_refused_total{direction=\"outbound\",reason=\"connect failed\"}"), "\(refusals)")
    }
  }
}
