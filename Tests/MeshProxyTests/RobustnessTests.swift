import Foundation
import Logging
import MeshCore
import MeshDiscovery
import NIOCore
import NIOHTTP1
import NIOPosix
@testable import MeshProxy
import MeshTLS
import Prometheus
import Testing
import _MeshTestSupport

/// The sidecar under hostile or careless traffic: memory per request, slow clients, loops, label values
/// chosen by clients. Judged from outside with h2load, python and curl.
@Suite("Proxy robustness", .serialized)
struct RobustnessTests {
  static let backend = try! Authority("backend.default.svc.cluster.local:80")

  // MARK: Memory per request

  @Test("keep-alive upstream connections: no memory growth per request (plaintext proxy)")
  func keepAliveMemoryPlaintext() async throws {
    let nginx = try await Nginx.start(httpDirectives: "keepalive_requests 10000000; access_log off;")
    defer { nginx.stop() }
    try await nginx.waitUntilServing()
    let discovery = InMemoryDiscovery([
      Self.backend: EndpointSet(exists: true, endpoints: [Endpoint(address: try Authority(host: "127.0.0.1", port: nginx.http1Port))])
    ])
    try await withProxy(discovery: discovery) { proxy in
      let outbound = try await proxy.boundPorts().outbound
      try await Self.expectFlatMemory(url: "http://127.0.0.1:\(outbound)/", authority: "backend.default.svc.cluster.local")
    }
  }

  @Test("keep-alive upstream connections through the mTLS pair: no memory growth per request")
  func keepAliveMemoryPair() async throws {
    let nginx = try await Nginx.start(httpDirectives: "keepalive_requests 10000000; access_log off;")
    defer { nginx.stop() }
    try await nginx.waitUntilServing()
    let pair = try ProxyPair()
    try await pair.run(applicationPort: nginx.http1Port) { client, _, _ in
      let outbound = try await client.boundPorts().outbound
      try await Self.expectFlatMemory(url: "http://127.0.0.1:\(outbound)/", authority: "backend.default.svc.cluster.local")
    }
  }

  /// Requests measured after warm-up: `MESH_TEST_KEEPALIVE_REQUESTS`, default 50,000 (a debug build serves
  /// about 1,000 per second through the pair here; the leak this guards against cost 120 bytes a request, 6 MB
  /// over 50,000). Run with 200000 to check the issue's own number.
  static let measuredRequests = ProcessInfo.processInfo.environment["MESH_TEST_KEEPALIVE_REQUESTS"].flatMap(Int.init) ?? 50_000

