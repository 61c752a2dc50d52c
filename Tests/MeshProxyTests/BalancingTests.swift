import Foundation
import Logging
import MeshCore
import MeshProxy
import Testing
import _MeshTestSupport

@Suite("Balancing through the proxy", .serialized)
struct BalancingTests {
  static let authority = try! Authority("app.default.svc.cluster.local:80")

  func withOutboundProxy(
    _ endpoints: [TestHTTPServer], _ body: (Int, InMemoryDiscovery) async throws -> Void
  ) async throws {
    var logger = Logger(label: "test.balancing")
    logger.logLevel = .warning
    let discovery = InMemoryDiscovery()
    discovery.set(
      EndpointSet(
        exists: true,
        endpoints: try endpoints.map { Endpoint(address: try Authority(host: "127.0.0.1", port: $0.port)) }),
      for: Self.authority)
    let proxy = MeshProxy(
      configuration: .defaults {
        $0.outboundAddress = try! Authority("127.0.0.1:0")
        $0.inboundAddress = try! Authority("127.0.0.1:0")
        $0.adminAddress = try! Authority("127.0.0.1:0")
        $0.failfastTimeout = .milliseconds(500)
      }, tls: nil, discovery: discovery, logger: logger)
    try await withThrowingTaskGroup { group in
      group.addTask { try await proxy.run() }
      try await body(try await proxy.boundPorts().outbound, discovery)
      group.cancelAll()
    }
  }

  /// Sends `count` requests with one curl (one keep-alive connection) and returns each body's first line.
  func send(_ count: Int, port: Int) async throws -> [String] {
    let urls = Array(repeating: "http://app.default.svc.cluster.local/", count: count)
    let out = try await Subprocess.run(
      "curl", ["-s", "-m", "60", "--connect-to", "app.default.svc.cluster.local:80:127.0.0.1:\(port)"] + urls)
    return out.stdout.split(separator: "\n").map(String.init)
  }

  @Test("a slow endpoint receives far less traffic than a fast one")
  func slowEndpointAvoided() async throws {
    let fast = try await TestHTTPServer(name: "fast")
    let slow = try await TestHTTPServer(name: "slow", delay: .milliseconds(250))
    defer { Task { await fast.stop(); await slow.stop() } }
    try await withOutboundProxy([fast, slow]) { port, _ in
      let answers = try await send(150, port: port)
      #expect(answers.count == 150)
      let slowShare = Double(answers.filter { $0 == "slow" }.count) / Double(max(answers.count, 1))
      #expect(slowShare < 0.15, "slow endpoint got \(slowShare * 100) % of the requests")
    }
  }

  @Test("a killed endpoint costs no request: connection failures go to another endpoint")
  func killedEndpoint() async throws {
    let a = try await TestHTTPServer(name: "a")
    let b = try await TestHTTPServer(name: "b")
    defer { Task { await a.stop() } }
    try await withOutboundProxy([a, b]) { port, _ in
      #expect(try await send(20, port: port).count == 20)
      await b.stop()
      let answers = try await send(60, port: port)
      #expect(answers.count == 60)
      #expect(answers.allSatisfy { $0 == "a" }, "\(answers)")
    }
  }

  @Test("an unknown authority (no destination, no DNS) gets 503 with the error header, quickly")
  func unresolvableName() async throws {
    let a = try await TestHTTPServer(name: "a")
    defer { Task { await a.stop() } }
    try await withOutboundProxy([a]) { port, _ in
      let started = ContinuousClock.now
      let out = try await Subprocess.run(
        "curl", ["-s", "-m", "20", "-D", "-", "-o", "/dev/null", "--connect-to", "nowhere.invalid:80:127.0.0.1:\(port)",
          "http://nowhere.invalid/"])
      #expect(out.stdout.hasPrefix("HTTP/1.1 503"), "\(out)")
      #expect(out.stdout.lowercased().contains("mesh-proxy-error: unknown authority"), "\(out)")
      #expect(ContinuousClock.now - started < .seconds(5))
    }
  }
}
