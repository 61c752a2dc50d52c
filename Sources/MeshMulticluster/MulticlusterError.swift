/// What went wrong in a Link's mirroring, with the status-condition reason it shows as. Equal by code.
public struct MulticlusterError: Error, Hashable, Sendable, CustomStringConvertible {
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    enum Base: String, Sendable {
      case invalidLink = "InvalidLink"
      case secretNotFound = "SecretNotFound"
      case invalidCredentials = "InvalidCredentials"
      case targetUnreachable = "TargetUnreachable"
      case gatewayIdentityMismatch = "GatewayIdentityMismatch"
      case gatewayProbeFailed = "GatewayProbeFailed"
      case namespaceMissing = "NamespaceMissing"
      case nameConflict = "NameConflict"
      case invalidGatewayAddress = "InvalidGatewayAddress"
      case gatewayNameNotResolved = "GatewayNameNotResolved"
      case noGatewayAddress = "NoGatewayAddress"
    }
    let base: Base
    /// The Link spec is not usable (bad address, identity, duration, name).
    public static let invalidLink = Code(base: .invalidLink)
    /// The credentials Secret does not exist.
    public static let secretNotFound = Code(base: .secretNotFound)
    /// The Secret exists but holds no usable kubeconfig.
    public static let invalidCredentials = Code(base: .invalidCredentials)
    /// The target's API server did not answer.
    public static let targetUnreachable = Code(base: .targetUnreachable)
    /// The gateway presented another identity than the Link names.
    public static let gatewayIdentityMismatch = Code(base: .gatewayIdentityMismatch)
    /// The gateway probe failed otherwise (refused, timeout, TLS, HTTP status).
    public static let gatewayProbeFailed = Code(base: .gatewayProbeFailed)
    /// A remote service's namespace does not exist in this cluster.
    public static let namespaceMissing = Code(base: .namespaceMissing)
    /// A local object that is not this Link's mirror has the mirror's name.
    public static let nameConflict = Code(base: .nameConflict)
    /// A gateway address is neither an IP address nor a DNS name (it is ignored; the others are used).
    public static let invalidGatewayAddress = Code(base: .invalidGatewayAddress)
    /// A gateway name does not resolve (its last known addresses are kept).
    public static let gatewayNameNotResolved = Code(base: .gatewayNameNotResolved)
    /// No gateway address is usable: no IP, and no name has ever resolved.
    public static let noGatewayAddress = Code(base: .noGatewayAddress)
    /// The status-condition reason (`SecretNotFound`, ...).
    public var reason: String { base.rawValue }
    public var description: String { base.rawValue }
  }

  public let code: Code
  public let message: String
  public let cause: (any Error & Sendable)?

  public init(code: Code, message: String, cause: (any Error & Sendable)? = nil) {
    self.code = code
    self.message = message
    self.cause = cause
  }

  public static func invalidLink(_ message: String) -> Self { Self(code: .invalidLink, message: message) }
  public static func secretNotFound(_ message: String) -> Self { Self(code: .secretNotFound, message: message) }
  public static func invalidCredentials(_ message: String, cause: (any Error & Sendable)? = nil) -> Self {
    Self(code: .invalidCredentials, message: message, cause: cause)
  }
  public static func targetUnreachable(_ message: String, cause: (any Error & Sendable)? = nil) -> Self {
    Self(code: .targetUnreachable, message: message, cause: cause)
  }
  public static func gatewayIdentityMismatch(_ message: String) -> Self {
    Self(code: .gatewayIdentityMismatch, message: message)
  }
  public static func gatewayProbeFailed(_ message: String, cause: (any Error & Sendable)? = nil) -> Self {
    Self(code: .gatewayProbeFailed, message: message, cause: cause)
  }
  public static func namespaceMissing(_ message: String) -> Self { Self(code: .namespaceMissing, message: message) }
  public static func nameConflict(_ message: String) -> Self { Self(code: .nameConflict, message: message) }

  public static func invalidGatewayAddress(_ message: String) -> Self { Self(code: .invalidGatewayAddress, message: message) }

  public var description: String { "\(code.reason): \(message)" }
  public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code }
  public func hash(into hasher: inout Hasher) { hasher.combine(code) }
}
