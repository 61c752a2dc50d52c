public import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import MeshAPI
public import Logging
public import MeshCore
import NIOSSL
public import ServiceLifecycle
public import X509

/// The identity service as a long-running `Service`: gRPC `Certify` over TLS, with a server certificate that
/// its own issuer signs for the identity service's name and renews before it expires.
public final class IdentityServer: Service, Sendable {
  public struct Configuration: Sendable {
    /// Where to listen. Default 0.0.0.0:8080.
    public var host: String = "0.0.0.0"
    public var port: Int = 8080
    public var trustDomain: TrustDomain = .clusterLocal
    public var controlPlaneNamespace: String = IdentityName.defaultControlPlaneNamespace

    public init() {}

    public static func defaults(configure: (inout Self) -> Void = { _ in }) -> Self {
      var config = Self()
      configure(&config)
      return config
    }
  }

  /// The identity the identity service presents: `swiftmesh-identity.<cp>.serviceaccount.identity.<cp>.<td>`.
  public static func serverIdentity(
    controlPlaneNamespace: String = IdentityName.defaultControlPlaneNamespace,
    trustDomain: TrustDomain = .clusterLocal
  ) throws(MeshError) -> IdentityName {
    try IdentityName(
      serviceAccount: "\(controlPlaneNamespace)-identity", namespace: controlPlaneNamespace,
      controlPlaneNamespace: controlPlaneNamespace, trustDomain: trustDomain)
  }

  public let configuration: Configuration
  public let service: IdentityService
  private let server: GRPCServerService
  private let credentials: RotatingCredentials
  private let rotator: CertificateRotator
  private let updates: AsyncStream<WorkloadCertificate>
  private let logger: Logger

  public init(
    configuration: Configuration,
    authority: CertificateAuthority,
    validator: any TokenValidator,
    logger: Logger,
    now: @escaping @Sendable () -> Date = { Date() }
  ) throws(MeshError) {
    self.configuration = configuration
    self.logger = logger
    self.service = IdentityService(
      authority: authority, validator: validator, trustDomain: configuration.trustDomain,
      controlPlaneNamespace: configuration.controlPlaneNamespace, logger: logger, now: now)
    let identity = try Self.serverIdentity(
      controlPlaneNamespace: configuration.controlPlaneNamespace, trustDomain: configuration.trustDomain)
    let mint: @Sendable () throws(MeshError) -> WorkloadCertificate = { () throws(MeshError) in
      let (key, csr) = try WorkloadKey.makeCSR(for: identity)
      let leaf = try authority.sign(csr: csr, for: identity)
      return WorkloadCertificate(privateKey: key, leaf: leaf, intermediates: authority.issuerChain)
    }
    let initial = try mint()
    do {
      self.credentials = try RotatingCredentials(initial)
      self.server = GRPCServerService(
        name: "identity service", host: configuration.host, port: configuration.port,
        transportSecurity: try .tls(certificateReloader: credentials), services: [service],
        metadata: ["trust_domain": "\(configuration.trustDomain)"], logger: logger)
    } catch {
      throw .invalidConfiguration("identity server TLS setup failed", cause: error)
    }
    self.rotator = CertificateRotator(initial: initial, logger: logger) { try mint() }
    self.updates = rotator.updates()
  }

  /// The bound address, once listening (useful with port 0).
  public var listeningPort: Int {
    get async throws { try await server.listeningPort }
  }

  public func run() async throws {
    try await withThrowingDiscardingTaskGroup { group in
      group.addTask { try await self.rotator.run() }
      group.addTask {
        for await fresh in self.updates {
          do { try self.credentials.update(fresh) } catch {
            self.logger.error("could not install the renewed server certificate", metadata: ["error": "\(error)"])
          }
        }
      }
      try await server.run()
      group.cancelAll()
    }
  }
}
