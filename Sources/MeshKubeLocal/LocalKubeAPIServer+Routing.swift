import Foundation
import Synchronization
import Logging
import MeshCore
import MeshKube
import NIOHTTP1

/// A request path resolved against the API.
struct ResourcePath {
  var group: String
  var version: String
  var namespace: String?
  var plural: String
  var name: String?
  var subresource: String?
  /// Reached by a deprecated `/watch/` path: a watch of the collection, or of the one object `name` names.
  var watchPath = false
}

extension LocalKubeAPIServer {
  func route(_ head: HTTPRequestHead, body: Data) async -> Reply {
    let (path, query) = Self.split(uri: head.uri)
    logger.trace("request", metadata: ["method": "\(head.method)", "uri": "\(head.uri)"])
    let parts = path.split(separator: "/").map { String($0).removingPercentEncoding ?? String($0) }
    // Who asks (401 for a bad credential, or none outside the public paths: like a real cluster's
    // system:public-info-viewer, /version and health checks need no token), then whether they may (RBAC).
    var user = UserInfo.admin
    if isSecure {
      switch authenticate(head) {
      case .user(let authenticated):
        user = authenticated
      case .anonymous where Self.publicPaths.contains(path):
        user = .anonymous
      case .anonymous:
        logger.debug("401: no credentials", metadata: ["method": "\(head.method)", "uri": "\(head.uri)"])
        return Self.unauthorized
      case .rejected(let reason):
        logger.notice("401: credentials rejected", metadata: ["reason": "\(reason)", "method": "\(head.method)", "uri": "\(head.uri)"])
        return Self.unauthorized
      }
    }
    do {
      if isSecure, user != .anonymous {
        user = try impersonation(of: user, head)
        let attributes = Self.attributes(method: head.method, path: path, parts: parts, query: query)
        guard state.authorize(user, attributes).allowed else {
          logger.debug("403", metadata: ["user": "\(user.name)", "method": "\(head.method)", "uri": "\(head.uri)"])
          throw Self.forbidden(user, attributes)
        }
      }
      switch parts.first {
      case "version" where parts.count == 1:
        return .json(.ok, Self.versionInfo)
      case "api":
        if parts.count == 1 { return .json(.ok, apiVersions(head)) }
        guard parts[1] == "v1" else { throw APIStatusError(code: 404, reason: "NotFound", message: "the server could not find the requested resource") }
        if parts.count == 2 { return .json(.ok, try resourceList(group: "", version: "v1")) }
        return try await resource(head, query: query, body: body, path: try Self.resourcePath(group: "", version: "v1", Array(parts[2...])), user: user)
      case "apis":
        if parts.count == 1 { return .json(.ok, groupList()) }
        if parts.count == 2 { return .json(.ok, try apiGroup(parts[1])) }
        if parts.count == 3 { return .json(.ok, try resourceList(group: parts[1], version: parts[2])) }
        return try await resource(head, query: query, body: body, path: try Self.resourcePath(group: parts[1], version: parts[2], Array(parts[3...])), user: user)
      case "openapi" where parts.count >= 2 && parts[1] == "v3":
        if parts.count == 2 { return .json(.ok, openAPIRoot()) }
        if parts.count == 4, parts[2] == "api" { return .json(.ok, try openAPIDocument(group: "", version: parts[3])) }
        if parts.count == 5, parts[2] == "apis" { return .json(.ok, try openAPIDocument(group: parts[3], version: parts[4])) }
        throw APIStatusError(code: 404, reason: "NotFound", message: "the server could not find the requested resource")
      default:
        // /openapi/v2 (kubectl falls back from it), anything else: not served.
        if parts == ["healthz"] || parts == ["readyz"] || parts == ["livez"] { return .text(.ok, "ok") }
        throw APIStatusError(code: 404, reason: "NotFound", message: "the server could not find the requested resource")
      }
    } catch let error as APIStatusError {
      return .json(HTTPResponseStatus(statusCode: error.code), error.json)
    } catch {
      return .json(.internalServerError, APIStatusError(code: 500, reason: "InternalError", message: "\(error)").json)
    }
  }

  static func resourcePath(group: String, version: String, _ rest: [String]) throws(APIStatusError) -> ResourcePath {
    // The deprecated watch paths: /api/v1/watch/namespaces/NS/pods[/NAME], /apis/G/V/watch/PLURAL[/NAME].
    if rest.first == "watch" {
      var path = try resourcePath(group: group, version: version, Array(rest.dropFirst()))
      guard path.subresource == nil else { throw APIStatusError.badRequest("a watch path names no subresource") }
      path.watchPath = true
      return path
    }
    if rest.count >= 3, rest[0] == "namespaces" {
      return ResourcePath(group: group, version: version, namespace: rest[1], plural: rest[2],
                          name: rest.count > 3 ? rest[3] : nil, subresource: rest.count > 4 ? rest[4] : nil)
    }
    guard let plural = rest.first else { throw APIStatusError.badRequest("no resource in path") }
    return ResourcePath(group: group, version: version, namespace: nil, plural: plural,
                        name: rest.count > 1 ? rest[1] : nil, subresource: rest.count > 2 ? rest[2] : nil)
  }

