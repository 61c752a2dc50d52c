import Foundation
import MeshInject
import MeshKube
import Testing
import _MeshTestSupport

/// An injected pod's containers run as the kubelet would run them, in a network namespace standing for the
/// pod: the init container's arguments with `mesh-proxy-init`, then the sidecar's with `mesh-proxy` as its
/// uid, its `$(VAR)`s and volumes filled in from the pod spec as the kubelet fills them.
@Suite(
  "An injected pod's containers in a network namespace",
  .enabled(if: Namespaces.available && BuiltProduct.exists("mesh-proxy") && BuiltProduct.exists("mesh-proxy-init")),
  .timeLimit(.minutes(2)))
struct InjectedPodNamespaceTests {
  @Test("mesh-proxy-init applies the init container's rules; mesh-proxy starts with the sidecar's arguments, live and not ready until certified")
  func containersRun() async throws {
    let anchors = try String(contentsOfFile: golden("ca.crt"), encoding: .utf8)
    let pod = try injected(
      workload("Pod", annotations: [
        "swiftmesh.io/inject": "enabled", "config.swiftmesh.io/skip-inbound-ports": "9090",
        "config.swiftmesh.io/skip-outbound-ports": "3306", "config.swiftmesh.io/opaque-ports": "4222",
      ]),
      injector: PodInjector(configuration: .defaults { $0.trustRootsPEM = anchors }))
    let files = try TemporaryDirectory(prefix: "injected-pod")
    defer { files.remove() }
    // The volumes: the trust anchors from the pod's annotation (downward API) and a token (projected).
    let identityDirectory = files.file("identity")
    let tokenDirectory = files.file("token")
    for directory in [identityDirectory, tokenDirectory] {
      try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }
    let roots = try #require(pod["metadata"]?["annotations"]?["swiftmesh.io/identity-trust-roots"]?.stringValue)
    try Data(roots.utf8).write(to: URL(fileURLWithPath: identityDirectory + "/ca.crt"))
    try Data("token".utf8).write(to: URL(fileURLWithPath: tokenDirectory + "/token"))
    let proxy = try #require(container(pod, "initContainers", "swiftmesh-proxy"))
    var mounts: [String: String] = [:]
    for mount in proxy["volumeMounts"]?.arrayValue ?? [] {
      let path = try #require(mount["mountPath"]?.stringValue)
      mounts[path] = mount["name"] == "swiftmesh-identity" ? identityDirectory : tokenDirectory
    }
    // The kubelet's $(VAR) expansion from the downward-API variables, and the mounts.
    let environment = ["SWIFTMESH_POD_NAMESPACE": "shop", "SWIFTMESH_POD_SERVICE_ACCOUNT": "web"]
    #expect(Set(proxy["env"]?.arrayValue?.compactMap { $0["name"]?.stringValue } ?? []) == Set(environment.keys))
    func kubelet(_ argument: String) -> String {
      var result = argument
      for (name, value) in environment { result = result.replacingOccurrences(of: "$(\(name))", with: value) }
      for (path, directory) in mounts { result = result.replacingOccurrences(of: path, with: directory) }
      return result
    }

    try await Namespaces.with(["injected"]) { names in
      let namespace = names[0]
      let initArgs = args(container(pod, "initContainers", "swiftmesh-init"))
      let rules = try await Subprocess.run("ip", ["netns", "exec", namespace, BuiltProduct.path("mesh-proxy-init")] + initArgs)
      #expect(rules.status == 0, "\(rules)")
      let saved = try await Subprocess.run("ip", ["netns", "exec", namespace, "iptables-nft-save", "-t", "nat"])
      #expect(saved.stdout.contains("-j SWIFTMESH_INIT_REDIRECT"), "\(saved.stdout)")
      #expect(saved.stdout.contains("-j SWIFTMESH_INIT_OUTPUT"), "\(saved.stdout)")
      #expect(saved.stdout.contains("9090"), "the skipped inbound port: \(saved.stdout)")
      #expect(saved.stdout.contains("3306"), "the skipped outbound port: \(saved.stdout)")
      #expect(saved.stdout.contains("--uid-owner 2102"), "\(saved.stdout)")

      let uid = try #require(proxy["securityContext"]?["runAsUser"]?.intValue)
      let sidecar = try BackgroundProcess("ip", [
        "netns", "exec", namespace, "setpriv", "--reuid=\(uid)", "--regid=\(uid)", "--clear-groups",
        BuiltProduct.path("mesh-proxy"),
      ] + args(proxy).map(kubelet))
      defer { sidecar.terminate() }
      try await sidecar.waitForOutput(containing: "admin listening")
      #expect(sidecar.printed.contains("web.shop.serviceaccount.identity.swiftmesh.cluster.local"), "\(sidecar.printed)")
      // The probes the pod declares answer as the kubelet would see them.
      let live = try await Subprocess.run("ip", ["netns", "exec", namespace, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5", "http://127.0.0.1:4191/live"])
      #expect(live.stdout == "200", "\(live)\n\(sidecar.printed)")
      // Not ready, and saying why: no identity service here (its name does not even resolve in this namespace).
      let ready = try await Subprocess.run("ip", ["netns", "exec", namespace, "curl", "-s", "-w", " %{http_code}", "-m", "5", "http://127.0.0.1:4191/ready"])
      #expect(ready.stdout.hasSuffix(" 503"), "\(ready)")
      #expect(ready.stdout.contains("identity service") && ready.stdout.contains("swiftmesh-identity.swiftmesh.svc.cluster.local:8080"), "\(ready)")
      #expect(sidecar.isRunning, "\(sidecar.printed)")
    }
  }
}
