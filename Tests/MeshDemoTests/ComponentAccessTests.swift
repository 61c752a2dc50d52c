import Foundation
import MeshDemo
import MeshKube
import Testing
import Yams

/// The demo runs its components with the RBAC of `Examples/kubernetes/02-rbac.yaml`; the two must not drift.
@Suite("Component RBAC")
struct ComponentAccessTests {
  static let manifest = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Examples/kubernetes/02-rbac.yaml")

  /// A rule as a comparable value: sorted groups, resources and verbs.
  static func normalized(_ groups: [String], _ resources: [String], _ verbs: [String]) -> String {
    "\(groups.sorted()) \(resources.sorted()) \(verbs.sorted())"
  }

  @Test("each component's ClusterRole, ServiceAccount and binding are the manifest's")
  func matchesManifest() throws {
    let text = try String(contentsOf: Self.manifest, encoding: .utf8)
    var roles: [String: [String]] = [:]
    var bindings: [String: [String]] = [:]
    var accounts: Set<String> = []
    for case let document as [String: Any] in try Yams.load_all(yaml: text) {
      let metadata = document["metadata"] as? [String: Any] ?? [:]
      let name = metadata["name"] as? String ?? ""
      switch document["kind"] as? String {
      case "ClusterRole":
        roles[name] = (document["rules"] as? [[String: Any]] ?? []).map {
          Self.normalized($0["apiGroups"] as? [String] ?? [], $0["resources"] as? [String] ?? [], $0["verbs"] as? [String] ?? [])
        }.sorted()
      case "ClusterRoleBinding":
        let role = (document["roleRef"] as? [String: Any])?["name"] as? String ?? ""
        bindings[name] = [role] + (document["subjects"] as? [[String: Any]] ?? []).map {
          "\($0["kind"] as? String ?? "") \($0["namespace"] as? String ?? "")/\($0["name"] as? String ?? "")"
        }
      case "ServiceAccount":
        accounts.insert("\(metadata["namespace"] as? String ?? "")/\(name)")
      default:
        continue
      }
    }
    for component in ComponentAccess.allCases {
      let rules = component.rules.map { rule in
        func strings(_ key: String) -> [String] { (rule[key]?.arrayValue ?? []).compactMap(\.stringValue) }
        return Self.normalized(strings("apiGroups"), strings("resources"), strings("verbs"))
      }.sorted()
      #expect(roles[component.name] == rules, "ClusterRole \(component.name)")
      #expect(
        bindings[component.name] == [component.name, "ServiceAccount \(component.namespace)/\(component.name)"],
        "ClusterRoleBinding \(component.name)")
      #expect(accounts.contains("\(component.namespace)/\(component.name)"), "ServiceAccount \(component.name)")
    }
    // The demo runs no proxy injector: its role is the one the demo does without.
    let used = roles.keys.filter { $0 != "swiftmesh-injector" }
    #expect(used.count == ComponentAccess.allCases.count, "a ClusterRole the demo does not use: \(roles.keys.sorted())")
  }
}