  static let unauthorized = Reply.json(.unauthorized, APIStatusError(code: 401, reason: "Unauthorized", message: "Unauthorized").json)

  func resource(_ head: HTTPRequestHead, query: [String: String], body: Data, path p: ResourcePath, user: UserInfo) async throws -> Reply {
    let t = try state.type(group: p.group, plural: p.plural)
    guard t.versions.contains(p.version) else {
      throw APIStatusError(code: 404, reason: "NotFound", message: "the server could not find the requested resource (\(p.group)/\(p.version) \(p.plural))")
    }
    if p.group.isEmpty, p.plural == "serviceaccounts", p.subresource == "token", let name = p.name, let ns = p.namespace {
      guard head.method == .POST else {
        throw APIStatusError(code: 405, reason: "MethodNotAllowed", message: "serviceaccounts/token takes POST (a TokenRequest)")
      }
      return .json(.created, try state.requestToken(namespace: ns, serviceAccount: name, request: try Self.body(head, body)))
    }
    if let sub = p.subresource, sub != "status" {
      throw APIStatusError(code: 404, reason: "NotFound", message: "subresource \(sub) of \(p.plural) is not served")
    }
    let namespace = t.namespaced ? p.namespace : nil
    func versioned(_ object: JSONValue) -> JSONValue {
      var object = object
      object["apiVersion"] = .string(t.apiVersion(p.version))
      return object
    }
    func parseBody() throws -> JSONValue { try Self.body(head, body) }
    if p.watchPath, head.method != .GET {
      throw APIStatusError(code: 405, reason: "MethodNotAllowed", message: "a /watch/ path takes GET")
    }
    if Self.isDryRun(query), head.method != .GET {
      return try dryRun(head, body: body, path: p, type: t, namespace: namespace)
    }
    switch head.method {
    case .GET:
      if let name = p.name, !p.watchPath {
        return .json(.ok, versioned(try state.get(group: p.group, resource: p.plural, namespace: namespace, name: name)))
      }
      if p.watchPath || Self.bool(query["watch"]) {
        // A watch path with a name watches that object alone, as `fieldSelector=metadata.name=NAME` does.
        let fieldSelector = [query["fieldSelector"], p.name.map { "metadata.name=\($0)" }]
          .compactMap { $0 }.filter { !$0.isEmpty }.joined(separator: ",")
        let registration = try state.watch(
          group: p.group, plural: p.plural, version: p.version, namespace: namespace,
          resourceVersion: query["resourceVersion"], labelSelector: query["labelSelector"], fieldSelector: fieldSelector)
        var timeout = configuration.maxWatchDuration
        if let seconds = query["timeoutSeconds"].flatMap(Int.init), seconds > 0 { timeout = .seconds(seconds) }
        return .watch(registration, timeout: timeout, bookmarks: Self.bool(query["allowWatchBookmarks"]))
      }
      let result = try state.list(group: p.group, resource: p.plural, namespace: namespace,
                                  labelSelector: query["labelSelector"], fieldSelector: query["fieldSelector"],
                                  limit: query["limit"].flatMap(Int.init), continue: query["continue"])
      var meta: [String: JSONValue] = ["resourceVersion": .string(result.resourceVersion)]
      if let c = result.continue { meta["continue"] = .string(c) }
      if let r = result.remainingItemCount { meta["remainingItemCount"] = .int(Int64(r)) }
      return .json(.ok, [
        "kind": .string(t.kind + "List"), "apiVersion": .string(t.apiVersion(p.version)),
        "metadata": .object(meta), "items": .array(result.items.map(versioned)),
      ])
    case .POST:
      guard p.name == nil else { throw APIStatusError(code: 405, reason: "MethodNotAllowed", message: "POST to a named object") }
      let object = try parseBody()
      if t.group == "authentication.k8s.io", t.plural == "tokenreviews" { return .json(.created, tokenReview(object)) }
      if t.group == "authentication.k8s.io", t.plural == "selfsubjectreviews" {
        // kubectl auth whoami: who the request is from.
        var review = object
        review["apiVersion"] = "authentication.k8s.io/v1"
        review["kind"] = "SelfSubjectReview"
        review["metadata"] = ["creationTimestamp": .null]
        review["status"] = [
          "userInfo": ["username": .string(user.name), "groups": .array(user.groups.map { .string($0) })]
        ]
        return .json(.created, review)
      }
      if t.group == "authorization.k8s.io", t.plural == "selfsubjectaccessreviews" || t.plural == "subjectaccessreviews" {
        return .json(.created, try accessReview(object, kind: t.kind, user: user))
      }
      let (admitted, warnings) = try await admit(object, type: t, version: p.version, namespace: namespace, user: user)
      return .json(.created, versioned(try state.create(group: p.group, resource: p.plural, namespace: namespace, object: admitted)),
                   warnings: warnings)
    case .PUT:
      guard let name = p.name else { throw APIStatusError(code: 405, reason: "MethodNotAllowed", message: "PUT needs an object name") }
      return .json(.ok, versioned(try state.update(group: p.group, resource: p.plural, namespace: namespace, name: name, object: try parseBody())))
    case .PATCH:
      guard let name = p.name else { throw APIStatusError(code: 405, reason: "MethodNotAllowed", message: "PATCH needs an object name") }
      return .json(.ok, versioned(try state.patch(group: p.group, resource: p.plural, namespace: namespace, name: name,
                                                  patch: try parseBody(), kind: try Self.patchKind(head))))
    case .DELETE:
      guard let name = p.name else { throw APIStatusError(code: 405, reason: "MethodNotAllowed", message: "collection delete is not supported") }
      return .json(.ok, versioned(try state.delete(group: p.group, resource: p.plural, namespace: namespace, name: name)))
    default:
      throw APIStatusError(code: 405, reason: "MethodNotAllowed", message: "method \(head.method) is not supported")
    }
  }

