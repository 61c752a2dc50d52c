import Foundation
import Logging
import MeshIdentity
import MeshInject
import MeshKube
import MeshKubeLocal
import Testing
import _MeshTestSupport

let kubectlAvailable = Subprocess.which("kubectl") != nil

/// Where `swift build` put the executables: next to this test bundle.
let binDirectory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
func built(_ executable: String) -> String? {
  let path = binDirectory.appendingPathComponent(executable).path
  return FileManager.default.isExecutableFile(atPath: path) ? path : nil
}

/// The golden inputs and outputs of `meshctl inject`.
let goldenDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Golden")
func golden(_ name: String) -> String { goldenDirectory.appendingPathComponent(name).path }

/// A CA and a serving certificate for 127.0.0.1 signed by it: what the injector presents and the
/// webhook configuration's `caBundle` trusts.
struct WebhookCertificates {
  let caPEM: String
  let chainPEM: String
  let keyPEM: String

  init() throws {
    let ca = try TrustAnchor.makeRoot(commonName: "swiftmesh-injector-ca")
    let leaf = try TrustAnchor.makeServerCertificate(
      commonName: "swiftmesh-injector", dnsNames: ["swiftmesh-injector.swiftmesh.svc"], ipAddresses: ["127.0.0.1"], signedBy: ca)
    caPEM = try PEMFiles.pem([ca.certificate])
    chainPEM = try PEMFiles.pem([leaf.certificate])
    keyPEM = PEMFiles.pem(leaf.privateKey)
  }
}

/// The embedded API server (HTTPS, admin kubeconfig on disk), an in-process injector, and a
/// MutatingWebhookConfiguration pointing the one at the other.
struct Cluster: Sendable {
  let server: LocalKubeAPIServer
  let kubeconfig: String
  let directory: TemporaryDirectory
  let injectorURL: String
  let certificates: WebhookCertificates
  let trustRootsPEM: String
  let injectorHandle: StopHandle

  /// Stops the injector and waits until its address refuses connections (curl's exit 7).
  func stopInjector() async throws {
    injectorHandle.stop()
    let deadline = ContinuousClock.now + .seconds(10)
    while try await Subprocess.run("curl", ["-sk", "--max-time", "1", injectorURL]).status != 7 {
      guard ContinuousClock.now < deadline else { throw TestFailure("the injector still listens at \(injectorURL)") }
      try await Task.sleep(for: .milliseconds(50))
    }
  }

  var state: LocalKubeState { server.state }

  func kubectl(_ args: [String], input: String? = nil) async throws -> Subprocess.Output {
    try await Subprocess.run(
      "kubectl", ["--kubeconfig", kubeconfig, "--cache-dir", directory.file("cache")] + args, input: input.map { Data($0.utf8) })
  }

  /// Registers the injection webhook (pods CREATE, `sideEffects: None`, the control plane's namespace left
  /// alone) with `failurePolicy`, at `url` (default the running injector) or through a `service` reference.
  func registerWebhook(failurePolicy: String = "Ignore", url: String? = nil, service: JSONValue? = nil) throws {
    var clientConfig: JSONValue = ["caBundle": .string(Data(certificates.caPEM.utf8).base64EncodedString())]
    if let service { clientConfig["service"] = service } else { clientConfig["url"] = .string(url ?? injectorURL) }
    let configuration: JSONValue = [
      "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
      "metadata": ["name": "swiftmesh-proxy-injector"],
      "webhooks": [[
        "name": "injector.swiftmesh.io",
        "clientConfig": clientConfig,
        "rules": [["operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced"]],
        "namespaceSelector": ["matchExpressions": [["key": "swiftmesh.io/is-control-plane", "operator": "DoesNotExist"]]],
        "failurePolicy": .string(failurePolicy), "sideEffects": "None", "admissionReviewVersions": ["v1"], "timeoutSeconds": 5,
      ]],
    ]
    try state.create(group: "admissionregistration.k8s.io", resource: "mutatingwebhookconfigurations", object: configuration)
  }
}

let injectorTrustRoots = "-----BEGIN CERTIFICATE-----\nMIIBinjector\n-----END CERTIFICATE-----\n"

/// Runs `body` with a cluster and its running injector.
func withCluster(trustRootsPEM: String = injectorTrustRoots,
                 _ body: @Sendable (Cluster) async throws -> Void) async throws {
  let certificates = try WebhookCertificates()
  let directory = try TemporaryDirectory(prefix: "meshinject")
  defer { directory.remove() }
  let server = LocalKubeAPIServer(state: LocalKubeState())
  try server.state.create(resource: "namespaces", object: [
    "metadata": ["name": "swiftmesh", "labels": ["swiftmesh.io/is-control-plane": "true"]],
  ])
  let state = server.state
  let injector = try InjectorServer(
    configuration: .defaults {
      $0.host = "127.0.0.1"
      $0.port = 0
    },
    certificateChainPEM: certificates.chainPEM, privateKeyPEM: certificates.keyPEM,
    handler: AdmissionReviewHandler(
      injector: PodInjector(configuration: .defaults { $0.trustRootsPEM = trustRootsPEM }),
      logger: Logger(label: "test.injector")
    ) { namespace in
      (try state.get(resource: "namespaces", name: namespace)["metadata"]?["annotations"]?.objectValue ?? [:])
        .compactMapValues(\.stringValue)
    },
    logger: Logger(label: "test.injector"))
  try await withThrowingTaskGroup(of: Void.self) { group in
    let apiHandle = start(server, in: &group)
    let injectorHandle = start(injector, in: &group)
    defer {
      apiHandle.stop()
      injectorHandle.stop()
      server.stop()
    }
    _ = try await server.port()
    let port = try await injector.port()
    let kubeconfig = directory.file("kubeconfig")
    try await server.kubeconfigYAML().write(toFile: kubeconfig, atomically: true, encoding: .utf8)
    try await body(Cluster(
      server: server, kubeconfig: kubeconfig, directory: directory, injectorURL: "https://127.0.0.1:\(port)/inject",
      certificates: certificates, trustRootsPEM: trustRootsPEM, injectorHandle: injectorHandle))
  }
}

/// The names of a pod's init containers and containers.
func containerNames(_ pod: JSONValue) -> (initContainers: [String], containers: [String]) {
  (pod["spec"]?["initContainers"]?.arrayValue?.compactMap { $0["name"]?.stringValue } ?? [],
   pod["spec"]?["containers"]?.arrayValue?.compactMap { $0["name"]?.stringValue } ?? [])
}
