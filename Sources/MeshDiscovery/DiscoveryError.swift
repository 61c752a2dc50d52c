/// What goes wrong in discovery: a bad destination path, a broken profile, an unusable answer.
/// Two errors are equal when their codes are; the message names the bad value.
public struct DiscoveryError: Error, Hashable, Sendable, CustomStringConvertible {
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    private enum Wrapped: Hashable, Sendable { case invalidPath, invalidProfile, invalidResponse, unavailable }
    private let wrapped: Wrapped
    private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

    /// The destination path is not `host:port`.
    public static let invalidPath = Code(.invalidPath)
    /// A ServiceProfile or TrafficSplit holds something unusable (a bad regex, a bad duration).
    public static let invalidProfile = Code(.invalidProfile)
    /// The destination service answered with something the resolver cannot use.
    public static let invalidResponse = Code(.invalidResponse)
    /// The destination service cannot be reached.
    public static let unavailable = Code(.unavailable)

    public var description: String {
      switch wrapped {
      case .invalidPath: "invalid destination path"
      case .invalidProfile: "invalid profile"
      case .invalidResponse: "invalid response"
      case .unavailable: "unavailable"
      }
    }
  }

  public let code: Code
  public let message: String
  public let cause: (any Error & Sendable)?

  private init(code: Code, message: String, cause: (any Error & Sendable)? = nil) {
    self.code = code
    self.message = message
    self.cause = cause
  }

  public static func invalidPath(_ message: String, cause: (any Error & Sendable)? = nil) -> Self {
    Self(code: .invalidPath, message: message, cause: cause)
  }
  public static func invalidProfile(_ message: String) -> Self { Self(code: .invalidProfile, message: message) }
  public static func invalidResponse(_ message: String) -> Self { Self(code: .invalidResponse, message: message) }
  public static func unavailable(_ message: String, cause: (any Error & Sendable)? = nil) -> Self {
    Self(code: .unavailable, message: message, cause: cause)
  }

  public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code }
  public func hash(into hasher: inout Hasher) { hasher.combine(code) }

  public var description: String {
    if let cause { return "\(code): \(message) (\(cause))" }
    return "\(code): \(message)"
  }
}
