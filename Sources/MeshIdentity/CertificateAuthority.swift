public import Crypto
import _CryptoExtras
import SwiftASN1
public import Foundation
public import MeshCore
public import X509

/// A CA that signs workload certificates: the issuer certificate and key of one cluster, and the chain from
/// it up to (not including) the trust anchor.
public struct CertificateAuthority: Sendable {
  /// How certificates are dated.
  public struct Configuration: Sendable {
    /// Lifetime of a workload certificate. Default 24 h.
    public var workloadLifetime: Duration
    /// How far a workload certificate's start is backdated, for clock skew. Default 20 s.
    public var clockSkewAllowance: Duration

    public init(workloadLifetime: Duration = .seconds(24 * 3600), clockSkewAllowance: Duration = .seconds(20)) {
      self.workloadLifetime = workloadLifetime
      self.clockSkewAllowance = clockSkewAllowance
    }

    public static func defaults(configure: (inout Self) -> Void = { _ in }) -> Self {
      var config = Self()
      configure(&config)
      return config
    }
  }

  public let issuerCertificate: Certificate
  public let issuerKey: P256.Signing.PrivateKey
  /// Certificates between the issuer and the anchor, nearest first (usually empty).
  public let intermediates: [Certificate]
  public var configuration: Configuration

  public init(
    issuerCertificate: Certificate,
    issuerKey: P256.Signing.PrivateKey,
    intermediates: [Certificate] = [],
    configuration: Configuration = .defaults()
  ) throws(MeshError) {
    guard issuerCertificate.publicKey == Certificate.PublicKey(issuerKey.publicKey) else {
      throw .invalidConfiguration("issuer key does not match the issuer certificate '\(issuerCertificate.subject)'")
    }
    self.issuerCertificate = issuerCertificate
    self.issuerKey = issuerKey
    self.intermediates = intermediates
    self.configuration = configuration
  }

  /// The chain a workload presents after its leaf: the issuer, then any intermediates above it.
  public var issuerChain: [Certificate] { [issuerCertificate] + intermediates }

  /// Checks a CSR and signs it for `identity`.
  ///
  /// The CSR must carry a valid signature, an ECDSA P-256 key and exactly one DNS SAN equal to `identity`;
  /// the issuer must be valid at `now`. The leaf is backdated by the clock-skew allowance and never outlives
  /// the issuer.
  public func sign(
    csr: CertificateSigningRequest,
    for identity: IdentityName,
    now: Date = Date()
  ) throws(MeshError) -> Certificate {
    try checkIssuerValid(at: now)
    try Self.check(csr: csr, expected: identity)
    let notBefore = now.addingTimeInterval(-configuration.clockSkewAllowance.timeInterval)
    let notAfter = min(now.addingTimeInterval(configuration.workloadLifetime.timeInterval), issuerCertificate.notValidAfter)
    do {
      let extensions = try Certificate.Extensions {
        Critical(BasicConstraints.notCertificateAuthority)
        Critical(KeyUsage(digitalSignature: true, keyEncipherment: true))
        try ExtendedKeyUsage([.serverAuth, .clientAuth])
        SubjectKeyIdentifier(hash: csr.publicKey)
        AuthorityKeyIdentifier(keyIdentifier: SubjectKeyIdentifier(hash: issuerCertificate.publicKey).keyIdentifier)
        SubjectAlternativeNames([.dnsName(identity.description)])
      }
      return try Certificate(
        version: .v3,
        serialNumber: Certificate.SerialNumber(),
        publicKey: csr.publicKey,
        notValidBefore: notBefore,
        notValidAfter: notAfter,
        issuer: issuerCertificate.subject,
        subject: try DistinguishedName { CommonName(identity.description) },
        signatureAlgorithm: .ecdsaWithSHA256,
        extensions: extensions,
        issuerPrivateKey: Certificate.PrivateKey(issuerKey)
      )
    } catch {
      throw .internalError("signing the certificate for \(identity) failed", cause: error)
    }
  }

  /// Parses DER CSR bytes, naming what is wrong when they are not a CSR.
  public static func parseCSR(der bytes: [UInt8]) throws(MeshError) -> CertificateSigningRequest {
    guard !bytes.isEmpty else { throw .invalidArgument("certificate signing request is empty") }
    do {
      return try CertificateSigningRequest(derEncoded: bytes)
    } catch {
      throw .invalidArgument("certificate signing request is not a DER PKCS#10 request (\(bytes.count) bytes)", cause: error)
    }
  }

  /// The checks made on every CSR before signing.
  public static func check(csr: CertificateSigningRequest, expected identity: IdentityName) throws(MeshError) {
    guard P256.Signing.PublicKey(csr.publicKey) != nil else {
      throw .invalidArgument("certificate signing request key is \(csr.publicKey.keyAlgorithmName), expected ECDSA P-256")
    }
    guard csr.publicKey.isValidSignature(csr.signature, for: csr) else {
      throw .invalidArgument("certificate signing request signature does not verify with its own key")
    }
    let sans = try requestedNames(csr)
    guard sans.count == 1, let only = sans.first else {
      throw .invalidArgument(
        "certificate signing request must name exactly one DNS SAN, found \(sans.count): \(sans.joined(separator: ", "))")
    }
    guard only == identity.description else {
      throw .permissionDenied("certificate signing request names '\(only)', but the token is for '\(identity)'")
    }
  }

  /// The subject alternative names requested in a CSR, DNS names as text; other kinds are reported too.
  static func requestedNames(_ csr: CertificateSigningRequest) throws(MeshError) -> [String] {
    let request: ExtensionRequest?
    do {
      request = try csr.attributes.extensionRequest
    } catch {
      throw .invalidArgument("certificate signing request has a malformed extension request", cause: error)
    }
    guard let request else { return [] }
    let sans: SubjectAlternativeNames?
    do {
      sans = try request.extensions.subjectAlternativeNames
    } catch {
      throw .invalidArgument("certificate signing request has a malformed subjectAltName", cause: error)
    }
    return (sans ?? SubjectAlternativeNames()).map { name in
      if case .dnsName(let dns) = name { return dns }
      return "\(name)"
    }
  }

  func checkIssuerValid(at now: Date) throws(MeshError) {
    if issuerCertificate.notValidAfter <= now {
      throw .expired(
        "issuer certificate '\(issuerCertificate.subject)' expired at \(issuerCertificate.notValidAfter.ISO8601Format())")
    }
    if issuerCertificate.notValidBefore > now {
      throw .expired(
        "issuer certificate '\(issuerCertificate.subject)' is not valid before \(issuerCertificate.notValidBefore.ISO8601Format())")
    }
  }
}

extension Certificate.PublicKey {
  var keyAlgorithmName: String {
    if P256.Signing.PublicKey(self) != nil { return "ECDSA P-256" }
    if P384.Signing.PublicKey(self) != nil { return "ECDSA P-384" }
    if P521.Signing.PublicKey(self) != nil { return "ECDSA P-521" }
    if _RSA.Signing.PublicKey(self) != nil { return "RSA" }
    return "an unsupported algorithm"
  }
}

extension Duration {
  /// The duration in seconds as a `TimeInterval`.
  public var timeInterval: TimeInterval {
    let (seconds, attoseconds) = components
    return TimeInterval(seconds) + TimeInterval(attoseconds) / 1e18
  }
}
