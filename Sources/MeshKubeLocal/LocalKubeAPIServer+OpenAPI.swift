import MeshKube

/// Minimal OpenAPI v3 documents: just enough for kubectl to see that every resource's PATCH (and
/// POST/PUT) takes `fieldValidation`, so `kubectl apply` validates server-side (the default,
/// `--validate=strict`) instead of downloading OpenAPI v2 schemas this server does not have.
extension LocalKubeAPIServer {
  func openAPIRoot() -> JSONValue {
    var paths: [String: JSONValue] = ["api/v1": ["serverRelativeURL": .string("/openapi/v3/api/v1?hash=\(openAPIHash)")]]
    for (group, versions) in groups() {
      for v in versions {
        paths["apis/\(group)/\(v)"] = ["serverRelativeURL": .string("/openapi/v3/apis/\(group)/\(v)?hash=\(openAPIHash)")]
      }
    }
    return ["paths": .object(paths)]
  }

  var openAPIHash: String { String(state.resourceTypes.count) }

  func openAPIDocument(group: String, version: String) throws(APIStatusError) -> JSONValue {
    let types = state.resourceTypes.filter { $0.group == group && $0.versions.contains(version) }
    guard !types.isEmpty else {
      throw APIStatusError(code: 404, reason: "NotFound", message: "no OpenAPI document for \(group)/\(version)")
    }
    let prefix = group.isEmpty ? "/api/\(version)" : "/apis/\(group)/\(version)"
    var paths: [String: JSONValue] = [:]
    let parameters: JSONValue = [
      ["name": "fieldValidation", "in": "query", "schema": ["type": "string"], "description": "Ignored: unknown fields are kept."],
      ["name": "fieldManager", "in": "query", "schema": ["type": "string"]],
      ["name": "dryRun", "in": "query", "schema": ["type": "string"]],
    ]
    for t in types where t.verbs.contains("create") {
      let gvk: JSONValue = ["group": .string(group), "version": .string(version), "kind": .string(t.kind)]
      func op(_ action: String) -> JSONValue {
        ["x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": .string(action), "parameters": parameters,
         "responses": ["200": ["description": "OK"]]]
      }
      let collection = t.namespaced ? "\(prefix)/namespaces/{namespace}/\(t.plural)" : "\(prefix)/\(t.plural)"
      paths[collection] = ["post": op("post")]
      if t.verbs.contains("patch") {
        paths[collection + "/{name}"] = ["put": op("put"), "patch": op("patch")]
      }
    }
    return [
      "openapi": "3.0.0", "info": ["title": "Kubernetes", "version": "v1.32.0-swiftmesh"],
      "paths": .object(paths), "components": ["schemas": [:]],
    ]
  }
}
