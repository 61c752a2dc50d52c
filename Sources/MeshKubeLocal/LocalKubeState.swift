public import Foundation
public import MeshCore
public import MeshKube
import Synchronization

/// The embedded API server's data: objects, resource types, the event history and live watches.
///
/// Outlives any one `LocalKubeAPIServer` (stop a server and start another on the same state), and is
/// usable in-process: changes made here are seen by watchers over HTTP and vice versa.
public final class LocalKubeState: Sendable {
  public struct Configuration: Sendable {
    /// How many events the history keeps; a watch from an older resourceVersion gets 410 Expired.
    /// Default 10 000.
    public var historyLimit = 10_000
    /// Where Service cluster IPs come from (data only; nothing connects to them). Default 10.96.0.0/12.
    public var serviceCIDR = "10.96.0.0/12"
    /// API groups of built-in types not to serve, to stand in for an older cluster (e.g.
    /// `discovery.k8s.io`: a cluster before Kubernetes 1.21, without EndpointSlices). Default none.
    public var unservedGroups: Set<String> = []
    /// The admin bearer token (group `system:masters`); nil makes a random one. Default nil.
    public var adminToken: String?
    public init() {}
    public static func defaults(configure: (inout Self) -> Void = { _ in }) -> Self {
      var c = Self()
      configure(&c)
      return c
    }
  }

  struct HistoryEvent: Sendable {
    var rv: Int64
    var resource: ResourceID
    var type: String
    var object: JSONValue
  }

  struct State: Sendable {
    var rv: Int64 = 0
    var types: [ResourceID: ResourceType] = [:]
    var objects: [ResourceID: [String: JSONValue]] = [:]
    var history: [HistoryEvent] = []
    /// Events with rv > floor are all in `history`.
    var historyFloor: Int64 = 0
    var watchers: [Int: Watcher] = [:]
    var nextWatcher = 0
    var nextClusterIP: UInt32 = 10
    var usedClusterIPs: Set<UInt32> = []
    var tokens: [String: IssuedToken] = [:]
  }

  /// A service-account token the server issued (TokenRequest) or was told about.
  struct IssuedToken: Sendable {
    var account: ServiceAccountRef
    /// Who the token is for; nil accepts any audience (tokens registered in-process).
    var audiences: [String]?
    var expires: Date?
    /// Issued by TokenRequest: dies with its service account.
    var bound = false
  }

  /// The audience of tokens requested without one, and of reviews that name none: the API server's own.
  public static let apiServerAudience = "https://kubernetes.default.svc.cluster.local"

  let configuration: Configuration
  let state = Mutex(State())
  /// Made on first use (see `credentials()`).
  let madeCredentials = Mutex<LocalKubeCredentials?>(nil)
  let cidrBase: UInt32
  let cidrSize: UInt32

  public init(configuration: Configuration = .init()) {
    self.configuration = configuration
    let parts = configuration.serviceCIDR.split(separator: "/")
    let octets = parts.first.map { $0.split(separator: ".").compactMap { UInt32($0) } } ?? []
    let prefix = parts.count == 2 ? UInt32(parts[1]) ?? 12 : 12
    if octets.count == 4, prefix >= 8, prefix <= 30 {
      cidrBase = octets.reduce(0) { ($0 << 8) | $1 }
      cidrSize = 1 << (32 - prefix)
    } else {
      cidrBase = (10 << 24) | (96 << 16)
      cidrSize = 1 << 20
    }
    state.withLock { s in
      for t in ResourceType.builtIn where !configuration.unservedGroups.contains(t.group) { s.types[t.id] = t }
    }
    for ns in ["default", "kube-system", "kube-public"] {
      _ = try? create(resource: "namespaces", object: ["metadata": ["name": .string(ns)]])
    }
    for crd in Self.meshCRDs { _ = try? create(group: "apiextensions.k8s.io", resource: "customresourcedefinitions", object: crd) }
    for role in Self.bootstrapClusterRoles {
      _ = try? create(group: RBAC.group, resource: "clusterroles", object: role)
    }
    for binding in Self.bootstrapClusterRoleBindings {
      _ = try? create(group: RBAC.group, resource: "clusterrolebindings", object: binding)
    }
  }

