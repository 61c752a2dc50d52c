public import MeshKube

/// `meshctl inject` and `uninject` on manifests: every document (and every item of a `List`) of a kind
/// with a pod template is changed; other kinds pass through untouched.
public struct ManifestInjector: Sendable {
  public enum Mode: Sendable {
    /// Add `swiftmesh.io/inject: enabled` to the pod (template) and leave the rest to the webhook.
    case annotate
    /// Write the whole injection with the patch builder (`--manual`).
    case manual(PodInjector)
    /// Remove what injection added (containers, volumes, annotations, label) and the inject annotation.
    case uninject
  }

  /// What happened to one object, for the report on standard error.
  public struct Outcome: Sendable, Hashable, CustomStringConvertible {
    public var object: String
    public var result: String
    public var description: String { "\(object) \(result)" }
  }

  public var mode: Mode

  public init(mode: Mode) { self.mode = mode }

  /// Every document transformed, with one outcome per object that has a pod template.
  public func transform(_ documents: [JSONValue]) throws(InjectError) -> (documents: [JSONValue], outcomes: [Outcome]) {
    var outcomes: [Outcome] = []
    var result: [JSONValue] = []
    for document in documents { result.append(try transform(document, &outcomes)) }
    return (result, outcomes)
  }

  func transform(_ object: JSONValue, _ outcomes: inout [Outcome]) throws(InjectError) -> JSONValue {
    let kind = object["kind"]?.stringValue ?? ""
    if kind.hasSuffix("List"), case .array(let items)? = object["items"] {
      var list = object
      var transformed: [JSONValue] = []
      for item in items { transformed.append(try transform(item, &outcomes)) }
      list["items"] = .array(transformed)
      return list
    }
    guard let base = PodInjector.podTemplatePaths[kind] else { return object }
    let label = "\(kind.lowercased())/\(PodInjector.name(object))"
    switch mode {
    case .annotate:
      let template = try PodInjector.value(at: base, in: object, kind: kind)
      // What the webhook would skip anyway is reported, not annotated.
      let skip: PodInjector.SkipReason? = template["spec"]?["hostNetwork"] == .bool(true) ? .hostNetwork
        : template["spec"].map(PodInjector.isInjected) == true ? .alreadyInjected : nil
      if let skip {
        outcomes.append(Outcome(object: label, result: "skipped: \(skip)"))
        return object
      }
      var patched = object
      var metadata = template["metadata"] ?? [:]
      var annotations = metadata["annotations"] ?? [:]
      annotations[InjectAnnotations.inject] = "enabled"
      metadata["annotations"] = annotations
      try Self.set(&patched, base + "/metadata", metadata, kind: kind)
      outcomes.append(Outcome(object: label, result: "annotated (\(InjectAnnotations.inject): enabled)"))
      return patched
    case .manual(let injector):
      switch try injector.decide(object, trigger: .always) {
      case .skip(let reason):
        outcomes.append(Outcome(object: label, result: "skipped: \(reason)"))
        return object
      case .inject(let patch):
        outcomes.append(Outcome(object: label, result: "injected"))
        do { return try patch.applied(to: object) } catch {
          throw InjectError.invalidObject("\(label): the injection patch does not apply: \(error)")
        }
      }
    case .uninject:
      let template = try PodInjector.value(at: base, in: object, kind: kind)
      let cleaned = Self.uninjected(template)
      if cleaned == template {
        outcomes.append(Outcome(object: label, result: "unchanged (not injected)"))
        return object
      }
      var patched = object
      try Self.set(&patched, base, cleaned, kind: kind)
      outcomes.append(Outcome(object: label, result: "uninjected"))
      return patched
    }
  }

  /// A pod template without what injection adds. Maps and lists left empty are removed, as injection added
  /// them whole when the pod had none.
  static func uninjected(_ template: JSONValue) -> JSONValue {
    var template = template
    let containers: Set = [InjectAnnotations.initContainerName, InjectAnnotations.proxyContainerName]
    let volumes: Set = [
      InjectAnnotations.identityVolume, InjectAnnotations.tokenVolume, InjectAnnotations.xtablesLockVolume,
    ]
    func filter(_ object: inout JSONValue, _ field: String, dropping names: Set<String>) {
      guard let items = object[field]?.arrayValue else { return }
      let kept = items.filter { !names.contains($0["name"]?.stringValue ?? "") }
      guard kept.count != items.count else { return }
      object[field] = kept.isEmpty ? JSONValue?.none : .array(kept)
    }
    if var spec = template["spec"] {
      filter(&spec, "initContainers", dropping: containers)
      filter(&spec, "containers", dropping: containers)
      filter(&spec, "volumes", dropping: volumes)
      template["spec"] = spec
    }
    if var metadata = template["metadata"] {
      func remove(_ field: String, _ keys: [String]) {
        guard var map = metadata[field]?.objectValue else { return }
        let before = map.count
        for key in keys { map[key] = nil }
        guard map.count != before else { return }
        metadata[field] = map.isEmpty ? JSONValue?.none : .object(map)
      }
      remove("annotations", InjectAnnotations.written + [InjectAnnotations.inject])
      remove("labels", [InjectAnnotations.controlPlaneNamespaceLabel])
      template["metadata"] = metadata.objectValue?.isEmpty == true ? JSONValue?.none : metadata
    }
    return template
  }

  /// Sets the value at `pointer` (whose parent exists) in `object`.
  static func set(_ object: inout JSONValue, _ pointer: String, _ value: JSONValue, kind: String) throws(InjectError) {
    do {
      object = try JSONPatch([.add(pointer, value)]).applied(to: object)
    } catch {
      throw InjectError.invalidObject("\(kind) \(PodInjector.name(object)): cannot set \(pointer): \(error)")
    }
  }
}
