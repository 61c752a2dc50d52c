import Foundation
import Logging
import MeshCore
import MeshDiscovery
import MeshIdentity
import MeshProxy
import MeshTLS
import Testing
import _MeshTestSupport

/// gRPC C core (Debian's python3-grpcio) on both ends: what a client sees through the proxy must equal what
/// it sees directly — statuses (trailers-only responses), messages, metadata, streams, deadlines, cancels.
@Suite("gRPC interop with python3-grpcio", .serialized, .enabled(if: GRPCPeer.available))
struct GRPCInteropTests {
  static let authority = "backend.default.svc.cluster.local:80"

  @Test("every call through a single plaintext proxy equals the direct call")
  func singleProxy() async throws {
    let server = try await GRPCPeer.serve()
    defer { server.process.terminate() }
    let direct = try await GRPCPeer.client(target: "127.0.0.1:\(server.port)")
    try await withProxy(tls: nil, discovery: InMemoryDiscovery()) { proxy in
      let outbound = try await proxy.boundPorts().outbound
      // Discovery does not know the name: forwarded as given, HTTP/2 to the server.
      let through = try await GRPCPeer.client(target: "127.0.0.1:\(outbound)", authority: "127.0.0.1:\(server.port)")
      try GRPCPeer.expectSame(through, direct)
    }
  }

  @Test("every call through the mTLS pair equals the direct call; metrics count the server's grpc-status")
  func pair() async throws {
    let server = try await GRPCPeer.serve()
    defer { server.process.terminate() }
    let direct = try await GRPCPeer.client(target: "127.0.0.1:\(server.port)")
    let pair = try ProxyPair()
    try await pair.run(applicationPort: server.port) { client, serverProxy, _ in
      let outbound = try await client.boundPorts().outbound
      let through = try await GRPCPeer.client(target: "127.0.0.1:\(outbound)", authority: Self.authority)
      try GRPCPeer.expectSame(through, direct)
      let admin = try await serverProxy.boundPorts().admin
      let metrics = try await curl(["http://127.0.0.1:\(admin)/metrics"]).stdout
      let notFound = metrics.split(separator: "\n").filter {
        $0.hasPrefix("response_total{") && $0.contains("direction=\"inbound\"") && $0.contains("grpc_status=\"5\"")
      }
      #expect(notFound.count == 1, "one response_total series with grpc_status=\"5\":\n\(metrics)")
      #expect(notFound.first?.contains("classification=\"failure\"") == true)
      #expect(notFound.first?.hasSuffix(" 1") == true, "the one NOT_FOUND call counted once: \(notFound)")
    }
  }

  @Test("every call through client proxy -> gateway (mTLS) -> server equals the direct call")
  func gateway() async throws {
    let server = try await GRPCPeer.serve()
    defer { server.process.terminate() }
    let direct = try await GRPCPeer.client(target: "127.0.0.1:\(server.port)")
    try await withGatewayPath(
      backend: try Authority(Self.authority), gatewayDiscovery: try Self.discovery(to: server), label: "test.grpc-interop"
    ) { outbound in
      let through = try await GRPCPeer.client(target: "127.0.0.1:\(outbound)", authority: Self.authority)
      try GRPCPeer.expectSame(through, direct)
    }
  }

  @Test("the proxy's own answers to gRPC calls are gRPC statuses: UNAVAILABLE with the reason")
  func proxyErrorsAreStatuses() async throws {
    let backend = try Authority(Self.authority)
    // A known service with no endpoints, and a connection refused.
    let discovery = InMemoryDiscovery([
      backend: EndpointSet(exists: true, endpoints: []),
      try Authority("refused.default.svc.cluster.local:80"): EndpointSet(
        exists: true, endpoints: [Endpoint(address: try Authority("127.0.0.1:1"), protocolHint: .http2)]),
    ])
    try await withProxy(tls: nil, discovery: discovery) { proxy in
      let outbound = try await proxy.boundPorts().outbound
      let started = ContinuousClock.now
      let noEndpoints = try await GRPCPeer.unary(target: "127.0.0.1:\(outbound)", authority: Self.authority)
      #expect(noEndpoints["code"] as? String == "UNAVAILABLE", "\(noEndpoints)")
      #expect((noEndpoints["details"] as? String)?.contains("no endpoints") == true, "\(noEndpoints)")
      #expect(ContinuousClock.now - started < .seconds(5))
      let refused = try await GRPCPeer.unary(
        target: "127.0.0.1:\(outbound)", authority: "refused.default.svc.cluster.local:80")
      #expect(refused["code"] as? String == "UNAVAILABLE", "\(refused)")
      // The refused endpoint is ejected at once, so the retry finds no available endpoint: either way the
      // reason is in the message.
      let reason = refused["details"] as? String ?? ""
      #expect(reason.contains("connect failed") || reason.contains("no available endpoints"), "\(refused)")
    }
  }

