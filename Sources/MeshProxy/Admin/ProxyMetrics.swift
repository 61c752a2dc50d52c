import NIOCore
public import Prometheus
import Synchronization

/// The proxy's golden signals, Linkerd-style, in a Prometheus registry: `request_total`, `response_total`,
/// `response_latency_ms`, `tcp_open_connections`, `tcp_read_bytes_total`, `tcp_write_bytes_total`, and
/// `proxy_errors_total` for answers the proxy made itself.
public final class ProxyMetrics: Sendable {
  /// Latency buckets in milliseconds.
  public static let latencyBuckets: [Double] = [
    1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1000, 2000, 3000, 4000, 5000, 10000, 20000, 30000,
    40000, 50000,
  ]

  /// The labels of one request's traffic. Every series carries the same label names (empty when unknown),
  /// so each metric family is uniform.
  public struct RequestLabels: Sendable, Hashable {
    public var direction: String
    public var authority: String
    public var tls: Bool
    public var clientID: String = ""
    public var serverID: String = ""
    public var dstService: String = ""
    public var dstNamespace: String = ""
    public var targetCluster: String = ""

    public init(direction: String, authority: String, tls: Bool) {
      self.direction = direction
      self.authority = authority
      self.tls = tls
    }

    /// The request-derived labels of the overflow set.
    mutating func collapseToOverflow() {
      authority = ProxyMetrics.overflow
      clientID = clientID.isEmpty ? "" : ProxyMetrics.overflow
      serverID = serverID.isEmpty ? "" : ProxyMetrics.overflow
      dstService = dstService.isEmpty ? "" : ProxyMetrics.overflow
      dstNamespace = dstNamespace.isEmpty ? "" : ProxyMetrics.overflow
      targetCluster = targetCluster.isEmpty ? "" : ProxyMetrics.overflow
    }

    var pairs: [(String, String)] {
      [
        ("direction", direction), ("authority", authority), ("tls", tls ? "true" : "false"), ("client_id", clientID),
        ("server_id", serverID), ("dst_service", dstService), ("dst_namespace", dstNamespace),
        ("target_cluster", targetCluster),
      ]
    }
  }

  /// A request's label set behind one reference (``RequestLabels`` is seven strings): what an upstream carries
  /// for its request's metrics, and what a connection's kept series is checked against, by identity first. The
  /// routers keep the last one they made (``LastLabelSet``), so the requests of a connection to one endpoint
  /// mostly share one, and neither copy nor compare the strings.
  final class LabelSet: Sendable {
    let labels: RequestLabels
    init(_ labels: RequestLabels) { self.labels = labels }
  }

  /// The last ``LabelSet`` a router made for one endpoint (or, inbound, for the router), given to the next
  /// request whose labels it matches.
  final class LastLabelSet: Sendable {
    private let last = Mutex<LabelSet?>(nil)

    init() {}

    /// The last set when `matches` says its labels are the request's, else a new one of `make()`'s, kept for
    /// the next request.
    func labelSet(matching matches: (RequestLabels) -> Bool, make: () -> RequestLabels) -> LabelSet {
      if let last = last.withLock({ $0 }), matches(last.labels) { return last }
      let made = LabelSet(make())
      last.withLock { $0 = made }
      return made
    }
  }

  /// Byte and connection counters of one kind of connection.
  public struct TCP: Sendable {
    let open: Gauge
    let opened: Counter
    let closed: Counter
    let read: Counter
    let write: Counter
  }

  public let registry: PrometheusCollectorRegistry

  /// Bounds on the series the proxy makes from request data (authorities, identities), so that no client can
  /// grow the proxy's memory and `/metrics` by choosing what it sends.
  public struct Limits: Sendable {
    /// Label sets (one per direction, authority, identities, destination) kept at most; past that, new ones
    /// are counted in one overflow set whose request-derived labels read `overflow`. Default 1,000.
    public var maxLabelSets: Int = 1000
    /// A label set with no traffic for this long is removed with its series. Default 10 minutes.
    public var idleTimeout: Duration = .seconds(600)
    public init() {}
  }

  /// The label value that stands for every label set past ``Limits/maxLabelSets``.
  public static let overflow = "overflow"

  public let limits: Limits

