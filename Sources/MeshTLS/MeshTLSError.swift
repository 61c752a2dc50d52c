public import MeshIdentity

/// Why a mesh TLS connection was refused, in kinds the proxy maps to metric labels and HTTP errors.
/// Equal by kind.
public struct MeshTLSError: Error, Hashable, Sendable, CustomStringConvertible {
  public enum Kind: String, Sendable, Hashable, CaseIterable {
    /// The peer's chain does not lead to a configured trust anchor.
    case untrustedChain = "untrusted_chain"
    /// The peer is not the identity the caller expected.
    case identityMismatch = "identity_mismatch"
    /// The peer's certificate (or one in its chain) is expired or not yet valid.
    case expired
    /// The client presented no certificate where one is required.
    case noClientCertificate = "no_client_certificate"
    /// The peer's certificate carries no mesh identity.
    case noIdentity = "no_identity"
    /// The peer did not speak TLS at all (for example a plaintext HTTP request).
    case notTLS = "not_tls"
    /// Any other handshake failure: protocol, version, cipher, closed mid-handshake.
    case handshakeFailed = "handshake_failed"
  }

  public var kind: Kind
  public var message: String

  public init(_ kind: Kind, _ message: String) {
    self.kind = kind
    self.message = message
  }

  /// The label value for metrics, e.g. `identity_mismatch`.
  public var metricLabel: String { kind.rawValue }

  public var description: String { "\(kind.rawValue): \(message)" }

  public static func == (lhs: Self, rhs: Self) -> Bool { lhs.kind == rhs.kind }
  public func hash(into hasher: inout Hasher) { hasher.combine(kind) }

  init(_ failure: IdentityVerifier.Failure) {
    let kind: Kind =
      switch failure.kind {
      case .noCertificate: .noClientCertificate
      case .untrusted: .untrustedChain
      case .expired: .expired
      case .identityMismatch: .identityMismatch
      case .noIdentity: .noIdentity
      }
    self.init(kind, failure.message)
  }
}
