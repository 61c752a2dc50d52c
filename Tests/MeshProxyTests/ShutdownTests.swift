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
    let slow = try await TestHTTPServer(name: "slow", delay: .milliseconds(800))
    var logger = Logger(label: "test.shutdown")
    logger.logLevel = .warning
    let authority = try Authority("app.default.svc.cluster.local:80")
    let discovery = InMemoryDiscovery([
      authority: EndpointSet(exists: true, endpoints: [Endpoint(address: try Authority(host: "127.0.0.1", port: slow.port))])
    ])
    let proxy = MeshProxy(
      configuration: .defaults {
        $0.outboundAddress = try! Authority("127.0.0.1:0")
        $0.inboundAddress = try! Authority("127.0.0.1:0")
        $0.adminAddress = try! Authority("127.0.0.1:0")
        $0.shutdownGracePeriod = .seconds(10)
      }, tls: nil, discovery: discovery, logger: logger)
    let group = ServiceGroup(services: [proxy], logger: logger)
    try await withThrowingTaskGroup { tasks in
      tasks.addTask { try await group.run() }
      let port = try await proxy.boundPorts().outbound
      let request = Task {
        try await Subprocess.run(
          "curl", ["-s", "-m", "20", "-w", " %{http_code}", "--connect-to", "app.default.svc.cluster.local:80:127.0.0.1:\(port)",
            "http://app.default.svc.cluster.local/"])
      }
      // Wait until the request is in flight, then ask for shutdown.
      let deadline = ContinuousClock.now + .seconds(10)
      while proxy.inFlight.current == 0 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
      #expect(proxy.inFlight.current == 1)
      await group.triggerGracefulShutdown()
      let answered = try await request.value
      #expect(answered.stdout == "slow\n 200", "\(answered)")
      // The listener is closed: a new connection is refused.
      let refused = try await Subprocess.run("curl", ["-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(port)/"])
      #expect(refused.stdout == "000")
      try await tasks.waitForAll()
    }
    await slow.stop()
  }
}
