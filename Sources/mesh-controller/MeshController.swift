import ArgumentParser
import Logging
import MeshCore
import MeshIdentity
import MeshKube
import ServiceLifecycle
import UnixSignals

@main
struct MeshController: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "mesh-controller",
    abstract: "The SwiftMesh control plane: the identity service, the destination service and the proxy injector.",
    subcommands: [IdentityController.self, DestinationController.self, InjectorController.self]
  )
}

struct IdentityController: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "identity", abstract: "Serve the identity service (gRPC Certify over TLS).")

  @Option(help: "Directory holding issuer.crt, issuer.key and ca.crt.")
  var issuerDir: String
  @Option(help: "Address to listen on, HOST:PORT.")
  var listen: String = "0.0.0.0:8080"
  @Option(help: "Token file: one 'TOKEN SERVICEACCOUNT NAMESPACE' per line (or --token-review).")
  var tokens: String?
  @Flag(
    help: ArgumentHelp(
      "Authenticate workloads by their Kubernetes service-account tokens, with the API server's TokenReview.",
      discussion: "Proxies send a projected token (audience --audience); the reviewed service account must be the one in the identity asked for."))
  var tokenReview = false
  @Option(help: "Audience a token must be issued for (with --token-review; repeat for several, empty for the API server's own).")
  var audience: [String] = [IdentityController.defaultAudience]
  @Option(help: "Kubeconfig for --token-review (default: KUBECONFIG, ~/.kube/config, then in-cluster).")
  var kubeconfig: String?
  @Option(help: "The kubeconfig context to use.")
  var context: String?
  @Option(help: "Trust domain.")
  var trustDomain: String = "cluster.local"
  @Option(help: "Control-plane namespace (part of every identity name).")
  var controlPlaneNamespace: String = IdentityName.defaultControlPlaneNamespace
  @Option(help: "Workload certificate lifetime in seconds.")
  var certificateLifetime: Int = 24 * 3600
  @Option(help: "Log level (trace, debug, info, notice, warning, error).")
  var logLevel: String = "info"

  /// The audience of the tokens proxies present to the identity service.
  static let defaultAudience = "identity.swiftmesh.io"

  func validate() throws {
    switch (tokens, tokenReview) {
    case (nil, false): throw ValidationError("say how workloads authenticate: --tokens FILE or --token-review")
    case (.some, true): throw ValidationError("--tokens and --token-review exclude each other")
    default: break
    }
    if !tokenReview, kubeconfig != nil || context != nil {
      throw ValidationError("--kubeconfig and --context go with --token-review")
    }
  }

  func run() async throws {
    LoggingSystem.bootstrap(StreamLogHandler.standardError)
    var logger = Logger(label: "mesh-controller.identity")
    logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
    let address = try Authority(listen)
    let domain = try TrustDomain(trustDomain)
    let loaded = try PEMFiles.loadIssuer(
      directory: issuerDir,
      configuration: .defaults { $0.workloadLifetime = .seconds(certificateLifetime) })
    let validator: any TokenValidator
    var kubeClient: KubeClient?
    if let tokens {
      validator = try TokenFileValidator(path: tokens)
    } else {
      let client = try KubeClient(config: try KubeClientConfig.load(kubeconfig: kubeconfig, context: context), logger: logger)
      kubeClient = client
      let audiences = audience.filter { !$0.isEmpty }
      validator = TokenReviewValidator(client: client, audiences: audiences.isEmpty ? nil : audiences)
      logger.info(
        "authenticating workloads with TokenReview",
        metadata: ["audiences": "\(audiences.isEmpty ? ["(the API server's)"] : audiences)"])
    }
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
    do {
      try await group.run()
    } catch {
      try? await kubeClient?.shutdown()
      throw error
    }
    try await kubeClient?.shutdown()
  }
}