  @Test("a route timeout answers a gRPC call with DEADLINE_EXCEEDED and the proxy's reason")
  func routeTimeoutIsDeadlineExceeded() async throws {
    let server = try await GRPCPeer.serve()
    defer { server.process.terminate() }
    let backend = try Authority(Self.authority)
    let discovery = try Self.discovery(to: server)
    discovery.setProfile(
      Profile(
        fullyQualifiedName: "backend.default.svc.cluster.local",
        routes: [Route(name: "Echo", condition: .pathRegex("/test\\.Peer/Echo"), timeout: .milliseconds(200))]),
      for: backend)
    try await withProxy(tls: nil, discovery: discovery) { proxy in
      let outbound = try await proxy.boundPorts().outbound
      let started = ContinuousClock.now
      let result = try await GRPCPeer.unary(
        target: "127.0.0.1:\(outbound)", authority: Self.authority, message: "sleep:2")
      #expect(result["code"] as? String == "DEADLINE_EXCEEDED", "\(result)")
      #expect((result["details"] as? String)?.contains("request timeout") == true, "\(result)")
      #expect(ContinuousClock.now - started < .seconds(1.5))
    }
  }

  @Test("a retryable gRPC route retries UNAVAILABLE (trailers-only); a route that is not retryable does not")
  func retries() async throws {
    let server = try await GRPCPeer.serve()
    defer { server.process.terminate() }
    let backend = try Authority(Self.authority)
    let discovery = try Self.discovery(to: server)
    func profile(retryable: Bool) -> Profile {
      Profile(
        fullyQualifiedName: "backend.default.svc.cluster.local",
        routes: [Route(name: "Flaky", condition: .pathRegex("/test\\.Peer/Flaky"), isRetryable: retryable)],
        retryBudget: .default)
    }
    try await withProxy(tls: nil, discovery: discovery) { proxy in
      let ports = try await proxy.boundPorts()
      discovery.setProfile(profile(retryable: true), for: backend)
      let retried = try await GRPCPeer.flaky(target: "127.0.0.1:\(ports.outbound)", authority: Self.authority, count: 20)
      #expect(retried == 20, "every call succeeds on its retry")
      discovery.setProfile(profile(retryable: false), for: backend)
      let plain = try await GRPCPeer.flaky(target: "127.0.0.1:\(ports.outbound)", authority: Self.authority, count: 20)
      #expect(plain == 10, "half the calls fail without retries")
      let metrics = try await curl(["http://127.0.0.1:\(ports.admin)/metrics"]).stdout
      #expect(metrics.contains("route_retry_total{direction=\"outbound\",dst=\"backend.default.svc.cluster.local:80\",rt_route=\"Flaky\"} 20"), "\(metrics)")
    }
  }

  @Test("nghttp sees a trailers-only response cross the pair as one HEADERS frame with END_STREAM")
  func trailersOnlyFrame() async throws {
    guard Subprocess.which("nghttp") != nil else { return }
    let server = try await GRPCPeer.serve()
    defer { server.process.terminate() }
    let pair = try ProxyPair()
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    // One gRPC message (uncompressed, 5-byte prefix) asking the server to abort with NOT_FOUND.
    let message = Array("status:5:gone".utf8)
    let frame = [UInt8(0), 0, 0, 0, UInt8(message.count)] + message
    try Data(frame).write(to: URL(fileURLWithPath: dir.file("request.bin")))
    try await pair.run(applicationPort: server.port) { client, _, _ in
      let outbound = try await client.boundPorts().outbound
      let result = try await Subprocess.run(
        "nghttp",
        [
          "-v", "-H", ":authority: \(Self.authority)", "-H", ":method: POST", "-H", "content-type: application/grpc",
          "-H", "te: trailers", "-d", dir.file("request.bin"), "http://127.0.0.1:\(outbound)/test.Peer/Echo",
        ])
      let lines = result.stdout.split(separator: "\n")
      let received = lines.filter { $0.contains("recv HEADERS frame") || $0.contains("recv DATA frame") }
      #expect(received.count == 1, "one frame answers the call:\n\(result.stdout)")
      // `recv HEADERS frame <length=76, flags=0x05, stream_id=13>`: END_STREAM is flag 0x1.
      let flags = received.first.flatMap { line in
        line.range(of: "flags=0x").flatMap { Int(line[$0.upperBound...].prefix(2), radix: 16) }
      }
      #expect(received.first?.contains("HEADERS") == true && (flags ?? 0) & 0x1 == 0x1, "\(result.stdout)")
      #expect(result.stdout.contains("grpc-status: 5"), "\(result.stdout)")
    }
  }

