/// The Kubernetes subject a bearer token belongs to.
public struct ServiceAccountRef: Hashable, Sendable, CustomStringConvertible {
  public var name: String
  public var namespace: String
  public init(name: String, namespace: String) {
    self.name = name
    self.namespace = namespace
  }
  public var description: String { "\(namespace)/\(name)" }
}

/// Decides who a token belongs to. The identity service asks it before it signs anything.
///
/// Implementations: a token file (local mode, in MeshIdentity) and Kubernetes TokenReview (MeshKube).
public protocol TokenValidator: Sendable {
  /// Returns the service account the token authenticates, or throws `MeshError` with code
  /// `.unauthenticated` when the token is unknown, expired or revoked.
  func validate(token: String) async throws -> ServiceAccountRef
}
