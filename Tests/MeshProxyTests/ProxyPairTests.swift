import Foundation
import Logging
import MeshCore
import MeshIdentity
import MeshProxy
import MeshTLS
import Testing
import _MeshTestSupport

/// A client proxy (outbound) and a server proxy (inbound, in front of an application), mutual TLS between.
struct ProxyPair {
  static let backendAuthority = try! Authority("backend.default.svc.cluster.local:80")
  let pki: TestPKI
  let web = IdentityName.test("web")
  let backend = IdentityName.test("backend")

  init() throws { pki = try TestPKI() }

  func configuration(application: Int, configure: (inout ProxyConfiguration) -> Void = { _ in }) -> ProxyConfiguration {
    .defaults {
      $0.outboundAddress = try! Authority("127.0.0.1:0")
      $0.inboundAddress = try! Authority("127.0.0.1:0")
      $0.adminAddress = try! Authority("127.0.0.1:0")
      $0.applicationAddress = try! Authority(host: "127.0.0.1", port: application)
      $0.failfastTimeout = .milliseconds(500)
      configure(&$0)
    }
  }

  /// Runs both proxies; `backend...:80` resolves to the server proxy's inbound port with the backend identity.
  func run(
    applicationPort: Int,
    _ body: (_ client: MeshProxy, _ server: MeshProxy, _ discovery: InMemoryDiscovery) async throws -> Void
  ) async throws {
    var logger = Logger(label: "test.proxy")
    logger.logLevel = ProcessInfo.processInfo.environment["MESH_TEST_LOG"].map { Logger.Level(rawValue: $0) ?? .warning } ?? .warning
    let server = MeshProxy(
      configuration: configuration(application: applicationPort),
      tls: try MeshTLS(material: try pki.workload(backend), trustAnchors: [pki.anchor.certificate]),
      discovery: InMemoryDiscovery(), logger: logger)
    let discovery = InMemoryDiscovery()
    let client = MeshProxy(
      configuration: configuration(application: 1),
      tls: try MeshTLS(material: try pki.workload(web), trustAnchors: [pki.anchor.certificate]),
      discovery: discovery, logger: logger)
    try await withThrowingTaskGroup { group in
      group.addTask { try await server.run() }
      group.addTask { try await client.run() }
      let serverPorts = try await server.boundPorts()
      _ = try await client.boundPorts()
      discovery.set(
        EndpointSet(
          exists: true,
          endpoints: [
            Endpoint(
              address: try Authority(host: "127.0.0.1", port: serverPorts.inbound), tlsIdentity: backend,
              protocolHint: .http2, metricLabels: ["service": "backend", "namespace": "default"])
          ]),
        for: Self.backendAuthority)
      try await body(client, server, discovery)
      group.cancelAll()
    }
  }
}

func curl(_ arguments: [String]) async throws -> Subprocess.Output {
  try await Subprocess.run("curl", ["-s", "-S", "-m", "30"] + arguments)
}

func sha256(_ path: String) async throws -> String {
  try await Subprocess.run("sha256sum", [path]).stdout.split(separator: " ").first.map(String.init) ?? ""
}

