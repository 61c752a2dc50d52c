public import MeshKube

/// The patch builder: given a Pod, or a workload with a pod template, and the mesh configuration, decides
/// whether to inject it and returns the RFC 6902 patch that adds the `swiftmesh-init` init container, the
/// `swiftmesh-proxy` native sidecar, their volumes, annotations and label. Pure: the webhook and
/// `meshctl inject --manual` both use it, so both paths give the same pod.
public struct PodInjector: Sendable {
  /// What starts injection.
  public enum Trigger: Sendable, Hashable {
    /// `swiftmesh.io/inject: enabled` on the pod (template) or its namespace, as the webhook does.
    case annotation
    /// Injection asked for explicitly (`meshctl inject --manual`): everything but `disabled` is injected.
    case always
  }

  /// Why an object is left as it is.
  public enum SkipReason: Sendable, Hashable, CustomStringConvertible {
    case unsupportedKind(String)
    case hostNetwork
    case alreadyInjected
    case disabled(on: String)
    case notEnabled

    public var description: String {
      switch self {
      case .unsupportedKind(let kind): "kind \(kind.isEmpty ? "(none)" : kind) has no pod template"
      case .hostNetwork: "the pod uses the host's network (hostNetwork: true)"
      case .alreadyInjected: "the pod already has a \(InjectAnnotations.proxyContainerName) container"
      case .disabled(let on): "\(InjectAnnotations.inject) is disabled on the \(on)"
      case .notEnabled: "neither the pod nor its namespace has \(InjectAnnotations.inject): enabled"
      }
    }
  }

  public enum Decision: Sendable, Hashable {
    case inject(JSONPatch)
    case skip(SkipReason)
  }

  public var configuration: InjectConfiguration

  public init(configuration: InjectConfiguration) {
    self.configuration = configuration
  }

  /// Where the pod template of each kind is (a JSON pointer; "" for a Pod itself).
  public static let podTemplatePaths: [String: String] = [
    "Pod": "",
    "Deployment": "/spec/template", "StatefulSet": "/spec/template", "DaemonSet": "/spec/template",
    "ReplicaSet": "/spec/template", "ReplicationController": "/spec/template", "Job": "/spec/template",
    "CronJob": "/spec/jobTemplate/spec/template",
  ]

  /// The decision for `object`, whose namespace carries `namespaceAnnotations`.
  public func decide(_ object: JSONValue, namespaceAnnotations: [String: String] = [:],
                     trigger: Trigger = .annotation) throws(InjectError) -> Decision {
    let kind = object["kind"]?.stringValue ?? ""
    guard let base = Self.podTemplatePaths[kind] else { return .skip(.unsupportedKind(kind)) }
    let template = try Self.value(at: base, in: object, kind: kind)
    guard case .object? = template["spec"] else {
      throw InjectError.invalidObject("\(kind) \(Self.name(object)): no pod spec at \(base.isEmpty ? "" : base)/spec")
    }
    let spec = template["spec"]!
    let annotations = Self.strings(template["metadata"]?["annotations"])
    switch annotations[InjectAnnotations.inject] ?? (trigger == .always ? nil : namespaceAnnotations[InjectAnnotations.inject]) {
    case "disabled":
      return .skip(.disabled(on: annotations[InjectAnnotations.inject] != nil ? "pod" : "namespace"))
    case "enabled": break
    default: if trigger == .annotation { return .skip(.notEnabled) }
    }
    if spec["hostNetwork"] == .bool(true) { return .skip(.hostNetwork) }
    if Self.isInjected(spec) { return .skip(.alreadyInjected) }
    let config = try ProxyConfigAnnotations(namespace: namespaceAnnotations, pod: annotations)
    // The destination service reads a pod's opaque ports from the pod itself: one inherited from the
    // namespace is written on the pod.
    var inherited: [(String, String)] = []
    let opaque = InjectAnnotations.configPrefix + "opaque-ports"
    if annotations[opaque] == nil, let value = namespaceAnnotations[opaque] { inherited.append((opaque, value)) }
    return .inject(JSONPatch(patchOperations(base: base, template: template, config: config, inherited: inherited)))
  }

  /// Whether a pod spec already has the proxy (as a container or a native sidecar).
  static func isInjected(_ spec: JSONValue) -> Bool {
    for list in ["containers", "initContainers"] {
      if (spec[list]?.arrayValue ?? []).contains(where: { $0["name"]?.stringValue == InjectAnnotations.proxyContainerName }) {
        return true
      }
    }
    return false
  }

  /// The operations, against the template at `base`. Maps and lists the pod lacks are added whole.
  func patchOperations(base: String, template: JSONValue, config: ProxyConfigAnnotations,
                       inherited: [(String, String)]) -> [JSONPatch.Operation] {
    var ops: [JSONPatch.Operation] = []
    let metadata = template["metadata"]
    if metadata == nil { ops.append(.add("\(base)/metadata", [:])) }
    func addEntries(_ field: String, _ entries: [(String, String)]) {
      if metadata?[field]?.objectValue == nil { ops.append(.add("\(base)/metadata/\(field)", [:])) }
      for (key, value) in entries {
        ops.append(.add("\(base)/metadata/\(field)/\(JSONPatch.escape(key))", .string(value)))
      }
    }
    addEntries("annotations", [
      (InjectAnnotations.proxyVersion, configuration.proxyVersion),
      (InjectAnnotations.trustRootSHA256, configuration.trustRootSHA256),
      (InjectAnnotations.identityTrustRoots, configuration.trustRootsPEM),
    ] + inherited)
    addEntries("labels", [(InjectAnnotations.controlPlaneNamespaceLabel, configuration.controlPlaneNamespace)])

    let spec = template["spec"]
    let containers = [initContainer(config), proxyContainer(config)]
    if spec?["initContainers"]?.arrayValue == nil {
      ops.append(.add("\(base)/spec/initContainers", .array(containers)))
    } else {
      // First, in order: the rules exist and the proxy runs before any other init container makes a connection.
      for (index, container) in containers.enumerated() { ops.append(.add("\(base)/spec/initContainers/\(index)", container)) }
    }
    if spec?["volumes"]?.arrayValue == nil {
      ops.append(.add("\(base)/spec/volumes", .array(volumes)))
    } else {
      for volume in volumes { ops.append(.add("\(base)/spec/volumes/-", volume)) }
    }
    return ops
  }

  // MARK: - Helpers

  static func value(at pointer: String, in object: JSONValue, kind: String) throws(InjectError) -> JSONValue {
    do {
      return try JSONPatch.value(at: pointer, in: object)
    } catch {
      throw InjectError.invalidObject("\(kind) \(name(object)): no pod template at \(pointer) (\(error))")
    }
  }

  static func name(_ object: JSONValue) -> String {
    object["metadata"]?["name"]?.stringValue ?? object["metadata"]?["generateName"]?.stringValue ?? "(unnamed)"
  }

  static func strings(_ value: JSONValue?) -> [String: String] {
    (value?.objectValue ?? [:]).compactMapValues(\.stringValue)
  }
}
