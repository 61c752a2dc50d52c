import Foundation
import Logging
import MeshCore
import MeshDiscovery
import MeshKube
import MeshKubeLocal
import MeshProxy
import Testing
import _MeshTestSupport

/// What embedding a proxy takes: a resolver handed to the proxy (which runs it), and `listening` to learn
/// the bound ports.
@Suite("Proxy lifecycle: an owned resolver, and listening")
struct ProxyLifecycleTests {
  static func configuration() -> ProxyConfiguration {
    .defaults {
      $0.outboundAddress = try! Authority("127.0.0.1:0")
      $0.inboundAddress = try! Authority("127.0.0.1:0")
      $0.adminAddress = try! Authority("127.0.0.1:0")
      $0.failfastTimeout = .seconds(5)
    }
  }

  @Test("a proxy given a Resolver runs it: requests resolve through the destination service with only the proxy running")
  func ownedResolver() async throws {
    let cluster = EmbeddedCluster(name: "owned")
    let backend = try await TestHTTPServer(name: "backend-owned")
    try GatewayTests.publishPlain("backend", port: backend.port, in: cluster.state)
    do {
      try await resolveThroughOwnedResolver(cluster, backend)
    } catch {
      await backend.stop()
      throw error
    }
    await backend.stop()
  }

  func resolveThroughOwnedResolver(_ cluster: EmbeddedCluster, _ backend: TestHTTPServer) async throws {
    try await cluster.runDestination { destinationPort in
      let resolver = try Resolver(
        configuration: .defaults {
          $0.host = "127.0.0.1"
          $0.port = destinationPort
          $0.initialBackoff = .milliseconds(20)
        }, logger: cluster.logger)
      // The resolver is never run here: the proxy runs it.
      let proxy = MeshProxy(configuration: Self.configuration(), tls: nil, resolver: resolver, logger: cluster.logger)
      try await withThrowingTaskGroup { group in
        group.addTask { try await proxy.run() }
        let ports = try await proxy.listening
        let answer = try await Subprocess.run(
          "curl", ["-s", "-m", "10", "-H", "Host: backend.default.svc.cluster.local", "http://127.0.0.1:\(ports.outbound)/"])
        #expect(answer.stdout == "backend-owned\n", "\(answer)")
        #expect(backend.requestCount == 1)
        group.cancelAll()
      }
    }
  }

  @Test("listening returns the ports run() bound, at once for later callers; a port in use makes it throw")
  func listening() async throws {
    let proxy = MeshProxy(
      configuration: Self.configuration(), tls: nil, discovery: InMemoryDiscovery(), logger: Logger(label: "test"))
    try await withThrowingTaskGroup { group in
      group.addTask { try await proxy.run() }
      let ports = try await proxy.listening
      #expect(ports.outbound > 0 && ports.inbound > 0 && ports.admin > 0)
      #expect(Set([ports.outbound, ports.inbound, ports.admin]).count == 3)
      #expect(try await proxy.listening == ports)
      #expect(try await proxy.boundPorts(timeout: .milliseconds(1)) == ports)

      // A second proxy on the first one's outbound port cannot listen: `listening` reports why.
      let clash = MeshProxy(
        configuration: .defaults {
          $0.outboundAddress = try! Authority(host: "127.0.0.1", port: ports.outbound)
          $0.inboundAddress = try! Authority("127.0.0.1:0")
          $0.adminAddress = try! Authority("127.0.0.1:0")
        }, tls: nil, discovery: InMemoryDiscovery(), logger: Logger(label: "test"))
      await #expect(throws: (any Error).self) { try await clash.run() }
      await #expect(throws: (any Error).self) { try await clash.listening }
      group.cancelAll()
    }
  }

  @Test("boundPorts(timeout:) gives up at its deadline when run() never started")
  func boundPortsDeadline() async throws {
    let proxy = MeshProxy(
      configuration: Self.configuration(), tls: nil, discovery: InMemoryDiscovery(), logger: Logger(label: "test"))
    let start = ContinuousClock.now
    await #expect(throws: MeshError.self) { try await proxy.boundPorts(timeout: .milliseconds(100)) }
    #expect(ContinuousClock.now - start < .seconds(5))
  }
}

extension GatewayTests {
  /// An unmeshed Service `name` on port 80 whose one endpoint is `127.0.0.1:port`.
  static func publishPlain(_ name: String, port: Int, in state: LocalKubeState) throws {
    _ = try state.create(
      KubeService(
        metadata: ObjectMeta(name: name, namespace: "default"),
        spec: .init(ports: [.init(name: "http", port: 80)])))
    _ = try state.create(
      Endpoints(
        metadata: ObjectMeta(name: name, namespace: "default"),
        subsets: [.init(addresses: [.init(ip: "127.0.0.1")], ports: [.init(name: "http", port: port)])]))
  }
}
