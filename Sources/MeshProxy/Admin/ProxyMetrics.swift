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

    var pairs: [(String, String)] {
      [
        ("direction", direction), ("authority", authority), ("tls", tls ? "true" : "false"), ("client_id", clientID),
        ("server_id", serverID), ("dst_service", dstService), ("dst_namespace", dstNamespace),
        ("target_cluster", targetCluster),
      ]
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

  /// The series of one label set, looked up once: the registry validates names and labels and takes its
  /// lock on every `make...` call, which per request cost more than the rest of the metrics path.
  private final class Series: Sendable {
    struct ResponseKey: Hashable {
      var status: Int
      var grpcStatus: Int?
    }
    let requests: Counter
    let latency: ValueHistogram
    let responses = Mutex<[ResponseKey: Counter]>([:])
    init(requests: Counter, latency: ValueHistogram) {
      self.requests = requests
      self.latency = latency
    }
  }
  private let series = Mutex<[RequestLabels: Series]>([:])

  public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
    self.registry = registry
  }

  private func series(_ labels: RequestLabels) -> Series {
    if let known = series.withLock({ $0[labels] }) { return known }
    let pairs = labels.pairs
    let made = Series(
      requests: registry.makeCounter(name: "request_total", labels: pairs, help: "Requests the proxy forwarded."),
      latency: registry.makeValueHistogram(
        name: "response_latency_ms", labels: pairs, buckets: Self.latencyBuckets,
        help: "Time from a request's headers to its response's headers, in milliseconds."))
    return series.withLock { all in
      if let raced = all[labels] { return raced }
      all[labels] = made
      return made
    }
  }

  func requestStarted(_ labels: RequestLabels) {
    series(labels).requests.increment()
  }

  func responseEnded(_ labels: RequestLabels, status: Int, grpcStatus: Int?, latencyMilliseconds: Double) {
    let series = series(labels)
    let key = Series.ResponseKey(status: status, grpcStatus: grpcStatus)
    let counter =
      series.responses.withLock { $0[key] }
      ?? {
        let failure = status >= 500 || (grpcStatus.map { $0 != 0 } ?? false)
        var pairs = labels.pairs
        pairs.append(("classification", failure ? "failure" : "success"))
        pairs.append(("status_code", String(status)))
        pairs.append(("grpc_status", grpcStatus.map(String.init) ?? ""))
        let made = registry.makeCounter(
          name: "response_total", labels: pairs, help: "Responses the proxy forwarded or made.")
        return series.responses.withLock { all in
          if let raced = all[key] { return raced }
          all[key] = made
          return made
        }
      }()
    counter.increment()
    series.latency.record(latencyMilliseconds)
  }

  // MARK: Route metrics (requests that matched a route of their destination's profile)

  private struct RouteKey: Hashable {
    var direction: String
    var dst: String
    var route: String
  }

  private final class RouteSeries: Sendable {
    struct ResponseKey: Hashable {
      var failure: Bool
      var status: Int
    }
    let pairs: [(String, String)]
    let requests: Counter
    let retries: Counter
    let latency: ValueHistogram
    let responses = Mutex<[ResponseKey: Counter]>([:])
    init(pairs: [(String, String)], requests: Counter, retries: Counter, latency: ValueHistogram) {
      self.pairs = pairs
      self.requests = requests
      self.retries = retries
      self.latency = latency
    }
  }
  private let routeSeries = Mutex<[RouteKey: RouteSeries]>([:])

  private func routeSeries(_ policy: RequestPolicy, direction: String) -> RouteSeries {
    let key = RouteKey(direction: direction, dst: policy.authority, route: policy.routeName)
    if let known = routeSeries.withLock({ $0[key] }) { return known }
    let pairs = [("direction", direction), ("dst", policy.authority), ("rt_route", policy.routeName)]
    let made = RouteSeries(
      pairs: pairs,
      requests: registry.makeCounter(
        name: "route_request_total", labels: pairs,
        help: "Requests that matched a route, counted once however often they were retried."),
      retries: registry.makeCounter(
        name: "route_retry_total", labels: pairs,
        help: "Retries sent for a route, within its destination's retry budget."),
      latency: registry.makeValueHistogram(
        name: "route_response_latency_ms", labels: pairs, buckets: Self.latencyBuckets,
        help: "Time from a route's request headers to the final response headers (retries included), in milliseconds."))
    return routeSeries.withLock { all in
      if let raced = all[key] { return raced }
      all[key] = made
      return made
    }
  }

  func routeRequest(_ policy: RequestPolicy, direction: String) {
    routeSeries(policy, direction: direction).requests.increment()
  }

  func routeRetry(_ policy: RequestPolicy, direction: String) {
    routeSeries(policy, direction: direction).retries.increment()
  }

  func routeResponse(_ policy: RequestPolicy, direction: String, status: Int, latencyMilliseconds: Double) {
    let series = routeSeries(policy, direction: direction)
    let key = RouteSeries.ResponseKey(failure: policy.isFailure(status: status), status: status)
    let counter =
      series.responses.withLock { $0[key] }
      ?? {
        var pairs = series.pairs
        pairs.append(("classification", key.failure ? "failure" : "success"))
        pairs.append(("status_code", String(status)))
        let made = registry.makeCounter(
          name: "route_response_total", labels: pairs, help: "Responses of a route, classified by its response classes.")
        return series.responses.withLock { all in
          if let raced = all[key] { return raced }
          all[key] = made
          return made
        }
      }()
    counter.increment()
    series.latency.record(latencyMilliseconds)
  }

  func proxyError(direction: String, reason: ProxyError.Reason) {
    registry.makeCounter(
      name: "proxy_errors_total", labels: [("direction", direction), ("reason", reason.rawValue)],
      help: "Requests the proxy answered itself, by reason."
    ).increment()
  }

  /// The counters for connections of one direction, peer side and TLS state.
  public func tcp(direction: String, peer: String, tls: Bool) -> TCP {
    let labels = [("direction", direction), ("peer", peer), ("tls", tls ? "true" : "false")]
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

  init(metrics: ProxyMetrics.TCP) {
    self.metrics = metrics
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
