public import Foundation

/// A Kubernetes object type the client, the informer and the store work with generically.
public protocol KubeResource: Codable, Sendable, Hashable {
  /// `v1` for the core group, otherwise `group/version`.
  static var apiVersion: String { get }
  static var kind: String { get }
  /// The lower-case plural the REST path uses (`services`, `links`).
  static var plural: String { get }
  /// Whether objects live in a namespace.
  static var namespaced: Bool { get }
  var metadata: ObjectMeta { get set }
}

extension KubeResource {
  /// The API group ("" for core).
  public static var group: String {
    guard let slash = apiVersion.firstIndex(of: "/") else { return "" }
    return String(apiVersion[..<slash])
  }
  /// The API version without the group.
  public static var version: String {
    guard let slash = apiVersion.firstIndex(of: "/") else { return apiVersion }
    return String(apiVersion[apiVersion.index(after: slash)...])
  }
  /// `/api/v1` or `/apis/<group>/<version>`.
  public static var apiPrefix: String { group.isEmpty ? "/api/\(version)" : "/apis/\(group)/\(version)" }

  /// The collection path, in `namespace` when given and the type is namespaced.
  public static func collectionPath(namespace: String?) -> String {
    if namespaced, let namespace, !namespace.isEmpty {
      return "\(apiPrefix)/namespaces/\(namespace)/\(plural)"
    }
    return "\(apiPrefix)/\(plural)"
  }

  public var name: String { metadata.name ?? "" }
  public var namespace: String? { metadata.namespace }
}

/// Keys whose values are maps owned entirely by the typed model (a key removed there is removed).
let wholeMapKeys: Set<String> = [
  "labels", "annotations", "data", "stringData", "selector", "matchLabels", "nodeSelector",
]

/// How typed objects turn into JSON and back, keeping the fields the types do not model.
public enum KubeCodec {
  /// Decodes `R` from JSON bytes, remembering the raw object in `metadata.originalObject`.
  public static func decode<R: KubeResource>(_ type: R.Type, from data: Data) throws -> R {
    try decode(type, from: JSONValue.parse(data))
  }

  /// Decodes `R` from a JSON value, remembering it in `metadata.originalObject`.
  public static func decode<R: KubeResource>(_ type: R.Type, from json: JSONValue) throws -> R {
    var object = try json.decoded(as: R.self)
    object.metadata.originalObject = json
    return object
  }

  /// The JSON for `object`: the modelled fields merged over the object it was decoded from, with
  /// `apiVersion` and `kind` set.
  public static func encode<R: KubeResource>(_ object: R) throws -> JSONValue {
    var json = try JSONValue.encoding(object)
    if let original = object.metadata.originalObject {
      json = json.preservingUnknownFields(from: original, wholeMapKeys: wholeMapKeys)
    }
    json["apiVersion"] = .string(R.apiVersion)
    json["kind"] = .string(R.kind)
    return json
  }
}

/// A list answer: items plus the list's resourceVersion and `continue` token.
public struct KubeList<R: KubeResource>: Sendable {
  public var metadata: ListMeta
  public var items: [R]
  public init(metadata: ListMeta, items: [R]) {
    self.metadata = metadata
    self.items = items
  }
}