@Suite("Proxy pair with real peers", .serialized)
struct ProxyPairTests {
  @Test("curl -> outbound -> mTLS -> inbound -> nginx, HTTP/1.1 with a 10 MB body both ways; metrics show the identity")
  func http1RoundTrip() async throws {
    let pair = try ProxyPair()
    let nginx = try await Nginx.start()
    defer { nginx.stop() }
    try await nginx.waitUntilServing()
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    _ = try await Subprocess.run("sh", ["-c", "head -c 10485760 /dev/urandom > \(dir.file("upload.bin"))"])

    try await pair.run(applicationPort: nginx.http1Port) { client, server, _ in
      let ports = try await client.boundPorts()
      let connectTo = ["--connect-to", "backend.default.svc.cluster.local:80:127.0.0.1:\(ports.outbound)"]
      let put = try await curl(
        connectTo + ["-o", "/dev/null", "-w", "%{http_code}", "-T", dir.file("upload.bin"),
          "http://backend.default.svc.cluster.local/upload.bin"])
      #expect(["201", "204"].contains(put.stdout), "\(put)")
      let get = try await curl(
        connectTo + ["-o", dir.file("download.bin"), "-D", dir.file("headers.txt"), "-w", "%{http_code}",
          "http://backend.default.svc.cluster.local/upload.bin"])
      #expect(get.stdout == "200", "\(get)")
      #expect(try await sha256(dir.file("download.bin")) == (try await sha256(dir.file("upload.bin"))))
      #expect(try String(contentsOfFile: dir.file("headers.txt"), encoding: .utf8).contains("x-served-by: nginx"))

      let serverAdmin = try await server.boundPorts().admin
      let metrics = try await curl(["http://127.0.0.1:\(serverAdmin)/metrics"]).stdout
      #expect(metrics.contains("direction=\"inbound\""))
      #expect(metrics.contains("tls=\"true\""))
      #expect(metrics.contains("client_id=\"\(pair.web)\""))
      let clientMetrics = try await curl(["http://127.0.0.1:\(ports.admin)/metrics"]).stdout
      #expect(clientMetrics.contains("server_id=\"\(pair.backend)\""))
      #expect(clientMetrics.contains("response_latency_ms_bucket"))
      if Subprocess.which("promtool") != nil {
        try metrics.write(toFile: dir.file("metrics.txt"), atomically: true, encoding: .utf8)
        let check = try await Subprocess.run("sh", ["-c", "promtool check metrics < \(dir.file("metrics.txt"))"])
        // promtool parses the exposition (exit 1 would be a format error). Its only lint note may be the
        // Linkerd-compatible name `response_latency_ms`, which DESIGN.md fixes ("abbreviated units").
        let problems = (check.stdout + check.stderr).split(separator: "\n").filter {
          !$0.contains("response_latency_ms metric names should not contain abbreviated units")
        }
        #expect(check.status == 0 || (check.status == 3 && problems.isEmpty), "\(check)")
      }
    }
  }

  @Test("nghttp (HTTP/2) through the pair to nginx's h2c port, with a 10 MB body both ways")
  func http2RoundTrip() async throws {
    let pair = try ProxyPair()
    let nginx = try await Nginx.start()
    defer { nginx.stop() }
    try await nginx.waitUntilServing()
    let dir = try TemporaryDirectory()
    defer { dir.remove() }
    _ = try await Subprocess.run("sh", ["-c", "head -c 10485760 /dev/urandom > \(dir.file("upload.bin"))"])
    try await pair.run(applicationPort: nginx.http2Port) { client, _, _ in
      let ports = try await client.boundPorts()
      let base = "http://127.0.0.1:\(ports.outbound)"
      let authority = ":authority: backend.default.svc.cluster.local"
      let out = try await Subprocess.run("nghttp", ["-v", "-H", authority, "\(base)/index.html"])
      #expect(out.stdout.contains("hello from nginx"), "\(out)")
      #expect(out.stdout.contains(":status: 200"))

      // 10 MB up (PUT) and down again over HTTP/2 end to end.
      let put = try await Subprocess.run(
        "nghttp", ["-v", "-H", authority, "-H", ":method: PUT", "-d", dir.file("upload.bin"), "\(base)/h2.bin"])
      #expect(put.stdout.contains(":status: 201") || put.stdout.contains(":status: 204"), "\(put.stderr)")
      let get = try await Subprocess.run(
        "sh", ["-c", "nghttp -H '\(authority)' \(base)/h2.bin > \(dir.file("download.bin"))"])
      #expect(get.status == 0, "\(get)")
      #expect(try await sha256(dir.file("download.bin")) == (try await sha256(dir.file("upload.bin"))))
    }
  }

