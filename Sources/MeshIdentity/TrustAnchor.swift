public import Crypto
public import Foundation
public import MeshCore
public import X509
import SwiftASN1
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

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
    try makeRoot(commonName: "root.\(trustDomain.name)", lifetime: lifetime, now: now)
  }

  /// A self-signed root CA named `CN=<commonName>`, valid for `lifetime` (default one year), backdated 20 s.
  public static func makeRoot(
    commonName: String,
    lifetime: Duration = .seconds(365 * 24 * 3600),
    now: Date = Date()
  ) throws(MeshError) -> Credentials {
    let key = P256.Signing.PrivateKey()
    do {
      let name = try DistinguishedName { CommonName(commonName) }
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
      throw .internalError("creating the root CA '\(commonName)' failed", cause: error)
    }
  }

  /// A TLS server certificate (`serverAuth`) for `dnsNames` and `ipAddresses` (dotted IPv4 or IPv6 text),
  /// signed by `ca`, valid for `lifetime` (default one year) and never past the CA. Throws on an address that
  /// does not parse.
  public static func makeServerCertificate(
    commonName: String,
    dnsNames: [String],
    ipAddresses: [String],
    signedBy ca: Credentials,
    lifetime: Duration = .seconds(365 * 24 * 3600),
    now: Date = Date()
  ) throws(MeshError) -> Credentials {
    var names: [GeneralName] = dnsNames.map { .dnsName($0) }
    for address in ipAddresses {
      guard let bytes = addressBytes(address) else {
        throw .invalidArgument("'\(address)' is not an IPv4 or IPv6 address")
      }
      names.append(.ipAddress(ASN1OctetString(contentBytes: bytes[...])))
    }
    let key = P256.Signing.PrivateKey()
    do {
      let publicKey = Certificate.PublicKey(key.publicKey)
      let certificate = try Certificate(
        version: .v3,
        serialNumber: Certificate.SerialNumber(),
        publicKey: publicKey,
        notValidBefore: now.addingTimeInterval(-20),
        notValidAfter: min(now.addingTimeInterval(lifetime.timeInterval), ca.certificate.notValidAfter),
        issuer: ca.certificate.subject,
        subject: try DistinguishedName { CommonName(commonName) },
        signatureAlgorithm: .ecdsaWithSHA256,
        extensions: try Certificate.Extensions {
          Critical(BasicConstraints.notCertificateAuthority)
          Critical(KeyUsage(digitalSignature: true, keyEncipherment: true))
          try ExtendedKeyUsage([.serverAuth])
          SubjectKeyIdentifier(hash: publicKey)
          AuthorityKeyIdentifier(keyIdentifier: SubjectKeyIdentifier(hash: ca.certificate.publicKey).keyIdentifier)
          SubjectAlternativeNames(names)
        },
        issuerPrivateKey: Certificate.PrivateKey(ca.privateKey)
      )
      return Credentials(certificate: certificate, privateKey: key)
    } catch {
      throw .internalError("creating a server certificate for \(dnsNames + ipAddresses) failed", cause: error)
    }
  }

  /// The network-order bytes of an IPv4 or IPv6 address in text form, or nil.
  static func addressBytes(_ text: String) -> [UInt8]? {
    var v4 = in_addr()
    if inet_pton(AF_INET, text, &v4) == 1 {
      return withUnsafeBytes(of: &v4) { Array($0) }
    }
    var v6 = in6_addr()
    if inet_pton(AF_INET6, text, &v6) == 1 {
      return withUnsafeBytes(of: &v6) { Array($0) }
    }
    return nil
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
