import ArgumentParser
import Foundation
import Logging
import MeshCore
import MeshInject
import MeshKube
import ServiceLifecycle
import UnixSignals

/// `mesh-controller injector`: the proxy injection webhook (HTTPS, `POST /inject`).
struct InjectorController: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "injector",
    abstract: "Serve the proxy injection webhook (POST /inject, admission.k8s.io/v1 AdmissionReview) over HTTPS.",
    discussion: """
      Pods created with swiftmesh.io/inject: enabled (on the pod or its namespace) get the swiftmesh-init init \
      container and the swiftmesh-proxy sidecar. The injector reads namespaces (their annotations) and, unless \
      --ca is given, the trust anchors from the ConfigMap swiftmesh-identity-trust-roots (key ca.crt) in the \
      control plane's namespace, once at start.
      """)

  @Option(help: "Address to listen on, HOST:PORT.")
  var listen = "0.0.0.0:8443"
  @Option(help: "The serving certificate chain (PEM) the API server verifies with the webhook's caBundle.")
  var tlsCert: String
  @Option(help: "The serving certificate's private key (PEM).")
  var tlsKey: String
  @Option(help: "The trust anchors PEM (default: read from the control plane's swiftmesh-identity-trust-roots ConfigMap).")
  var ca: String?
  @Option(help: "Path to a kubeconfig (default: KUBECONFIG, ~/.kube/config, then in-cluster).")
  var kubeconfig: String?
  @Option(help: "The kubeconfig context to use.")
  var context: String?
  @OptionGroup var mesh: InjectOptions
  @Option(help: "Log level (trace, debug, info, notice, warning, error).")
  var logLevel = "info"

  /// Where the control plane publishes its trust anchors.
  static let trustRootsConfigMap = "swiftmesh-identity-trust-roots"

  func run() async throws {
    LoggingSystem.bootstrap(StreamLogHandler.standardError)
    var logger = Logger(label: "mesh-controller.injector")
    logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
    let address: Authority
    do { address = try Authority(listen) } catch { throw ValidationError("--listen '\(listen)': \(error.message)") }
    func read(_ flag: String, _ path: String) throws -> String {
      do { return try String(contentsOfFile: path, encoding: .utf8) } catch {
        throw ValidationError("\(flag) \(path): cannot read it (\(error.localizedDescription))")
      }
    }
    let certificate = try read("--tls-cert", tlsCert)
    let key = try read("--tls-key", tlsKey)
    let client = try KubeClient(config: try KubeClientConfig.load(kubeconfig: kubeconfig, context: context), logger: logger)
    do {
      let trustRoots: String
      if let ca {
        trustRoots = try read("--ca", ca)
      } else {
        let map = try await client.get(ConfigMap.self, name: Self.trustRootsConfigMap, namespace: mesh.controlPlaneNamespace)
        guard let pem = map.data?["ca.crt"], !pem.isEmpty else {
          throw ValidationError("ConfigMap \(mesh.controlPlaneNamespace)/\(Self.trustRootsConfigMap) has no ca.crt")
        }
        trustRoots = pem
      }
      let injector = PodInjector(configuration: mesh.configuration(trustRootsPEM: trustRoots))
      let handler = AdmissionReviewHandler(injector: injector, logger: logger) { namespace in
        (try await client.get(Namespace.self, name: namespace).metadata.annotations) ?? [:]
      }
      let server = try InjectorServer(
        configuration: .defaults {
          $0.host = address.host
          $0.port = address.port
        },
        certificateChainPEM: certificate, privateKeyPEM: key, handler: handler, logger: logger)
      let group = ServiceGroup(
        configuration: .init(services: [server], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
      try await group.run()
    } catch {
      try? await client.shutdown()
      throw error
    }
    try await client.shutdown()
  }
}
