import MeshKube
import NIOHTTP1

/// The discovery documents kubectl reads: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/<g>[/<v>]`.
extension LocalKubeAPIServer {
  static let versionInfo: JSONValue = [
    "major": "1", "minor": "32", "gitVersion": "v1.32.0-swiftmesh", "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.23", "compiler": "gc",
    "platform": "linux/amd64",
  ]

  func apiVersions(_ head: HTTPRequestHead) -> JSONValue {
    [
      "kind": "APIVersions", "versions": ["v1"],
      "serverAddressByClientCIDRs": [["clientCIDR": "0.0.0.0/0", "serverAddress": .string(head.headers["Host"].first ?? "")]],
    ]
  }

  func groupJSON(_ group: String, _ versions: [String]) -> JSONValue {
    let entries: [JSONValue] = versions.map { ["groupVersion": .string("\(group)/\($0)"), "version": .string($0)] }
    return ["kind": "APIGroup", "apiVersion": "v1", "name": .string(group), "versions": .array(entries), "preferredVersion": entries[0]]
  }

  func groups() -> [(String, [String])] {
    var byGroup: [String: [String]] = [:]
    var order: [String] = []
    for t in state.resourceTypes where !t.group.isEmpty {
      if byGroup[t.group] == nil { order.append(t.group) }
      for v in t.versions where !(byGroup[t.group] ?? []).contains(v) { byGroup[t.group, default: []].append(v) }
    }
    return order.map { ($0, byGroup[$0]!) }
  }

  func groupList() -> JSONValue {
    var list = groups().map { groupJSON($0.0, $0.1) }
    for i in list.indices { list[i]["kind"] = nil; list[i]["apiVersion"] = nil }
    return ["kind": "APIGroupList", "apiVersion": "v1", "groups": .array(list)]
  }

  func apiGroup(_ group: String) throws(APIStatusError) -> JSONValue {
    guard let g = groups().first(where: { $0.0 == group }) else {
      throw APIStatusError(code: 404, reason: "NotFound", message: "the server could not find the requested resource (group \(group))")
    }
    return groupJSON(g.0, g.1)
  }

  func resourceList(group: String, version: String) throws(APIStatusError) -> JSONValue {
    let types = state.resourceTypes.filter { $0.group == group && $0.versions.contains(version) }
    guard !types.isEmpty else {
      throw APIStatusError(code: 404, reason: "NotFound", message: "the server could not find the requested resource (\(group)/\(version))")
    }
    var resources: [JSONValue] = []
    for t in types {
      var r: JSONValue = [
        "name": .string(t.plural), "singularName": .string(t.singular), "namespaced": .bool(t.namespaced),
        "kind": .string(t.kind), "verbs": .array(t.verbs.map { .string($0) }),
      ]
      if !t.shortNames.isEmpty { r["shortNames"] = .array(t.shortNames.map { .string($0) }) }
      resources.append(r)
    }
    return ["kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": .string(group.isEmpty ? version : "\(group)/\(version)"), "resources": .array(resources)]
  }
}
