/// The DNS suffix every identity of one mesh ends in (`cluster.local` by default). Clusters that share a
/// trust anchor normally share the trust domain too.
public struct TrustDomain: Hashable, Sendable, CustomStringConvertible, Codable {
  public let name: String

  public static let clusterLocal = TrustDomain(validated: "cluster.local")

  private init(validated: String) { self.name = validated }

  /// Parses a trust domain; it must be a lowercase DNS name (a trailing dot is dropped).
  public init(_ name: String) throws(MeshError) {
    var value = name
    if value.hasSuffix(".") { value.removeLast() }
    if let problem = DNSName.nameProblem(value) {
      throw .invalidIdentity("invalid trust domain '\(name)': \(problem)")
    }
    self.name = value
  }

  public var description: String { name }

  public init(from decoder: any Decoder) throws {
    let raw = try decoder.singleValueContainer().decode(String.self)
    try self.init(raw)
  }
  public func encode(to encoder: any Encoder) throws {
    var container = encoder.singleValueContainer()
    try container.encode(name)
  }
}