  /// The cluster CA and the admin token, made on first use and kept for the life of this state.
  public func credentials() throws(MeshError) -> LocalKubeCredentials {
    try madeCredentials.withLock { (made: inout LocalKubeCredentials?) throws(MeshError) -> LocalKubeCredentials in
      if let made { return made }
      let credentials = try LocalKubeCredentials(adminToken: configuration.adminToken)
      made = credentials
      return credentials
    }
  }

  /// The latest resourceVersion.
  public var resourceVersion: Int64 { state.withLock { $0.rv } }

  /// Every resource type served, sorted by group and plural.
  public var resourceTypes: [ResourceType] {
    state.withLock { $0.types.values.sorted { ($0.group, $0.plural) < ($1.group, $1.plural) } }
  }

  func type(group: String, plural: String) throws(APIStatusError) -> ResourceType {
    guard let t = state.withLock({ $0.types[ResourceID(group: group, plural: plural)] }) else {
      throw APIStatusError(code: 404, reason: "NotFound", message: "the server could not find the requested resource (\(group.isEmpty ? "" : group + "/")\(plural))")
    }
    return t
  }

  /// Registers `token` as belonging to a service account, for TokenReview and for authenticating to the API,
  /// valid until `expires` (nil: no end).
  public func registerServiceAccountToken(_ token: String, for account: ServiceAccountRef, expires: Date? = nil) {
    state.withLock { $0.tokens[token] = IssuedToken(account: account, expires: expires) }
  }

  /// A TokenRequest (`POST .../serviceaccounts/NAME/token`, what `kubectl create token` sends): a new opaque
  /// token for an existing service account, bound to `spec.audiences` (default: the API server's) and valid
  /// for `spec.expirationSeconds` (default 3600, at least 600, as the real server enforces).
  func requestToken(namespace: String, serviceAccount: String, request: JSONValue) throws(APIStatusError) -> JSONValue {
    _ = try get(resource: "serviceaccounts", namespace: namespace, name: serviceAccount)
    var audiences: [String] = []
    if let given = request["spec"]?["audiences"] {
      guard case .array(let items) = given else { throw APIStatusError.badRequest("spec.audiences must be a list of strings") }
      for item in items {
        guard let audience = item.stringValue, !audience.isEmpty else {
          throw APIStatusError.badRequest("spec.audiences must be a list of non-empty strings")
        }
        audiences.append(audience)
      }
    }
    if audiences.isEmpty { audiences = [Self.apiServerAudience] }
    var seconds: Int64 = 3600
    if let given = request["spec"]?["expirationSeconds"] {
      guard let value = given.intValue else { throw APIStatusError.badRequest("spec.expirationSeconds must be an integer") }
      guard value >= 600 else {
        throw APIStatusError(
          code: 422, reason: "Invalid",
          message: "TokenRequest.authentication.k8s.io \"\(serviceAccount)\" is invalid: spec.expirationSeconds: "
            + "Invalid value: \(value): may not specify a duration less than 10 minutes")
      }
      seconds = min(value, 48 * 3600)
    }
    let token = LocalKubeCredentials.randomToken(prefix: "swiftmesh-local.")
    let expires = Date().addingTimeInterval(TimeInterval(seconds))
    state.withLock {
      $0.tokens[token] = IssuedToken(
        account: ServiceAccountRef(name: serviceAccount, namespace: namespace), audiences: audiences, expires: expires,
        bound: true)
    }
    var response = request
    response["apiVersion"] = "authentication.k8s.io/v1"
    response["kind"] = "TokenRequest"
    var metadata = response["metadata"] ?? [:]
    metadata["name"] = .string(serviceAccount)
    metadata["namespace"] = .string(namespace)
    metadata["creationTimestamp"] = .string(Self.timestamp(Date()))
    response["metadata"] = metadata
    var spec = response["spec"] ?? [:]
    spec["audiences"] = .array(audiences.map { .string($0) })
    spec["expirationSeconds"] = .int(seconds)
    response["spec"] = spec
    response["status"] = ["token": .string(token), "expirationTimestamp": .string(Self.timestamp(expires))]
    return response
  }