  /// The series of one label set, made once and kept while it is used. A connection keeps the one its last
  /// request used (``series(for:cached:)``): the requests of a connection mostly share a label set, and finding
  /// it again costs hashing eight strings.
  final class RequestSeries: Sendable {
    let labels: RequestLabels
    let requests: Counter
    let latency: ValueHistogram
    /// `response_total` by status, gRPC status and classification.
    let responses = Mutex<[ResponseKey: Counter]>([:])
    /// When it was last used (seconds on the proxy's uptime clock).
    let lastUsed: Atomic<Int64>
    /// Removed with its series (idle too long): a connection that kept it must look its label set up again.
    let evicted = Atomic<Bool>(false)
    /// The overflow set (``Limits/maxLabelSets``): a response counted in it also counts in
    /// `metrics_label_sets_overflow_total`.
    let isOverflow: Bool

    init(labels: RequestLabels, requests: Counter, latency: ValueHistogram, now: Int64, isOverflow: Bool) {
      self.labels = labels
      self.isOverflow = isOverflow
      self.requests = requests
      self.latency = latency
      self.lastUsed = Atomic(now)
    }
  }

  struct ResponseKey: Hashable {
    var status: Int
    var grpcStatus: Int?
  }

  private let series = Mutex<[RequestLabels: RequestSeries]>([:])
  private let droppedLabelSets: Counter
  private let clockStart = NIODeadline.now()

