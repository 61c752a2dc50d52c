/// The error every SwiftMesh layer reports: a code to branch on, a human message that names the bad
/// value, and the underlying cause when there is one. Two errors are equal when their codes are.
public struct MeshError: Error, Hashable, Sendable, CustomStringConvertible {
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    private enum Wrapped: Hashable, Sendable {
      case invalidArgument, invalidIdentity, invalidAuthority, unauthenticated, permissionDenied
      case notFound, unavailable, expired, internalError, invalidConfiguration
    }
    private let wrapped: Wrapped
    private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

    public static let invalidArgument = Code(.invalidArgument)
    public static let invalidIdentity = Code(.invalidIdentity)
    public static let invalidAuthority = Code(.invalidAuthority)
    public static let unauthenticated = Code(.unauthenticated)
    public static let permissionDenied = Code(.permissionDenied)
    public static let notFound = Code(.notFound)
    public static let unavailable = Code(.unavailable)
    public static let expired = Code(.expired)
    public static let internalError = Code(.internalError)
    public static let invalidConfiguration = Code(.invalidConfiguration)

    public var description: String {
      switch wrapped {
      case .invalidArgument: "invalid argument"
      case .invalidIdentity: "invalid identity"
      case .invalidAuthority: "invalid authority"
      case .unauthenticated: "unauthenticated"
      case .permissionDenied: "permission denied"
      case .notFound: "not found"
      case .unavailable: "unavailable"
      case .expired: "expired"
      case .internalError: "internal error"
      case .invalidConfiguration: "invalid configuration"
      }
    }
  }

  public var code: Code
  public var message: String
  public var cause: (any Error & Sendable)?

  public init(code: Code, message: String, cause: (any Error & Sendable)? = nil) {
    self.code = code
    self.message = message
    self.cause = cause
  }

  public static func invalidArgument(_ message: String, cause: (any Error & Sendable)? = nil) -> Self {
    Self(code: .invalidArgument, message: message, cause: cause)
  }
  public static func invalidIdentity(_ message: String) -> Self { Self(code: .invalidIdentity, message: message) }
  public static func invalidAuthority(_ message: String) -> Self { Self(code: .invalidAuthority, message: message) }
  public static func unauthenticated(_ message: String) -> Self { Self(code: .unauthenticated, message: message) }
  public static func permissionDenied(_ message: String) -> Self { Self(code: .permissionDenied, message: message) }
  public static func notFound(_ message: String) -> Self { Self(code: .notFound, message: message) }
  public static func unavailable(_ message: String, cause: (any Error & Sendable)? = nil) -> Self {
    Self(code: .unavailable, message: message, cause: cause)
  }
  public static func expired(_ message: String) -> Self { Self(code: .expired, message: message) }
  public static func internalError(_ message: String, cause: (any Error & Sendable)? = nil) -> Self {
    Self(code: .internalError, message: message, cause: cause)
  }
  public static func invalidConfiguration(_ message: String, cause: (any Error & Sendable)? = nil) -> Self {
    Self(code: .invalidConfiguration, message: message, cause: cause)
  }

  public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code }
  public func hash(into hasher: inout Hasher) { hasher.combine(code) }

  public var description: String {
    if let cause { return "\(code): \(message) (\(cause))" }
    return "\(code): \(message)"
  }
}
