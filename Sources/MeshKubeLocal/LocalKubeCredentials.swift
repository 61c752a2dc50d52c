import Foundation
public import MeshCore
public import MeshIdentity
import X509

/// The embedded cluster's own secrets, made once per `LocalKubeState` (so a server restarted on the same state
/// keeps them, and clients keep trusting it): the cluster CA that signs serving certificates, and the admin
/// bearer token (user `kubernetes-admin`, group `system:masters`).
public struct LocalKubeCredentials: Sendable {
  /// The cluster CA (`CN=swiftmesh-local-ca`), one year.
  public let certificateAuthority: TrustAnchor.Credentials
  /// The CA certificate in PEM: what kubeconfigs carry as `certificate-authority-data`.
  public let certificateAuthorityPEM: String
  /// The admin bearer token.
  public let adminToken: String

  /// The admin's user name, as kubeadm names it.
  public static let adminUser = "kubernetes-admin"

  init(adminToken: String?) throws(MeshError) {
    certificateAuthority = try TrustAnchor.makeRoot(commonName: "swiftmesh-local-ca")
    certificateAuthorityPEM = try PEMFiles.pem([certificateAuthority.certificate])
    self.adminToken = adminToken ?? Self.randomToken(prefix: "swiftmesh-admin.")
  }

  /// The names every serving certificate covers: loopback and the in-cluster names of the API.
  public static let defaultServingNames = [
    "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
    "127.0.0.1", "::1",
  ]

  /// A serving certificate for `names` (DNS names and IP addresses, mixed) plus the defaults, signed by the
  /// cluster CA: the certificate chain and the key, in PEM.
  public func servingCertificate(for names: [String]) throws(MeshError) -> (chainPEM: String, keyPEM: String) {
    var dns: [String] = []
    var ips: [String] = []
    for name in Self.defaultServingNames + names where !name.isEmpty {
      let bare = name.hasPrefix("[") && name.hasSuffix("]") ? String(name.dropFirst().dropLast()) : name
      if bare == "0.0.0.0" || bare == "::" { continue }  // wildcards are not names a client dials
      if bare.contains(":") || bare.allSatisfy({ $0.isNumber || $0 == "." }) {
        if !ips.contains(bare) { ips.append(bare) }
      } else if !dns.contains(bare) {
        dns.append(bare)
      }
    }
    let leaf = try TrustAnchor.makeServerCertificate(
      commonName: "swiftmesh-local-apiserver", dnsNames: dns, ipAddresses: ips, signedBy: certificateAuthority)
    return (try PEMFiles.pem([leaf.certificate, certificateAuthority.certificate]), PEMFiles.pem(leaf.privateKey))
  }

  /// 32 random bytes, base64url, after `prefix`.
  static func randomToken(prefix: String) -> String {
    var random = SystemRandomNumberGenerator()
    let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &random) }
    return prefix + Data(bytes).base64EncodedString()
      .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
  }

  /// Compares without returning early, so timing says nothing about how much of a guess was right.
  static func constantTimeEquals(_ a: String, _ b: String) -> Bool {
    let x = Array(a.utf8)
    let y = Array(b.utf8)
    var difference = UInt8(truncatingIfNeeded: x.count ^ y.count)
    for i in 0..<max(x.count, y.count) {
      difference |= (i < x.count ? x[i] : 0) ^ (i < y.count ? y[i] : 0)
    }
    return difference == 0
  }
}
