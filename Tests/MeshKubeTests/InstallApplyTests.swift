import Foundation
import MeshInstall
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
    let material = InstallManifest.KeyMaterial(
      issuer: try IssuerMaterial.load(directory: directory.path), webhook: try WebhookMaterial.generate())
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
      func kubectl(_ args: [String], input: String? = nil) async throws -> Subprocess.Output {
        try await Subprocess.run(
          kubectlPath, ["--kubeconfig", kubeconfig, "--cache-dir", dir.appendingPathComponent("cache").path] + args,
          input: input.map { Data($0.utf8) })
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

      // Again: unchanged, for real and dry-run (which now patches existing objects).
      for extra in [[], ["--dry-run=server"]] {
        let again = try await kubectl(["apply"] + extra + ["-f", "-"], input: manifest.yaml)
        #expect(again.status == 0, "\(again)")
        let changed = Self.lines(again.stdout).filter { !$0.contains(" unchanged") }
        #expect(changed.isEmpty, "a second apply \(extra) changed: \(changed)")
      }

      // `meshctl uninstall | kubectl delete -f -`: everything goes.
      let delete = try await kubectl(["delete", "-f", "-"], input: try InstallManifest.uninstallYAML(scope: .all))
      #expect(delete.status == 0, "kubectl delete: \(delete)")
      #expect(Self.lines(delete.stdout).count == count, "\(delete.stdout)")
      let left = try await kubectl(["get", "deployments,secrets,configmaps,services", "-A", "-o", "name"])
      #expect(left.status == 0 && left.stdout.isEmpty, "left after uninstall: \(left)")
    }
  }
}
