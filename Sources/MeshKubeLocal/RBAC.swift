public import MeshCore
import MeshKube

/// Who a request is from, once authenticated (or impersonated).
public struct UserInfo: Sendable, Hashable, CustomStringConvertible {
  public var name: String
  public var groups: [String]

  public init(name: String, groups: [String]) {
    self.name = name
    self.groups = groups
  }

  /// The admin of the admin token: `system:masters` passes every authorization check.
  public static let admin = UserInfo(name: LocalKubeCredentials.adminUser, groups: ["system:masters", "system:authenticated"])
  /// A request without credentials.
  public static let anonymous = UserInfo(name: "system:anonymous", groups: ["system:unauthenticated"])

  /// A service account's user, with the groups the real server gives it.
  public static func serviceAccount(_ account: ServiceAccountRef) -> UserInfo {
    UserInfo(
      name: "system:serviceaccount:\(account.namespace):\(account.name)",
      groups: ["system:serviceaccounts", "system:serviceaccounts:\(account.namespace)", "system:authenticated"])
  }

  /// The namespace and name of a `system:serviceaccount:NS:NAME` user, or nil.
  public var serviceAccount: ServiceAccountRef? {
    let parts = name.split(separator: ":", omittingEmptySubsequences: false)
    guard parts.count == 4, parts[0] == "system", parts[1] == "serviceaccount", !parts[2].isEmpty, !parts[3].isEmpty
    else { return nil }
    return ServiceAccountRef(name: String(parts[3]), namespace: String(parts[2]))
  }

  public var isMaster: Bool { groups.contains("system:masters") }
  public var description: String { name }
}

/// What a request asks to do, as the authorizer sees it: a verb on a resource (group, resource, subresource,
/// namespace, name) or on a non-resource path.
public struct AccessAttributes: Sendable, Hashable {
  public var verb: String
  /// Resource requests: the API group ("" for core), the plural, the subresource, the namespace and the name.
  public var group = ""
  public var resource: String?
  public var subresource = ""
  public var namespace = ""
  public var name = ""
  /// Non-resource requests: the path.
  public var path = ""

  public var isResourceRequest: Bool { resource != nil }

  public static func resource(
    verb: String, group: String = "", resource: String, subresource: String = "", namespace: String = "",
    name: String = ""
  ) -> Self {
    var a = Self(verb: verb)
    a.group = group
    a.resource = resource
    a.subresource = subresource
    a.namespace = namespace
    a.name = name
    return a
  }

  public static func nonResource(verb: String, path: String) -> Self {
    var a = Self(verb: verb)
    a.path = path
    return a
  }

  init(verb: String) { self.verb = verb }

  /// `resource/subresource`, as RBAC rules name it.
  var combinedResource: String {
    guard let resource else { return "" }
    return subresource.isEmpty ? resource : "\(resource)/\(subresource)"
  }

  /// What the real server says when RBAC refuses this for `user` (the `Status` message of its 403).
  public func forbiddenMessage(for user: UserInfo) -> String {
    guard let resource else {
      return "forbidden: User \"\(user.name)\" cannot \(verb) path \"\(path)\""
    }
    let scope = namespace.isEmpty ? "at the cluster scope" : "in the namespace \"\(namespace)\""
    let reason = "User \"\(user.name)\" cannot \(verb) resource \"\(combinedResource)\" in API group \"\(group)\" \(scope)"
    let qualified = group.isEmpty ? resource : "\(resource).\(group)"
    return name.isEmpty ? "\(qualified) is forbidden: \(reason)" : "\(qualified) \"\(name)\" is forbidden: \(reason)"
  }
}

/// Role-based access control over the Role, ClusterRole, RoleBinding and ClusterRoleBinding objects, as the
/// real server's RBAC authorizer decides: a request is allowed when a binding whose subjects include the user
/// (by name, group or service account) refers to a role with a rule matching it (verbs, apiGroups,
/// resources with subresources, resourceNames, nonResourceURLs; `*` wildcards). ClusterRoleBindings apply
/// everywhere, RoleBindings only inside their namespace. `system:masters` is always allowed. Aggregated
/// ClusterRoles are not expanded.
struct RBAC: Sendable {
  static let group = "rbac.authorization.k8s.io"

  struct Rule: Sendable {
    var verbs: [String]
    var apiGroups: [String]
    var resources: [String]
    var resourceNames: [String]
    var nonResourceURLs: [String]

    init(_ json: JSONValue) {
      func strings(_ key: String) -> [String] { (json[key]?.arrayValue ?? []).compactMap(\.stringValue) }
      verbs = strings("verbs")
      apiGroups = strings("apiGroups")
      resources = strings("resources")
      resourceNames = strings("resourceNames")
      nonResourceURLs = strings("nonResourceURLs")
    }

    func allows(_ a: AccessAttributes) -> Bool {
      guard verbs.contains("*") || verbs.contains(a.verb) else { return false }
      guard a.isResourceRequest else {
        return nonResourceURLs.contains { url in
          url == "*" || url == a.path || (url.hasSuffix("*") && a.path.hasPrefix(url.dropLast()))
        }
      }
      guard apiGroups.contains("*") || apiGroups.contains(a.group) else { return false }
      let combined = a.combinedResource
      guard
        resources.contains(where: { r in
          r == "*" || r == combined || (!a.subresource.isEmpty && r == "*/\(a.subresource)")
        })
      else { return false }
      return resourceNames.isEmpty || resourceNames.contains(a.name)
    }
  }

  struct Binding: Sendable {
    var kind: String
    var name: String
    /// Where a RoleBinding lives; "" for a ClusterRoleBinding.
    var namespace: String
    var roleKind: String
    var roleName: String
    var subjects: [JSONValue]

