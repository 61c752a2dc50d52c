// SwiftMesh as a library: a service mirror between two clusters. Services exported in the remote cluster
// (label mirror.swiftmesh.io/exported=true) appear in the local one as <name>-<cluster-name>, with endpoints at
// the remote cluster's gateway, and stay in step until interrupted.
import ArgumentParser
import Foundation
import Logging
import MeshKube
import MeshMulticluster
import ServiceLifecycle
import UnixSignals

@main
struct ExampleMirror: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "example-mirror", abstract: "Mirror a remote cluster's exported services into a local one.")

  @Option(help: "Kubeconfig of the local (source) cluster: the mirrors are written there.") var local: String
  @Option(help: "Kubeconfig of the remote (target) cluster: its exported services are read.") var remote: String
  @Option(help: "The remote cluster's name (the mirrors' suffix).") var clusterName = "remote"
  @Option(help: "The remote gateway's address (IP or DNS name).") var gatewayAddress = "127.0.0.1"
  @Option(help: "The remote gateway's port.") var gatewayPort = 4143

  func run() async throws {
    let logger = Logger(label: "example-mirror")
    let client = try KubeClient(config: try KubeClientConfig.load(kubeconfig: local), logger: logger)
    // What `meshctl multicluster link` prints: a Secret holding the remote kubeconfig, and the Link itself.
    var gateway = GatewayValues()
    gateway.addresses = [gatewayAddress]
    gateway.port = gatewayPort
    let manifest = LinkManifest(
      clusterName: clusterName, kubeconfig: try String(contentsOfFile: remote, encoding: .utf8), gateway: gateway)
    try manifest.validate()
    try await replace(manifest.secret, in: client)
    try await replace(manifest.link, in: client)
    // No identity material: the gateway is not probed (the Link's GatewayAlive condition says so).
    let mirror = ServiceMirror(link: manifest.link, localClient: client, tls: nil, metrics: MirrorMetrics(), logger: logger)
    print("mirroring cluster \(clusterName)'s exported services as <name>-\(clusterName)")
    try await ServiceGroup(services: [mirror], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger).run()
    try await client.shutdown()
  }

  /// Creates `object`, replacing an earlier one of the same name.
  func replace<R: KubeResource>(_ object: R, in client: KubeClient) async throws {
    do {
      _ = try await client.create(object)
    } catch let error as KubeError where error.isAlreadyExists {
      try await client.delete(R.self, name: object.name, namespace: object.namespace)
      _ = try await client.create(object)
    }
  }
}
