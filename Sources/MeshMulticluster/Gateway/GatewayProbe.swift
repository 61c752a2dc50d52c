import Foundation
public import Logging
public import MeshCore
public import MeshTLS
public import ServiceLifecycle
import Synchronization

/// Probes a target cluster's gateway: `GET <path>` on the probe port every period (with up to 10 % jitter
/// either way), over mutual TLS with the gateway's identity checked. Dead after `failureThreshold`
/// consecutive failures, alive again after one success. Reports `gateway_alive`,
/// `gateway_probe_latency_ms` and `gateway_probes_total{success}` labelled `target_cluster_name`.
///
/// A round probes every gateway address at once; it succeeds when any answers 2xx, and the snapshot says how
/// many did. A round in which some address failed is reported to `onAddressFailure` (the mirror then resolves
/// the gateway's names again at once: a load balancer's IPs may have moved).
public final class GatewayProbe: ServiceLifecycle.Service, Sendable {
  /// What to probe.
  public struct Target: Sendable, Hashable {
    public var addresses: [String]
    public var identity: IdentityName
    public var settings: ProbeSettings

    public init(addresses: [String], identity: IdentityName, settings: ProbeSettings) {
      self.addresses = addresses
      self.identity = identity
      self.settings = settings
    }
  }

  /// The probe's state as the controller and the CLI see it.
  public struct Snapshot: Sendable, Hashable {
    /// nil until the first probe ends.
    public var alive: Bool?
    public var consecutiveFailures = 0
    /// Why the last probe failed (nil after a success).
    public var lastError: MulticlusterError?
    public var probes = 0
    public var successes = 0
    /// Latency percentiles of recent successful probes, in milliseconds.
    public var latencyP50: Double?
    public var latencyP95: Double?
    public var latencyP99: Double?
    /// The addresses the last round probed, and how many of them answered.
    public var addresses: [String] = []
    public var aliveAddresses: Int?

    public init() {}
  }

  /// How many recent latencies the percentiles are computed from.
  static let latencyWindow = 128

  struct State {
    var target: Target
    var snapshot = Snapshot()
    var latencies: [Double] = []
    var nextLatency = 0
  }

  public let clusterName: String
  let tls: MeshTLS
  let metrics: MirrorMetrics
  let logger: Logger
  let onChange: @Sendable (Snapshot) -> Void
  let onAddressFailure: @Sendable () -> Void
  let state: Mutex<State>

  /// `onChange` hears every change of liveness, of the failure reason or of the number of live addresses;
  /// `onAddressFailure` every round in which an address failed.
  public init(
    clusterName: String, target: Target, tls: MeshTLS, metrics: MirrorMetrics, logger: Logger,
    onAddressFailure: @escaping @Sendable () -> Void = {},
    onChange: @escaping @Sendable (Snapshot) -> Void = { _ in }
  ) {
    self.onAddressFailure = onAddressFailure
    self.clusterName = clusterName
    self.tls = tls
    self.metrics = metrics
    self.logger = logger
    self.onChange = onChange
    self.state = Mutex(State(target: target))
  }

  public var snapshot: Snapshot { state.withLock { $0.snapshot } }
  public var target: Target { state.withLock { $0.target } }

  /// Probes another target from the next round on; a different address or identity starts counting afresh.
  public func retarget(_ target: Target) {
    state.withLock { s in
      guard s.target != target else { return }
      if s.target.addresses != target.addresses || s.target.identity != target.identity {
        s.snapshot.consecutiveFailures = 0
      }
      s.target = target
    }
  }

  public func run() async throws {
    do {
      try await cancelWhenGracefulShutdown {
        while !Task.isCancelled {
          let target = self.target
          let results = await Self.round(target, tls: self.tls)
          self.record(Self.outcome(results), target: target, results: results)
          if results.contains(where: { if case .failure = $0.1 { true } else { false } }) { self.onAddressFailure() }
          let period = target.settings.period
          try await Task.sleep(for: period * Double.random(in: 0.9...1.1))
        }
      }
    } catch is CancellationError {
      return
    }
  }

  /// One round: every address at once; the results in the order of the addresses.
  static func round(_ target: Target, tls: MeshTLS) async -> [(String, Result<Duration, MulticlusterError>)] {
    await withTaskGroup(of: (Int, Result<Duration, MulticlusterError>).self) { group in
      for (index, address) in target.addresses.enumerated() {
        group.addTask {
          do {
            let latency = try await probe(
              host: address, port: target.settings.port, path: target.settings.path, identity: target.identity,
              tls: tls, timeout: target.settings.timeout)
            return (index, .success(latency))
          } catch let error as MulticlusterError {
            return (index, .failure(error))
          } catch {
            return (index, .failure(.gatewayProbeFailed("\(address): \(error)", cause: error)))
          }
        }
      }
      var results = [Result<Duration, MulticlusterError>?](repeating: nil, count: target.addresses.count)
      for await (index, result) in group { results[index] = result }
      return zip(target.addresses, results).map { ($0, $1 ?? .failure(.gatewayProbeFailed("not probed"))) }
    }
  }

