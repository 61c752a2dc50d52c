public import MeshKube

/// A resource type the embedded server serves: built in, or registered by a CustomResourceDefinition.
public struct ResourceType: Sendable, Hashable {
  public var group: String
  /// Served versions; the first is the preferred (storage) version.
  public var versions: [String]
  public var kind: String
  public var plural: String
  public var singular: String
  public var namespaced: Bool
  public var shortNames: [String]
  public var verbs: [String]

  public init(group: String, versions: [String], kind: String, plural: String, singular: String? = nil,
              namespaced: Bool, shortNames: [String] = [], verbs: [String] = ResourceType.allVerbs) {
    self.group = group
    self.versions = versions
    self.kind = kind
    self.plural = plural
    self.singular = singular ?? kind.lowercased()
    self.namespaced = namespaced
    self.shortNames = shortNames
    self.verbs = verbs
  }

  public static let allVerbs = ["create", "delete", "get", "list", "patch", "update", "watch"]

  /// The type of a `KubeResource`.
  public init<R: KubeResource>(_ type: R.Type, shortNames: [String] = []) {
    self.init(group: R.group, versions: [R.version], kind: R.kind, plural: R.plural, namespaced: R.namespaced, shortNames: shortNames)
  }

  var id: ResourceID { ResourceID(group: group, plural: plural) }

  func apiVersion(_ version: String? = nil) -> String {
    let v = version ?? versions[0]
    return group.isEmpty ? v : "\(group)/\(v)"
  }

  static let builtIn: [ResourceType] = [
    ResourceType(MeshKube.Namespace.self, shortNames: ["ns"]),
    ResourceType(KubeService.self, shortNames: ["svc"]),
    ResourceType(Endpoints.self, shortNames: ["ep"]),
    ResourceType(Pod.self, shortNames: ["po"]),
    ResourceType(Secret.self),
    ResourceType(ServiceAccount.self, shortNames: ["sa"]),
    ResourceType(group: "", versions: ["v1"], kind: "ConfigMap", plural: "configmaps", namespaced: true, shortNames: ["cm"]),
    ResourceType(EndpointSlice.self),
    ResourceType(Lease.self),
    // Workloads and RBAC: stored and served (kubectl apply, get, watch), not acted on — nothing here runs pods.
    ResourceType(group: "apps", versions: ["v1"], kind: "Deployment", plural: "deployments", namespaced: true, shortNames: ["deploy"]),
    ResourceType(group: "apps", versions: ["v1"], kind: "StatefulSet", plural: "statefulsets", namespaced: true, shortNames: ["sts"]),
    ResourceType(group: "apps", versions: ["v1"], kind: "DaemonSet", plural: "daemonsets", namespaced: true, shortNames: ["ds"]),
    ResourceType(group: "apps", versions: ["v1"], kind: "ReplicaSet", plural: "replicasets", namespaced: true, shortNames: ["rs"]),
    ResourceType(group: "", versions: ["v1"], kind: "ReplicationController", plural: "replicationcontrollers", namespaced: true, shortNames: ["rc"]),
    ResourceType(group: "batch", versions: ["v1"], kind: "Job", plural: "jobs", namespaced: true),
    ResourceType(group: "batch", versions: ["v1"], kind: "CronJob", plural: "cronjobs", namespaced: true, shortNames: ["cj"]),
    ResourceType(group: "policy", versions: ["v1"], kind: "PodDisruptionBudget", plural: "poddisruptionbudgets", namespaced: true, shortNames: ["pdb"]),
    // Admission: mutating webhooks are called on CREATE (LocalKubeAPIServer+Admission.swift); validating ones are stored.
    ResourceType(group: "admissionregistration.k8s.io", versions: ["v1"], kind: "MutatingWebhookConfiguration",
                 plural: "mutatingwebhookconfigurations", namespaced: false),
    ResourceType(group: "admissionregistration.k8s.io", versions: ["v1"], kind: "ValidatingWebhookConfiguration",
                 plural: "validatingwebhookconfigurations", namespaced: false),
    ResourceType(group: "rbac.authorization.k8s.io", versions: ["v1"], kind: "ClusterRole", plural: "clusterroles", namespaced: false),
    ResourceType(group: "rbac.authorization.k8s.io", versions: ["v1"], kind: "ClusterRoleBinding", plural: "clusterrolebindings", namespaced: false),
    ResourceType(group: "rbac.authorization.k8s.io", versions: ["v1"], kind: "Role", plural: "roles", namespaced: true),
    ResourceType(group: "rbac.authorization.k8s.io", versions: ["v1"], kind: "RoleBinding", plural: "rolebindings", namespaced: true),
    ResourceType(group: "authentication.k8s.io", versions: ["v1"], kind: "TokenReview", plural: "tokenreviews",
                 namespaced: false, verbs: ["create"]),
    ResourceType(group: "authentication.k8s.io", versions: ["v1"], kind: "SelfSubjectReview", plural: "selfsubjectreviews",
                 namespaced: false, verbs: ["create"]),
    ResourceType(group: "authorization.k8s.io", versions: ["v1"], kind: "SelfSubjectAccessReview",
                 plural: "selfsubjectaccessreviews", namespaced: false, verbs: ["create"]),
    ResourceType(group: "authorization.k8s.io", versions: ["v1"], kind: "SubjectAccessReview",
                 plural: "subjectaccessreviews", namespaced: false, verbs: ["create"]),
    ResourceType(group: "apiextensions.k8s.io", versions: ["v1"], kind: "CustomResourceDefinition",
                 plural: "customresourcedefinitions", namespaced: false, shortNames: ["crd", "crds"]),
  ]
}

/// A resource's identity: group and plural (versions share storage).
struct ResourceID: Hashable, Sendable {
  var group: String
  var plural: String
}

/// A failure the server reports as a Kubernetes `Status`.
public struct APIStatusError: Error, Sendable, Hashable, CustomStringConvertible {
  public var code: Int
  public var reason: String
  public var message: String
  public var name: String?
  public var kind: String?
  /// The API group of `kind` (a resource, in a 403), when not core.
  public var group: String?

  public init(code: Int, reason: String, message: String, name: String? = nil, kind: String? = nil, group: String? = nil) {
    self.code = code
    self.reason = reason
    self.message = message
    self.name = name
    self.kind = kind
    self.group = group
  }

  public var description: String { "\(code) \(reason): \(message)" }

  static func notFound(_ plural: String, _ name: String) -> Self {
    Self(code: 404, reason: "NotFound", message: "\(plural) \"\(name)\" not found", name: name, kind: plural)
  }
  static func badRequest(_ message: String) -> Self { Self(code: 400, reason: "BadRequest", message: message) }
  static func invalid(_ plural: String, _ name: String, _ message: String) -> Self {
    Self(code: 422, reason: "Invalid", message: "\(plural) \"\(name)\" is invalid: \(message)", name: name, kind: plural)
  }

  /// The `Status` object.
  var json: JSONValue {
    var details: [String: JSONValue] = [:]
    if let name { details["name"] = .string(name) }
    if let group { details["group"] = .string(group) }
    if let kind { details["kind"] = .string(kind) }
    var status: JSONValue = [
      "kind": "Status", "apiVersion": "v1", "metadata": [:], "status": "Failure",
      "message": .string(message), "reason": .string(reason), "code": .int(Int64(code)),
    ]
    if !details.isEmpty { status["details"] = .object(details) }
    return status
  }
}