  @Test("no endpoints: 503 with the error header after the failfast timeout; the proxy goes on")
  func noEndpoints() async throws {
    let pair = try ProxyPair()
    let nginx = try await Nginx.start()
    defer { nginx.stop() }
    try await nginx.waitUntilServing()
    try await pair.run(applicationPort: nginx.http1Port) { client, _, discovery in
      let ports = try await client.boundPorts()
      let empty = try Authority("empty.default.svc.cluster.local:80")
      discovery.set(EndpointSet(exists: true, endpoints: []), for: empty)
      let started = ContinuousClock.now
      let out = try await curl([
        "-D", "-", "-o", "/dev/null", "--connect-to", "empty.default.svc.cluster.local:80:127.0.0.1:\(ports.outbound)",
        "http://empty.default.svc.cluster.local/",
      ])
      let elapsed = ContinuousClock.now - started
      #expect(out.stdout.contains("503"), "\(out)")
      #expect(out.stdout.lowercased().contains("mesh-proxy-error: no endpoints"))
      #expect(elapsed < .seconds(5))
      // Still serving.
      let ok = try await curl([
        "-o", "/dev/null", "-w", "%{http_code}", "--connect-to",
        "backend.default.svc.cluster.local:80:127.0.0.1:\(ports.outbound)", "http://backend.default.svc.cluster.local/",
      ])
      #expect(ok.stdout == "200")
    }
  }
}

@Suite("Proxy pair under concurrent HTTP/2 streams")
struct ConcurrentStreamsTests {
  @Test("h2load (16 connections x 10 streams) and nghttp (160 streams on one connection) complete every request")
  func manyStreams() async throws {
    let pair = try ProxyPair()
    let nginx = try await Nginx.start()
    defer { nginx.stop() }
    try await nginx.waitUntilServing()
    try await pair.run(applicationPort: nginx.http2Port) { client, server, _ in
      let ports = try await client.boundPorts()
      // More streams at once than HTTP/2's usual SETTINGS_MAX_CONCURRENT_STREAMS (100) on a single connection.
      let burst = try await Subprocess.run(
        "timeout",
        ["30", "nghttp", "-v", "-n", "-m", "160", "-H", ":authority: backend.default.svc.cluster.local",
          "http://127.0.0.1:\(ports.outbound)/index.html"])
      #expect(burst.status == 0, "\(burst.stderr)")
      #expect(burst.stdout.components(separatedBy: ":status: 200").count - 1 == 160)
      // Well past the 200 RST_STREAM frames per 30 s that an HTTP/2 peer tolerates: a proxy that reset
      // each finished stream loses its connection here.
      let load = try await Subprocess.run(
        "timeout",
        ["60", "h2load", "-n", "2000", "-c", "16", "-m", "10", "-H", ":authority: backend.default.svc.cluster.local",
          "http://127.0.0.1:\(ports.outbound)/index.html"])
      #expect(load.stdout.contains("2000 succeeded"), "\(load.stdout)")
      for proxy in [client, server] {
        let text = try await scrape(proxy)
        #expect(!text.contains("proxy_errors_total{"), "\(text)")
        #expect(!text.contains("classification=\"failure\""), "\(text)")
      }
    }
  }

  @Test("an upstream that sends GOAWAY every 20 requests (nginx keepalive_requests) costs no request")
  func goAwayIsTransparent() async throws {
    let pair = try ProxyPair()
    let nginx = try await Nginx.start(
      httpDirectives: "keepalive_requests 20;")
    defer { nginx.stop() }
    try await nginx.waitUntilServing()
    try await pair.run(applicationPort: nginx.http2Port) { client, server, _ in
      let ports = try await client.boundPorts()
      let load = try await Subprocess.run(
        "timeout",
        ["60", "h2load", "-n", "600", "-c", "4", "-m", "10", "-H", ":authority: backend.default.svc.cluster.local",
          "http://127.0.0.1:\(ports.outbound)/index.html"])
      #expect(load.stdout.contains("600 succeeded"), "\(load.stdout)")
      let serverMetrics = try await scrape(server)
      #expect(!serverMetrics.contains("proxy_errors_total{"), "\(serverMetrics)")
      // The server proxy went through many connections to nginx: each GOAWAY moved it to a fresh one.
      let opened = serverMetrics.split(separator: "\n").first {
        $0.hasPrefix("tcp_open_total{direction=\"outbound\",peer=\"dst\"")
      }.flatMap { $0.split(separator: " ").last }.flatMap { Double($0) } ?? 0
      #expect(opened >= 10, "\(serverMetrics)")
      // nginx served each request once: a refused stream is sent again, a served one never.
      let served = (try? String(contentsOfFile: nginx.root.file("access.log"), encoding: .utf8))?
        .split(separator: "\n").filter { $0.contains("HTTP/2.0") }.count ?? 0
      #expect(served == 600)
    }
  }

