public import MeshIdentity

/// Why a mesh TLS connection was refused, in codes the proxy maps to metric labels and HTTP errors: a code
/// to branch on, a message naming the bad value, and the underlying cause when there is one. Equal by code.
public struct MeshTLSError: Error, Hashable, Sendable, CustomStringConvertible {
  /// What kind of refusal; `rawValue` is its metric label (`identity_mismatch`, ...).
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    private enum Wrapped: String, Hashable, Sendable, CaseIterable {
      case untrustedChain = "untrusted_chain"
      case identityMismatch = "identity_mismatch"
      case expired
      case noClientCertificate = "no_client_certificate"
      case noIdentity = "no_identity"
      case notTLS = "not_tls"
      case handshakeFailed = "handshake_failed"
    }
    private let wrapped: Wrapped
    private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

    /// The peer's chain does not lead to a configured trust anchor.
    public static let untrustedChain = Code(.untrustedChain)
    /// The peer is not the identity the caller expected.
    public static let identityMismatch = Code(.identityMismatch)
    /// The peer's certificate (or one in its chain) is expired or not yet valid.
    public static let expired = Code(.expired)
    /// The client presented no certificate where one is required.
    public static let noClientCertificate = Code(.noClientCertificate)
    /// The peer's certificate carries no mesh identity.
    public static let noIdentity = Code(.noIdentity)
    /// The peer did not speak TLS at all (for example a plaintext HTTP request).
    public static let notTLS = Code(.notTLS)
    /// Any other handshake failure: protocol, version, cipher, closed mid-handshake.
    public static let handshakeFailed = Code(.handshakeFailed)

    /// Every code.
    public static var allCases: [Code] { Wrapped.allCases.map(Code.init) }
    /// The metric label, e.g. `identity_mismatch`.
    public var rawValue: String { wrapped.rawValue }
    public var description: String { rawValue }
  }

  /// The earlier name of ``Code``.
  public typealias Kind = Code

  public var code: Code
  public var message: String
  public var cause: (any Error & Sendable)?

  public init(code: Code, message: String, cause: (any Error & Sendable)? = nil) {
    self.code = code
    self.message = message
    self.cause = cause
  }

  public init(_ code: Code, _ message: String) {
    self.init(code: code, message: message)
  }

  /// The earlier name of ``code``.
  public var kind: Code {
    get { code }
    set { code = newValue }
  }

  /// The label value for metrics, e.g. `identity_mismatch`.
  public var metricLabel: String { code.rawValue }

  public var description: String {
    "\(code.rawValue): \(message)" + (cause.map { " (cause: \($0))" } ?? "")
  }

  public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code }
  public func hash(into hasher: inout Hasher) { hasher.combine(code) }

  init(_ failure: IdentityVerifier.Failure) {
    let code: Code =
      switch failure.code {
      case .noCertificate: .noClientCertificate
      case .untrusted: .untrustedChain
      case .expired: .expired
      case .identityMismatch: .identityMismatch
      default: .noIdentity
      }
    self.init(code: code, message: failure.message)
  }
}