  /// The kind of a PATCH, from its content type; 415 for any other.
  static func patchKind(_ head: HTTPRequestHead) throws(APIStatusError) -> LocalKubeState.PatchKind {
    let contentType = head.headers["Content-Type"].first?.split(separator: ";").first.map(String.init) ?? ""
    switch contentType {
    case "application/merge-patch+json": return .merge
    case "application/strategic-merge-patch+json": return .strategicMerge
    case "application/json-patch+json": return .json
    default:
      throw APIStatusError(code: 415, reason: "UnsupportedMediaType",
                           message: "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got '\(contentType)')")
    }
  }

  /// A request's body as JSON: JSON as sent, or Kubernetes protobuf (kubectl's typed commands) decoded.
  static func body(_ head: HTTPRequestHead, _ body: Data) throws(APIStatusError) -> JSONValue {
    let contentType = head.headers["Content-Type"].first?.split(separator: ";").first
      .map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
    if contentType == KubeProtobuf.contentType {
      do { return try KubeProtobuf.decode(body) } catch {
        throw APIStatusError(code: 415, reason: "UnsupportedMediaType", message: error.description)
      }
    }
    do { return try JSONValue.parse(body) } catch {
      throw APIStatusError.badRequest("the request body is not JSON: \(String(decoding: body.prefix(100), as: UTF8.self))")
    }
  }

  func tokenReview(_ review: JSONValue) -> JSONValue {
    var review = review
    let token = review["spec"]?["token"]?.stringValue ?? ""
    var wanted: [String] = []
    if case .array(let items)? = review["spec"]?["audiences"] { wanted = items.compactMap(\.stringValue) }
    let result = state.reviewToken(token, audiences: wanted)
    if let account = result.account {
      review["status"] = [
        "authenticated": true,
        "user": ["username": .string("system:serviceaccount:\(account.namespace):\(account.name)"),
                 "groups": ["system:serviceaccounts", .string("system:serviceaccounts:\(account.namespace)"), "system:authenticated"]],
        "audiences": .array(result.audiences.map { .string($0) }),
      ]
    } else {
      review["status"] = ["authenticated": false, "error": .string(result.error ?? "invalid bearer token")]
    }
    review["apiVersion"] = "authentication.k8s.io/v1"
    review["kind"] = "TokenReview"
    return review
  }

  /// Go's `strconv.ParseBool` truths (the python client sends `True`).
  static func bool(_ value: String?) -> Bool {
    ["1", "t", "T", "true", "TRUE", "True"].contains(value ?? "")
  }

  /// Path and query of a request URI (query values percent- and `+`-decoded).
  static func split(uri: String) -> (String, [String: String]) {
    guard let q = uri.firstIndex(of: "?") else { return (uri, [:]) }
    var query: [String: String] = [:]
    for pair in uri[uri.index(after: q)...].split(separator: "&") {
      let kv = pair.split(separator: "=", maxSplits: 1)
      func decode(_ s: Substring) -> String {
        s.replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String(s)
      }
      query[decode(kv[0])] = kv.count > 1 ? decode(kv[1]) : ""
    }
    return (String(uri[..<q]), query)
  }
}