  public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry(), limits: Limits = Limits()) {
    self.registry = registry
    self.limits = limits
    self.droppedLabelSets = registry.makeCounter(
      name: "metrics_label_sets_overflow_total", labels: [],
      help: "Responses counted in the overflow label set because the proxy already kept its maximum of label sets.")
  }

  /// Seconds since the metrics were made, from NIO's uptime clock: `ContinuousClock`'s `Duration` arithmetic
  /// (128-bit) cost about 300 instructions a reading, and a request's series is marked used twice.
  private var now: Int64 { (NIODeadline.now() - clockStart).nanoseconds / 1_000_000_000 }

  /// The series of `labels`: found, made while under the cap, else the overflow set's (`countOverflow`: a
  /// request's response counts it in `metrics_label_sets_overflow_total`, once per request).
  private func series(for labels: RequestLabels, countOverflow: Bool = false) -> RequestSeries {
    let now = self.now
    if let existing = series.withLock({ $0[labels] }) {
      if existing.lastUsed.load(ordering: .relaxed) != now { existing.lastUsed.store(now, ordering: .relaxed) }
      return existing
    }
    var labels = labels
    let full = series.withLock { $0.count >= limits.maxLabelSets }
    if full {
      if countOverflow { droppedLabelSets.increment() }
      labels.collapseToOverflow()
      if let existing = series.withLock({ $0[labels] }) {
        existing.lastUsed.store(now, ordering: .relaxed)
        return existing
      }
    }
    let pairs = labels.pairs
    let made = RequestSeries(
      labels: labels,
      requests: registry.makeCounter(name: "request_total", labels: pairs, help: "Requests the proxy forwarded."),
      latency: registry.makeValueHistogram(
        name: "response_latency_ms", labels: pairs, buckets: Self.latencyBuckets,
        help: "Time from a request's headers to its response's headers, in milliseconds."),
      now: now, isOverflow: full)
    return series.withLock { table in
      if let raced = table[labels] { return raced }
      table[labels] = made
      return made
    }
  }

  /// The series of `labels`: `cached` when it is that label set's and still kept (no lookup), else as
  /// ``series(for:countOverflow:)`` finds or makes it.
  func series(for labels: RequestLabels, cached: RequestSeries?, countOverflow: Bool = false) -> RequestSeries {
    if let cached, cached.labels == labels, reuse(cached) { return cached }
    return series(for: labels, countOverflow: countOverflow)
  }

  /// The series of `labelSet`: `cached` when it was found for this very set (`cachedFor`) and is still kept,
  /// without comparing labels, unless a response is to count in the overflow set; else as
  /// ``series(for:cached:countOverflow:)`` finds it.
  func series(for labelSet: LabelSet, cached: RequestSeries?, cachedFor: LabelSet?, countOverflow: Bool = false) -> RequestSeries {
    if let cached, cachedFor === labelSet, !(countOverflow && cached.isOverflow), reuse(cached) { return cached }
    return series(for: labelSet.labels, cached: cached, countOverflow: countOverflow)
  }

  /// Whether a kept series may be used again (not removed for idleness); it is marked used now.
  private func reuse(_ cached: RequestSeries) -> Bool {
    guard !cached.evicted.load(ordering: .relaxed) else { return false }
    let now = self.now
    if cached.lastUsed.load(ordering: .relaxed) != now { cached.lastUsed.store(now, ordering: .relaxed) }
    return true
  }

  func requestStarted(_ labels: RequestLabels) {
    requestStarted(series(for: labels))
  }

  func requestStarted(_ series: RequestSeries) {
    series.requests.increment()
  }

  func responseEnded(_ labels: RequestLabels, status: Int, grpcStatus: Int?, latencyMilliseconds: Double) {
    responseEnded(
      series(for: labels, countOverflow: true), status: status, grpcStatus: grpcStatus,
      latencyMilliseconds: latencyMilliseconds)
  }

  func responseEnded(_ series: RequestSeries, status: Int, grpcStatus: Int?, latencyMilliseconds: Double) {
    let key = ResponseKey(status: status, grpcStatus: grpcStatus)
    let counter =
      series.responses.withLock { $0[key] }
      ?? {
        let failure = status >= 500 || (grpcStatus.map { $0 != 0 } ?? false)
        var pairs = series.labels.pairs
        pairs.append(("classification", failure ? "failure" : "success"))
        pairs.append(("status_code", String(status)))
        pairs.append(("grpc_status", grpcStatus.map(String.init) ?? ""))
        let made = registry.makeCounter(
          name: "response_total", labels: pairs, help: "Responses the proxy forwarded or made.")
        return series.responses.withLock { responses in
          if let raced = responses[key] { return raced }
          responses[key] = made
          return made
        }
      }()
    counter.increment()
    series.latency.record(latencyMilliseconds)
  }

  /// Removes the label sets that had no traffic for ``Limits/idleTimeout``, with their series. Returns how
  /// many went.
  @discardableResult
  public func evictIdleSeries() -> Int {
    let cutoff = now - limits.idleTimeout.components.seconds
    let idle = series.withLock { table -> [RequestSeries] in
      let idle = table.values.filter { $0.lastUsed.load(ordering: .relaxed) < cutoff }
      for entry in idle {
        table[entry.labels] = nil
        entry.evicted.store(true, ordering: .relaxed)
      }
      return idle
    }
    for entry in idle {
      registry.unregisterCounter(entry.requests)
      registry.unregisterValueHistogram(entry.latency)
      for counter in entry.responses.withLock({ Array($0.values) }) { registry.unregisterCounter(counter) }
    }
    return idle.count
  }

  /// Label sets kept now.
  public var labelSetCount: Int { series.withLock { $0.count } }

  // MARK: Route metrics (requests that matched a route of their destination's profile)

  private static func routeLabels(_ policy: RequestPolicy, direction: String) -> [(String, String)] {
    [("direction", direction), ("dst", policy.authority), ("rt_route", policy.routeName)]
  }

  func routeRequest(_ policy: RequestPolicy, direction: String) {
    registry.makeCounter(
      name: "route_request_total", labels: Self.routeLabels(policy, direction: direction),
      help: "Requests that matched a route, counted once however often they were retried."
    ).increment()
  }

  func routeRetry(_ policy: RequestPolicy, direction: String) {
    registry.makeCounter(
      name: "route_retry_total", labels: Self.routeLabels(policy, direction: direction),
      help: "Retries sent for a route, within its destination's retry budget."
    ).increment()
  }

  func routeResponse(_ policy: RequestPolicy, direction: String, status: Int, latencyMilliseconds: Double) {
    var pairs = Self.routeLabels(policy, direction: direction)
    pairs.append(("classification", policy.isFailure(status: status) ? "failure" : "success"))
    pairs.append(("status_code", String(status)))
    registry.makeCounter(
      name: "route_response_total", labels: pairs, help: "Responses of a route, classified by its response classes."
    ).increment()
    registry.makeValueHistogram(
      name: "route_response_latency_ms", labels: Self.routeLabels(policy, direction: direction),
      buckets: Self.latencyBuckets,
      help: "Time from a route's request headers to the final response headers (retries included), in milliseconds."
    ).record(latencyMilliseconds)
  }

  func proxyError(direction: String, reason: ProxyError.Reason) {
    registry.makeCounter(
      name: "proxy_errors_total", labels: [("direction", direction), ("reason", reason.rawValue)],
      help: "Requests the proxy answered itself, by reason."
    ).increment()
  }

  /// A connection whose protocol detection timed out (it was then carried as opaque TCP, or closed).
  func detectTimeout(direction: String) {
    registry.makeCounter(
      name: "protocol_detect_timeout_total", labels: [("direction", direction)],
      help: "Connections whose first bytes did not tell their protocol within the detect timeout."
    ).increment()
  }

  /// An opaque (non-HTTP) connection the proxy could not carry and closed, by reason.
  func opaqueRefused(direction: String, reason: ProxyError.Reason) {
    registry.makeCounter(
      name: "tcp_refused_total", labels: [("direction", direction), ("reason", reason.rawValue)],
      help: "Opaque connections closed because they could not be carried, by reason."
    ).increment()
  }

  /// A request shed because every connection to its upstream was busy (`reason`: `queue full` or
  /// `queue timeout`).
  func shed(reason: String) {
    registry.makeCounter(
      name: "proxy_shed_requests_total", labels: [("reason", reason)],
      help: "Requests shed with 503 overloaded: no upstream connection came free in time, or the queue was full."
    ).increment()
  }

  /// The counters for connections of one direction, peer side and TLS state.
  /// The TCP series of one kind of connection; `extra` labels name its far end (`dst_service`,
  /// `server_id`, `client_id`...) where it is known, as for opaque connections.
  public func tcp(direction: String, peer: String, tls: Bool, extra: [(String, String)] = []) -> TCP {
    let labels = [("direction", direction), ("peer", peer), ("tls", tls ? "true" : "false")] + extra
    return TCP(
      open: registry.makeGauge(name: "tcp_open_connections", labels: labels, help: "Connections open now."),
      opened: registry.makeCounter(name: "tcp_open_total", labels: labels, help: "Connections opened."),
      closed: registry.makeCounter(name: "tcp_close_total", labels: labels, help: "Connections closed."),
      read: registry.makeCounter(name: "tcp_read_bytes_total", labels: labels, help: "Bytes read from connections."),
      write: registry.makeCounter(name: "tcp_write_bytes_total", labels: labels, help: "Bytes written to connections.")
    )
  }

  /// The Prometheus text exposition.
  public func exposition() -> [UInt8] {
    var buffer: [UInt8] = []
    buffer.reserveCapacity(16 * 1024)
    registry.emit(into: &buffer)
    return buffer
  }
}

