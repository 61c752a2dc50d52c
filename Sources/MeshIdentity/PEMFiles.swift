public import Crypto
public import Foundation
public import MeshCore
public import X509
import SwiftASN1

/// Reading and writing the PEM files of the mesh's CAs and workloads:
/// `ca.crt`, `ca.key`, `issuer.crt`, `issuer.key` and a workload's `tls.crt` (leaf then issuer), `tls.key`.
public enum PEMFiles {
  public static let anchorCertificate = "ca.crt"
  public static let anchorKey = "ca.key"
  public static let issuerCertificate = "issuer.crt"
  public static let issuerKey = "issuer.key"
  public static let workloadCertificate = "tls.crt"
  public static let workloadKey = "tls.key"

  /// All certificates in a PEM file, in order.
  public static func readCertificates(_ path: String) throws(MeshError) -> [Certificate] {
    let text = try readText(path)
    let documents: [PEMDocument]
    do {
      documents = try PEMDocument.parseMultiple(pemString: text)
    } catch {
      throw .invalidConfiguration("\(path): not a PEM file", cause: error)
    }
    if documents.isEmpty { throw .invalidConfiguration("\(path): no certificate in the file") }
    var certificates: [Certificate] = []
    for (index, document) in documents.enumerated() {
      do {
        certificates.append(try Certificate(pemDocument: document))
      } catch {
        throw .invalidConfiguration("\(path): PEM block \(index + 1) is not a valid certificate", cause: error)
      }
    }
    return certificates
  }

  /// A P-256 private key (PKCS#8 or SEC1 PEM).
  public static func readP256Key(_ path: String) throws(MeshError) -> P256.Signing.PrivateKey {
    let text = try readText(path)
    do {
      return try P256.Signing.PrivateKey(pemRepresentation: text)
    } catch {
      throw .invalidConfiguration("\(path): not an ECDSA P-256 private key in PEM", cause: error)
    }
  }

  public static func pem(_ certificates: [Certificate]) throws(MeshError) -> String {
    do {
      return try certificates.map { try $0.serializeAsPEM().pemString }.joined(separator: "\n") + "\n"
    } catch {
      throw .internalError("encoding certificates as PEM failed", cause: error)
    }
  }

  public static func pem(_ key: P256.Signing.PrivateKey) -> String {
    key.pemRepresentation + "\n"
  }

  /// Writes a file; key files get mode 0600.
  public static func write(_ text: String, to path: String, secret: Bool = false) throws(MeshError) {
    do {
      try Data(text.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
      if secret {
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: path)
      }
    } catch {
      throw .invalidConfiguration("cannot write \(path)", cause: error)
    }
  }

  static func readText(_ path: String) throws(MeshError) -> String {
    do {
      return try String(contentsOfFile: path, encoding: .utf8)
    } catch {
      throw .invalidConfiguration("cannot read \(path)", cause: error)
    }
  }

  /// Creates `directory` (and parents) when missing.
  public static func makeDirectory(_ directory: String) throws(MeshError) {
    do {
      try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    } catch {
      throw .invalidConfiguration("cannot create directory \(directory)", cause: error)
    }
  }

  /// Loads an issuer directory (`issuer.crt`, `issuer.key`, and `ca.crt` for the trust bundle).
  public static func loadIssuer(
    directory: String,
    configuration: CertificateAuthority.Configuration = .defaults()
  ) throws(MeshError) -> (authority: CertificateAuthority, trustAnchors: [Certificate]) {
    let join = { (name: String) in (directory as NSString).appendingPathComponent(name) }
    let issuerChain = try readCertificates(join(issuerCertificate))
    let key = try readP256Key(join(issuerKey))
    let anchors = try readCertificates(join(anchorCertificate))
    let authority = try CertificateAuthority(
      issuerCertificate: issuerChain[0], issuerKey: key, intermediates: Array(issuerChain.dropFirst()),
      configuration: configuration)
    return (authority, anchors)
  }
}
