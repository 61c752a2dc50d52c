public import MeshKube
import Foundation

/// Strategic merge patch, as far as `kubectl apply` needs it: RFC 7386 merge plus list merging by
/// key (`$setElementOrder/<list>`, `$patch: delete`, well-known merge keys), `$retainKeys`,
/// `$deleteFromPrimitiveList/<list>`. Directives never reach storage.
enum StrategicMerge {
  static let knownMergeKeys: [String: [String]] = [
    "ports": ["port", "containerPort"], "containers": ["name"], "initContainers": ["name"], "env": ["name"],
    "volumes": ["name"], "volumeMounts": ["mountPath"], "conditions": ["type"], "imagePullSecrets": ["name"],
    "ownerReferences": ["uid"], "tolerations": ["key"],
  ]

  static func apply(_ original: JSONValue, _ patch: JSONValue) -> JSONValue {
    guard case .object(let p) = patch else { return patch }
    if p["$patch"]?.stringValue == "replace" { return strip(patch) }
    if p["$patch"]?.stringValue == "delete" { return .null }
    var result = original.objectValue ?? [:]
    var orders: [String: [JSONValue]] = [:]
    for (k, v) in p where k.hasPrefix("$setElementOrder/") {
      orders[String(k.dropFirst("$setElementOrder/".count))] = v.arrayValue ?? []
    }
    for (k, v) in p where k.hasPrefix("$deleteFromPrimitiveList/") {
      let list = String(k.dropFirst("$deleteFromPrimitiveList/".count))
      let remove = v.arrayValue ?? []
      if let existing = result[list]?.arrayValue { result[list] = .array(existing.filter { !remove.contains($0) }) }
    }
    for (k, v) in p where !k.hasPrefix("$") {
      if case .null = v {
        result[k] = nil
      } else if case .array(let patchList) = v, case .array(let originalList)? = result[k],
        let mergeKey = mergeKey(for: k, order: orders[k], patchList, originalList)
      {
        result[k] = .array(mergeLists(originalList, patchList, key: mergeKey, order: orders[k]))
      } else if case .object = v {
        let merged = apply(result[k] ?? .null, v)
        if case .null = merged { result[k] = nil } else { result[k] = merged }
      } else {
        result[k] = strip(v)
      }
    }
    if let retain = p["$retainKeys"]?.arrayValue {
      let keep = Set(retain.compactMap(\.stringValue))
      result = result.filter { keep.contains($0.key) }
    }
    return .object(result)
  }

  static func mergeKey(for field: String, order: [JSONValue]?, _ a: [JSONValue], _ b: [JSONValue]) -> String? {
    if let first = order?.first?.objectValue, first.count == 1 { return first.keys.first }
    for candidate in knownMergeKeys[field] ?? [] {
      if (a + b).allSatisfy({ $0[candidate] != nil }) { return candidate }
    }
    return nil
  }

  static func mergeLists(_ original: [JSONValue], _ patch: [JSONValue], key: String, order: [JSONValue]?) -> [JSONValue] {
    var merged: [JSONValue] = original
    for element in patch {
      let k = element[key]
      let index = merged.firstIndex { $0[key] == k }
      if element["$patch"]?.stringValue == "delete" {
        if let index { merged.remove(at: index) }
      } else if let index {
        merged[index] = apply(merged[index], element)
      } else {
        merged.append(strip(element))
      }
    }
    guard let order else { return merged }
    var ordered: [JSONValue] = []
    for o in order {
      if let e = merged.first(where: { $0[key] == o[key] }) { ordered.append(e) }
    }
    for e in merged where !ordered.contains(where: { $0[key] == e[key] }) { ordered.append(e) }
    return ordered
  }

  /// Removes every `$`-directive, recursively.
  static func strip(_ value: JSONValue) -> JSONValue {
    switch value {
    case .object(let o):
      var out: [String: JSONValue] = [:]
      for (k, v) in o where !k.hasPrefix("$") { out[k] = strip(v) }
      return .object(out)
    case .array(let a): return .array(a.map(strip))
    default: return value
    }
  }
}
