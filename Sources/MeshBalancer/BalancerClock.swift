import Synchronization

/// A monotonic source of time for the balancer, in nanoseconds since an arbitrary origin.
///
/// Production code uses ``SystemBalancerClock``; tests and the simulation use ``ManualBalancerClock``
/// so that latency, decay and back-off arithmetic is exact and no test sleeps.
public protocol BalancerClock: Sendable {
  /// The current time in nanoseconds since this clock's origin. Never decreases.
  var nanoseconds: UInt64 { get }
}

/// The system's monotonic clock: `clock_gettime(CLOCK_MONOTONIC)` on Linux, `ContinuousClock`
/// (measured from the moment the clock was created) elsewhere.
public struct SystemBalancerClock: BalancerClock {
  private let origin: ContinuousClock.Instant

  /// Creates a system clock.
  public init() {
    self.origin = ContinuousClock.now
  }

  public var nanoseconds: UInt64 {
    if let nanoseconds = monotonicNanoseconds() {
      return nanoseconds
    }
    return self.origin.duration(to: ContinuousClock.now).clampedNanoseconds
  }
}

/// A clock that moves only when told to: for tests and discrete-event simulations.
public final class ManualBalancerClock: BalancerClock {
  private let now: Atomic<UInt64>

  /// Creates a clock reading `nanoseconds` (default 0).
  public init(nanoseconds: UInt64 = 0) {
    self.now = Atomic(nanoseconds)
  }

  public var nanoseconds: UInt64 {
    self.now.load(ordering: .acquiring)
  }

  /// Moves the clock forward by `duration` (negative durations are ignored).
  public func advance(by duration: Duration) {
    self.now.add(duration.clampedNanoseconds, ordering: .acquiringAndReleasing)
  }

  /// Sets the clock to `nanoseconds`, if that is not earlier than the current reading.
  public func set(nanoseconds: UInt64) {
    _ = self.now.max(nanoseconds, ordering: .acquiringAndReleasing)
  }
}

extension Duration {
  /// This duration in whole nanoseconds, 0 if negative, `UInt64.max` if too large.
  var clampedNanoseconds: UInt64 {
    let (seconds, attoseconds) = self.components
    if seconds < 0 || (seconds == 0 && attoseconds < 0) { return 0 }
    let (secondNanos, overflow) = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
    if overflow { return .max }
    let (total, overflow2) = secondNanos.addingReportingOverflow(UInt64(attoseconds / 1_000_000_000))
    return overflow2 ? .max : total
  }

  /// A duration of `nanoseconds` (a `Double`, rounded to whole nanoseconds).
  static func nanoseconds(_ nanoseconds: Double) -> Duration {
    guard nanoseconds.isFinite, nanoseconds > 0 else { return .zero }
    return .nanoseconds(Int64(min(nanoseconds.rounded(), Double(Int64.max / 2))))
  }
}
