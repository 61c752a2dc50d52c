/// Why a ``P2CBalancer`` could not pick an endpoint. The proxy answers these with a fast 503.
///
/// Equality is by ``code``.
public struct BalancerError: Error, Hashable, Sendable, CustomStringConvertible {
  /// The kind of failure.
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    private enum Backing: Hashable, Sendable {
      case noEndpoints
      case noAvailableEndpoints
    }

    private let backing: Backing

    private init(_ backing: Backing) {
      self.backing = backing
    }

    /// The endpoint set is empty (discovery returned nothing, or everything was removed).
    public static let noEndpoints = Self(.noEndpoints)

    /// There are endpoints, but all of them are ejected by failure accrual (backing off, or
    /// with their single probe request in flight).
    public static let noAvailableEndpoints = Self(.noAvailableEndpoints)

    public var description: String {
      switch self.backing {
      case .noEndpoints: "noEndpoints"
      case .noAvailableEndpoints: "noAvailableEndpoints"
      }
    }
  }

  /// The kind of failure.
  public let code: Code

  /// How many endpoints the balancer had.
  public let endpoints: Int

  /// How many of them were backing off after failure accrual ejected them.
  public let backingOff: Int

  /// How many of them had their probe request in flight.
  public let probing: Int

  private init(code: Code, endpoints: Int, backingOff: Int, probing: Int) {
    self.code = code
    self.endpoints = endpoints
    self.backingOff = backingOff
    self.probing = probing
  }

  /// The endpoint set is empty.
  public static func noEndpoints() -> Self {
    Self(code: .noEndpoints, endpoints: 0, backingOff: 0, probing: 0)
  }

  /// All `endpoints` are ejected: `backingOff` wait for their back-off, `probing` have their
  /// probe in flight.
  public static func noAvailableEndpoints(endpoints: Int, backingOff: Int, probing: Int) -> Self {
    Self(code: .noAvailableEndpoints, endpoints: endpoints, backingOff: backingOff, probing: probing)
  }

  /// A human-readable explanation.
  public var message: String {
    if self.code == .noEndpoints {
      return "no endpoints: the balancer's endpoint set is empty"
    }
    return "no available endpoints: all \(self.endpoints) endpoints are ejected by failure accrual "
      + "(\(self.backingOff) backing off, \(self.probing) probing)"
  }

  public var description: String { self.message }

  public static func == (lhs: Self, rhs: Self) -> Bool {
    lhs.code == rhs.code
  }

  public func hash(into hasher: inout Hasher) {
    hasher.combine(self.code)
  }
}