  /// A round's outcome: the fastest success, else the first failure (the gateway identity mismatch first).
  static func outcome(_ results: [(String, Result<Duration, MulticlusterError>)]) -> Result<Duration, MulticlusterError> {
    var fastest: Duration?
    var failures: [MulticlusterError] = []
    for (_, result) in results {
      switch result {
      case .success(let latency): fastest = min(fastest ?? latency, latency)
      case .failure(let error): failures.append(error)
      }
    }
    if let fastest { return .success(fastest) }
    if let mismatch = failures.first(where: { $0.code == .gatewayIdentityMismatch }) { return .failure(mismatch) }
    return .failure(failures.first ?? .gatewayProbeFailed("no gateway address to probe"))
  }

  func record(
    _ outcome: Result<Duration, MulticlusterError>, target: Target,
    results: [(String, Result<Duration, MulticlusterError>)]? = nil
  ) {
    let (before, after) = state.withLock { s -> (Snapshot, Snapshot) in
      let before = s.snapshot
      s.snapshot.probes += 1
      if let results {
        s.snapshot.addresses = results.map(\.0)
        s.snapshot.aliveAddresses = results.filter { if case .success = $0.1 { true } else { false } }.count
      }
      switch outcome {
      case .success(let latency):
        let ms = Double(latency.components.seconds) * 1000 + Double(latency.components.attoseconds) / 1e15
        s.snapshot.successes += 1
        s.snapshot.consecutiveFailures = 0
        s.snapshot.lastError = nil
        s.snapshot.alive = true
        if s.latencies.count < Self.latencyWindow {
          s.latencies.append(ms)
        } else {
          s.latencies[s.nextLatency] = ms
        }
        s.nextLatency = (s.nextLatency + 1) % Self.latencyWindow
        let sorted = s.latencies.sorted()
        s.snapshot.latencyP50 = Self.percentile(sorted, 0.50)
        s.snapshot.latencyP95 = Self.percentile(sorted, 0.95)
        s.snapshot.latencyP99 = Self.percentile(sorted, 0.99)
      case .failure(let error):
        s.snapshot.consecutiveFailures += 1
        s.snapshot.lastError = error
        if s.snapshot.consecutiveFailures >= target.settings.failureThreshold {
          s.snapshot.alive = false
        }
      }
      return (before, s.snapshot)
    }
    switch outcome {
    case .success(let latency):
      let ms = Double(latency.components.seconds) * 1000 + Double(latency.components.attoseconds) / 1e15
      metrics.probe(clusterName, success: true, latencyMilliseconds: ms)
    case .failure(let error):
      metrics.probe(clusterName, success: false, latencyMilliseconds: nil)
      logger.debug("gateway probe failed", metadata: ["target_cluster_name": "\(clusterName)", "error": "\(error)"])
    }
    if let alive = after.alive { metrics.gatewayAlive(clusterName, alive) }
    if before.alive != after.alive {
      if after.alive == true {
        logger.notice("gateway is alive", metadata: ["target_cluster_name": "\(clusterName)"])
      } else if after.alive == false {
        logger.warning(
          "gateway is dead after \(after.consecutiveFailures) consecutive failed probes",
          metadata: ["target_cluster_name": "\(clusterName)", "error": "\(after.lastError.map { "\($0)" } ?? "-")"])
      }
    }
    if before.lastError?.code != after.lastError?.code, let error = after.lastError,
      error.code == .gatewayIdentityMismatch
    {
      logger.error("gateway identity mismatch", metadata: ["target_cluster_name": "\(clusterName)", "error": "\(error)"])
    }
    if before.alive != after.alive || before.lastError?.code != after.lastError?.code
      || before.lastError?.message != after.lastError?.message || before.aliveAddresses != after.aliveAddresses
      || before.addresses != after.addresses
    {
      onChange(after)
    }
  }

  /// Nearest-rank percentile of sorted values.
  static func percentile(_ sorted: [Double], _ p: Double) -> Double? {
    guard !sorted.isEmpty else { return nil }
    let rank = Int((p * Double(sorted.count)).rounded(.up))
    return sorted[min(max(rank - 1, 0), sorted.count - 1)]
  }
}
