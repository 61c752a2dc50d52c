import Foundation
import Logging
import MeshCore
import MeshKube
import NIOHTTP1

/// Authentication (bearer tokens), impersonation, authorization (RBAC) and access reviews.
extension LocalKubeAPIServer {
  enum Authentication {
    case user(UserInfo)
    /// No credentials.
    case anonymous
    /// Credentials that are not valid (the reason is logged, never sent).
    case rejected(String)
  }

  /// Paths anyone may read, as a real cluster's `system:public-info-viewer` allows.
  static let publicPaths: Set<String> = ["/healthz", "/readyz", "/livez", "/version", "/version/"]

  /// Who sent `head`: the admin token, a service-account token this server minted (for its own audience,
  /// unexpired, its account still there), nobody, or a rejected credential.
  func authenticate(_ head: HTTPRequestHead) -> Authentication {
    guard let header = head.headers["Authorization"].first else { return .anonymous }
    let parts = header.split(separator: " ", maxSplits: 1)
    guard parts.count == 2, parts[0].lowercased() == "bearer" else {
      return .rejected("the Authorization header is not a bearer token")
    }
    let token = parts[1].trimmingCharacters(in: .whitespaces)
    guard !token.isEmpty else { return .rejected("empty bearer token") }
    do {
      if LocalKubeCredentials.constantTimeEquals(token, try state.credentials().adminToken) { return .user(.admin) }
    } catch {
      return .rejected("the server has no credentials: \(error)")
    }
    let review = state.reviewToken(token, audiences: [])
    guard let account = review.account else { return .rejected(review.error ?? "invalid bearer token") }
    return .user(.serviceAccount(account))
  }

  /// The user `user` acts as: itself, or the one its `Impersonate-User` / `Impersonate-Group` headers name,
  /// which takes the `impersonate` verb on `users`, `groups` or `serviceaccounts` (403 otherwise).
  func impersonation(of user: UserInfo, _ head: HTTPRequestHead) throws(APIStatusError) -> UserInfo {
    let names = head.headers["Impersonate-User"]
    let groups = head.headers["Impersonate-Group"]
    guard let name = names.first else {
      if !groups.isEmpty {
        throw APIStatusError(code: 500, reason: "InternalError",
                             message: "requested \(groups) without impersonating a user")
      }
      return user
    }
    var target = UserInfo(name: name, groups: groups)
    var checks: [AccessAttributes] = []
    if let account = target.serviceAccount {
      checks.append(.resource(verb: "impersonate", resource: "serviceaccounts", namespace: account.namespace, name: account.name))
      if groups.isEmpty { target.groups = UserInfo.serviceAccount(account).groups }
    } else {
      checks.append(.resource(verb: "impersonate", resource: "users", name: name))
    }
    checks += groups.map { .resource(verb: "impersonate", resource: "groups", name: $0) }
    for check in checks where !state.authorize(user, check).allowed {
      throw Self.forbidden(user, check)
    }
    if target.name != UserInfo.anonymous.name, !target.groups.contains("system:authenticated") {
      target.groups.append("system:authenticated")
    }
    return target
  }

  /// What a request asks to do, for RBAC: the verb from the method (GET of a collection is `list`, with
  /// `watch=true` `watch`), the resource from the path.
  static func attributes(method: HTTPMethod, path: String, parts: [String], query: [String: String]) -> AccessAttributes {
    let rest: [String]
    let group: String
    if parts.count >= 3, parts[0] == "api" {
      group = ""
      rest = Array(parts[2...])
    } else if parts.count >= 4, parts[0] == "apis" {
      group = parts[1]
      rest = Array(parts[3...])
    } else {
      return .nonResource(verb: method.rawValue.lowercased(), path: path)
    }
    guard let p = try? resourcePath(group: group, version: "", rest) else {
      return .nonResource(verb: method.rawValue.lowercased(), path: path)
    }
    let verb: String
    switch method {
    case .GET, .HEAD:
      if bool(query["watch"]) || p.watchPath { verb = "watch" } else { verb = p.name == nil ? "list" : "get" }
    case .POST: verb = "create"
    case .PUT: verb = "update"
    case .PATCH: verb = "patch"
    case .DELETE: verb = p.name == nil ? "deletecollection" : "delete"
    default: verb = method.rawValue.lowercased()
    }
    var namespace = p.namespace ?? ""
    // As the real server scopes it: a named namespace is its own namespace.
    if group.isEmpty, p.plural == "namespaces", let name = p.name, namespace.isEmpty { namespace = name }
    return .resource(verb: verb, group: group, resource: p.plural, subresource: p.subresource ?? "",
                     namespace: namespace, name: p.name ?? "")
  }

  /// The 403 for `a` refused to `user`, as the real server words it.
  static func forbidden(_ user: UserInfo, _ a: AccessAttributes) -> APIStatusError {
    var error = APIStatusError(code: 403, reason: "Forbidden", message: a.forbiddenMessage(for: user))
    if let resource = a.resource {
      error.kind = resource
      error.group = a.group.isEmpty ? nil : a.group
      error.name = a.name.isEmpty ? nil : a.name
    }
    return error
  }

  /// The answer to a SelfSubjectAccessReview (`kubectl auth can-i`) by `user`, or a SubjectAccessReview
  /// naming its user in `spec.user` / `spec.groups`.
  func accessReview(_ review: JSONValue, kind: String, user: UserInfo) throws(APIStatusError) -> JSONValue {
    guard let spec = review["spec"] else { throw APIStatusError.badRequest("\(kind): spec is required") }
    var subject = user
    if kind == "SubjectAccessReview" {
      guard let name = spec["user"]?.stringValue, !name.isEmpty else {
        throw APIStatusError.invalid("subjectaccessreviews", "", "spec.user: Required value")
      }
      subject = UserInfo(name: name, groups: (spec["groups"]?.arrayValue ?? []).compactMap(\.stringValue))
    }
    let a: AccessAttributes
    if let r = spec["resourceAttributes"], case .object = r {
      func field(_ key: String) -> String { r[key]?.stringValue ?? "" }
      a = .resource(verb: field("verb"), group: field("group"), resource: field("resource"),
                    subresource: field("subresource"), namespace: field("namespace"), name: field("name"))
    } else if let n = spec["nonResourceAttributes"], case .object = n {
      a = .nonResource(verb: n["verb"]?.stringValue ?? "", path: n["path"]?.stringValue ?? "")
    } else {
      throw APIStatusError.invalid(
        kind.lowercased() + "s", "", "spec.resourceAttributes: Invalid value: exactly one of nonResourceAttributes or resourceAttributes must be specified")
    }
    let decision = state.authorize(subject, a)
    var answer = review
    answer["apiVersion"] = "authorization.k8s.io/v1"
    answer["kind"] = .string(kind)
    var metadata = answer["metadata"]?.objectValue ?? [:]
    metadata["creationTimestamp"] = .null
    answer["metadata"] = .object(metadata)
    var status: [String: JSONValue] = ["allowed": .bool(decision.allowed)]
    if !decision.reason.isEmpty { status["reason"] = .string(decision.reason) }
    answer["status"] = .object(status)
    return answer
  }
}