  /// A TokenReview's answer for `token` and the audiences the reviewer wants (none: the API server's).
  func reviewToken(_ token: String, audiences wanted: [String]) -> (account: ServiceAccountRef?, audiences: [String], error: String?) {
    guard let issued = state.withLock({ $0.tokens[token] }) else { return (nil, [], "invalid bearer token") }
    if let expires = issued.expires, expires < Date() { return (nil, [], "token has expired") }
    let targets = wanted.isEmpty ? [Self.apiServerAudience] : wanted
    var granted = targets
    if let audiences = issued.audiences {
      granted = targets.filter { audiences.contains($0) }
      if granted.isEmpty {
        return (nil, [], "token audiences \(audiences) is invalid for the target audiences \(targets)")
      }
    }
    // Bound tokens die with their service account.
    if issued.bound, (try? get(resource: "serviceaccounts", namespace: issued.account.namespace, name: issued.account.name)) == nil {
      return (nil, [], "service account \(issued.account.namespace)/\(issued.account.name) has been deleted")
    }
    return (issued.account, granted, nil)
  }

  static func timestamp(_ date: Date) -> String {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime]
    return formatter.string(from: date)
  }

  /// Forgets a token (its reviews then say "not authenticated").
  public func revokeServiceAccountToken(_ token: String) {
    state.withLock { _ = $0.tokens.removeValue(forKey: token) }
  }

  // MARK: - CRUD on JSON

  static func key(_ namespace: String?, _ name: String) -> String {
    if let namespace, !namespace.isEmpty { return "\(namespace)/\(name)" }
    return name
  }

  static func timestamp() -> String {
    let f = ISO8601DateFormatter()
    f.formatOptions = [.withInternetDateTime]
    return f.string(from: Date())
  }

  /// Creates an object. `namespace` comes from the request path (or the object for in-process calls).
  @discardableResult
  public func create(group: String = "", resource plural: String, namespace: String? = nil, object: JSONValue) throws(APIStatusError) -> JSONValue {
    let t = try type(group: group, plural: plural)
    guard case .object = object else { throw APIStatusError.badRequest("the body of a create must be a JSON object") }
    var object = object
    var meta = object["metadata"]?.objectValue ?? [:]
    let namespace = t.namespaced ? (namespace ?? meta["namespace"]?.stringValue ?? "default") : nil
    if let bodyNS = meta["namespace"]?.stringValue, !bodyNS.isEmpty, t.namespaced, bodyNS != namespace {
      throw APIStatusError.badRequest(
        "the namespace of the provided object (\(bodyNS)) does not match the namespace sent on the request (\(namespace ?? ""))")
    }
    if let namespace { meta["namespace"] = .string(namespace) } else { meta["namespace"] = nil }
    if meta["name"]?.stringValue?.isEmpty ?? true {
      guard let prefix = meta["generateName"]?.stringValue, !prefix.isEmpty else {
        throw APIStatusError.invalid(plural, "", "metadata.name: Required value: name or generateName is required")
      }
      let alphabet = Array("bcdfghjklmnpqrstvwxz2456789")
      meta["name"] = .string(prefix + String((0..<5).map { _ in alphabet.randomElement()! }))
    }
    let name = meta["name"]!.stringValue!
    meta["uid"] = .string(UUID().uuidString.lowercased())
    meta["creationTimestamp"] = .string(Self.timestamp())
    meta["generation"] = .int(1)
    meta["deletionTimestamp"] = nil
    object["apiVersion"] = .string(t.apiVersion(object["apiVersion"]?.stringValue.flatMap { Self.version(of: $0) }))
    object["kind"] = .string(t.kind)

    if t.plural == "customresourcedefinitions", t.group == "apiextensions.k8s.io" {
      let crdType = try Self.resourceType(fromCRD: object, name: name)
      object["status"] = [
        "acceptedNames": ["kind": .string(crdType.kind), "plural": .string(crdType.plural)],
        "conditions": [["type": "Established", "status": "True"]],
      ]
    }
    let key = Self.key(namespace, name)
    return try state.withLock { (s: inout State) throws(APIStatusError) -> JSONValue in
      if s.objects[t.id]?[key] != nil {
        throw APIStatusError(code: 409, reason: "AlreadyExists", message: "\(plural) \"\(name)\" already exists",
                             name: name, kind: plural)
      }
      if t.group == "", t.plural == "services" { try assignClusterIP(&object, &s) }
      // As the real server defaults it: a Secret without a type is Opaque.
      if t.group == "", t.plural == "secrets", (object["type"]?.stringValue ?? "").isEmpty { object["type"] = "Opaque" }
      if t.plural == "customresourcedefinitions", t.group == "apiextensions.k8s.io" {
        let crdType = try Self.resourceType(fromCRD: object, name: name)
        s.types[crdType.id] = crdType
      }
      s.rv += 1
      meta["resourceVersion"] = .string(String(s.rv))
      object["metadata"] = .object(meta)
      s.objects[t.id, default: [:]][key] = object
      record(&s, HistoryEvent(rv: s.rv, resource: t.id, type: "ADDED", object: object))
      return object
    }
  }

  /// Replaces an object. A body resourceVersion that is not the current one gives 409 Conflict.
  @discardableResult
  public func update(group: String = "", resource plural: String, namespace: String? = nil, name: String, object: JSONValue) throws(APIStatusError) -> JSONValue {
    let t = try type(group: group, plural: plural)
    let namespace = t.namespaced ? (namespace ?? object["metadata"]?["namespace"]?.stringValue ?? "default") : nil
    if let bodyName = object["metadata"]?["name"]?.stringValue, bodyName != name {
      throw APIStatusError.badRequest("the name of the object (\(bodyName)) does not match the name on the URL (\(name))")
    }
    return try state.withLock { (s: inout State) throws(APIStatusError) -> JSONValue in
      try replace(&s, t, namespace: namespace, name: name) { current throws(APIStatusError) in
        if let want = object["metadata"]?["resourceVersion"]?.stringValue, !want.isEmpty,
          want != current["metadata"]?["resourceVersion"]?.stringValue
        {
          throw APIStatusError(
            code: 409, reason: "Conflict",
            message: "Operation cannot be fulfilled on \(plural) \"\(name)\": the object has been modified; please apply your changes to the latest version and try again",
            name: name, kind: plural)
        }
        return object
      }
    }
  }

  /// The patch formats the server takes (`kubectl patch --type=merge|strategic|json`).
  public enum PatchKind: Sendable {
    /// RFC 7386 JSON merge patch.
    case merge
    /// Strategic merge patch (lists merged by key).
    case strategicMerge
    /// RFC 6902 JSON patch: a failed `test`, or a path that is not there, is a 422.
    case json
  }

  /// Applies a patch of `kind` (default a JSON merge patch).
  @discardableResult
  public func patch(group: String = "", resource plural: String, namespace: String? = nil, name: String, patch: JSONValue,
                    kind: PatchKind = .merge) throws(APIStatusError) -> JSONValue {
    let t = try type(group: group, plural: plural)
    let namespace = t.namespaced ? (namespace ?? "default") : nil
    var operations: JSONPatch?
    if kind == .json {
      do { operations = try JSONPatch(json: patch) } catch { throw APIStatusError.badRequest(error.description) }
    } else {
      guard case .object = patch else { throw APIStatusError.badRequest("the patch must be a JSON object") }
    }
    return try state.withLock { (s: inout State) throws(APIStatusError) -> JSONValue in
      try replace(&s, t, namespace: namespace, name: name) { current throws(APIStatusError) in
        if let want = patch["metadata"]?["resourceVersion"]?.stringValue,
          want != current["metadata"]?["resourceVersion"]?.stringValue
        {
          throw APIStatusError(code: 409, reason: "Conflict",
                               message: "Operation cannot be fulfilled on \(plural) \"\(name)\": the object has been modified",
                               name: name, kind: plural)
        }
        switch kind {
        case .merge: return current.mergePatched(with: patch)
        case .strategicMerge: return StrategicMerge.apply(current, patch)
        case .json:
          do { return try operations!.applied(to: current) } catch {
            // As the real server answers it: a generic 422 without details, so clients show the message.
            throw APIStatusError(code: 422, reason: "Invalid", message: "\(error)")
          }
        }
      }
    }
  }

  /// The shared tail of update and patch: keeps server-owned metadata, bumps generation on spec changes.
  private func replace(_ s: inout State, _ t: ResourceType, namespace: String?, name: String,
                       _ change: (JSONValue) throws(APIStatusError) -> JSONValue) throws(APIStatusError) -> JSONValue {
    let key = Self.key(namespace, name)
    guard let current = s.objects[t.id]?[key] else { throw APIStatusError.notFound(t.plural, name) }
    var object = try change(current)
    var meta = object["metadata"]?.objectValue ?? [:]
    let old = current["metadata"]?.objectValue ?? [:]
    for field in ["uid", "creationTimestamp", "namespace", "name"] { meta[field] = old[field] }
    if namespace == nil { meta["namespace"] = nil }
    let generation = old["generation"]?.intValue ?? 1
    meta["generation"] = .int(object["spec"] != current["spec"] ? generation + 1 : generation)
    object["apiVersion"] = current["apiVersion"]
    object["kind"] = current["kind"]
    if t.group == "", t.plural == "services" {
      // clusterIP is immutable once assigned.
      if let ip = current["spec"]?["clusterIP"] {
        var spec = object["spec"]?.objectValue ?? [:]
        spec["clusterIP"] = ip
        spec["clusterIPs"] = current["spec"]?["clusterIPs"]
        object["spec"] = .object(spec)
      }
    }
    if t.plural == "customresourcedefinitions", t.group == "apiextensions.k8s.io" {
      let crdType = try Self.resourceType(fromCRD: object, name: name)
      s.types[crdType.id] = crdType
    }
    s.rv += 1
    meta["resourceVersion"] = .string(String(s.rv))
    object["metadata"] = .object(meta)
    s.objects[t.id, default: [:]][key] = object
    record(&s, HistoryEvent(rv: s.rv, resource: t.id, type: "MODIFIED", object: object))
    return object
  }

  /// Deletes an object and returns it (with the deletion's resourceVersion).
  @discardableResult
  public func delete(group: String = "", resource plural: String, namespace: String? = nil, name: String) throws(APIStatusError) -> JSONValue {
    let t = try type(group: group, plural: plural)
    let namespace = t.namespaced ? (namespace ?? "default") : nil
    let key = Self.key(namespace, name)
    return try state.withLock { (s: inout State) throws(APIStatusError) -> JSONValue in
      guard var object = s.objects[t.id]?.removeValue(forKey: key) else { throw APIStatusError.notFound(plural, name) }
      s.rv += 1
      object["metadata"]?["resourceVersion"] = .string(String(s.rv))
      if t.group == "", t.plural == "services",
        let ip = object["spec"]?["clusterIP"]?.stringValue, let n = Self.ipNumber(ip)
      {
        s.usedClusterIPs.remove(n)
      }
      if t.plural == "customresourcedefinitions", t.group == "apiextensions.k8s.io",
        let crdType = try? Self.resourceType(fromCRD: object, name: name)
      {
        s.types[crdType.id] = nil
        s.objects[crdType.id] = nil
      }
      record(&s, HistoryEvent(rv: s.rv, resource: t.id, type: "DELETED", object: object))
      return object
    }
  }

  /// One object, or 404.
  public func get(group: String = "", resource plural: String, namespace: String? = nil, name: String) throws(APIStatusError) -> JSONValue {
    let t = try type(group: group, plural: plural)
    let key = Self.key(t.namespaced ? (namespace ?? "default") : nil, name)
    guard let object = state.withLock({ $0.objects[t.id]?[key] }) else { throw APIStatusError.notFound(plural, name) }
    return object
  }

  /// A list answer.
  public struct ListResult: Sendable {
    public var items: [JSONValue]
    public var resourceVersion: String
    public var `continue`: String?
    public var remainingItemCount: Int?
  }

  /// Objects sorted by namespace/name; `namespace` nil lists across namespaces. `continue` is the
  /// token of the previous page (opaque: the base64 of the last key returned).
  public func list(group: String = "", resource plural: String, namespace: String? = nil, labelSelector: String? = nil,
                   fieldSelector: String? = nil, limit: Int? = nil, continue token: String? = nil) throws(APIStatusError) -> ListResult {
    let t = try type(group: group, plural: plural)
    let labels = try LabelQuery(labelSelector)
    let fields = try FieldQuery(fieldSelector)
    var after: String?
    if let token, !token.isEmpty {
      guard let data = Data(base64Encoded: token), let key = String(data: data, encoding: .utf8) else {
        throw APIStatusError(code: 400, reason: "BadRequest", message: "continue token '\(token)' is not valid")
      }
      after = key
    }
    let (objects, rv) = state.withLock { ($0.objects[t.id] ?? [:], $0.rv) }
    let prefix = namespace.map { $0 + "/" }
    var keys = objects.keys.filter { key in
      if t.namespaced, let prefix, !key.hasPrefix(prefix) { return false }
      if let after, key <= after { return false }
      return true
    }.sorted()
    keys = keys.filter { labels.matches(objects[$0]!) && fields.matches(objects[$0]!) }
    var next: String?
    var remaining: Int?
    if let limit, limit > 0, keys.count > limit {
      remaining = keys.count - limit
      keys = Array(keys.prefix(limit))
      next = Data(keys.last!.utf8).base64EncodedString()
    }
    return ListResult(items: keys.map { objects[$0]! }, resourceVersion: String(rv), continue: next, remainingItemCount: remaining)
  }

  // MARK: - Helpers

  static func version(of apiVersion: String) -> String? {
    apiVersion.split(separator: "/").last.map(String.init)
  }

  static func ipNumber(_ ip: String) -> UInt32? {
    let o = ip.split(separator: ".").compactMap { UInt32($0) }
    guard o.count == 4 else { return nil }
    return o.reduce(0) { ($0 << 8) | $1 }
  }

  private func assignClusterIP(_ object: inout JSONValue, _ s: inout State) throws(APIStatusError) {
    var spec = object["spec"]?.objectValue ?? [:]
    if spec["type"] == nil { spec["type"] = "ClusterIP" }
    if spec["type"]?.stringValue == "ExternalName" || spec["clusterIP"]?.stringValue == "None" {
      object["spec"] = .object(spec)
      return
    }
    if let ports = spec["ports"]?.arrayValue {
      spec["ports"] = .array(ports.map { p in
        var p = p
        if p["protocol"] == nil { p["protocol"] = "TCP" }
        if p["targetPort"] == nil, let port = p["port"] { p["targetPort"] = port }
        return p
      })
    }
    if let requested = spec["clusterIP"]?.stringValue, !requested.isEmpty {
      guard let n = Self.ipNumber(requested), n >= cidrBase, n < cidrBase + cidrSize else {
        throw APIStatusError.invalid("services", object["metadata"]?["name"]?.stringValue ?? "",
                                     "spec.clusterIP: Invalid value: \"\(requested)\": not in \(configuration.serviceCIDR)")
      }
      s.usedClusterIPs.insert(n)
    } else {
      var offset = s.nextClusterIP
      var tries: UInt32 = 0
      while s.usedClusterIPs.contains(cidrBase + offset) {
        offset = offset + 1 >= cidrSize - 1 ? 10 : offset + 1
        tries += 1
        if tries > cidrSize {
          throw APIStatusError(code: 500, reason: "InternalError", message: "service CIDR \(configuration.serviceCIDR) is full")
        }
      }
      s.nextClusterIP = offset + 1 >= cidrSize - 1 ? 10 : offset + 1
      s.usedClusterIPs.insert(cidrBase + offset)
      let n = cidrBase + offset
      let ip = "\(n >> 24).\((n >> 16) & 255).\((n >> 8) & 255).\(n & 255)"
      spec["clusterIP"] = .string(ip)
      spec["clusterIPs"] = [.string(ip)]
    }
    object["spec"] = .object(spec)
  }

  static func resourceType(fromCRD crd: JSONValue, name: String) throws(APIStatusError) -> ResourceType {
    guard let spec = crd["spec"], let group = spec["group"]?.stringValue, let names = spec["names"],
      let plural = names["plural"]?.stringValue, let kind = names["kind"]?.stringValue
    else {
      throw APIStatusError.invalid("customresourcedefinitions", name, "spec.group, spec.names.plural and spec.names.kind are required")
    }
    let versions = (spec["versions"]?.arrayValue ?? []).compactMap { v -> String? in
      v["served"] == .bool(false) ? nil : v["name"]?.stringValue
    }
    guard !versions.isEmpty else {
      throw APIStatusError.invalid("customresourcedefinitions", name, "spec.versions: at least one served version is required")
    }
    guard name == "\(plural).\(group)" else {
      throw APIStatusError.invalid("customresourcedefinitions", name, "metadata.name: must be spec.names.plural+\".\"+spec.group (\(plural).\(group))")
    }
    let storage = (spec["versions"]?.arrayValue ?? []).first { $0["storage"] == .bool(true) }?["name"]?.stringValue
    let ordered = storage.map { s in [s] + versions.filter { $0 != s } } ?? versions
    return ResourceType(
      group: group, versions: ordered, kind: kind, plural: plural, singular: names["singular"]?.stringValue,
      namespaced: spec["scope"]?.stringValue != "Cluster",
      shortNames: (names["shortNames"]?.arrayValue ?? []).compactMap(\.stringValue))
  }

  /// CRD objects for the mesh's own resources, registered at start.
  static var meshCRDs: [JSONValue] {
    func crd(_ group: String, _ version: String, _ kind: String, _ plural: String, _ short: [String]) -> JSONValue {
      [
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": ["name": .string("\(plural).\(group)")],
        "spec": [
          "group": .string(group), "scope": "Namespaced",
          "names": ["kind": .string(kind), "plural": .string(plural), "singular": .string(kind.lowercased()),
                    "listKind": .string(kind + "List"), "shortNames": .array(short.map { .string($0) })],
          "versions": [["name": .string(version), "served": true, "storage": true,
                        "schema": ["openAPIV3Schema": ["type": "object", "x-kubernetes-preserve-unknown-fields": true]]]],
        ],
      ]
    }
    return [
      crd(Link.group, Link.version, Link.kind, Link.plural, []),
      crd(ServiceProfile.group, ServiceProfile.version, ServiceProfile.kind, ServiceProfile.plural, ["sp"]),
      crd(TrafficSplit.group, TrafficSplit.version, TrafficSplit.kind, TrafficSplit.plural, ["ts"]),
    ]
  }
}
