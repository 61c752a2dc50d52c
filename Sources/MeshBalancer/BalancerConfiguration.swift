/// Configuration of a ``P2CBalancer``. Defaults follow Linkerd's proxy.
public struct BalancerConfiguration: Sendable {
  /// The RTT assumed for an endpoint before any response has been observed. Default: 30 ms.
  ///
  /// Like every estimate it decays with ``decay`` while unobserved, so a new endpoint soon looks
  /// attractive enough to receive its first requests.
  public var defaultRTT: Duration

  /// The Peak-EWMA decay window (the time constant of the exponential decay). Default: 10 s.
  ///
  /// After `decay` without observations an estimate has fallen to 1/e (37 %) of its value.
  /// Must be positive.
  public var decay: Duration

  /// Ejection of endpoints that fail consecutively. Default: enabled, see ``FailureAccrual``.
  public var failureAccrual: FailureAccrual

  /// The seed of the balancer's pseudo-random generator, or `nil` (the default) to seed it from
  /// the system's random source. Tests and simulations set it to make runs reproducible.
  public var seed: UInt64?

  /// Creates a configuration with the documented defaults.
  public init() {
    self.defaultRTT = .milliseconds(30)
    self.decay = .seconds(10)
    self.failureAccrual = FailureAccrual()
    self.seed = nil
  }

  /// The documented defaults.
  public static var defaults: Self { Self() }

  /// The documented defaults, then changed by `configure`.
  public static func defaults(configure: (inout Self) -> Void) -> Self {
    var configuration = Self()
    configure(&configuration)
    return configuration
  }
}

extension BalancerConfiguration {
  /// Consecutive-failure accrual: after ``consecutiveFailures`` failed requests in a row an
  /// endpoint takes no new requests for a back-off period; then exactly one probe request is
  /// let through, and its success makes the endpoint available again (its failure ejects it
  /// again with the next, longer back-off).
  public struct FailureAccrual: Sendable {
    /// Whether failure accrual ejects endpoints at all. Default: `true`.
    public var isEnabled: Bool

    /// The number of consecutive failures that ejects an endpoint. Default: 7 (Linkerd).
    /// Values below 1 are treated as 1.
    public var consecutiveFailures: Int

    /// How long an ejected endpoint waits before its probe. Default: 1 s doubling to 60 s,
    /// jitter 0.5.
    public var backoff: Backoff

    /// Creates the documented defaults.
    public init() {
      self.isEnabled = true
      self.consecutiveFailures = 7
      self.backoff = Backoff()
    }

    /// The documented defaults.
    public static var defaults: Self { Self() }

    /// The documented defaults, then changed by `configure`.
    public static func defaults(configure: (inout Self) -> Void) -> Self {
      var configuration = Self()
      configure(&configuration)
      return configuration
    }
  }

  /// Exponential back-off with jitter.
  ///
  /// The n-th consecutive ejection (n = 0, 1, ...) waits `base = min(minimum * 2^n, maximum)`
  /// plus a uniformly random `0 ..< jitter * base` on top (so with jitter the wait can exceed
  /// `maximum` by up to `jitter * maximum`, which keeps endpoints ejected together from being
  /// probed in lock-step).
  public struct Backoff: Sendable {
    /// The first back-off. Default: 1 s.
    public var minimum: Duration
    /// The largest back-off before jitter. Default: 60 s.
    public var maximum: Duration
    /// The fraction of the back-off added at random, `0...1` (clamped). Default: 0.5.
    public var jitter: Double

    /// Creates the documented defaults.
    public init() {
      self.minimum = .seconds(1)
      self.maximum = .seconds(60)
      self.jitter = 0.5
    }

    /// The documented defaults.
    public static var defaults: Self { Self() }

    /// The documented defaults, then changed by `configure`.
    public static func defaults(configure: (inout Self) -> Void) -> Self {
      var configuration = Self()
      configure(&configuration)
      return configuration
    }
  }
}

/// A back-off policy in nanoseconds, ready for arithmetic.
struct ExponentialBackoff: Hashable, Sendable {
  var minimum: Double
  var maximum: Double
  var jitter: Double

  init(_ backoff: BalancerConfiguration.Backoff) {
    self.minimum = Double(backoff.minimum.clampedNanoseconds)
    self.maximum = max(self.minimum, Double(backoff.maximum.clampedNanoseconds))
    self.jitter = backoff.jitter.isNaN ? 0 : min(max(backoff.jitter, 0), 1)
  }

  init(minimum: Double, maximum: Double, jitter: Double) {
    self.minimum = minimum
    self.maximum = maximum
    self.jitter = jitter
  }

  /// The delay of back-off number `attempt` (0-based) in nanoseconds, given `unit`, a random
  /// value in `0..<1` that scales the jitter.
  func delay(attempt: Int, unit: Double) -> UInt64 {
    let exponent = min(max(attempt, 0), 62)
    let base = min(self.minimum * Double(sign: .plus, exponent: exponent, significand: 1), self.maximum)
    let delay = base + base * self.jitter * unit
    return delay >= 0x1.0p63 ? UInt64(1) << 63 : UInt64(delay)
  }
}
