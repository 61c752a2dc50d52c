import Foundation
import Logging
import MeshCore
import MeshDiscovery
import MeshProxy
import Testing
import _MeshTestSupport

/// Route profiles and traffic splits in the outbound proxy, with profiles set by hand (the destination
/// service's side of profiles is tested in MeshDiscoveryTests).
@Suite("Profiles: retries, timeouts, traffic splits")
struct ProfileTests {
  static let apex = try! Authority("app.default.svc.cluster.local:80")

  /// An outbound proxy where `app` resolves to `endpoints`, and further names to their own servers.
  func withProxy(
    _ sets: [Authority: [TestHTTPServer]], profile: Profile?,
    _ body: (_ port: Int, _ admin: Int, _ discovery: InMemoryDiscovery) async throws -> Void
  ) async throws {
    var logger = Logger(label: "test.profiles")
    logger.logLevel = .warning
    let discovery = InMemoryDiscovery()
    for (authority, servers) in sets {
      discovery.set(
        EndpointSet(
          exists: true,
          endpoints: try servers.map {
            Endpoint(
              address: try Authority(host: "127.0.0.1", port: $0.port),
              metricLabels: ["service": String(authority.host.split(separator: ".")[0]), "namespace": "default"])
          }),
        for: authority)
    }
    if let profile { discovery.setProfile(profile, for: Self.apex) }
    let proxy = MeshProxy(
      configuration: .defaults {
        $0.outboundAddress = try! Authority("127.0.0.1:0")
        $0.inboundAddress = try! Authority("127.0.0.1:0")
        $0.adminAddress = try! Authority("127.0.0.1:0")
        $0.failfastTimeout = .seconds(2)
      }, tls: nil, discovery: discovery, logger: logger)
    try await withThrowingTaskGroup { group in
      group.addTask { try await proxy.run() }
      let ports = try await proxy.boundPorts()
      try await body(ports.outbound, ports.admin, discovery)
      group.cancelAll()
    }
  }

  /// Sends `count` requests for `path` with one curl and returns each response's status code.
  func statuses(_ count: Int, path: String, port: Int) async throws -> [String] {
    let args = ["-s", "-m", "120", "--connect-to", "app.default.svc.cluster.local:80:127.0.0.1:\(port)"]
      + Array(repeating: ["-o", "/dev/null", "-w", "%{http_code}\\n", "http://app.default.svc.cluster.local\(path)"], count: count)
        .flatMap { $0 }
    let out = try await Subprocess.run("curl", args)
    return out.stdout.split(separator: "\n").map(String.init)
  }

  /// Bodies (first line) of `count` requests.
  func bodies(_ count: Int, port: Int) async throws -> [String] {
    let urls = Array(repeating: "http://app.default.svc.cluster.local/", count: count)
    let out = try await Subprocess.run(
      "curl", ["-s", "-m", "120", "--connect-to", "app.default.svc.cluster.local:80:127.0.0.1:\(port)"] + urls)
    return out.stdout.split(separator: "\n").map(String.init)
  }

  static func metric(_ text: String, _ name: String, containing: [String] = []) -> Double {
    text.split(separator: "\n")
      .filter { $0.hasPrefix(name + "{") && containing.allSatisfy($0.contains) }
      .compactMap { $0.split(separator: " ").last.flatMap { Double($0) } }
      .reduce(0, +)
  }

  func scrape(_ admin: Int) async throws -> String {
    try await Subprocess.run("curl", ["-s", "http://127.0.0.1:\(admin)/metrics"]).stdout
  }

  static let flakyProfile = Profile(
    fullyQualifiedName: "app.default.svc.cluster.local",
    routes: [
      Route(name: "GET /retry", condition: .all([.method("GET"), .pathRegex("/retry(/.*)?")]), isRetryable: true),
      Route(name: "GET /plain", condition: .all([.method("GET"), .pathRegex("/plain(/.*)?")]), isRetryable: false),
    ],
    retryBudget: .default)

  @Test("a backend failing 30 %: a retryable route succeeds ~100 % within the budget; a plain route passes failures")
  func retries() async throws {
    let flaky = try await TestHTTPServer(name: "flaky", failureRate: 0.3)
    defer { Task { await flaky.stop() } }
    try await withProxy([Self.apex: [flaky]], profile: Self.flakyProfile) { port, admin, _ in
      let retried = try await statuses(200, path: "/retry", port: port)
      #expect(retried.count == 200)
      let retriedOK = retried.filter { $0 == "200" }.count
      #expect(retriedOK >= 190, "\(retriedOK) of 200 succeeded on the retryable route")

      let plain = try await statuses(200, path: "/plain", port: port)
      let plainFailed = plain.filter { $0 == "500" }.count
      #expect((30...90).contains(plainFailed), "\(plainFailed) of 200 failed on the non-retryable route")

      let text = try await scrape(admin)
      let retryTotal = Self.metric(text, "route_retry_total", containing: ["rt_route=\"GET /retry\""])
      let retryRequests = Self.metric(text, "route_request_total", containing: ["rt_route=\"GET /retry\""])
      let plainRetries = Self.metric(text, "route_retry_total", containing: ["rt_route=\"GET /plain\""])
      #expect(retryRequests == 200)
      #expect(retryTotal > 0)
      // The budget: 20 % of the requests seen over 10 s, plus 10 per second x 10 s.
      #expect(retryTotal <= 0.2 * 400 + 100, "\(retryTotal) retries")
      #expect(plainRetries == 0)
      // The backend saw each retry as a request of its own.
      #expect(Double(flaky.requestCount) == 400 + retryTotal)
      // Route metrics classify by the route; the final status counts once per request.
      let plainFailures = Self.metric(
        text, "route_response_total", containing: ["rt_route=\"GET /plain\"", "classification=\"failure\""])
      #expect(Int(plainFailures) == plainFailed)
      #expect(text.contains("route_response_latency_ms_bucket{direction=\"outbound\",dst=\"app.default.svc.cluster.local:80\",rt_route=\"GET /retry\""))
    }
  }

