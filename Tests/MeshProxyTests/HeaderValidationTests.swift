import MeshCore
import MeshDiscovery
import MeshProxy
import NIOHTTP1
import Testing
import _MeshTestSupport

/// The proxy writes headers without NIO's outbound validators: every header it forwards was validated where
/// it came in (llhttp for HTTP/1.1, swift-nio-http2's header block validation for HTTP/2). These tests are
/// what that rests on: a header that could split a message (CR, LF, NUL) or is not a token never gets
/// through, in either direction.
@Suite("Header validation on the way in")
struct HeaderValidationTests {
  static let backend = try! Authority("backend.default.svc.cluster.local:80")

  /// Sends each raw request on its own connection to `port`; prints the status line of each answer (or
  /// `none` when the connection closed without one).
  static let client = """
    import socket, sys
    port = int(sys.argv[1])
    for raw in sys.argv[2:]:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(raw.encode("latin-1").decode("unicode_escape").encode("latin-1"))
        data = b""
        try:
            while b"\\r\\n" not in data:
                chunk = s.recv(4096)
                if not chunk: break
                data += chunk
        except OSError:
            pass
        s.close()
        line = data.split(b"\\r\\n")[0].decode("latin-1") if data else "none"
        print(line, flush=True)
    """

  @Test("a request header with CR, NUL or a non-token name gets 400 and never reaches the application")
  func badRequestHeaders() async throws {
    let app = try await TestHTTPServer(name: "app")
    defer { Task { await app.stop() } }
    let discovery = InMemoryDiscovery([
      Self.backend: EndpointSet(exists: true, endpoints: [Endpoint(address: try Authority(host: "127.0.0.1", port: app.port))])
    ])
    try await withSingleProxy(discovery: discovery, label: "test.headers") { proxy in
      let port = try await proxy.boundPorts().outbound
      let host = "Host: backend.default.svc.cluster.local\\r\\n"
      let bad = [
        "GET / HTTP/1.1\\r\\n\(host)x-split: a\\rb\\r\\n\\r\\n",  // bare CR in a value
        "GET / HTTP/1.1\\r\\n\(host)x-nul: a\\x00b\\r\\n\\r\\n",  // NUL in a value
        "GET / HTTP/1.1\\r\\n\(host)x bad: a\\r\\n\\r\\n",  // space in a name
        "GET / HTTP/1.1\\r\\n\(host)x-bad\\x01: a\\r\\n\\r\\n",  // control byte in a name
      ]
      let good = "GET / HTTP/1.1\\r\\n\(host)x-fine: a b\\tc\\r\\nconnection: close\\r\\n\\r\\n"
      let out = try await Subprocess.run("python3", ["-c", Self.client, "\(port)"] + bad + [good])
      let lines = out.stdout.split(separator: "\n").map(String.init)
      #expect(lines.count == bad.count + 1, "\(out)")
      for (index, line) in lines.prefix(bad.count).enumerated() {
        #expect(line.hasPrefix("HTTP/1.1 400"), "bad request \(index): \(line)")
      }
      #expect(lines.last?.hasPrefix("HTTP/1.1 200") == true, "\(out)")
      #expect(app.requestCount == 1, "only the valid request reached the application")
      #expect(app.lastRequest?.headers.first(name: "x-fine") == "a b\tc")
    }
  }

  @Test("a response header with a NUL or a non-token name from the application gets 502, not passed on")
  func badResponseHeaders() async throws {
    // An application that answers each connection with the response given on its first request line's path.
    let server = """
      import socket, sys, threading
      responses = {
          "/nul": b"HTTP/1.1 200 OK\\r\\nx-nul: a\\x00b\\r\\ncontent-length: 2\\r\\n\\r\\nok",
          "/cr": b"HTTP/1.1 200 OK\\r\\nx-split: a\\rb\\r\\ncontent-length: 2\\r\\n\\r\\nok",
          "/name": b"HTTP/1.1 200 OK\\r\\nx bad: a\\r\\ncontent-length: 2\\r\\n\\r\\nok",
          "/good": b"HTTP/1.1 200 OK\\r\\nx-fine: a b\\r\\ncontent-length: 2\\r\\n\\r\\nok",
      }
      listener = socket.socket()
      listener.bind(("127.0.0.1", 0))
      listener.listen(16)
      print("port", listener.getsockname()[1], flush=True)
      def serve(conn):
          data = b""
          while b"\\r\\n\\r\\n" not in data:
              chunk = conn.recv(4096)
              if not chunk: return
              data += chunk
          path = data.split(b" ")[1].decode()
          conn.sendall(responses.get(path, responses["/good"]))
          conn.close()
      listener.settimeout(60)
      while True:
          conn, _ = listener.accept()
          threading.Thread(target=serve, args=(conn,), daemon=True).start()
      """
    let app = try BackgroundProcess("/usr/bin/python3", ["-c", server])
    defer { app.terminate() }
    try await app.waitForOutput(containing: "port ")
    let appPort = try #require(
      app.printed.split(separator: "\n").first { $0.hasPrefix("port ") }.flatMap { Int($0.dropFirst(5)) })
    let discovery = InMemoryDiscovery([
      Self.backend: EndpointSet(exists: true, endpoints: [Endpoint(address: try Authority(host: "127.0.0.1", port: appPort))])
    ])
    try await withSingleProxy(discovery: discovery, label: "test.headers") { proxy in
      let port = try await proxy.boundPorts().outbound
      func get(_ path: String) async throws -> Subprocess.Output {
        try await Subprocess.run(
          "curl", ["-s", "-m", "10", "-D", "-", "-H", "Host: backend.default.svc.cluster.local", "http://127.0.0.1:\(port)\(path)"])
      }
      for path in ["/nul", "/cr", "/name"] {
        let out = try await get(path)
        #expect(out.stdout.hasPrefix("HTTP/1.1 502"), "\(path): \(out)")
        #expect(!out.stdout.contains("x-nul") && !out.stdout.contains("x-split") && !out.stdout.contains("x bad"), "\(path): \(out)")
      }
      let good = try await get("/good")
      #expect(good.stdout.hasPrefix("HTTP/1.1 200"), "\(good)")
      #expect(good.stdout.contains("x-fine: a b"), "\(good)")
    }
  }
}