    init(_ json: JSONValue, kind: String) {
      self.kind = kind
      name = json["metadata"]?["name"]?.stringValue ?? ""
      namespace = json["metadata"]?["namespace"]?.stringValue ?? ""
      roleKind = json["roleRef"]?["kind"]?.stringValue ?? ""
      roleName = json["roleRef"]?["name"]?.stringValue ?? ""
      subjects = json["subjects"]?.arrayValue ?? []
    }

    /// The subject that names `user`, described as the real server describes it, or nil.
    func subject(matching user: UserInfo) -> String? {
      for subject in subjects {
        let name = subject["name"]?.stringValue ?? ""
        switch subject["kind"]?.stringValue {
        case "User" where name == user.name:
          return "User \"\(name)\""
        case "Group" where user.groups.contains(name):
          return "Group \"\(name)\""
        case "ServiceAccount":
          let namespace = subject["namespace"]?.stringValue ?? namespace
          if user.name == "system:serviceaccount:\(namespace):\(name)" { return "ServiceAccount \"\(name)/\(namespace)\"" }
        default:
          continue
        }
      }
      return nil
    }
  }

  var clusterRoles: [String: [Rule]] = [:]
  var roles: [String: [Rule]] = [:]
  var clusterRoleBindings: [Binding] = []
  var roleBindings: [Binding] = []

  /// The RBAC objects of `state`, as they are now.
  init(_ state: LocalKubeState) {
    func items(_ plural: String) -> [JSONValue] {
      (try? state.list(group: Self.group, resource: plural).items) ?? []
    }
    func rules(_ role: JSONValue) -> [Rule] { (role["rules"]?.arrayValue ?? []).map(Rule.init) }
    for role in items("clusterroles") {
      clusterRoles[role["metadata"]?["name"]?.stringValue ?? ""] = rules(role)
    }
    for role in items("roles") {
      let meta = role["metadata"]
      roles["\(meta?["namespace"]?.stringValue ?? "")/\(meta?["name"]?.stringValue ?? "")"] = rules(role)
    }
    clusterRoleBindings = items("clusterrolebindings").map { Binding($0, kind: "ClusterRoleBinding") }
    roleBindings = items("rolebindings").map { Binding($0, kind: "RoleBinding") }
  }

  /// Whether `user` may do `a`, and why (the binding and role that allow it, in the real server's words).
  func decide(_ user: UserInfo, _ a: AccessAttributes) -> (allowed: Bool, reason: String) {
    if user.isMaster { return (true, "") }
    for binding in clusterRoleBindings where binding.roleKind == "ClusterRole" {
      guard let subject = binding.subject(matching: user),
        (clusterRoles[binding.roleName] ?? []).contains(where: { $0.allows(a) })
      else { continue }
      return (true, "RBAC: allowed by ClusterRoleBinding \"\(binding.name)\" of ClusterRole \"\(binding.roleName)\" to \(subject)")
    }
    if a.isResourceRequest, !a.namespace.isEmpty {
      for binding in roleBindings where binding.namespace == a.namespace {
        guard let subject = binding.subject(matching: user) else { continue }
        let rules: [Rule]
        switch binding.roleKind {
        case "Role": rules = roles["\(binding.namespace)/\(binding.roleName)"] ?? []
        case "ClusterRole": rules = clusterRoles[binding.roleName] ?? []
        default: rules = []
        }
        guard rules.contains(where: { $0.allows(a) }) else { continue }
        return (
          true,
          "RBAC: allowed by RoleBinding \"\(binding.name)/\(binding.namespace)\" of \(binding.roleKind) \"\(binding.roleName)\" to \(subject)"
        )
      }
    }
    return (false, "")
  }
}

extension LocalKubeState {
  /// Whether `user` may do `a` under the RBAC objects stored now, and the reason.
  public func authorize(_ user: UserInfo, _ a: AccessAttributes) -> (allowed: Bool, reason: String) {
    if user.isMaster { return (true, "") }
    return RBAC(self).decide(user, a)
  }

  /// The default roles and bindings a real server makes at start (the ones this server needs): `cluster-admin`
  /// for `system:masters`, discovery and health paths for every authenticated user, and access reviews of
  /// one's own permissions (`kubectl auth can-i`).
  static var bootstrapClusterRoles: [JSONValue] {
    func role(_ name: String, _ rules: [JSONValue]) -> JSONValue {
      [
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": ["name": .string(name), "labels": ["kubernetes.io/bootstrapping": "rbac-defaults"]],
        "rules": .array(rules),
      ]
    }
    return [
      role("cluster-admin", [
        ["apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]],
        ["nonResourceURLs": ["*"], "verbs": ["*"]],
      ]),
      role("system:discovery", [
        [
          "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz",
                              "/version", "/version/"],
          "verbs": ["get"],
        ]
      ]),
      role("system:public-info-viewer", [
        ["nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]]
      ]),
      role("system:basic-user", [
        ["apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews"], "verbs": ["create"]],
        ["apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]],
      ]),
    ]
  }

  static var bootstrapClusterRoleBindings: [JSONValue] {
    func binding(_ name: String, groups: [String]) -> JSONValue {
      [
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": ["name": .string(name), "labels": ["kubernetes.io/bootstrapping": "rbac-defaults"]],
        "roleRef": ["apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": .string(name)],
        "subjects": .array(groups.map { ["apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": .string($0)] }),
      ]
    }
    return [
      binding("cluster-admin", groups: ["system:masters"]),
      binding("system:discovery", groups: ["system:authenticated"]),
      binding("system:public-info-viewer", groups: ["system:authenticated", "system:unauthenticated"]),
      binding("system:basic-user", groups: ["system:authenticated"]),
    ]
  }
}