  @Test("the retry budget: 10/s x 10 s plus 20 % of the requests in the window, refilled as the window moves")
  func budget() {
    let clock = ManualSeconds()
    let tracker = RetryBudgetTracker(.default, clock: { clock.now })
    for _ in 0..<100 { tracker.deposit() }
    var granted = 0
    while tracker.withdraw(), granted < 10_000 { granted += 1 }
    #expect(granted == 100 + 20)
    // Ten seconds on, the window holds none of it: the reserve is back, the requests' share gone.
    clock.now += 10
    var later = 0
    while tracker.withdraw(), later < 10_000 { later += 1 }
    #expect(later == 100)
    // No budget at all in the profile: never a retry (a route without budget cannot retry).
    let stingy = RetryBudgetTracker(RetryBudget(retryRatio: 0, minRetriesPerSecond: 0, ttl: .seconds(10)), clock: { clock.now })
    stingy.deposit()
    #expect(!stingy.withdraw())
  }

  @Test("a route timeout of 100 ms against a 1 s backend answers 504 with the error header long before 1 s")
  func timeout() async throws {
    let slow = try await TestHTTPServer(name: "slow", delay: .seconds(1))
    defer { Task { await slow.stop() } }
    let profile = Profile(routes: [
      Route(name: "slow", condition: .pathRegex("/slow"), timeout: .milliseconds(100))
    ])
    try await withProxy([Self.apex: [slow]], profile: profile) { port, admin, _ in
      let started = ContinuousClock.now
      let out = try await Subprocess.run(
        "curl", ["-s", "-m", "10", "-D", "-", "-o", "/dev/null", "--connect-to",
          "app.default.svc.cluster.local:80:127.0.0.1:\(port)", "http://app.default.svc.cluster.local/slow"])
      let elapsed = ContinuousClock.now - started
      #expect(out.stdout.hasPrefix("HTTP/1.1 504"), "\(out)")
      #expect(out.stdout.lowercased().contains("mesh-proxy-error: request timeout"))
      // The backend answers after 1 s: a 504 well before that is the route timeout at work.
      #expect(elapsed < .milliseconds(900), "answered after \(elapsed)")
      // Other routes have no timeout: the same backend answers them.
      let other = try await Subprocess.run(
        "curl", ["-s", "-m", "10", "--connect-to", "app.default.svc.cluster.local:80:127.0.0.1:\(port)",
          "http://app.default.svc.cluster.local/other"])
      #expect(other.stdout == "slow\n")
      let text = try await scrape(admin)
      #expect(Self.metric(text, "route_response_total", containing: ["rt_route=\"slow\"", "status_code=\"504\""]) == 1)
    }
  }

  @Test("a 50/50 split lands within 45-55 % over 2,000 requests; 100/0 sends all to one; changes apply at once")
  func split() async throws {
    let blue = try await TestHTTPServer(name: "blue")
    let green = try await TestHTTPServer(name: "green")
    defer { Task { await blue.stop(); await green.stop() } }
    let blueAuthority = try Authority("app.default.svc.cluster.local:80")
    let greenAuthority = try Authority("app-green.default.svc.cluster.local:80")
    func splitProfile(_ blueWeight: UInt32, _ greenWeight: UInt32) -> Profile {
      Profile(destinationOverrides: [
        WeightedDestination(authority: blueAuthority, weight: blueWeight),
        WeightedDestination(authority: greenAuthority, weight: greenWeight),
      ])
    }
    try await withProxy([blueAuthority: [blue], greenAuthority: [green]], profile: splitProfile(5000, 5000)) {
      port, admin, discovery in
      let answers = try await bodies(2000, port: port)
      #expect(answers.count == 2000)
      let greenShare = Double(answers.filter { $0 == "green" }.count) / 2000
      #expect((0.45...0.55).contains(greenShare), "green got \(greenShare * 100) %")
      // The leaf shows in the metrics as dst_service.
      let text = try await scrape(admin)
      #expect(text.contains("dst_service=\"app-green\""))

      discovery.setProfile(splitProfile(10000, 0), for: Self.apex)
      try await Task.sleep(for: .milliseconds(100))
      let allBlue = try await bodies(200, port: port)
      #expect(allBlue.count == 200 && allBlue.allSatisfy { $0 == "blue" }, "\(Set(allBlue))")

      discovery.setProfile(splitProfile(0, 10000), for: Self.apex)
      try await Task.sleep(for: .milliseconds(100))
      let allGreen = try await bodies(200, port: port)
      #expect(allGreen.count == 200 && allGreen.allSatisfy { $0 == "green" }, "\(Set(allGreen))")
    }
  }
}

final class ManualSeconds: @unchecked Sendable {
  private let lock = NSLock()
  private var value: Int64 = 1_000
  var now: Int64 {
    get { lock.withLock { value } }
    set { lock.withLock { value = newValue } }
  }
}
