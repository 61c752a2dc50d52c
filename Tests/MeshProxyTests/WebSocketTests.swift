import Foundation
import Logging
import MeshCore
import MeshDiscovery
import MeshIdentity
import MeshProxy
import MeshTLS
import Testing
import _MeshTestSupport

/// HTTP/1.1 upgrades (WebSocket) through the mesh, judged by an independent WebSocket implementation on both
/// ends (Debian's python3-websockets): through one proxy, the mTLS pair and the gateway.
@Suite("WebSocket and HTTP/1.1 upgrades", .serialized, .enabled(if: WSPeer.available))
struct WebSocketTests {
  static let authority = "backend.default.svc.cluster.local:80"
  static let uri = "ws://backend.default.svc.cluster.local"
  /// A route timeout far below the idle second the peer waits on an open connection: it must bound the
  /// wait for the 101, not the connection's life.
  static let shortTimeout = Profile(routes: [Route(name: "all", condition: .pathRegex("/.*"), timeout: .milliseconds(300))])
  /// The same across mutual TLS, where the timeout also covers a new connection's handshake (100 of them
  /// at once in the concurrency check, on a debug build): 2 s, against 2.5 s idle.
  static let tlsTimeout = Profile(routes: [Route(name: "all", condition: .pathRegex("/.*"), timeout: .seconds(2))])

  /// What every path must give: the peer's own checks, all passed.
  static func expectAllPassed(_ result: [String: Any], idle: Bool, _ path: String) {
    #expect(result["echo1000"] as? Int == 1000, "\(path): \(result)")
    #expect(result["big1MB"] as? Bool == true, "\(path): \(result)")
    let serverClose = result["serverClose"] as? [Any]
    #expect(serverClose?.first as? Int == 4001 && serverClose?.last as? String == "bye", "\(path): \(result)")
    let clientClose = result["clientClose"] as? [String: Any]
    #expect(clientClose?["code"] as? Int == 4003 && clientClose?["reason"] as? String == "client-bye", "\(path): \(result)")
    #expect(result["concurrent100"] as? Int == 100, "\(path): \(result)")
    if idle { #expect(result["afterIdle"] as? String == "after idle", "\(path): \(result)") }
  }

  @Test("through one proxy: echo, 1 MB, closes both ways, 100 at once, idle past the route timeout")
  func singleProxy() async throws {
    let server = try await WSPeer.serve()
    defer { server.process.terminate() }
    let discovery = InMemoryDiscovery([
      try Authority(Self.authority): EndpointSet(
        exists: true, endpoints: [Endpoint(address: try Authority(host: "127.0.0.1", port: server.port))])
    ])
    // A 300 ms route timeout applies to the 101, not to the connection's life.
    discovery.setProfile(Self.shortTimeout, for: try Authority(Self.authority))
    try await withSingleProxy(discovery: discovery, label: "test.websocket") { proxy in
      let ports = try await proxy.boundPorts()
      let result = try await WSPeer.client(uri: Self.uri, port: ports.outbound, idle: 1)
      Self.expectAllPassed(result, idle: true, "single proxy")
      let metrics = try await curl(["http://127.0.0.1:\(ports.admin)/metrics"]).stdout
      #expect(
        metrics.split(separator: "\n").contains {
          $0.hasPrefix("response_total{") && $0.contains("direction=\"outbound\"") && $0.contains("status_code=\"101\"")
        }, "responses with status 101 are counted:\n\(metrics)")
    }
  }

