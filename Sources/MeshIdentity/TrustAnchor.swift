public import Crypto
public import Foundation
public import MeshCore
public import X509

/// Makes the mesh's certificate authorities: the trust anchor shared by all clusters and one issuer per
/// cluster under it.
public enum TrustAnchor {
  /// A CA certificate with its key.
  public struct Credentials: Sendable {
    public var certificate: Certificate
    public var privateKey: P256.Signing.PrivateKey

    public init(certificate: Certificate, privateKey: P256.Signing.PrivateKey) {
      self.certificate = certificate
      self.privateKey = privateKey
    }
  }

  /// A self-signed root CA, `CN=root.<trust-domain>`, valid for `lifetime` (default one year).
  public static func makeAnchor(
    trustDomain: TrustDomain,
    lifetime: Duration = .seconds(365 * 24 * 3600),
    now: Date = Date()
  ) throws(MeshError) -> Credentials {
    let key = P256.Signing.PrivateKey()
    do {
      let name = try DistinguishedName { CommonName("root.\(trustDomain.name)") }
      let publicKey = Certificate.PublicKey(key.publicKey)
      let certificate = try Certificate(
        version: .v3,
        serialNumber: Certificate.SerialNumber(),
        publicKey: publicKey,
        notValidBefore: now.addingTimeInterval(-20),
        notValidAfter: now.addingTimeInterval(lifetime.timeInterval),
        issuer: name,
        subject: name,
        signatureAlgorithm: .ecdsaWithSHA256,
        extensions: try Certificate.Extensions {
          Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
          Critical(KeyUsage(keyCertSign: true, cRLSign: true))
          SubjectKeyIdentifier(hash: publicKey)
        },
        issuerPrivateKey: Certificate.PrivateKey(key)
      )
      return Credentials(certificate: certificate, privateKey: key)
    } catch {
      throw .internalError("creating the trust anchor for \(trustDomain) failed", cause: error)
    }
  }

  /// An issuer (intermediate CA), `CN=identity.<trust-domain>` plus an optional cluster label, signed by
  /// `anchor`; it never outlives the anchor.
  public static func makeIssuer(
    signedBy anchor: Credentials,
    trustDomain: TrustDomain,
    clusterName: String? = nil,
    lifetime: Duration = .seconds(365 * 24 * 3600),
    now: Date = Date()
  ) throws(MeshError) -> Credentials {
    let key = P256.Signing.PrivateKey()
    do {
      let subject = try DistinguishedName {
        if let clusterName { OrganizationalUnitName(clusterName) }
        CommonName("identity.\(trustDomain.name)")
      }
      let publicKey = Certificate.PublicKey(key.publicKey)
      let certificate = try Certificate(
        version: .v3,
        serialNumber: Certificate.SerialNumber(),
        publicKey: publicKey,
        notValidBefore: now.addingTimeInterval(-20),
        notValidAfter: min(now.addingTimeInterval(lifetime.timeInterval), anchor.certificate.notValidAfter),
        issuer: anchor.certificate.subject,
        subject: subject,
        signatureAlgorithm: .ecdsaWithSHA256,
        extensions: try Certificate.Extensions {
          Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
          Critical(KeyUsage(keyCertSign: true, cRLSign: true))
          SubjectKeyIdentifier(hash: publicKey)
          AuthorityKeyIdentifier(keyIdentifier: SubjectKeyIdentifier(hash: anchor.certificate.publicKey).keyIdentifier)
        },
        issuerPrivateKey: Certificate.PrivateKey(anchor.privateKey)
      )
      return Credentials(certificate: certificate, privateKey: key)
    } catch {
      throw .internalError("creating an issuer under '\(anchor.certificate.subject)' failed", cause: error)
    }
  }
}
