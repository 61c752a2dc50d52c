/// A workload's identity:
/// `<serviceaccount>.<namespace>.serviceaccount.identity.<control-plane-namespace>.<trust-domain>`.
///
/// It is the DNS SAN of the workload certificate and the TLS server name a client asks for.
public struct IdentityName: Hashable, Sendable, CustomStringConvertible, Codable {
  /// The parts and the text, behind one reference: a proxy copies a peer's or an endpoint's name several
  /// times a request (its connection pool's key, the route, the metric labels), and a copy of five strings
  /// was five retains and a destroy five releases, about 2,000 instructions a request on the client proxy
  /// (Benchmarks/load/instructions.sh). The storage never changes once made.
  private final class Storage: Sendable {
    let serviceAccount: String
    let namespace: String
    let controlPlaneNamespace: String
    let trustDomain: TrustDomain
    let description: String

    init(
      serviceAccount: String, namespace: String, controlPlaneNamespace: String, trustDomain: TrustDomain,
      description: String
    ) {
      self.serviceAccount = serviceAccount
      self.namespace = namespace
      self.controlPlaneNamespace = controlPlaneNamespace
      self.trustDomain = trustDomain
      self.description = description
    }
  }

  private let storage: Storage

  public var serviceAccount: String { storage.serviceAccount }
  public var namespace: String { storage.namespace }
  public var controlPlaneNamespace: String { storage.controlPlaneNamespace }
  public var trustDomain: TrustDomain { storage.trustDomain }
  /// The name as text, made once: a proxy reads it for the metric labels of every request, and building it
  /// each time cost about 3,000 instructions (Benchmarks/load/instructions.sh).
  public var description: String { storage.description }

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
    let description = "\(serviceAccount).\(namespace).serviceaccount.identity.\(controlPlaneNamespace).\(trustDomain.name)"
    if let problem = DNSName.nameProblem(description) {
      throw .invalidIdentity("invalid identity name '\(description)': \(problem)")
    }
    self.storage = Storage(
      serviceAccount: serviceAccount, namespace: namespace, controlPlaneNamespace: controlPlaneNamespace,
      trustDomain: trustDomain, description: description)
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

  /// Two names are equal when their text is: the text is made of the parts and tells them apart (a label has
  /// no dot), and comparing one string is cheaper than four (a pool looks up its connections by identity).
  public static func == (lhs: IdentityName, rhs: IdentityName) -> Bool {
    lhs.storage === rhs.storage || lhs.description == rhs.description
  }
  public func hash(into hasher: inout Hasher) { hasher.combine(description) }

  /// Travels as its text (`description`), and is parsed back the same way.
  public init(from decoder: any Decoder) throws { try self.init(try String(from: decoder)) }
  public func encode(to encoder: any Encoder) throws { try description.encode(to: encoder) }
}