  @Test("through the mTLS pair: the upgraded bytes travel inside mutual TLS, the server proxy sees the client's identity; idle past the route timeout")
  func pair() async throws {
    let server = try await WSPeer.serve()
    defer { server.process.terminate() }
    let pair = try ProxyPair()
    try await pair.run(applicationPort: server.port) { client, serverProxy, discovery in
      discovery.setProfile(Self.tlsTimeout, for: try Authority(Self.authority))
      let outbound = try await client.boundPorts().outbound
      let result = try await WSPeer.client(uri: Self.uri, port: outbound, idle: 2.5)
      Self.expectAllPassed(result, idle: true, "mTLS pair")
      let admin = try await serverProxy.boundPorts().admin
      let metrics = try await curl(["http://127.0.0.1:\(admin)/metrics"]).stdout
      let upgraded = metrics.split(separator: "\n").filter {
        $0.hasPrefix("response_total{") && $0.contains("direction=\"inbound\"") && $0.contains("status_code=\"101\"")
      }
      #expect(upgraded.count == 1, "101 responses on the server proxy's inbound side:\n\(metrics)")
      #expect(upgraded.first?.contains("tls=\"true\"") == true, "\(upgraded)")
      #expect(upgraded.first?.contains("client_id=\"\(pair.web)\"") == true, "\(upgraded)")
      #expect(
        metrics.split(separator: "\n").contains {
          $0.hasPrefix("tcp_open_total{") && $0.contains("direction=\"inbound\"") && $0.contains("tls=\"true\"")
        }, "\(metrics)")
    }
  }

  @Test("through client proxy -> gateway (mTLS) -> server; idle past the route timeout")
  func gateway() async throws {
    let server = try await WSPeer.serve()
    defer { server.process.terminate() }
    let backend = try Authority(Self.authority)
    let gatewayDiscovery = InMemoryDiscovery([
      backend: EndpointSet(exists: true, endpoints: [Endpoint(address: try Authority(host: "127.0.0.1", port: server.port))])
    ])
    try await withGatewayPath(
      backend: backend, gatewayDiscovery: gatewayDiscovery, clientProfile: Self.tlsTimeout, label: "test.websocket"
    ) { outbound in
      let result = try await WSPeer.client(uri: Self.uri, port: outbound, idle: 2.5)
      Self.expectAllPassed(result, idle: true, "gateway")
    }
  }

  @Test("bad input: a refused upgrade is an ordinary response; bytes after a 101 are relayed unparsed; CONNECT and h2c")
  func badInput() async throws {
    let server = try await WSPeer.serve()
    defer { server.process.terminate() }
    let raw = try await WSPeer.serve(mode: "raw")
    defer { raw.process.terminate() }
    let rawAuthority = try Authority("raw.default.svc.cluster.local:80")
    let discovery = InMemoryDiscovery([
      try Authority(Self.authority): EndpointSet(
        exists: true, endpoints: [Endpoint(address: try Authority(host: "127.0.0.1", port: server.port))]),
      rawAuthority: EndpointSet(exists: true, endpoints: [Endpoint(address: try Authority(host: "127.0.0.1", port: raw.port))]),
    ])
    discovery.setProfile(
      Profile(routes: [Route(name: "silent", condition: .pathRegex("/silent"), timeout: .milliseconds(500))]),
      for: rawAuthority)
    try await withSingleProxy(discovery: discovery, label: "test.websocket.bad") { proxy in
      let outbound = try await proxy.boundPorts().outbound
      let upgradeHeaders = [
        "-H", "Connection: Upgrade", "-H", "Upgrade: websocket", "-H", "Sec-WebSocket-Version: 13",
        "-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "-H", "Host: \(Self.authority)",
      ]
      // The backend refuses the upgrade: its 400 and body reach the client.
      let refused = try await curl(["-i", "http://127.0.0.1:\(outbound)/reject"] + upgradeHeaders)
      #expect(refused.stdout.hasPrefix("HTTP/1.1 400"), "\(refused)")
      #expect(refused.stdout.contains("no upgrade here"), "\(refused)")
      // Not WebSocket at all: whatever follows the 101 is relayed byte for byte, and bytes flow both ways.
      let script = """
        import socket, sys
        s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
        s.sendall(b"GET / HTTP/1.1\\r\\nHost: raw.default.svc.cluster.local\\r\\nConnection: upgrade\\r\\nUpgrade: raw\\r\\n\\r\\n")
        data = b""
        try:
            while b"\\r\\n\\r\\n" not in data or len(data.split(b"\\r\\n\\r\\n", 1)[1]) < 9:
                chunk = s.recv(4096)
                if not chunk: break
                data += chunk
        except socket.timeout:
            sys.exit("timed out after %r" % data)
        head, rest = data.split(b"\\r\\n\\r\\n", 1)
        s.sendall(b"\\x01\\x02 not http \\xfe")
        echo = b""
        while len(echo) < 13:
            chunk = s.recv(4096)
            if not chunk: break
            echo += chunk
        print(head.split(b"\\r\\n")[0].decode(), rest.hex(), echo.hex())
        """
      let relayed = try await Subprocess.run(WSPeer.python, ["-c", script, "\(outbound)"])
      #expect(
        relayed.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
          == "HTTP/1.1 101 Switching Protocols \(Data("\u{0}garbage".utf8).hexString)ff \(Data([1, 2]).hexString)206e6f74206874747020fe",
        "\(relayed)")
      // A backend that never answers the upgrade: the route's timeout answers, as for any request.
      let silent = try await curl(
        ["-i", "-H", "Connection: Upgrade", "-H", "Upgrade: raw", "-H", "Host: raw.default.svc.cluster.local",
         "http://127.0.0.1:\(outbound)/silent"])
      #expect(silent.stdout.hasPrefix("HTTP/1.1 504"), "\(silent)")
      #expect(silent.stdout.lowercased().contains("mesh-proxy-error: request timeout"), "\(silent)")
      // CONNECT: refused with a status that says so, and the connection ends.
      let connect = try await curl(["-i", "-X", "CONNECT", "--request-target", "example.com:443", "http://127.0.0.1:\(outbound)/"])
      #expect(connect.stdout.hasPrefix("HTTP/1.1 405"), "\(connect)")
      #expect(connect.stdout.lowercased().contains("mesh-proxy-error: connect not allowed"), "\(connect)")
      // An h2c upgrade is not performed: the request succeeds as HTTP/1.1.
      let h2c = try await curl(["-i", "--http2", "-H", "Host: \(Self.authority)", "http://127.0.0.1:\(outbound)/reject"])
      #expect(h2c.stdout.hasPrefix("HTTP/1.1 "), "\(h2c)")
    }
  }
}

/// The Python peer in `Peers/ws_peer.py`.
enum WSPeer {
  static let python = PythonPeer.python
  static let script = PythonPeer.path("ws_peer.py")
  static var available: Bool { PythonPeer.canImport("websockets") }

  static func serve(mode: String = "server") async throws -> PythonPeer { try await PythonPeer.serve(script, [mode]) }

  /// Runs the peer's checks through the proxy listening on `port` (127.0.0.1).
  static func client(uri: String, port: Int, idle: Double) async throws -> [String: Any] {
    let result = try await Subprocess.run("timeout", ["120", python, script, "client", uri, "127.0.0.1", "\(port)", "\(idle)"])
    guard result.status == 0, let data = result.stdout.data(using: .utf8),
      let object = try JSONSerialization.jsonObject(with: data) as? [String: Any]
    else { throw TestFailure("ws_peer.py client failed: \(result)") }
    return object
  }
}

extension Data {
  fileprivate var hexString: String { map { String(format: "%02x", $0) }.joined() }
}
