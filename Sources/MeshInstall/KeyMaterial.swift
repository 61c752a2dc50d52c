public import Foundation
public import MeshCore
import Crypto
import MeshIdentity
import SwiftASN1
import X509

/// This cluster's issuer, from a directory `meshctl identity issuer --out` wrote: the trust anchor (`ca.crt`),
/// the issuer certificate (`issuer.crt`, signed by the anchor) and its key (`issuer.key`).
public struct IssuerMaterial: Sendable, Hashable {
  /// `ca.crt`, as PEM.
  public var anchorPEM: String
  /// `issuer.crt`, as PEM.
  public var certificatePEM: String
  /// `issuer.key`, as PEM.
  public var keyPEM: String
  /// The trust domain the issuer signs for (its subject is `CN=identity.<trust-domain>`).
  public var trustDomain: TrustDomain
  /// The cluster name the issuer's subject records (`OU`), if any.
  public var clusterName: String?

  /// Reads and checks `directory`: the files are there and parse, the key is the certificate's, the issuer
  /// is a CA signed by the anchor, valid at `now`, and named `identity.<trust-domain>`.
  public static func load(directory: String, now: Date = Date()) throws(MeshError) -> Self {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
      throw .invalidConfiguration(
        "--issuer-dir \(directory): no such directory (make one with `meshctl identity issuer --ca-dir CA_DIR --out \(directory) --cluster-name NAME`)")
    }
    let file = { (name: String) in (directory as NSString).appendingPathComponent(name) }
    let anchors = try PEMFiles.readCertificates(file(PEMFiles.anchorCertificate))
    let issuer = try PEMFiles.readCertificates(file(PEMFiles.issuerCertificate))[0]
    let key = try PEMFiles.readP256Key(file(PEMFiles.issuerKey))
    guard Certificate.PublicKey(key.publicKey) == issuer.publicKey else {
      throw .invalidConfiguration("\(file(PEMFiles.issuerKey)) is not the key of \(file(PEMFiles.issuerCertificate))")
    }
    guard anchors.contains(where: { $0.subject == issuer.issuer && $0.publicKey.isValidSignature(issuer.signature, for: issuer) })
    else {
      throw .invalidConfiguration(
        "\(file(PEMFiles.issuerCertificate)) (\(issuer.subject), issued by \(issuer.issuer)) is not signed by the trust anchor in \(file(PEMFiles.anchorCertificate)) (\(anchors.map { "\($0.subject)" }.joined(separator: ", ")))")
    }
    guard case .isCertificateAuthority? = try? issuer.extensions.basicConstraints else {
      throw .invalidConfiguration("\(file(PEMFiles.issuerCertificate)) (\(issuer.subject)) is not a CA certificate")
    }
    guard issuer.notValidBefore <= now, now < issuer.notValidAfter else {
      throw .invalidConfiguration(
        "\(file(PEMFiles.issuerCertificate)) is valid from \(issuer.notValidBefore.ISO8601Format()) to \(issuer.notValidAfter.ISO8601Format()), not now (\(now.ISO8601Format()))")
    }
    let commonName = issuer.subject.commonName
    guard let commonName, commonName.hasPrefix("identity.") else {
      throw .invalidConfiguration(
        "\(file(PEMFiles.issuerCertificate)): subject \(issuer.subject) is not CN=identity.<trust-domain>")
    }
    let trustDomain = try TrustDomain(String(commonName.dropFirst("identity.".count)))
    return Self(
      anchorPEM: try PEMFiles.pem(anchors), certificatePEM: try PEMFiles.pem([issuer]), keyPEM: PEMFiles.pem(key),
      trustDomain: trustDomain, clusterName: issuer.subject.organizationalUnitName)
  }
}

/// The proxy injector's serving certificate (`tls.crt`, `tls.key`) and the CA that signed it (`ca.crt`, the
/// webhook configuration's `caBundle`).
public struct WebhookMaterial: Sendable, Hashable {
  /// The DNS name the API server calls the injector by.
  public static let serviceName = "swiftmesh-injector.swiftmesh.svc"

