/// A workload's identity:
/// `<serviceaccount>.<namespace>.serviceaccount.identity.<control-plane-namespace>.<trust-domain>`.
///
/// It is the DNS SAN of the workload certificate and the TLS server name a client asks for.
public struct IdentityName: Hashable, Sendable, CustomStringConvertible, Codable {
  public let serviceAccount: String
  public let namespace: String
  public let controlPlaneNamespace: String
  public let trustDomain: TrustDomain

  /// The default control-plane namespace.
  public static let defaultControlPlaneNamespace = "swiftmesh"

  public init(
    serviceAccount: String,
    namespace: String,
    controlPlaneNamespace: String = IdentityName.defaultControlPlaneNamespace,
    trustDomain: TrustDomain = .clusterLocal
  ) throws(MeshError) {
    for (part, value) in [
      ("service account", serviceAccount), ("namespace", namespace),
      ("control-plane namespace", controlPlaneNamespace),
    ] {
      if let problem = DNSName.labelProblem(Substring(value)) {
        throw .invalidIdentity("invalid \(part) '\(value)' in identity name: \(problem)")
      }
    }
    self.serviceAccount = serviceAccount
    self.namespace = namespace
    self.controlPlaneNamespace = controlPlaneNamespace
    self.trustDomain = trustDomain
    if let problem = DNSName.nameProblem(self.description) {
      throw .invalidIdentity("invalid identity name '\(self.description)': \(problem)")
    }
  }

  /// Parses the textual form; the error names the part that is wrong.
  public init(_ text: String) throws(MeshError) {
    let labels = text.split(separator: ".", omittingEmptySubsequences: false)
    guard labels.count >= 6 else {
      throw .invalidIdentity(
        "invalid identity name '\(text)': expected <serviceaccount>.<namespace>.serviceaccount.identity.<control-plane-namespace>.<trust-domain>"
      )
    }
    guard labels[2] == "serviceaccount" else {
      throw .invalidIdentity("invalid identity name '\(text)': third label is '\(labels[2])', expected 'serviceaccount'")
    }
    guard labels[3] == "identity" else {
      throw .invalidIdentity("invalid identity name '\(text)': fourth label is '\(labels[3])', expected 'identity'")
    }
    let domain: TrustDomain
    do {
      domain = try TrustDomain(labels[5...].joined(separator: "."))
    } catch {
      throw .invalidIdentity("invalid identity name '\(text)': \(error.message)")
    }
    try self.init(
      serviceAccount: String(labels[0]), namespace: String(labels[1]),
      controlPlaneNamespace: String(labels[4]), trustDomain: domain)
  }

  public var description: String {
    "\(serviceAccount).\(namespace).serviceaccount.identity.\(controlPlaneNamespace).\(trustDomain.name)"
  }

  /// Travels as its text (`description`), and is parsed back the same way.
  public init(from decoder: any Decoder) throws { try self.init(try String(from: decoder)) }
  public func encode(to encoder: any Encoder) throws { try description.encode(to: encoder) }
}