  /// Discovery that resolves `backend...:80` to the Python server (plaintext HTTP/2).
  static func discovery(to server: GRPCPeer.Server) throws -> InMemoryDiscovery {
    InMemoryDiscovery([
      try Authority(authority): EndpointSet(
        exists: true,
        endpoints: [Endpoint(address: try Authority(host: "127.0.0.1", port: server.port), protocolHint: .http2)])
    ])
  }

  func withProxy(
    tls: MeshTLS?, discovery: InMemoryDiscovery, gateway: Bool = false, _ body: (MeshProxy) async throws -> Void
  ) async throws {
    try await withSingleProxy(tls: tls, discovery: discovery, label: "test.grpc-interop", configure: {
      $0.gatewayMode = gateway
    }, body)
  }
}

/// A peer written in Python (`Peers/<name>`, run by Debian's python3) that serves on a port it prints first.
struct PythonPeer {
  static let python = "/usr/bin/python3"
  let process: BackgroundProcess
  let port: Int

  static func path(_ name: String) -> String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Peers/\(name)").path
  }

  /// Whether Debian's python3 can import `module`.
  static func canImport(_ module: String) -> Bool {
    (try? Subprocess.runBlocking(python, ["-c", "import \(module)"]).status) == 0
  }

  /// Starts `script` with `arguments` and waits for the port it prints.
  static func serve(_ script: String, _ arguments: [String]) async throws -> PythonPeer {
    let process = try BackgroundProcess(python, [script] + arguments)
    try await process.waitForOutput(containing: "\n", timeout: .seconds(20))
    guard let port = Int(process.printed.split(separator: "\n").first ?? "") else {
      process.terminate()
      throw TestFailure("\(script) \(arguments.joined(separator: " ")) printed no port: \(process.printed)")
    }
    return PythonPeer(process: process, port: port)
  }
}

/// The Python peer in `Peers/grpc_peer.py`.
enum GRPCPeer {
  static let python = PythonPeer.python
  static let script = PythonPeer.path("grpc_peer.py")
  static var available: Bool { PythonPeer.canImport("grpc") }
  typealias Server = PythonPeer

  static func serve() async throws -> Server { try await PythonPeer.serve(script, ["serve"]) }

  /// Every case's outcome, as JSON text (keys sorted), so two runs compare exactly.
  static func client(target: String, authority: String? = nil) async throws -> [String: Any] {
    let result = try await Subprocess.run(python, [script, "client", target] + (authority.map { [$0] } ?? []))
    guard result.status == 0, let data = result.stdout.data(using: .utf8),
      let object = try JSONSerialization.jsonObject(with: data) as? [String: Any]
    else { throw TestFailure("grpc_peer.py client failed: \(result)") }
    return object
  }

  /// Calls `Flaky` `count` times through `target`; how many succeeded.
  static func flaky(target: String, authority: String, count: Int) async throws -> Int {
    let result = try await Subprocess.run(python, [script, "flaky", target, authority, "\(count)"])
    guard let ok = Int(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) else {
      throw TestFailure("grpc_peer.py flaky failed: \(result)")
    }
    return ok
  }

  /// One unary `Echo` call's outcome.
  static func unary(target: String, authority: String, message: String = "hi") async throws -> [String: Any] {
    let code = """
      import grpc, json, sys
      channel = grpc.insecure_channel(sys.argv[1], options=[("grpc.default_authority", sys.argv[2])])
      try:
          channel.unary_unary("/test.Peer/Echo")(sys.argv[3].encode(), timeout=10)
          print(json.dumps({"code": "OK"}))
      except grpc.RpcError as e:
          print(json.dumps({"code": e.code().name, "details": e.details()}))
      """
    let result = try await Subprocess.run(python, ["-c", code, target, authority, message])
    guard let data = result.stdout.data(using: .utf8),
      let object = try JSONSerialization.jsonObject(with: data) as? [String: Any]
    else { throw TestFailure("python grpc call failed: \(result)") }
    return object
  }

  /// Each case through the proxy has the outcome it has directly.
  static func expectSame(
    _ through: [String: Any], _ direct: [String: Any], sourceLocation: SourceLocation = #_sourceLocation
  ) throws {
    #expect(Set(through.keys) == Set(direct.keys), sourceLocation: sourceLocation)
    #expect(direct.count >= 25, "the peer ran every case: \(direct.keys.sorted())", sourceLocation: sourceLocation)
    for key in direct.keys.sorted() {
      let a = try JSONSerialization.data(withJSONObject: direct[key] ?? NSNull(), options: [.sortedKeys, .fragmentsAllowed])
      let b = try JSONSerialization.data(withJSONObject: through[key] ?? NSNull(), options: [.sortedKeys, .fragmentsAllowed])
      #expect(
        a == b,
        "\(key): directly \(String(decoding: a, as: UTF8.self)), through the proxy \(String(decoding: b, as: UTF8.self))",
        sourceLocation: sourceLocation)
    }
  }
}