  private func scrape(_ proxy: MeshProxy) async throws -> String {
    let admin = try await proxy.boundPorts().admin
    return try await Subprocess.run("curl", ["-s", "http://127.0.0.1:\(admin)/metrics"]).stdout
  }
}

@Suite("Proxy pair backpressure")
struct BackpressureTests {
  /// Bytes a proxy read from its upstreams (`peer="dst"`), from its /metrics.
  static func upstreamBytesRead(_ proxy: MeshProxy) async throws -> Double {
    let admin = try await proxy.boundPorts().admin
    let text = try await Subprocess.run("curl", ["-s", "http://127.0.0.1:\(admin)/metrics"]).stdout
    return text.split(separator: "\n")
      .filter { $0.hasPrefix("tcp_read_bytes_total{") && $0.contains("peer=\"dst\"") }
      .compactMap { $0.split(separator: " ").last.flatMap { Double($0) } }
      .reduce(0, +)
  }

  @Test(
    "a slow reader holds back the whole chain: neither proxy reads the 256 MB response ahead of it",
    arguments: [false, true])
  func slowReader(http2: Bool) async throws {
    let pair = try ProxyPair()
    let nginx = try await Nginx.start()
    defer { nginx.stop() }
    try await nginx.waitUntilServing()
    let size = 256 << 20
    _ = try await Subprocess.run("truncate", ["-s", "\(size)", nginx.root.file("www/big.bin")])
    try await pair.run(applicationPort: http2 ? nginx.http2Port : nginx.http1Port) { client, server, _ in
      let ports = try await client.boundPorts()
      // curl reads 256 KB/s; nginx and loopback could deliver the file in well under a second.
      let reader = try BackgroundProcess(
        "curl",
        (http2 ? ["--http2-prior-knowledge"] : []) + [
          "-s", "-o", "/dev/null", "--limit-rate", "256K", "-m", "30", "--connect-to",
          "backend.default.svc.cluster.local:80:127.0.0.1:\(ports.outbound)", "http://backend.default.svc.cluster.local/big.bin",
        ])
      defer { reader.terminate() }
      try await Task.sleep(for: .seconds(3))
      #expect(reader.isRunning, "curl ended early: \(reader.printed)")
      let outboundRead = try await Self.upstreamBytesRead(client)
      let inboundRead = try await Self.upstreamBytesRead(server)
      // What may be ahead of the reader: socket buffers, NIO's write watermarks and HTTP/2 windows at each
      // hop, a few MB each. Without backpressure both numbers would be the whole file.
      let bound = Double(48 << 20)
      #expect(inboundRead > 0)
      #expect(outboundRead < bound, "outbound proxy read \(outboundRead) bytes ahead of a reader at 256 KB/s")
      #expect(inboundRead < bound, "inbound proxy read \(inboundRead) bytes ahead of a reader at 256 KB/s")
      reader.terminate()
      // The abandoned transfer leaves both proxies serving.
      let next = try await Subprocess.run(
        "curl",
        (http2 ? ["--http2-prior-knowledge"] : []) + [
          "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "10", "--connect-to",
          "backend.default.svc.cluster.local:80:127.0.0.1:\(ports.outbound)", "http://backend.default.svc.cluster.local/index.html",
        ])
      #expect(next.stdout == "200", "\(next)")
    }
  }
}
