public import Foundation
public import Logging
public import ServiceLifecycle
import Synchronization
import X509

/// The source of time for certificate rotation: wall-clock time, since certificates are dated in it.
public protocol RotationClock: Sendable {
  func now() -> Date
  /// Suspends until `deadline`; throws `CancellationError` when the task is cancelled.
  func sleep(until deadline: Date) async throws
}

/// The real clock.
public struct SystemRotationClock: RotationClock {
  public init() {}
  public func now() -> Date { Date() }
  public func sleep(until deadline: Date) async throws {
    let seconds = deadline.timeIntervalSinceNow
    if seconds > 0 { try await Task.sleep(for: .milliseconds(Int64((seconds * 1000).rounded(.up)))) }
    try Task.checkCancellation()
  }
}

/// Holds a workload's current certificate and renews it before it expires: at 70 % of its lifetime, retrying
/// failures with jittered exponential backoff. The old certificate stays current until a new one arrives.
/// Each new certificate is published to every `updates()` sequence.
public final class CertificateRotator: Service, Sendable {
  public struct Configuration: Sendable {
    /// Fraction of the lifetime after which to renew. Default 0.7.
    public var renewalFraction: Double = 0.7
    /// First retry delay after a failed renewal. Default 1 s.
    public var initialBackoff: Duration = .seconds(1)
    /// Largest retry delay. Default 60 s.
    public var maximumBackoff: Duration = .seconds(60)
    /// Each retry delay is shortened by up to this fraction, at random. Default 0.5.
    public var jitter: Double = 0.5

    public init() {}

    public static func defaults(configure: (inout Self) -> Void = { _ in }) -> Self {
      var config = Self()
      configure(&config)
      return config
    }
  }

  public typealias Renew = @Sendable () async throws -> WorkloadCertificate

  private struct State {
    var current: WorkloadCertificate
    var subscribers: [Int: AsyncStream<WorkloadCertificate>.Continuation] = [:]
    var nextSubscriber = 0
    var renewals = 0
    var failures = 0
  }

  private let state: Mutex<State>
  private let configuration: Configuration
  private let clock: any RotationClock
  private let logger: Logger
  private let random: @Sendable () -> Double
  private let renew: Renew

  public init(
    initial: WorkloadCertificate,
    configuration: Configuration = .defaults(),
    clock: any RotationClock = SystemRotationClock(),
    logger: Logger,
    random: @escaping @Sendable () -> Double = { Double.random(in: 0..<1) },
    renew: @escaping Renew
  ) {
    self.state = Mutex(State(current: initial))
    self.configuration = configuration
    self.clock = clock
    self.logger = logger
    self.random = random
    self.renew = renew
  }

  /// The certificate in force now.
  public var current: WorkloadCertificate { state.withLock { $0.current } }
  /// Successful renewals so far.
  public var renewals: Int { state.withLock { $0.renewals } }
  /// Failed renewal attempts so far.
  public var failures: Int { state.withLock { $0.failures } }

  /// Every certificate published after this call, in order. Ends when `run()` returns.
  public func updates() -> AsyncStream<WorkloadCertificate> {
    let (stream, continuation) = AsyncStream.makeStream(of: WorkloadCertificate.self, bufferingPolicy: .bufferingNewest(4))
    let id = state.withLock { state in
      defer { state.nextSubscriber += 1 }
      state.subscribers[state.nextSubscriber] = continuation
      return state.nextSubscriber
    }
    continuation.onTermination = { [weak self] _ in
      _ = self?.state.withLock { $0.subscribers.removeValue(forKey: id) }
    }
    return stream
  }

  /// The delay before retry number `attempt` (0 for the first retry), before jitter.
  public func backoff(attempt: Int) -> Duration {
    let factor = pow(2.0, Double(min(attempt, 30)))
    let seconds = min(configuration.initialBackoff.timeInterval * factor, configuration.maximumBackoff.timeInterval)
    return .milliseconds(Int64(seconds * 1000))
  }

  public func run() async throws {
    defer {
      let subscribers = state.withLock { state in
        defer { state.subscribers = [:] }
        return state.subscribers.values
      }
      for subscriber in subscribers { subscriber.finish() }
    }
    do {
      try await cancelWhenGracefulShutdown {
        try await self.rotateForever()
      }
    } catch is CancellationError {
      return
    }
  }

  private func rotateForever() async throws {
    while true {
      let renewAt = current.renewalTime(fraction: configuration.renewalFraction)
      logger.debug("next certificate renewal", metadata: ["at": "\(renewAt.ISO8601Format())"])
      try await clock.sleep(until: renewAt)
      var attempt = 0
      while true {
        do {
          let fresh = try await renew()
          publish(fresh)
          break
        } catch let error as CancellationError {
          throw error
        } catch {
          let base = backoff(attempt: attempt).timeInterval
          let delay = base * (1 - configuration.jitter * random())
          let expiry = current.notValidAfter
          state.withLock { $0.failures += 1 }
          logger.warning(
            "certificate renewal failed; keeping the current certificate",
            metadata: [
              "error": "\(error)", "attempt": "\(attempt + 1)", "retry_in_s": "\(delay)",
              "current_expires": "\(expiry.ISO8601Format())",
            ])
          attempt += 1
          try await clock.sleep(until: clock.now().addingTimeInterval(delay))
        }
      }
    }
  }

  private func publish(_ fresh: WorkloadCertificate) {
    let subscribers = state.withLock { state in
      state.current = fresh
      state.renewals += 1
      return Array(state.subscribers.values)
    }
    logger.info(
      "certificate renewed",
      metadata: ["serial": "\(fresh.leaf.serialNumber)", "valid_until": "\(fresh.notValidAfter.ISO8601Format())"])
    for subscriber in subscribers { subscriber.yield(fresh) }
  }
}
