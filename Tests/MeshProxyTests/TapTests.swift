import Foundation
import GRPCCore
import Logging
import MeshAPI
import MeshCore
import MeshProxy
import ServiceLifecycle
import Synchronization
import Testing
import _MeshTestSupport

@Suite("Tap")
struct TapTests {
  /// A proxy in front of `fast` (an app) plus an authority that does not exist, with its tap server.
  static func withTappedProxy(
    _ body: (_ proxy: MeshProxy, _ outbound: Int, _ tap: Authority, _ app: Int) async throws -> Void
  ) async throws {
    let app = try await TestHTTPServer(name: "fast")
    var logger = Logger(label: "test.tap")
    logger.logLevel = .warning
    let discovery = InMemoryDiscovery([
      try Authority("fast.default.svc.cluster.local:80"): EndpointSet(
        exists: true, endpoints: [Endpoint(address: try Authority(host: "127.0.0.1", port: app.port))]),
      try Authority("nowhere.default.svc.cluster.local:80"): EndpointSet(exists: false, endpoints: []),
    ])
    let proxy = MeshProxy(
      configuration: .defaults {
        $0.outboundAddress = try! Authority("127.0.0.1:0")
        $0.inboundAddress = try! Authority("127.0.0.1:0")
        $0.adminAddress = try! Authority("127.0.0.1:0")
        $0.shutdownGracePeriod = .seconds(5)
      }, tls: nil, discovery: discovery, logger: logger)
    let tapServer = TapServer(address: try Authority("127.0.0.1:0"), hub: proxy.tap, logger: logger)
    let group = ServiceGroup(services: [proxy, tapServer], logger: logger)
    try await withThrowingTaskGroup { tasks in
      tasks.addTask { try await group.run() }
      let outbound = try await proxy.boundPorts().outbound
      let tap = try Authority(host: "127.0.0.1", port: try await tapServer.listeningPort)
      try await body(proxy, outbound, tap, app.port)
      await group.triggerGracefulShutdown()
      try await tasks.waitForAll()
    }
    await app.stop()
  }

  static func waitForObservers(_ proxy: MeshProxy, _ count: Int) async throws {
    let deadline = ContinuousClock.now + .seconds(10)
    while proxy.tap.observers < count && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
    #expect(proxy.tap.observers == count)
  }

