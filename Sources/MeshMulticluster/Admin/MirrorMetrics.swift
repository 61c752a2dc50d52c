public import Prometheus

/// The mirror controller's metrics in a Prometheus registry, every series labelled `target_cluster_name`:
/// `gateway_alive` (0/1), `gateway_probe_latency_ms` (histogram), `gateway_probes_total{success}`,
/// `mirror_services` (mirrors in place), `mirror_target_reachable` (0/1: the target's API answers) and
/// `mirror_kube_writes_total{verb, success}` (writes to the source cluster).
public final class MirrorMetrics: Sendable {
  /// Probe latency buckets in milliseconds.
  public static let latencyBuckets: [Double] = [
    1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1000, 2000, 3000, 4000, 5000, 10000, 20000, 30000,
  ]

  /// Help text per metric (the registry insists every use of a name repeats it).
  static let help: [String: String] = [
    "gateway_alive": "Whether the target cluster's gateway answers its probes (1) or is considered dead (0).",
    "gateway_probes_total": "Gateway probes sent, by outcome.",
    "gateway_probe_latency_ms": "Round-trip time of successful gateway probes, in milliseconds.",
    "mirror_services": "Mirror services this controller keeps for the target cluster.",
    "mirror_target_reachable": "Whether the target cluster's API server answered the last check (1) or not (0).",
    "mirror_kube_writes_total": "Writes of mirror Services and Endpoints to the source cluster, by verb and outcome.",
  ]

  public let registry: PrometheusCollectorRegistry

  public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
    self.registry = registry
  }

  static func descriptor(_ name: String) -> MetricNameDescriptor {
    MetricNameDescriptor(metricName: name, unitName: "", helpText: help[name] ?? "")
  }

  private func gauge(_ name: String, _ cluster: String) -> Gauge {
    registry.makeGauge(descriptor: Self.descriptor(name), labels: [("target_cluster_name", cluster)])
  }

  func gatewayAlive(_ cluster: String, _ alive: Bool) { gauge("gateway_alive", cluster).set(Double(alive ? 1 : 0)) }

  func probe(_ cluster: String, success: Bool, latencyMilliseconds: Double?) {
    registry.makeCounter(
      descriptor: Self.descriptor("gateway_probes_total"),
      labels: [("target_cluster_name", cluster), ("success", success ? "true" : "false")]
    ).increment()
    if let latencyMilliseconds {
      registry.makeValueHistogram(
        descriptor: Self.descriptor("gateway_probe_latency_ms"), labels: [("target_cluster_name", cluster)],
        buckets: Self.latencyBuckets
      ).record(latencyMilliseconds)
    }
  }

  func mirroredServices(_ cluster: String, _ count: Int) { gauge("mirror_services", cluster).set(Double(count)) }

  func targetReachable(_ cluster: String, _ reachable: Bool) {
    gauge("mirror_target_reachable", cluster).set(Double(reachable ? 1 : 0))
  }

  func kubeWrite(_ cluster: String, verb: String, success: Bool) {
    registry.makeCounter(
      descriptor: Self.descriptor("mirror_kube_writes_total"),
      labels: [("target_cluster_name", cluster), ("verb", verb), ("success", success ? "true" : "false")]
    ).increment()
  }

  /// Removes the gauges of a target cluster whose Link is gone, so nothing reports a stale state for it.
  func forget(_ cluster: String) {
    for name in ["gateway_alive", "mirror_services", "mirror_target_reachable"] {
      registry.unregisterGauge(gauge(name, cluster))
    }
  }

  /// The Prometheus text exposition.
  public func exposition() -> [UInt8] { registry.emitToBuffer() }
}
