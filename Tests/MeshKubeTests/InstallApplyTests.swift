import Foundation
import MeshInstall
import MeshKube
import MeshKubeLocal
import Testing
import _MeshTestSupport

/// `meshctl install | kubectl apply -f -` against the embedded API server, as on a real cluster: kubectl
/// accepts every object (for real and `--dry-run=server`), a second apply changes nothing, and
/// `meshctl uninstall | kubectl delete -f -` removes every object.
@Suite("meshctl install with kubectl")
struct InstallApplyTests {
  /// The rendered manifest, with or without `--ha`, from a fresh issuer for cluster east.
  static func manifest(highAvailability: Bool) throws -> InstallManifest {
    let directory = try TemporaryDirectory(prefix: "install")
    defer { directory.remove() }
    try TestPKI(issuerClusterName: "east").write(to: directory.path)
    let material = try InstallManifest.KeyMaterial.load(issuerDirectory: directory.path)
    return try InstallManifest(options: .defaults { $0.highAvailability = highAvailability }, material: material)
  }

  /// kubectl's one line per object (`kind.group/name verb`), without the `(dry run)` style suffix.
  static func lines(_ output: String) -> [Substring] {
    output.split(separator: "\n").filter { !$0.isEmpty }
  }

  @Test(
    "kubectl applies every object, dry-run=server and for real; a second apply changes nothing; uninstall deletes all",
    .enabled(if: kubectlAvailable), arguments: [false, true])
  func applies(highAvailability: Bool) async throws {
    let manifest = try Self.manifest(highAvailability: highAvailability)
    let count = manifest.objects.count
    try await withServer { server, _ in
      let dir = try temporaryDirectory()
      defer { try? FileManager.default.removeItem(at: dir) }
      let kubeconfig = dir.appendingPathComponent("kubeconfig").path
      try await server.kubeconfigYAML().write(toFile: kubeconfig, atomically: true, encoding: .utf8)
      func kubectl(_ args: [String], input: String? = nil) async throws -> _MeshTestSupport.Subprocess.Output {
        try await _MeshTestSupport.Subprocess.run(
          kubectlPath, ["--kubeconfig", kubeconfig, "--cache-dir", dir.appendingPathComponent("cache").path] + args,
          input: input.map { Data($0.utf8) })
      }

      /// Every object of the kinds the install writes, by `kind namespace/name`, without its resourceVersion.
      func snapshot() async throws -> [String: JSONValue] {
        let kinds = Set(manifest.objects.map { $0.kind.lowercased() + "s" }).sorted().joined(separator: ",")
        let list = try await kubectl(["get", kinds, "-A", "-o", "json"])
        #expect(list.status == 0, "\(list)")
        var objects: [String: JSONValue] = [:]
        for var item in try JSONValue.parse(Data(list.stdout.utf8))["items"]?.arrayValue ?? [] {
          item["metadata"]?["resourceVersion"] = nil
          let meta = item["metadata"]
          let key = "\(item["kind"]?.stringValue ?? "") \(meta?["namespace"]?.stringValue ?? "")/\(meta?["name"]?.stringValue ?? "")"
          objects[key] = item
        }
        return objects
      }

      // CRDs first, as `meshctl install --crds | kubectl apply -f -`, then the rest dry-run: the server
      // accepts every object and stores none of them.
      let crds = try InstallManifest(options: .defaults { $0.scope = .crds }, material: nil)
      let applyCRDs = try await kubectl(["apply", "-f", "-"], input: crds.yaml)
      #expect(applyCRDs.status == 0, "\(applyCRDs)")
      let dryRun = try await kubectl(["apply", "--dry-run=server", "-f", "-"], input: manifest.yaml)
      #expect(dryRun.status == 0, "kubectl apply --dry-run=server: \(dryRun)")
      #expect(Self.lines(dryRun.stdout).count == count, "\(count) objects; kubectl said:\n\(dryRun.stdout)")
      #expect(Self.lines(dryRun.stdout).allSatisfy { $0.hasSuffix("(server dry run)") }, "\(dryRun.stdout)")
      let nothing = try await kubectl(["get", "deployments,secrets", "-A", "-o", "name"])
      #expect(nothing.status == 0 && nothing.stdout.isEmpty, "a dry run stored: \(nothing)")

      // For real: every object created.
      let apply = try await kubectl(["apply", "-f", "-"], input: manifest.yaml)
      #expect(apply.status == 0, "kubectl apply: \(apply)")
      let created = Self.lines(apply.stdout).filter { $0.hasSuffix(" created") }
      #expect(created.count == count - crds.objects.count, "kubectl said:\n\(apply.stdout)")
      let webhook = try await kubectl([
        "get", "mutatingwebhookconfiguration", "swiftmesh-proxy-injector", "-o", "jsonpath={.webhooks[0].failurePolicy}",
      ])
      #expect(webhook.stdout == "Ignore", "\(webhook)")
      let budgets = try await kubectl(["get", "poddisruptionbudgets", "-A", "-o", "name"])
      #expect(Self.lines(budgets.stdout).count == (highAvailability ? 4 : 0), "\(budgets)")

      // Again, for real and dry-run (which now patches existing objects): every object stays as it was.
      // kubectl reports PodDisruptionBudgets "configured" on every apply: its patch always carries
      // spec.selector, whose patch strategy is "replace"; the object it leaves is the same.
      let before = try await snapshot()
      for extra in [[], ["--dry-run=server"]] {
        let again = try await kubectl(["apply"] + extra + ["-f", "-"], input: manifest.yaml)
        #expect(again.status == 0, "\(again)")
        let changed = Self.lines(again.stdout).filter { !$0.contains(" unchanged") && !$0.hasPrefix("poddisruptionbudget.") }
        #expect(changed.isEmpty, "a second apply \(extra) changed: \(changed)")
      }
      let after = try await snapshot()
      for object in manifest.objects {
        #expect(before["\(object.kind) \(object.namespace ?? "")/\(object.name)"] != nil, "\(object.kind) \(object.name) not stored")
      }
      for (key, object) in before where after[key] != object {
        Issue.record("a second apply changed \(key):\nbefore \(object)\nafter  \(after[key] ?? .null)")
      }

      // `meshctl uninstall | kubectl delete --ignore-not-found -f -`: everything goes.
      let delete = try await kubectl(
        ["delete", "--ignore-not-found", "-f", "-"], input: InstallManifest.uninstallYAML(scope: .all))
      #expect(delete.status == 0, "kubectl delete: \(delete)")
      #expect(Self.lines(delete.stdout).filter { $0.hasSuffix(" deleted") }.count == count, "\(delete.stdout)")
      let left = try await kubectl(["get", "deployments,secrets,configmaps,services", "-A", "-o", "name"])
      #expect(left.status == 0 && left.stdout.isEmpty, "left after uninstall: \(left)")
    }
  }
}
