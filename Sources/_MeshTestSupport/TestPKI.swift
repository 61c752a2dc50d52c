public import Foundation
public import MeshCore
public import MeshIdentity
public import X509

/// An in-memory mesh PKI for tests: an anchor and an issuer, optionally written out as the PEM files the
/// command-line tools use.
public struct TestPKI: Sendable {
  public let trustDomain: TrustDomain
  public let anchor: TrustAnchor.Credentials
  public let issuer: TrustAnchor.Credentials

  public init(
    trustDomain: TrustDomain = .clusterLocal,
    issuerClusterName: String? = nil,
    issuerLifetime: Duration = .seconds(365 * 24 * 3600),
    now: Date = Date()
  ) throws {
    self.trustDomain = trustDomain
    self.anchor = try TrustAnchor.makeAnchor(trustDomain: trustDomain, now: now)
    self.issuer = try TrustAnchor.makeIssuer(
      signedBy: anchor, trustDomain: trustDomain, clusterName: issuerClusterName, lifetime: issuerLifetime, now: now)
  }

  /// A second issuer under the same anchor, as another cluster would have.
  public func siblingIssuer(clusterName: String = "west") throws -> TrustAnchor.Credentials {
    try TrustAnchor.makeIssuer(signedBy: anchor, trustDomain: trustDomain, clusterName: clusterName)
  }

  public func authority(
    issuer: TrustAnchor.Credentials? = nil,
    configuration: CertificateAuthority.Configuration = .defaults()
  ) throws -> CertificateAuthority {
    let issuer = issuer ?? self.issuer
    return try CertificateAuthority(
      issuerCertificate: issuer.certificate, issuerKey: issuer.privateKey, configuration: configuration)
  }

  /// A workload certificate for `identity`, signed directly (no service).
  public func workload(
    _ identity: IdentityName,
    issuer: TrustAnchor.Credentials? = nil,
    lifetime: Duration = .seconds(24 * 3600),
    now: Date = Date()
  ) throws -> WorkloadCertificate {
    let authority = try self.authority(issuer: issuer, configuration: .defaults { $0.workloadLifetime = lifetime })
    let (key, csr) = try WorkloadKey.makeCSR(for: identity)
    let leaf = try authority.sign(csr: csr, for: identity, now: now)
    return WorkloadCertificate(privateKey: key, leaf: leaf, intermediates: authority.issuerChain)
  }

  /// Writes ca.crt, ca.key, issuer.crt, issuer.key (of `issuer`, default this PKI's) into `directory`,
  /// creating it.
  public func write(to directory: String, issuer: TrustAnchor.Credentials? = nil) throws {
    let issuer = issuer ?? self.issuer
    let join = { (name: String) in (directory as NSString).appendingPathComponent(name) }
    try PEMFiles.makeDirectory(directory)
    try PEMFiles.write(PEMFiles.pem([anchor.certificate]), to: join(PEMFiles.anchorCertificate))
    try PEMFiles.write(PEMFiles.pem(anchor.privateKey), to: join(PEMFiles.anchorKey), secret: true)
    try PEMFiles.write(PEMFiles.pem([issuer.certificate]), to: join(PEMFiles.issuerCertificate))
    try PEMFiles.write(PEMFiles.pem(issuer.privateKey), to: join(PEMFiles.issuerKey), secret: true)
  }
}

extension IdentityName {
  /// `<sa>.<ns>.serviceaccount.identity.swiftmesh.cluster.local`, for tests.
  public static func test(_ serviceAccount: String, _ namespace: String = "default") -> IdentityName {
    try! IdentityName(serviceAccount: serviceAccount, namespace: namespace)
  }
}
