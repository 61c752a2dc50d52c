import Foundation
import MeshCore
import MeshDestination
import MeshDiscovery
import MeshKube
import MeshKubeLocal
import Testing
import _MeshTestSupport

/// `mesh-controller destination --endpoints-api`, run as a user runs it, against the embedded API.
@Suite("mesh-controller destination --endpoints-api", .serialized)
struct EndpointsAPIFlagTests {
  static let bin = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
  static let controller = "\(bin)/mesh-controller"
  static let built = FileManager.default.isExecutableFile(atPath: controller)

  @Test("a value other than endpoints or endpointslices is a usage error naming it", .enabled(if: built))
  func badValue() async throws {
    let result = try await Subprocess.run(Self.controller, ["destination", "--endpoints-api", "endpoint-slices"])
    #expect(result.status == 64, "\(result)")
    #expect(result.stderr.contains("--endpoints-api 'endpoint-slices'"), "\(result.stderr)")
    #expect(result.stderr.contains("'endpointslices' or 'endpoints'"), "\(result.stderr)")
  }

  @Test(
    "the default reads slices; --endpoints-api endpoints reads Endpoints (the same cluster holds both, differently)",
    .enabled(if: built))
  func flag() async throws {
    try await withKube { kube in
      let dir = try TemporaryDirectory(prefix: "endpoints-api")
      defer { dir.remove() }
      let kubeconfig = dir.file("kubeconfig")
      try await kube.server.kubeconfigYAML().write(toFile: kubeconfig, atomically: true, encoding: .utf8)
      try kube.state.create(service("web", "app"))
      try kube.state.create(slice("web-0", service: "web", "app", ips: ips(1...2), pods: false))
      try kube.state.create(endpoints("web", "app", ips: ips(9...9), pods: false))

      for (arguments, log, expected) in [
        ([String](), "reading endpoints from discovery.k8s.io/v1 EndpointSlices", ["10.1.0.1:8080", "10.1.0.2:8080"]),
        (["--endpoints-api", "endpoints"], "reading endpoints from v1 Endpoints", ["10.1.0.9:8080"]),
      ] {
        let port = try await StablePorts.free()
        let process = try BackgroundProcess(
          Self.controller,
          ["destination", "--kubeconfig", kubeconfig, "--listen", "127.0.0.1:\(port)"] + arguments)
        defer { process.terminate() }
        try await process.waitForOutput(containing: log, timeout: .seconds(30))
        try await process.waitForOutput(containing: "destination service listening", timeout: .seconds(30))
        try await withDestinationClient(port: port) { client in
          try await withThrowingTaskGroup(of: Void.self) { group in
            let updates = recordUpdates(client, path: "web.app.svc.cluster.local:8080", in: &group)
            try await eventually("the first message with \(arguments)") { !updates.items.isEmpty }
            #expect(Set(addresses(after: updates.items).map(\.description)) == Set(expected), "\(arguments)")
            group.cancelAll()
          }
        }
      }
    }
  }
}
