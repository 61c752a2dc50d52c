public import Foundation

/// Standard object metadata (`metadata`).
public struct ObjectMeta: Codable, Sendable, Hashable {
  public var name: String?
  public var generateName: String?
  public var namespace: String?
  public var uid: String?
  public var resourceVersion: String?
  public var generation: Int64?
  public var creationTimestamp: String?
  public var deletionTimestamp: String?
  public var labels: [String: String]?
  public var annotations: [String: String]?
  public var ownerReferences: [OwnerReference]?
  public var finalizers: [String]?

  /// The full JSON object this value was decoded from (not just the metadata), so fields the typed
  /// model lacks survive a read-modify-write. Ignored by `==`; never encoded itself.
  public var originalObject: JSONValue? {
    get { preserved.value }
    set { preserved.value = newValue }
  }
  private var preserved = Preserved()

  private enum CodingKeys: String, CodingKey {
    case name, generateName, namespace, uid, resourceVersion, generation, creationTimestamp
    case deletionTimestamp, labels, annotations, ownerReferences, finalizers
  }

  public init(
    name: String? = nil, namespace: String? = nil, labels: [String: String]? = nil,
    annotations: [String: String]? = nil, generateName: String? = nil, resourceVersion: String? = nil
  ) {
    self.name = name
    self.namespace = namespace
    self.labels = labels
    self.annotations = annotations
    self.generateName = generateName
    self.resourceVersion = resourceVersion
  }

  /// `namespace/name` (or `name` for cluster-scoped objects): the store key.
  public var key: String {
    if let namespace, !namespace.isEmpty { return "\(namespace)/\(name ?? "")" }
    return name ?? ""
  }
}

/// Holds the raw JSON without taking part in equality or hashing.
struct Preserved: Sendable, Hashable {
  var value: JSONValue?
  static func == (lhs: Self, rhs: Self) -> Bool { true }
  func hash(into hasher: inout Hasher) {}
}

public struct OwnerReference: Codable, Sendable, Hashable {
  public var apiVersion: String
  public var kind: String
  public var name: String
  public var uid: String
  public var controller: Bool?
  public var blockOwnerDeletion: Bool?
  public init(apiVersion: String, kind: String, name: String, uid: String, controller: Bool? = nil) {
    self.apiVersion = apiVersion
    self.kind = kind
    self.name = name
    self.uid = uid
    self.controller = controller
  }
}

/// List metadata (`metadata` of a list): the list's resourceVersion and the paging token.
public struct ListMeta: Codable, Sendable, Hashable {
  public var resourceVersion: String?
  public var `continue`: String?
  public var remainingItemCount: Int64?
  public init(resourceVersion: String? = nil, continue: String? = nil) {
    self.resourceVersion = resourceVersion
    self.continue = `continue`
  }
}

/// A label selector as resources spell it (`matchLabels` + `matchExpressions`).
public struct LabelSelector: Codable, Sendable, Hashable {
  public var matchLabels: [String: String]?
  public var matchExpressions: [Requirement]?

  public struct Requirement: Codable, Sendable, Hashable {
    public var key: String
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    public var `operator`: String
    public var values: [String]?
    public init(key: String, operator: String, values: [String]? = nil) {
      self.key = key
      self.operator = `operator`
      self.values = values
    }
  }

  public init(matchLabels: [String: String]? = nil, matchExpressions: [Requirement]? = nil) {
    self.matchLabels = matchLabels
    self.matchExpressions = matchExpressions
  }

  /// The selector in query syntax (`a=b,c in (d,e),!f`), as `labelSelector=` takes it.
  public var queryString: String {
    var parts = (matchLabels ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
    for r in matchExpressions ?? [] {
      let values = (r.values ?? []).joined(separator: ",")
      switch r.operator {
      case "In": parts.append("\(r.key) in (\(values))")
      case "NotIn": parts.append("\(r.key) notin (\(values))")
      case "Exists": parts.append(r.key)
      case "DoesNotExist": parts.append("!\(r.key)")
      default: continue
      }
    }
    return parts.joined(separator: ",")
  }

  /// Whether `labels` satisfy this selector. An empty selector matches everything.
  public func matches(_ labels: [String: String]) -> Bool {
    for (k, v) in matchLabels ?? [:] where labels[k] != v { return false }
    for r in matchExpressions ?? [] {
      let values = Set(r.values ?? [])
      switch r.operator {
      case "In": guard let v = labels[r.key], values.contains(v) else { return false }
      case "NotIn": if let v = labels[r.key], values.contains(v) { return false }
      case "Exists": if labels[r.key] == nil { return false }
      case "DoesNotExist": if labels[r.key] != nil { return false }
      default: return false
      }
    }
    return true
  }
}
