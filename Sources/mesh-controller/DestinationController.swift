import ArgumentParser
import Logging
import MeshCore
import MeshDestination
import MeshDiscovery
import MeshKube
import ServiceLifecycle
import UnixSignals

/// `mesh-controller destination`: the destination service, fed by the cluster's API server.
struct DestinationController: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "destination",
    abstract: "Serve the destination service (gRPC Get / GetProfile), fed by the Kubernetes API.")

  @Option(help: "Path to a kubeconfig (default: KUBECONFIG, ~/.kube/config, then in-cluster).")
  var kubeconfig: String?
  @Option(help: "The kubeconfig context to use.")
  var context: String?
  @Option(help: "Address to listen on, HOST:PORT.")
  var listen: String = "0.0.0.0:8086"
  @Option(help: "The cluster's DNS domain.")
  var clusterDomain: String = "cluster.local"
  @Option(help: "Trust domain of identities.")
  var trustDomain: String = "cluster.local"
  @Option(help: "Control-plane namespace (part of every identity name).")
  var controlPlaneNamespace: String = IdentityName.defaultControlPlaneNamespace
  @Option(
    help: """
      Where endpoints come from: 'endpointslices' (discovery.k8s.io/v1, every slice of a service; falls back \
      to 'endpoints' when the API server does not serve it) or 'endpoints' (v1 Endpoints, for old clusters).
      """)
  var endpointsAPI: String = EndpointsAPI.endpointSlices.rawValue
  @Option(help: "Log level (trace, debug, info, notice, warning, error).")
  var logLevel: String = "info"

  func run() async throws {
    LoggingSystem.bootstrap(StreamLogHandler.standardError)
    var logger = Logger(label: "mesh-controller.destination")
    logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
    let address: Authority
    do {
      address = try Authority(listen)
    } catch {
      throw ValidationError("--listen '\(listen)': \(error.message)")
    }
    let domain: TrustDomain
    do {
      domain = try TrustDomain(trustDomain)
    } catch {
      throw ValidationError("--trust-domain '\(trustDomain)': \(error.message)")
    }
    guard let api = EndpointsAPI(argument: endpointsAPI) else {
      throw ValidationError("--endpoints-api '\(endpointsAPI)': expected 'endpointslices' or 'endpoints'")
    }
    let kubeConfig = try KubeClientConfig.load(kubeconfig: kubeconfig, context: context)
    let client = try KubeClient(config: kubeConfig, logger: logger)
    let server = DestinationServer(
      configuration: .defaults {
        $0.host = address.host
        $0.port = address.port
        $0.clusterDomain = clusterDomain
        $0.trustDomain = domain
        $0.controlPlaneNamespace = controlPlaneNamespace
        $0.endpointsAPI = api
      },
      client: client,
      logger: logger)
    let group = ServiceGroup(
      configuration: .init(services: [server], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    do {
      try await group.run()
    } catch {
      try? await client.shutdown()
      throw error
    }
    try await client.shutdown()
  }
}
