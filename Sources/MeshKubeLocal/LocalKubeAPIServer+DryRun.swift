import Foundation
import MeshKube
import NIOHTTP1

/// `?dryRun=All` (`kubectl apply --dry-run=server`): a create, update, patch or delete is checked as if it
/// were made (the kind is served, the object exists or does not, the body parses, the patch applies) and
/// answered with the object it would store; nothing is stored and no watch sees anything.
extension LocalKubeAPIServer {
  static func isDryRun(_ query: [String: String]) -> Bool {
    query["dryRun"] == "All"
  }

  func dryRun(_ head: HTTPRequestHead, body: Data, path p: ResourcePath, type t: ResourceType, namespace: String?) throws -> Reply {
    func current(_ name: String) throws(APIStatusError) -> JSONValue {
      try state.get(group: p.group, resource: p.plural, namespace: namespace, name: name)
    }
    func stamped(_ object: JSONValue, name: String) -> JSONValue {
      var object = object
      object["apiVersion"] = .string(t.apiVersion(p.version))
      object["kind"] = .string(t.kind)
      var meta = object["metadata"]?.objectValue ?? [:]
      meta["name"] = .string(name)
      meta["namespace"] = namespace.map { .string($0) }
      object["metadata"] = .object(meta)
      return object
    }
    switch (head.method, p.name) {
    case (.POST, nil):
      let object = try Self.body(head, body)
      guard case .object = object else { throw APIStatusError.badRequest("the body of a create must be a JSON object") }
      let name = object["metadata"]?["name"]?.stringValue ?? ""
      guard !name.isEmpty else {
        throw APIStatusError.invalid(p.plural, "", "metadata.name: Required value: name is required (generateName is not dry-run here)")
      }
      if (try? current(name)) != nil {
        throw APIStatusError(code: 409, reason: "AlreadyExists", message: "\(p.plural) \"\(name)\" already exists", name: name, kind: p.plural)
      }
      return .json(.created, stamped(object, name: name))
    case (.PUT, let name?):
      _ = try current(name)
      return .json(.ok, stamped(try Self.body(head, body), name: name))
    case (.PATCH, let name?):
      let existing = try current(name)
      return .json(.ok, stamped(try Self.patched(existing, with: try Self.body(head, body), kind: try Self.patchKind(head)), name: name))
    case (.DELETE, let name?):
      return .json(.ok, try current(name))
    default:
      throw APIStatusError(code: 405, reason: "MethodNotAllowed", message: "method \(head.method) is not supported with dryRun")
    }
  }

  /// `object` with `patch` of `kind` applied, as a PATCH would store it.
  static func patched(_ object: JSONValue, with patch: JSONValue, kind: LocalKubeState.PatchKind) throws(APIStatusError) -> JSONValue {
    switch kind {
    case .json:
      do { return try JSONPatch(json: patch).applied(to: object) } catch {
        throw APIStatusError(code: 422, reason: "Invalid", message: "\(error)")
      }
    case .merge, .strategicMerge:
      guard case .object = patch else { throw APIStatusError.badRequest("the patch must be a JSON object") }
      return kind == .merge ? object.mergePatched(with: patch) : StrategicMerge.apply(object, patch)
    }
  }
}
