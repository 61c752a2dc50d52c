import ArgumentParser
import Logging
import MeshCore
import MeshIdentity
import ServiceLifecycle
import UnixSignals

@main
struct MeshController: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "mesh-controller",
    abstract: "The SwiftMesh control plane: the identity service and the destination service.",
    subcommands: [IdentityController.self, DestinationController.self]
  )
}

struct IdentityController: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "identity", abstract: "Serve the identity service (gRPC Certify over TLS).")

  @Option(help: "Directory holding issuer.crt, issuer.key and ca.crt.")
  var issuerDir: String
  @Option(help: "Address to listen on, HOST:PORT.")
  var listen: String = "0.0.0.0:8080"
  @Option(help: "Token file: one 'TOKEN SERVICEACCOUNT NAMESPACE' per line.")
  var tokens: String
  @Option(help: "Trust domain.")
  var trustDomain: String = "cluster.local"
  @Option(help: "Control-plane namespace (part of every identity name).")
  var controlPlaneNamespace: String = IdentityName.defaultControlPlaneNamespace
  @Option(help: "Workload certificate lifetime in seconds.")
  var certificateLifetime: Int = 24 * 3600
  @Option(help: "Log level (trace, debug, info, notice, warning, error).")
  var logLevel: String = "info"

  func run() async throws {
    LoggingSystem.bootstrap(StreamLogHandler.standardError)
    var logger = Logger(label: "mesh-controller.identity")
    logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
    let address = try Authority(listen)
    let domain = try TrustDomain(trustDomain)
    let loaded = try PEMFiles.loadIssuer(
      directory: issuerDir,
      configuration: .defaults { $0.workloadLifetime = .seconds(certificateLifetime) })
    let validator = try TokenFileValidator(path: tokens)
    let server = try IdentityServer(
      configuration: .defaults {
        $0.host = address.host
        $0.port = address.port
        $0.trustDomain = domain
        $0.controlPlaneNamespace = controlPlaneNamespace
      },
      authority: loaded.authority,
      validator: validator,
      logger: logger)
    let group = ServiceGroup(
      configuration: .init(services: [server], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    try await group.run()
  }
}
