public import Foundation
public import MeshCore
public import X509

/// Verifies a peer's certificate chain against the current trust bundle and checks the identity in its
/// leaf: the check every mesh TLS handshake makes, on both sides.
public struct IdentityVerifier: Sendable {
  /// Why a peer was refused: a code, and a message naming the bad value. Equal by code.
  public struct Failure: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of refusal; `rawValue` is its label (`identity_mismatch`, ...).
    public struct Code: Hashable, Sendable, CustomStringConvertible {
      private enum Wrapped: String, Hashable, Sendable {
        case noCertificate = "no_certificate"
        case untrusted = "untrusted"
        case expired = "expired"
        case identityMismatch = "identity_mismatch"
        case noIdentity = "no_identity"
      }
      private let wrapped: Wrapped
      private init(_ wrapped: Wrapped) { self.wrapped = wrapped }

      /// The peer presented no certificate.
      public static let noCertificate = Code(.noCertificate)
      /// The chain does not lead to a trust anchor.
      public static let untrusted = Code(.untrusted)
      /// A certificate of the chain is expired or not yet valid.
      public static let expired = Code(.expired)
      /// The leaf names another identity than the one expected.
      public static let identityMismatch = Code(.identityMismatch)
      /// The leaf carries no mesh identity.
      public static let noIdentity = Code(.noIdentity)

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
    public init(_ code: Code, _ message: String) { self.init(code: code, message: message) }

    /// The earlier name of ``code``.
    public var kind: Code {
      get { code }
      set { code = newValue }
    }

    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code }
    public func hash(into hasher: inout Hasher) { hasher.combine(code) }
    public var description: String { message }
  }

  public var trustAnchors: [Certificate]

  public init(trustAnchors: [Certificate]) {
    self.trustAnchors = trustAnchors
  }

  /// Verifies `chain` (leaf first) at `now`. With `expected`, the leaf's DNS SAN must name it; otherwise the
  /// leaf must carry some mesh identity, which is returned.
  public func verify(
    chain: [Certificate],
    expected: IdentityName?,
    now: Date = Date()
  ) async -> Result<IdentityName, Failure> {
    guard let leaf = chain.first else {
      return .failure(Failure(.noCertificate, "peer presented no certificate"))
    }
    if leaf.notValidAfter <= now {
      return .failure(
        Failure(.expired, "certificate of '\(leaf.subject)' expired at \(leaf.notValidAfter.ISO8601Format())"))
    }
    if leaf.notValidBefore > now {
      return .failure(
        Failure(.expired, "certificate of '\(leaf.subject)' is not valid before \(leaf.notValidBefore.ISO8601Format())"))
    }
    var verifier = Verifier(rootCertificates: CertificateStore(trustAnchors)) {
      RFC5280Policy(validationTime: now)
    }
    let result = await verifier.validate(leafCertificate: leaf, intermediates: CertificateStore(chain.dropFirst()))
    if case .couldNotValidate(let failures) = result {
      let reasons = failures.map { "\($0.policyFailureReason)" }.joined(separator: "; ")
      let anyExpired = chain.contains { $0.notValidAfter <= now }
      return .failure(
        Failure(
          anyExpired ? .expired : .untrusted,
          "certificate of '\(leaf.subject)' does not chain to the trust anchor\(reasons.isEmpty ? "" : ": \(reasons)")"))
    }
    let presented = leaf.dnsNames
    if let expected {
      if presented.contains(expected.description) { return .success(expected) }
      return .failure(
        Failure(
          .identityMismatch,
          "identity mismatch: expected \(expected), presented \(presented.isEmpty ? "no DNS name" : presented.joined(separator: ", "))"
        ))
    }
    guard let identity = leaf.meshIdentities.first else {
      return .failure(
        Failure(.noIdentity, "certificate of '\(leaf.subject)' carries no mesh identity (DNS SANs: \(presented))"))
    }
    return .success(identity)
  }
}
