import Synchronization

/// What an informer reports.
public enum InformerEvent<R: KubeResource>: Sendable {
  case added(R)
  case updated(old: R, new: R)
  case deleted(R)

  /// The object the event is about (the new one for updates).
  public var object: R {
    switch self {
    case .added(let r), .deleted(let r): r
    case .updated(_, let new): new
    }
  }
}

/// A thread-safe cache of objects keyed by `namespace/name`, indexed by namespace and by label.
public final class Store<R: KubeResource>: Sendable {
  struct State {
    var objects: [String: R] = [:]
    var byNamespace: [String: Set<String>] = [:]
    var byLabel: [String: Set<String>] = [:]
    var synced = false
    var resourceVersion: String?
  }
  private let state = Mutex(State())

  public init() {}

  /// Whether the initial list has been loaded.
  public var hasSynced: Bool { state.withLock { $0.synced } }
  /// The last resourceVersion the informer processed (list, event or bookmark).
  public var resourceVersion: String? { state.withLock { $0.resourceVersion } }
  public var count: Int { state.withLock { $0.objects.count } }
  /// All keys, sorted.
  public var keys: [String] { state.withLock { $0.objects.keys.sorted() } }
  /// All objects, sorted by key.
  public var items: [R] { state.withLock { s in s.objects.keys.sorted().map { s.objects[$0]! } } }

  public func get(namespace: String?, name: String) -> R? {
    let key = (namespace?.isEmpty ?? true) ? name : "\(namespace!)/\(name)"
    return get(key: key)
  }
  public func get(key: String) -> R? { state.withLock { $0.objects[key] } }

  /// An object that satisfies `predicate`, if any (which one, when several do, is unspecified): a lookup
  /// without copying or sorting the store.
  public func first(where predicate: (R) -> Bool) -> R? {
    state.withLock { s in s.objects.values.first(where: predicate) }
  }

  /// Objects in one namespace, sorted by key.
  public func list(namespace: String) -> [R] {
    state.withLock { s in (s.byNamespace[namespace] ?? []).sorted().compactMap { s.objects[$0] } }
  }

  /// Objects with label `key` = `value`, sorted by key.
  public func list(label key: String, value: String) -> [R] {
    state.withLock { s in (s.byLabel["\(key)=\(value)"] ?? []).sorted().compactMap { s.objects[$0] } }
  }

  /// Objects whose labels match `selector`.
  public func list(matching selector: LabelSelector) -> [R] {
    items.filter { selector.matches($0.metadata.labels ?? [:]) }
  }

  // MARK: - Mutation (the informer's)

  func setSynced(resourceVersion: String?) {
    state.withLock {
      $0.synced = true
      $0.resourceVersion = resourceVersion
    }
  }

  func setResourceVersion(_ rv: String) { state.withLock { $0.resourceVersion = rv } }

  /// Inserts or replaces; returns the previous object.
  @discardableResult
  func upsert(_ object: R) -> R? {
    state.withLock { s in
      let key = object.metadata.key
      let old = s.objects[key]
      if let old { Self.unindex(old, key: key, in: &s) }
      s.objects[key] = object
      Self.index(object, key: key, in: &s)
      return old
    }
  }

  @discardableResult
  func remove(key: String) -> R? {
    state.withLock { s in
      guard let old = s.objects.removeValue(forKey: key) else { return nil }
      Self.unindex(old, key: key, in: &s)
      return old
    }
  }

  private static func index(_ object: R, key: String, in s: inout State) {
    s.byNamespace[object.metadata.namespace ?? "", default: []].insert(key)
    for (k, v) in object.metadata.labels ?? [:] { s.byLabel["\(k)=\(v)", default: []].insert(key) }
  }

  private static func unindex(_ object: R, key: String, in s: inout State) {
    let ns = object.metadata.namespace ?? ""
    s.byNamespace[ns]?.remove(key)
    if s.byNamespace[ns]?.isEmpty == true { s.byNamespace[ns] = nil }
    for (k, v) in object.metadata.labels ?? [:] {
      let label = "\(k)=\(v)"
      s.byLabel[label]?.remove(key)
      if s.byLabel[label]?.isEmpty == true { s.byLabel[label] = nil }
    }
  }
}
