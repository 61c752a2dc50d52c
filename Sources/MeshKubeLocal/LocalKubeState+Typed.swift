public import MeshKube
import Synchronization

extension LocalKubeState {
  /// Creates a typed object in-process (namespace from its metadata, default "default").
  @discardableResult
  public func create<R: KubeResource>(_ object: R) throws -> R {
    let json = try KubeCodec.encode(object)
    return try KubeCodec.decode(R.self, from: create(group: R.group, resource: R.plural, namespace: object.metadata.namespace, object: json))
  }

  /// Replaces a typed object in-process (409 Conflict when its resourceVersion is stale).
  @discardableResult
  public func update<R: KubeResource>(_ object: R) throws -> R {
    let json = try KubeCodec.encode(object)
    return try KubeCodec.decode(R.self, from: update(group: R.group, resource: R.plural, namespace: object.metadata.namespace, name: object.name, object: json))
  }

  /// Merge-patches an object in-process.
  @discardableResult
  public func mergePatch<R: KubeResource>(_ type: R.Type, name: String, namespace: String? = nil, patch: JSONValue) throws -> R {
    try KubeCodec.decode(R.self, from: self.patch(group: R.group, resource: R.plural, namespace: namespace, name: name, patch: patch))
  }

  /// Deletes an object in-process.
  public func delete<R: KubeResource>(_ type: R.Type, name: String, namespace: String? = nil) throws {
    _ = try delete(group: R.group, resource: R.plural, namespace: namespace, name: name)
  }

  /// One typed object, or nil.
  public func get<R: KubeResource>(_ type: R.Type, name: String, namespace: String? = nil) -> R? {
    guard let json = try? get(group: R.group, resource: R.plural, namespace: namespace, name: name) else { return nil }
    return try? KubeCodec.decode(R.self, from: json)
  }

  /// Every object of a type (in `namespace` when given), sorted by namespace/name.
  public func list<R: KubeResource>(_ type: R.Type, namespace: String? = nil) throws -> [R] {
    try list(group: R.group, resource: R.plural, namespace: namespace).items.map { try KubeCodec.decode(R.self, from: $0) }
  }
}