  /// Warms up with 10,000 requests, then sends ``measuredRequests`` more (HTTP/1.1, 4 keep-alive
  /// connections): the process's live heap may not grow by 2 MB or more.
  static func expectFlatMemory(url: String, authority: String) async throws {
    let load = { (count: Int) async throws -> Subprocess.Output in
      try await Subprocess.run(
        "timeout", ["300", "h2load", "--h1", "-n", "\(count)", "-c", "4", "-H", ":authority: \(authority)", url])
    }
    let warm = try await load(10_000)
    #expect(warm.stdout.contains("10000 succeeded"), "\(warm)")
    let before = rssKB()
    let heapBefore = liveHeapKB()
    let run = try await load(measuredRequests)
    #expect(run.stdout.contains("\(measuredRequests) succeeded"), "\(run)")
    let growth = rssKB() - before
    let heapGrowth = liveHeapKB() - heapBefore
    // The live heap (allocated, not freed) is what a leak grows; RSS also moves with what the allocator keeps.
    #expect(heapBefore > 0, "the live heap can be measured here")
    #expect(
      heapGrowth < 2048, "live heap grew by \(heapGrowth) kB over \(measuredRequests) requests (RSS by \(growth) kB)")
  }

  // MARK: Slow clients

  @Test("300 slowloris connections are closed by the header read timeout (408); normal requests stay fast")
  func slowloris() async throws {
    let nginx = try await Nginx.start()
    defer { nginx.stop() }
    try await nginx.waitUntilServing()
    let discovery = InMemoryDiscovery([
      Self.backend: EndpointSet(exists: true, endpoints: [Endpoint(address: try Authority(host: "127.0.0.1", port: nginx.http1Port))])
    ])
    try await withProxy(discovery: discovery, configure: { $0.headerReadTimeout = .seconds(2) }) { proxy in
      let ports = try await proxy.boundPorts()
      let script = """
        import socket, sys, time
        port = int(sys.argv[1])
        socks = []
        for i in range(300):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET / HTTP/1.1\\r\\nHost: backend.default.svc.cluster.local\\r\\n")
            socks.append(s)
        print("opened", flush=True)
        # Trickle one header line a second, never ending the head.
        closed, answered = 0, 0
        deadline = time.time() + 15
        while time.time() < deadline and closed < len(socks):
            closed, answered = 0, 0
            for s in socks:
                try:
                    s.sendall(b"x-slow: 1\\r\\n")
                except OSError:
                    closed += 1
                    continue
                s.setblocking(False)
                try:
                    data = s.recv(4096)
                    if data == b"" or b"408" in data:
                        closed += 1
                        answered += b"408" in data
                except BlockingIOError:
                    pass
                except OSError:
                    closed += 1
                s.setblocking(True)
            time.sleep(0.5)
        print("closed", closed, "answered408", answered, flush=True)
        """
      let python = try BackgroundProcess("/usr/bin/python3", ["-c", script, "\(ports.outbound)"])
      defer { python.terminate() }
      try await python.waitForOutput(containing: "opened", timeout: .seconds(20))
      // Meanwhile an ordinary client is served at once.
      let started = ContinuousClock.now
      let normal = try await curl([
        "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: backend.default.svc.cluster.local",
        "http://127.0.0.1:\(ports.outbound)/",
      ])
      #expect(normal.stdout == "200", "\(normal)")
      #expect(ContinuousClock.now - started < .seconds(1))
      // The line's last word: "closed" alone can be read before the count after it (CI failed once that way).
      try await python.waitForOutput(containing: "answered408", timeout: .seconds(30))
      #expect(python.printed.contains("closed 300"), "\(python.printed)")
      let metrics = try await curl(["http://127.0.0.1:\(ports.admin)/metrics"]).stdout
      #expect(metrics.contains("reason=\"request header timeout\""), "timeouts are counted")
    }
  }

  // MARK: Cancelled streams

  /// swift-nio-http2 ignores frames on a stream it reset only for the last 32 it reset; for any other it
  /// answers with a connection error (GOAWAY) and the connection stops answering. A flood of clients that gave
  /// up reset hundreds of upstream streams at once, the application's late DATA arrived on them, and the
  /// upstream connection, still in the pool, took every later request with it (no answer for 30 s and more).
  @Test("hundreds of upstream HTTP/2 streams reset at once, with the application's frames still arriving: the next request is answered")
  func lateFramesOnResetStreams() async throws {
    let app = try await LateFramesApp(delay: .milliseconds(300))
    do {
      try await lateFrames(app)
      await app.stop()
    } catch {
      await app.stop()
      throw error
    }
  }

  private func lateFrames(_ app: LateFramesApp) async throws {
    try await withProxy(discovery: InMemoryDiscovery(), application: app.port) { proxy in
      let inbound = try await proxy.boundPorts().inbound
      let url = "http://127.0.0.1:\(inbound)/"
      for round in 0..<3 {
        // 100 streams in flight upstream when the client is killed: the proxy resets them all, and the
        // application's DATA for them comes 300 ms after their HEADERS.
        _ = try await Subprocess.run("timeout", ["-s", "KILL", "0.5", "h2load", "-n", "2000", "-c", "1", "-m", "100", url])
        try await Task.sleep(for: .milliseconds(400))
        let after = try await Subprocess.run(
          "curl", ["-s", "-m", "5", "--http2-prior-knowledge", "-w", "\n%{http_code}", url])
        #expect(after.stdout == "late\n\n200", "round \(round): \(after)")
      }
    }
  }

  // MARK: Loops

  @Test("requests addressed to the proxy's own listeners get 508 loop detected at once; no connection storm")
  func ownAddresses() async throws {
    let nginx = try await Nginx.start()
    defer { nginx.stop() }
    try await nginx.waitUntilServing()
    let discovery = InMemoryDiscovery([
      Self.backend: EndpointSet(exists: true, endpoints: [Endpoint(address: try Authority(host: "127.0.0.1", port: nginx.http1Port))])
    ])
    try await withProxy(discovery: discovery, wildcardAdmin: true) { proxy in
      let ports = try await proxy.boundPorts()
      let fdsBefore = openFileDescriptors()
      for host in [
        "127.0.0.1:\(ports.outbound)", "127.0.0.1:\(ports.inbound)", "127.0.0.1:\(ports.admin)",
        "0.0.0.0:\(ports.outbound)", "localhost:\(ports.outbound)",
      ] {
        let result = try await Self.concurrentRequests(port: ports.outbound, host: host, count: 50)
        #expect(result.statuses == ["508": 50], "\(host): \(result)")
        #expect(result.errors == ["loop detected": 50], "\(host): \(result)")
        #expect(result.slowestMilliseconds < 100, "\(host): \(result)")
        let ordinary = try await curl([
          "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: backend.default.svc.cluster.local",
          "http://127.0.0.1:\(ports.outbound)/",
        ])
        #expect(ordinary.stdout == "200", "ordinary requests keep working: \(ordinary)")
      }
      #expect(openFileDescriptors() - fdsBefore < 40, "file descriptors stay where they were")
      let metrics = try await curl(["http://127.0.0.1:\(ports.admin)/metrics"]).stdout
      #expect(metrics.contains("reason=\"loop detected\"} 250"), "loops are counted:\n\(metrics)")
    }
  }

  @Test("two proxies that send a service to each other end the loop at the first repeat")
  func twoProxiesLoop() async throws {
    let a = InMemoryDiscovery()
    let b = InMemoryDiscovery()
    try await withProxy(discovery: a) { proxyA in
      try await withProxy(discovery: b) { proxyB in
        let portA = try await proxyA.boundPorts().outbound
        let portB = try await proxyB.boundPorts().outbound
        a.set(EndpointSet(exists: true, endpoints: [Endpoint(address: try Authority(host: "127.0.0.1", port: portB))]), for: Self.backend)
        b.set(EndpointSet(exists: true, endpoints: [Endpoint(address: try Authority(host: "127.0.0.1", port: portA))]), for: Self.backend)
        let fdsBefore = openFileDescriptors()
        let result = try await curl([
          "-D", "-", "-o", "/dev/null", "-H", "Host: backend.default.svc.cluster.local", "http://127.0.0.1:\(portA)/",
        ])
        #expect(result.stdout.hasPrefix("HTTP/1.1 508"), "\(result)")
        #expect(result.stdout.lowercased().contains("mesh-proxy-error: loop detected"), "\(result)")
        #expect(openFileDescriptors() - fdsBefore < 20)
      }
    }
  }

  /// `count` requests at once on separate connections, each with `Host: host`: statuses, proxy errors and
  /// the slowest answer.
  static func concurrentRequests(port: Int, host: String, count: Int) async throws -> (
    statuses: [String: Int], errors: [String: Int], slowestMilliseconds: Double
  ) {
    let script = """
      import http.client, json, sys, threading, time
      port, host, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
      results = []
      def one():
          c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
          start = time.time()
          c.request("GET", "/", headers={"Host": host})
          r = c.getresponse(); r.read()
          results.append((str(r.status), r.getheader("mesh-proxy-error", ""), (time.time() - start) * 1000))
      threads = [threading.Thread(target=one) for _ in range(count)]
      for t in threads: t.start()
      for t in threads: t.join()
      statuses, errors = {}, {}
      for s, e, _ in results:
          statuses[s] = statuses.get(s, 0) + 1
          errors[e] = errors.get(e, 0) + 1
      print(json.dumps({"statuses": statuses, "errors": errors, "slowest": max(r[2] for r in results)}))
      """
    let output = try await Subprocess.run("/usr/bin/python3", ["-c", script, "\(port)", host, "\(count)"])
    guard let object = try JSONSerialization.jsonObject(with: Data(output.stdout.utf8)) as? [String: Any] else {
      throw TestFailure("\(output)")
    }
    return (
      object["statuses"] as? [String: Int] ?? [:], object["errors"] as? [String: Int] ?? [:],
      object["slowest"] as? Double ?? .infinity
    )
  }

  // MARK: Label values chosen by clients

  @Test("20,000 distinct Hosts to the inbound and 20,000 to the outbound port: /metrics stays small and valid")
  func hostHeadersDoNotGrowMetrics() async throws {
    let nginx = try await Nginx.start(httpDirectives: "access_log off;")
    defer { nginx.stop() }
    try await nginx.waitUntilServing()
    // As mesh-proxy runs: at most two malloc arenas (glibc's default of 8 per core keeps freed memory spread
    // over many arenas; measured here, the outbound half then grew 2.5-8 MB, saturating, against 2 MB with one).
    MeshProxyAllocator.limitArenas()
    try await withProxy(discovery: InMemoryDiscovery(), application: nginx.http1Port) { proxy in
      let ports = try await proxy.boundPorts()
      // Warm up both paths, the outbound one well past its limit of destinations (it keeps the 500 used last,
      // each following discovery) so the allocator has settled, then measure what more requests add.
      // (A full round each: after a shorter warm-up the allocator was still settling, and a run on a loaded
      // machine measured 5-7 MB of growth that a second round no longer showed.)
      _ = try await Self.distinctHosts(port: ports.inbound, count: 2_000, target: nginx.http1Port, prefix: "w")
      _ = try await Self.distinctHosts(port: ports.outbound, count: 20_000, target: nginx.http1Port, prefix: "o")
      let before = rssKB()
      let heapBefore = liveHeapKB()
      let seriesBefore = proxy.metrics.labelSetCount
      let inbound = try await Self.distinctHosts(port: ports.inbound, count: 20_000, target: nginx.http1Port, prefix: "i")
      #expect(inbound == 20_000, "every inbound request answered")
      let afterInbound = rssKB()
      let outbound = try await Self.distinctHosts(port: ports.outbound, count: 20_000, target: nginx.http1Port, prefix: "p")
      #expect(outbound == 20_000, "every outbound request answered")
      // Judged by the live heap (what is allocated and not freed), not RSS: RSS also holds what the allocator
      // keeps of freed memory, which moved by up to 7 MB from run to run on a loaded machine and hid nothing.
      // Memory a request kept would show here as 40,000 times its size.
      let heapGrowth = liveHeapKB() - heapBefore
      let growth = rssKB() - before
      print("40,000 distinct Hosts: live heap \(heapBefore) kB -> +\(heapGrowth) kB; RSS +\(growth) kB")
      #expect(heapBefore > 0, "the live heap can be measured here")
      #expect(
        heapGrowth < 2 * 1024,
        "live heap grew by \(heapGrowth) kB (RSS by \(growth) kB, \(afterInbound - before) kB of it with the inbound requests)")
      #expect(proxy.metrics.labelSetCount - seriesBefore <= proxy.metrics.limits.maxLabelSets)
      let metrics = try await curl(["http://127.0.0.1:\(ports.admin)/metrics"]).stdout
      #expect(metrics.utf8.count < 1_000_000, "/metrics is \(metrics.utf8.count) bytes")
      #expect(!metrics.contains("i19999."), "no series names a client-chosen host")
      #expect(proxy.destinationCount <= ProxyConfiguration().maxDestinations)
      if Subprocess.which("promtool") != nil {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        try metrics.write(toFile: dir.file("metrics.txt"), atomically: true, encoding: .utf8)
        let check = try await Subprocess.run("sh", ["-c", "promtool check metrics < \(dir.file("metrics.txt"))"])
        let problems = (check.stdout + check.stderr).split(separator: "\n").filter {
          !$0.contains("response_latency_ms metric names should not contain abbreviated units")
        }
        #expect(check.status == 0 || (check.status == 3 && problems.isEmpty), "\(check)")
      }
    }
  }

  /// `count` requests on one keep-alive connection, each with a distinct Host: `<prefix><i>.example` on the
  /// inbound side; on the outbound side distinct loopback addresses (no name leaves the machine), of which
  /// only 127.0.0.1 answers. Returns how many got a response.
  static func distinctHosts(port: Int, count: Int, target: Int, prefix: String) async throws -> Int {
    let script = """
      import http.client, sys
      port, count, target, prefix = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
      c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
      answered = 0
      for i in range(count):
          if prefix in ("o", "p"):
              j = i + (100000 if prefix == "p" else 0)
              host = "127.%d.%d.%d:%d" % (1 + j // 65536, (j // 256) % 256, j % 256, target)
          else:
              host = "%s%d.example" % (prefix, i)
          try:
              c.request("GET", "/", headers={"Host": host})
              r = c.getresponse(); r.read()
              answered += 1
              if r.getheader("connection", "").lower() == "close":
                  c.close(); c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
          except (http.client.HTTPException, OSError):
              c.close(); c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
      print(answered)
      """
    let output = try await Subprocess.run(
      "timeout", ["600", "/usr/bin/python3", "-c", script, "\(port)", "\(count)", "\(target)", prefix])
    return Int(output.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
  }

  @Test("past the cap, new label sets share one overflow set, counted; idle sets are removed")
  func labelSetCap() async throws {
    var limits = ProxyMetrics.Limits()
    limits.maxLabelSets = 10
    limits.idleTimeout = .zero
    let metrics = ProxyMetrics(limits: limits)
    for i in 0..<100 {
      let labels = ProxyMetrics.RequestLabels(direction: "inbound", authority: "h\(i).example:80", tls: false)
      metrics.requestStarted(labels)
      metrics.responseEnded(labels, status: 200, grpcStatus: nil, latencyMilliseconds: 1)
    }
    #expect(metrics.labelSetCount == 11, "10 label sets and the overflow set")
    let text = String(decoding: metrics.exposition(), as: UTF8.self)
    #expect(text.contains("metrics_label_sets_overflow_total 90"), "\(text)")
    #expect(text.contains("authority=\"overflow\""))
    #expect(!text.contains("h50.example"))
    try await Task.sleep(for: .seconds(1.1))
    #expect(metrics.evictIdleSeries() == 11)
    #expect(!String(decoding: metrics.exposition(), as: UTF8.self).contains("request_total{"))
  }

  @Test("a connection's kept series is used while it is its label set's and kept; evicted or other, looked up")
  func keptSeries() async throws {
    var limits = ProxyMetrics.Limits()
    limits.idleTimeout = .zero
    let metrics = ProxyMetrics(limits: limits)
    let a = ProxyMetrics.RequestLabels(direction: "outbound", authority: "a.example:80", tls: false)
    let b = ProxyMetrics.RequestLabels(direction: "outbound", authority: "b.example:80", tls: false)
    let first = metrics.series(for: a, cached: nil)
    #expect(metrics.series(for: a, cached: first) === first)
    #expect(metrics.series(for: b, cached: first) !== first, "another label set is looked up")
    metrics.requestStarted(metrics.series(for: a, cached: first))
    try await Task.sleep(for: .seconds(1.1))
    #expect(metrics.evictIdleSeries() == 2)
    let again = metrics.series(for: a, cached: first)
    #expect(again !== first, "an evicted series is not counted in")
    metrics.requestStarted(again)
    metrics.responseEnded(again, status: 200, grpcStatus: nil, latencyMilliseconds: 1)
    let text = String(decoding: metrics.exposition(), as: UTF8.self)
    #expect(text.contains("request_total{direction=\"outbound\",authority=\"a.example:80\""), "\(text)")
    #expect(text.contains("response_total{"), "\(text)")
  }

  /// The routers keep the last label set they made (per endpoint, and inbound per router) and give it to the
  /// next request it fits, so that a connection's kept series is found by identity instead of by comparing
  /// seven strings. A set that does not fit is made anew; a response counted in the overflow set still counts
  /// in `metrics_label_sets_overflow_total` every time.
  @Test("a kept label set is shared by the requests it fits; a connection's kept series is found by it, and overflow counts every response")
  func keptLabelSets() async throws {
    let identity = try IdentityName(serviceAccount: "backend", namespace: "default")
    let endpoint = BalancedEndpoint(
      Endpoint(
        address: try Authority("127.0.0.1:8080"), tlsIdentity: identity,
        metricLabels: ["service": "backend", "namespace": "default", "target_cluster": "east"]))
    let first = endpoint.labelSet(direction: "outbound", authority: "backend:80", clientID: "")
    #expect(endpoint.labelSet(direction: "outbound", authority: "backend:80", clientID: "") === first)
    var expected = ProxyMetrics.RequestLabels(direction: "outbound", authority: "backend:80", tls: true)
    expected.serverID = identity.description
    expected.dstService = "backend"
    expected.dstNamespace = "default"
    expected.targetCluster = "east"
    #expect(first.labels == expected)
    for (direction, authority, clientID) in [("gateway", "backend:80", ""), ("outbound", "other:80", ""), ("outbound", "backend:80", "c")] {
      let other = endpoint.labelSet(direction: direction, authority: authority, clientID: clientID)
      #expect(other !== first)
      #expect(
        other.labels.direction == direction && other.labels.authority == authority && other.labels.clientID == clientID
          && other.labels.serverID == identity.description && other.labels.dstService == "backend")
    }
    let plain = BalancedEndpoint(Endpoint(address: try Authority("127.0.0.1:8081")))
    let plainLabels = plain.labelSet(direction: "outbound", authority: "backend:80", clientID: "").labels
    #expect(!plainLabels.tls && plainLabels.serverID.isEmpty && plainLabels.dstService.isEmpty)

    // A connection's kept series, found for a set by identity; another set is looked up.
    let metrics = ProxyMetrics()
    let series = metrics.series(for: first, cached: nil, cachedFor: nil)
    #expect(metrics.series(for: first, cached: series, cachedFor: first) === series)
    let second = endpoint.labelSet(direction: "outbound", authority: "second:80", clientID: "")
    #expect(metrics.series(for: second, cached: series, cachedFor: first) !== series)
    // An equal set made apart still finds the same series (by its labels).
    #expect(metrics.series(for: ProxyMetrics.LabelSet(first.labels), cached: series, cachedFor: first) === series)

    // Past the cap: each response in the overflow set counts, also when the kept series is the overflow set.
    var limits = ProxyMetrics.Limits()
    limits.maxLabelSets = 1
    let capped = ProxyMetrics(limits: limits)
    _ = capped.series(for: first, cached: nil, cachedFor: nil)
    var kept: ProxyMetrics.RequestSeries?
    var keptFor: ProxyMetrics.LabelSet?
    for _ in 0..<3 {
      for countOverflow in [false, true] {
        kept = capped.series(for: second, cached: kept, cachedFor: keptFor, countOverflow: countOverflow)
        keptFor = second
      }
      capped.responseEnded(try #require(kept), status: 200, grpcStatus: nil, latencyMilliseconds: 1)
    }
    #expect(kept?.isOverflow == true)
    let text = String(decoding: capped.exposition(), as: UTF8.self)
    #expect(text.contains("metrics_label_sets_overflow_total 3"), "\(text)")
  }

  /// A connection keeps the destination its requests went to (one lookup in the router's shared map instead of
  /// three a request), and looks it up again when it names another authority or the router forgot it: a
  /// forgotten destination no longer follows discovery, so a request must never be sent through it.
  @Test("a connection's kept destination is looked up again once the router forgot it")
  func keptDestination() throws {
    var configuration = ProxyConfiguration()
    configuration.maxDestinations = 1
    let logger = Logger(label: "test.robustness")
    let pools = UpstreamPools(
      tls: nil, configuration: configuration, metrics: ProxyMetrics(), loopGuard: LoopGuard(), logger: logger)
    let router = OutboundRouter(discovery: InMemoryDiscovery(), pools: pools, configuration: configuration)
    defer { router.finish() }
    let a = try Authority("a.example:80")
    let b = try Authority("b.example:80")
    func request(_ authority: Authority, memo: DestinationMemo?) -> RoutedRequest {
      RoutedRequest(
        head: HTTPRequestHead(version: .http1_1, method: .GET, uri: "/"), authority: authority,
        arrivedOverHTTP2: false, peerIdentity: nil, destinationMemo: memo)
    }
    let memo = DestinationMemo()
    _ = router.knownPolicy(for: request(a, memo: memo))
    let first = try #require(memo.destination)
    #expect(first.authority == a)
    _ = router.knownPolicy(for: request(a, memo: memo))
    #expect(memo.destination === first, "the same authority is not looked up again")
    // Another connection names b: over the limit of one destination, a is forgotten.
    _ = router.knownPolicy(for: request(b, memo: nil))
    #expect(first.isStopped)
    #expect(router.destinationCount == 1)
    _ = router.knownPolicy(for: request(a, memo: memo))
    let again = try #require(memo.destination)
    #expect(again !== first, "a forgotten destination is not used again")
    #expect(!again.isStopped && again.authority == a)
    #expect(router.destinationCount == 1, "a is followed again, in b's place")
    // The same connection names another authority: its memo follows.
    _ = router.knownPolicy(for: request(b, memo: memo))
    #expect(memo.destination?.authority == b)
  }

  /// A discovery with endpoints and no profiles (as the destination service is for a name it has no profile
  /// for): `followProfile` returns once `answer` is opened (at once by default), which says "no profile".
  struct EndpointsOnly: EndpointDiscovery {
    let endpoints: InMemoryDiscovery
    var answer: AsyncStream<Void>? = nil
    func follow(_ authority: Authority, update: @escaping @Sendable (EndpointSet) -> Void) async {
      await endpoints.follow(authority, update: update)
    }
    func followProfile(_ authority: Authority, update: @escaping @Sendable (Profile) -> Void) async {
      guard let answer else { return }
      for await _ in answer { return }
    }
  }

  /// A destination known to have no profile gets the default policy at once on every request after its first:
  /// no future, no held reads. (`?? .none` had read as the Optional's `none`, "not known yet", every time.)
  @Test("a destination known to have no profile: its requests' policy is known at once")
  func knownWithoutProfile() async throws {
    let configuration = ProxyConfiguration()
    let pools = UpstreamPools(
      tls: nil, configuration: configuration, metrics: ProxyMetrics(), loopGuard: LoopGuard(),
      logger: Logger(label: "test.robustness"))
    let a = try Authority("a.example:80")
    // Discovery says "no profile" only when the test lets it, after checking that nothing is known before.
    let (answer, open) = AsyncStream.makeStream(of: Void.self)
    defer { open.finish() }
    let discovery = EndpointsOnly(
      endpoints: InMemoryDiscovery([
        a: EndpointSet(exists: true, endpoints: [Endpoint(address: try Authority("127.0.0.1:1"))])
      ]),
      answer: answer)
    let router = OutboundRouter(discovery: discovery, pools: pools, configuration: configuration)
    let following = Task { await router.run() }
    defer {
      router.finish()
      following.cancel()
    }
    let request = RoutedRequest(
      head: HTTPRequestHead(version: .http1_1, method: .GET, uri: "/"), authority: a, arrivedOverHTTP2: false,
      peerIdentity: nil)
    #expect(router.knownPolicy(for: request) == nil, "not known before discovery answers")
    open.yield()
    let first = try await router.policy(for: request, on: MultiThreadedEventLoopGroup.singleton.next()).get()
    #expect(first.routeName == RequestPolicy.none.routeName)
    let known = try #require(router.knownPolicy(for: request), "the absent profile is known")
    #expect(known.routeName == RequestPolicy.none.routeName && known.timeout == nil)
  }

  // MARK: Helpers

  func withProxy(
    discovery: InMemoryDiscovery, application: Int = 1, wildcardAdmin: Bool = false,
    configure: (inout ProxyConfiguration) -> Void = { _ in }, _ body: (MeshProxy) async throws -> Void
  ) async throws {
    try await withSingleProxy(discovery: discovery, label: "test.robustness", configure: {
      $0.adminAddress = try! Authority(wildcardAdmin ? "0.0.0.0:0" : "127.0.0.1:0")
      $0.applicationAddress = try! Authority(host: "127.0.0.1", port: application)
      configure(&$0)
    }, body)
  }
}

/// This process's resident set, in kB.
func rssKB() -> Int {
  let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
  let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
  return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
}

/// This process's open file descriptors.
func openFileDescriptors() -> Int {
  (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0
}