  static func curl(_ port: Int, authority: String, path: String, method: String = "GET") async throws -> String {
    try await Subprocess.run(
      "curl", ["-s", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}", "-X", method, "-H", "host: \(authority)",
        "http://127.0.0.1:\(port)\(path)"]
    ).stdout
  }

  @Test("observers see req, rsp and end for the requests that match, and only those; the stream ends at --max")
  func observe() async throws {
    try await Self.withTappedProxy { proxy, outbound, tap, appPort in
      let byAuthority = Mutex<[Swiftmesh_Tap_TapEvent]>([])
      let byPath = Mutex<[Swiftmesh_Tap_TapEvent]>([])
      var fast = Swiftmesh_Tap_Match()
      fast.authority = "fast.default.svc.cluster.local"
      var missing = Swiftmesh_Tap_Match()
      missing.pathPrefix = "/missing"
      missing.direction = "outbound"
      let first = Task {
        try await TapClient.observe(proxy: tap, match: fast, maxRequests: 3) { event in byAuthority.withLock { $0.append(event) } }
      }
      let second = Task {
        try await TapClient.observe(proxy: tap, match: missing, maxRequests: 1) { event in byPath.withLock { $0.append(event) } }
      }
      try await Self.waitForObservers(proxy, 2)

      #expect(try await Self.curl(outbound, authority: "nowhere.default.svc.cluster.local", path: "/missing/x") == "503")
      #expect(try await Self.curl(outbound, authority: "fast.default.svc.cluster.local", path: "/a") == "200")
      #expect(try await Self.curl(outbound, authority: "fast.default.svc.cluster.local", path: "/b", method: "POST") == "200")
      #expect(try await Self.curl(outbound, authority: "fast.default.svc.cluster.local:80", path: "/c?q=1") == "200")
      // Both streams end by themselves once their requests ended.
      try await first.value
      try await second.value
      #expect(proxy.tap.observers == 0)

      let events = byAuthority.withLock { $0 }
      #expect(events.count == 9, "\(events.map(TapClient.line))")
      let requests = Dictionary(grouping: events, by: \.id)
      #expect(requests.count == 3)
      for (_, sequence) in requests {
        let kinds = sequence.map { event -> String in
          switch event.event {
          case .requestInit: "req"
          case .responseInit: "rsp"
          case .responseEnd: "end"
          case nil: "?"
          }
        }
        #expect(kinds == ["req", "rsp", "end"], "\(sequence.map(TapClient.line))")
        #expect(sequence.allSatisfy { $0.direction == "outbound" && !$0.source.isEmpty && !$0.tls })
        // Once the request went upstream, its events name the endpoint.
        #expect(sequence.dropFirst().allSatisfy { $0.destination == "127.0.0.1:\(appPort)" }, "\(sequence.map(TapClient.line))")
        if case .responseEnd(let end) = sequence.last?.event {
          #expect(end.status == 200)
          #expect(end.proxyError.isEmpty)
          #expect(end.durationMs > 0)
        }
      }
      #expect(Set(events.map { "\($0.method) \($0.path)" }) == ["GET /a", "POST /b", "GET /c?q=1"])
      #expect(!events.contains { $0.authority.hasPrefix("nowhere") })
      let lines = events.map(TapClient.line)
      #expect(lines.contains { $0.hasPrefix("req ") && $0.contains(":method=POST") && $0.contains(":path=/b") }, "\(lines)")
      #expect(lines.contains { $0.hasPrefix("rsp ") && $0.contains(":status=200") && $0.contains("latency=") }, "\(lines)")

      // The proxy's own answer: rsp and end say so, with no upstream.
      let missingEvents = byPath.withLock { $0 }
      #expect(missingEvents.count == 3, "\(missingEvents.map(TapClient.line))")
      guard case .responseEnd(let end)? = missingEvents.last?.event else {
        Issue.record("no end event: \(missingEvents.map(TapClient.line))")
        return
      }
      #expect(end.status == 503)
      #expect(end.proxyError == "unknown authority")
      #expect(missingEvents.allSatisfy { $0.destination.isEmpty })
      #expect(TapClient.line(missingEvents.last!).contains("proxy-error=\"unknown authority\""))
    }
  }

  @Test("an unknown direction is refused with INVALID_ARGUMENT; the tap server and the proxy go on")
  func invalidDirection() async throws {
    try await Self.withTappedProxy { proxy, outbound, tap, _ in
      var match = Swiftmesh_Tap_Match()
      match.direction = "sideways"
      await #expect {
        try await TapClient.observe(proxy: tap, match: match, maxRequests: 1) { _ in }
      } throws: { error in
        guard let rpc = error as? RPCError else { return false }
        return rpc.code == .invalidArgument && rpc.message.contains("sideways")
      }
      #expect(proxy.tap.observers == 0)
      let status = try await Self.curl(outbound, authority: "fast.default.svc.cluster.local", path: "/")
      #expect(status == "200")
    }
  }

  @Test("an observer that goes away (cancelled) is forgotten at once")
  func observerLeaves() async throws {
    try await Self.withTappedProxy { proxy, outbound, tap, _ in
      let watcher = Task {
        try await TapClient.observe(proxy: tap, match: Swiftmesh_Tap_Match(), maxRequests: 0) { _ in }
      }
      try await Self.waitForObservers(proxy, 1)
      watcher.cancel()
      _ = try? await watcher.value
      let deadline = ContinuousClock.now + .seconds(10)
      while proxy.tap.observers > 0 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
      #expect(proxy.tap.observers == 0)
      #expect(try await Self.curl(outbound, authority: "fast.default.svc.cluster.local", path: "/") == "200")
    }
  }
}
