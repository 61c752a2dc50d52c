import Foundation
import MeshCore
import MeshDiscovery
import MeshProxy
import Testing
import _MeshTestSupport

/// The outbound side's pool of HTTP/1.1 keep-alive connections to an upstream, judged by the upstream: the
/// connections it accepted and has open. In the event loops' suite: these proxies run one event loop of their
/// own too, and that suite counts the process's event loop threads, so they must not run beside it.
extension EventLoopsTests {
  static let authority = "backend.default.svc.cluster.local"

  /// Runs a proxy (one event loop, so every connection shares one pool) in front of a fresh test backend.
  func withBackend(
    configure: (inout ProxyConfiguration) -> Void = { _ in },
    _ body: (_ backend: TestHTTPServer, _ url: String) async throws -> Void
  ) async throws {
    let backend = try await TestHTTPServer(name: "backend")
    do {
      let discovery = InMemoryDiscovery([
        try Authority("\(Self.authority):80"): EndpointSet(
          exists: true, endpoints: [Endpoint(address: try Authority(host: "127.0.0.1", port: backend.port))])
      ])
      try await withSingleProxy(discovery: discovery, label: "test.upstream-pool", configure: {
        $0.eventLoops = 1
        configure(&$0)
      }) { proxy in
        try await body(backend, "http://127.0.0.1:\(try await proxy.boundPorts().outbound)/")
      }
    } catch {
      await backend.stop()
      throw error
    }
    await backend.stop()
  }

  @Test("32 keep-alive clients on one event loop: the upstream accepts at most 32 connections for 1,000 requests")
  func reusedUnderConcurrency() async throws {
    // With at most 16 idle connections kept (the old default) this opened a connection about every fourth
    // request: whenever more than 16 responses ended in one turn of the loop, the rest were closed.
    try await withBackend { backend, url in
      let run = try await Subprocess.run(
        "timeout", ["120", "h2load", "--h1", "-n", "1000", "-c", "32", "-H", ":authority: \(Self.authority)", url])
      #expect(run.stdout.contains("1000 succeeded"), "\(run)")
      #expect(backend.requestCount == 1000)
      #expect(backend.connectionsAccepted <= 32, "\(backend.connectionsAccepted) upstream connections for 1,000 requests")
    }
  }

  @Test("a connection in use is kept; one idle past upstreamIdleTimeout is closed, and the next request opens another")
  func idleTimeout() async throws {
    try await withBackend(configure: { $0.upstreamIdleTimeout = .milliseconds(500) }) { backend, url in
      // 30 requests, one every 50 ms, on one downstream connection: 1.5 s, three idle timeouts, one upstream
      // connection.
      let paced = try await curl(
        ["--rate", "20/s", "-w", "%{http_code}\\n", "-H", "Host: \(Self.authority)"]
          + EventLoopsTests.discarding(url, count: 30))
      #expect(paced.stdout.split(separator: "\n") == Array(repeating: "200", count: 30), "\(paced)")
      #expect(backend.connectionsAccepted == 1)
      // Left idle, it is closed within two timeouts (waited for up to 10 s).
      let deadline = ContinuousClock.now + .seconds(10)
      while backend.openConnections > 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
      #expect(backend.openConnections == 0, "the idle upstream connection is still open")
      let again = try await curl(["-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: \(Self.authority)", url])
      #expect(again.stdout == "200", "\(again)")
      #expect(backend.connectionsAccepted == 2)
    }
  }
}
