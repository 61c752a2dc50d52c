import Foundation
import Logging
import MeshCore
import MeshProxy
import ServiceLifecycle
import Testing
import _MeshTestSupport

@Suite("Graceful shutdown")
struct ShutdownTests {
  @Test("graceful shutdown stops accepting and completes the request in flight")
  func drainsInFlight() async throws {
    try await Self.withProxy { proxy, group, port in
      let request = Task {
        try await Subprocess.run(
          "curl", ["-s", "-m", "20", "-w", " %{http_code}", "--connect-to", "slow.default.svc.cluster.local:80:127.0.0.1:\(port)",
            "http://slow.default.svc.cluster.local/"])
      }
      // Wait until the request is in flight, then ask for shutdown.
      try await Self.waitForInFlight(proxy, 1)
      await group.triggerGracefulShutdown()
      let answered = try await request.value
      #expect(answered.stdout == "slow\n 200", "\(answered)")
      // The listener is closed: a new connection is refused.
      let refused = try await Subprocess.run("curl", ["-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(port)/"])
      #expect(refused.stdout == "000")
    }
  }

  /// A proxy in front of `fast` and `slow` (an app answering after 1.5 s), run by a ServiceGroup.
  static func withProxy(
    h2Upstream: Int? = nil, _ body: (MeshProxy, ServiceGroup, Int) async throws -> Void
  ) async throws {
    let fast = try await TestHTTPServer(name: "fast")
    let slow = try await TestHTTPServer(name: "slow", delay: .milliseconds(1500))
    var logger = Logger(label: "test.shutdown")
    logger.logLevel = .warning
    var endpoints: [Authority: EndpointSet] = [
      try Authority("fast.default.svc.cluster.local:80"): EndpointSet(
        exists: true, endpoints: [Endpoint(address: try Authority(host: "127.0.0.1", port: fast.port))]),
      try Authority("slow.default.svc.cluster.local:80"): EndpointSet(
        exists: true, endpoints: [Endpoint(address: try Authority(host: "127.0.0.1", port: slow.port))]),
    ]
    if let h2Upstream {
      endpoints[try Authority("h2.default.svc.cluster.local:80")] = EndpointSet(
        exists: true, endpoints: [Endpoint(address: try Authority(host: "127.0.0.1", port: h2Upstream))])
    }
    let discovery = InMemoryDiscovery(endpoints)
    let proxy = MeshProxy(
      configuration: .defaults {
        $0.outboundAddress = try! Authority("127.0.0.1:0")
        $0.inboundAddress = try! Authority("127.0.0.1:0")
        $0.adminAddress = try! Authority("127.0.0.1:0")
        $0.shutdownGracePeriod = .seconds(20)
      }, tls: nil, discovery: discovery, logger: logger)
    let group = ServiceGroup(services: [proxy], logger: logger)
    try await withThrowingTaskGroup { tasks in
      tasks.addTask { try await group.run() }
      let port = try await proxy.boundPorts().outbound
      try await body(proxy, group, port)
      try await tasks.waitForAll()
    }
    // Every connection closed on its own (GOAWAY / connection: close) and nothing was cut.
    #expect(proxy.lastShutdown == MeshProxy.ShutdownReport(drained: true, inFlightCut: 0, forcedConnections: 0))
    await fast.stop()
    await slow.stop()
  }

  static func waitForInFlight(_ proxy: MeshProxy, _ count: Int) async throws {
    let deadline = ContinuousClock.now + .seconds(10)
    while proxy.inFlight.current < count && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
    #expect(proxy.inFlight.current >= count)
  }

