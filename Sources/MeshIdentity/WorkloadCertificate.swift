public import Crypto
public import Foundation
public import MeshCore
public import X509

/// The identity material a proxy holds: its private key, its leaf certificate, and the issuer chain.
public struct WorkloadCertificate: Sendable, Hashable {
  public var privateKey: P256.Signing.PrivateKey
  public var leaf: Certificate
  /// Issuer certificates, nearest first, not including the trust anchor.
  public var intermediates: [Certificate]

  public init(privateKey: P256.Signing.PrivateKey, leaf: Certificate, intermediates: [Certificate]) {
    self.privateKey = privateKey
    self.leaf = leaf
    self.intermediates = intermediates
  }

  public var notValidBefore: Date { leaf.notValidBefore }
  public var notValidAfter: Date { leaf.notValidAfter }
  public var chain: [Certificate] { [leaf] + intermediates }

  /// The identity in the leaf's DNS SAN, when it is a mesh identity name.
  public var identity: IdentityName? { leaf.meshIdentities.first }

  /// The instant to renew at: `fraction` (default 70 %) of the way through the validity period.
  public func renewalTime(fraction: Double = 0.7) -> Date {
    let lifetime = notValidAfter.timeIntervalSince(notValidBefore)
    return notValidBefore.addingTimeInterval(lifetime * fraction)
  }

  public static func == (lhs: Self, rhs: Self) -> Bool {
    lhs.leaf == rhs.leaf && lhs.intermediates == rhs.intermediates
      && lhs.privateKey.rawRepresentation == rhs.privateKey.rawRepresentation
  }
  public func hash(into hasher: inout Hasher) { hasher.combine(leaf) }
}

extension Certificate {
  /// The DNS names of the subject alternative name extension (empty when there is none or it is malformed).
  public var dnsNames: [String] {
    guard let sans = try? extensions.subjectAlternativeNames else { return [] }
    return sans.compactMap { name in
      if case .dnsName(let dns) = name { return dns }
      return nil
    }
  }

  /// The DNS SANs that parse as mesh identity names.
  public var meshIdentities: [IdentityName] {
    dnsNames.compactMap { try? IdentityName($0) }
  }
}
