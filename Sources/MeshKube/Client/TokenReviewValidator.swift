public import MeshCore

/// Validates bearer tokens with the API server's TokenReview (`authentication.k8s.io/v1`) and
/// maps `system:serviceaccount:<namespace>:<name>` to a `ServiceAccountRef`.
public struct TokenReviewValidator: TokenValidator {
  let client: KubeClient
  let audiences: [String]?

  public init(client: KubeClient, audiences: [String]? = nil) {
    self.client = client
    self.audiences = audiences
  }

  public func validate(token: String) async throws -> ServiceAccountRef {
    let review: TokenReview
    do {
      review = try await client.create(TokenReview(spec: .init(token: token, audiences: audiences)))
    } catch let error as KubeError {
      throw MeshError.unavailable("TokenReview failed: \(error.message)", cause: error)
    }
    guard let status = review.status, status.authenticated == true else {
      let why = review.status?.error.map { ": \($0)" } ?? ""
      throw MeshError.unauthenticated("token review: token not authenticated\(why)")
    }
    let username = status.user?.username ?? ""
    let parts = username.split(separator: ":", omittingEmptySubsequences: false)
    guard parts.count == 4, parts[0] == "system", parts[1] == "serviceaccount", !parts[2].isEmpty, !parts[3].isEmpty
    else {
      throw MeshError.unauthenticated("token review: user '\(username)' is not a service account (system:serviceaccount:<ns>:<name>)")
    }
    return ServiceAccountRef(name: String(parts[3]), namespace: String(parts[2]))
  }
}