  @Test("HTTP/1.1: an idle keep-alive connection is closed at once, the busy one answers with connection: close")
  func http1Quiesce() async throws {
    try await Self.withProxy { proxy, group, port in
      let script = """
        import http.client, sys
        port = int(sys.argv[1])
        a = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        a.request("GET", "/", headers={"Host": "fast.default.svc.cluster.local"})
        r = a.getresponse(); r.read()
        print("A", r.status, r.getheader("connection", "keep-alive"), flush=True)
        b = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        b.request("GET", "/", headers={"Host": "slow.default.svc.cluster.local"})
        print("B sent", flush=True)
        r = b.getresponse(); body = r.read().decode().strip()
        print("B", r.status, r.getheader("connection"), body, flush=True)
        a.sock.settimeout(30)
        print("A closed" if a.sock.recv(1) == b"" else "A got data", flush=True)
        """
      let python = try BackgroundProcess("python3", ["-c", script, String(port)])
      defer { python.terminate() }
      try await python.waitForOutput(containing: "B sent")
      try await Self.waitForInFlight(proxy, 1)
      await group.triggerGracefulShutdown()
      try await python.waitForOutput(containing: "A closed", timeout: .seconds(30))
      #expect(python.printed.contains("A 200 keep-alive"), "\(python.printed)")
      #expect(python.printed.contains("B 200 close slow"), "\(python.printed)")
    }
  }

  /// nginx speaking h2c, sending its 2 MB `slow.bin` at 1 MB/s: an HTTP/2 stream in flight for about 2 s.
  static func slowNginx() async throws -> Nginx {
    let nginx = try await Nginx.start(
      httpDirectives: "limit_rate 1m;")
    _ = try await Subprocess.run("sh", ["-c", "head -c 2097152 /dev/urandom > \(nginx.root.file("www/slow.bin"))"])
    try await nginx.waitUntilServing()
    return nginx
  }

  @Test("HTTP/2: shutdown sends GOAWAY (NO_ERROR) naming the stream in flight, which completes; nothing cut or forced")
  func http2GoAway() async throws {
    let nginx = try await Self.slowNginx()
    defer { nginx.stop() }
    try await Self.withProxy(h2Upstream: nginx.http2Port) { proxy, group, port in
      let nghttp = try BackgroundProcess(
        "nghttp", ["-v", "-n", "-H", ":authority: h2.default.svc.cluster.local", "http://127.0.0.1:\(port)/slow.bin"])
      defer { nghttp.terminate() }
      try await Self.waitForInFlight(proxy, 1)
      await group.triggerGracefulShutdown()
      try await nghttp.waitForOutput(containing: "recv GOAWAY frame", timeout: .seconds(10))
      let deadline = ContinuousClock.now + .seconds(30)
      while nghttp.isRunning && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
      let out = nghttp.printed
      #expect(out.contains("last_stream_id=13, error_code=NO_ERROR"), "\(out)")
      #expect(out.contains(":status: 200"), "\(out)")
      #expect(out.contains("END_STREAM"), "\(out)")
      #expect(!out.contains("Some requests were not processed"), "\(out)")
    }
  }

  @Test("under HTTP/2 load on open connections, shutdown drains at once: no request cut, no connection force-closed")
  func drainsUnderLoad() async throws {
    let nginx = try await Self.slowNginx()
    defer { nginx.stop() }
    try await Self.withProxy(h2Upstream: nginx.http2Port) { proxy, group, port in
      // Four connections kept busy for far longer than the grace period: without GOAWAY the proxy would keep
      // serving them until the deadline and then cut what was in flight.
      let h2load = try BackgroundProcess(
        "h2load", ["-c", "4", "-m", "4", "-D", "60", "-H", ":authority: h2.default.svc.cluster.local",
          "http://127.0.0.1:\(port)/index.html"])
      defer { h2load.terminate() }
      try await Self.waitForInFlight(proxy, 1)
      try await Task.sleep(for: .milliseconds(200))
      await group.triggerGracefulShutdown()
      // h2load keeps going until the proxy has finished shutting down (judged in withProxy).
      let deadline = ContinuousClock.now + .seconds(40)
      while proxy.lastShutdown == nil && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
      #expect(h2load.isRunning, "h2load ended before the proxy finished draining: \(h2load.printed)")
    }
  }

  @Test("HTTP/2 to an upstream that speaks only HTTP/1.1: a prompt 502 naming the protocol error, not a hang")
  func http2ToHTTP1Upstream() async throws {
    try await Self.withProxy { proxy, group, port in
      let out = try await Subprocess.run(
        "curl", ["-s", "-m", "10", "--http2-prior-knowledge", "-w", "\n%{http_code}", "-H", "host: fast.default.svc.cluster.local",
          "http://127.0.0.1:\(port)/"])
      #expect(out.stdout.hasSuffix("\n502"), "\(out)")
      await group.triggerGracefulShutdown()
    }
  }
}