/// Counts a connection's bytes and its lifetime. Sits first in the pipeline, so it counts wire bytes.
final class ConnectionMetricsHandler: ChannelDuplexHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer
  typealias InboundOut = ByteBuffer
  typealias OutboundIn = IOData
  typealias OutboundOut = IOData

  private let metrics: ProxyMetrics.TCP
  private var counted = false

  /// `counted`: the connection's opening is counted already (by a codec that counted it until now).
  init(metrics: ProxyMetrics.TCP, counted: Bool = false) {
    self.metrics = metrics
    self.counted = counted
  }

  func channelActive(context: ChannelHandlerContext) {
    if !counted {
      counted = true
      metrics.open.increment()
      metrics.opened.increment()
    }
    context.fireChannelActive()
  }

  func handlerAdded(context: ChannelHandlerContext) {
    if context.channel.isActive && !counted {
      counted = true
      metrics.open.increment()
      metrics.opened.increment()
    }
  }

  func channelInactive(context: ChannelHandlerContext) {
    if counted {
      counted = false
      metrics.open.decrement()
      metrics.closed.increment()
    }
    context.fireChannelInactive()
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    metrics.read.increment(by: Int64(unwrapInboundIn(data).readableBytes))
    context.fireChannelRead(data)
  }

  func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
    metrics.write.increment(by: Int64(unwrapOutboundIn(data).readableBytes))
    context.write(data, promise: promise)
  }
}