  public var caPEM: String
  public var certificatePEM: String
  public var keyPEM: String

  /// A fresh CA and a serving certificate for `serviceName` under it, valid one year from `now`.
  public static func generate(now: Date = Date()) throws(MeshError) -> Self {
    let ca = try TrustAnchor.makeRoot(commonName: "swiftmesh-injector-ca", now: now)
    let serving = try TrustAnchor.makeServerCertificate(
      commonName: serviceName, dnsNames: [serviceName], ipAddresses: [], signedBy: ca, now: now)
    return Self(
      caPEM: try PEMFiles.pem([ca.certificate]), certificatePEM: try PEMFiles.pem([serving.certificate]),
      keyPEM: PEMFiles.pem(serving.privateKey))
  }

  /// The material in `directory` (`ca.crt`, `tls.crt`, `tls.key`), checked; when none of the three files
  /// is there, generated and written there first, so the next render uses the same.
  public static func loadOrGenerate(directory: String, now: Date = Date()) throws(MeshError) -> Self {
    let names = [PEMFiles.anchorCertificate, PEMFiles.workloadCertificate, PEMFiles.workloadKey]
    let file = { (name: String) in (directory as NSString).appendingPathComponent(name) }
    let present = names.filter { FileManager.default.fileExists(atPath: file($0)) }
    if present.isEmpty {
      let generated = try generate(now: now)
      try PEMFiles.makeDirectory(directory)
      try PEMFiles.write(generated.caPEM, to: file(PEMFiles.anchorCertificate))
      try PEMFiles.write(generated.certificatePEM, to: file(PEMFiles.workloadCertificate))
      try PEMFiles.write(generated.keyPEM, to: file(PEMFiles.workloadKey), secret: true)
      return generated
    }
    guard present.count == names.count else {
      throw .invalidConfiguration(
        "--injector-tls-dir \(directory) holds \(present.joined(separator: ", ")) but not \(names.filter { !present.contains($0) }.joined(separator: ", ")): give all three, or an empty directory")
    }
    let cas = try PEMFiles.readCertificates(file(PEMFiles.anchorCertificate))
    let certificate = try PEMFiles.readCertificates(file(PEMFiles.workloadCertificate))[0]
    let key = try PEMFiles.readP256Key(file(PEMFiles.workloadKey))
    guard Certificate.PublicKey(key.publicKey) == certificate.publicKey else {
      throw .invalidConfiguration("\(file(PEMFiles.workloadKey)) is not the key of \(file(PEMFiles.workloadCertificate))")
    }
    guard cas.contains(where: { $0.publicKey.isValidSignature(certificate.signature, for: certificate) }) else {
      throw .invalidConfiguration(
        "\(file(PEMFiles.workloadCertificate)) (\(certificate.subject)) is not signed by \(file(PEMFiles.anchorCertificate))")
    }
    let dnsNames = (try? certificate.extensions.subjectAlternativeNames)?.compactMap { name -> String? in
      if case .dnsName(let dns) = name { dns } else { nil }
    } ?? []
    guard dnsNames.contains(serviceName) else {
      throw .invalidConfiguration(
        "\(file(PEMFiles.workloadCertificate)) names \(dnsNames) but not \(serviceName), the name the API server calls the injector by")
    }
    return Self(
      caPEM: try PEMFiles.pem(cas), certificatePEM: try PEMFiles.pem([certificate]), keyPEM: PEMFiles.pem(key))
  }
}

extension DistinguishedName {
  /// The value of the first attribute of `type`, as a string.
  fileprivate func first(_ type: ASN1ObjectIdentifier) -> String? {
    for rdn in self {
      for attribute in rdn where attribute.type == type {
        return String(describing: attribute.value)
      }
    }
    return nil
  }

  var commonName: String? { first(.RDNAttributeType.commonName) }
  var organizationalUnitName: String? { first(.RDNAttributeType.organizationalUnitName) }
}
