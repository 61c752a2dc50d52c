import Foundation
public import Logging
import MeshCore
public import MeshIdentity
public import ServiceLifecycle

/// A workload's mesh identity as an executable gets it at start: read the trust anchors and the
/// service-account token, `Certify` with the identity service, build the TLS contexts, and keep them
/// current (the rotator renews at 70 % of the lifetime; the follower installs each renewal).
public struct CertifiedWorkload: Sendable {
  public let tls: MeshTLS
  public let material: WorkloadCertificate
  /// Run these beside the workload: the rotator and the follower that installs what it renews.
  public let services: [any Service]

  public static func certify(
    identity: String, identityServer: String, caFile: String, tokenFile: String,
    configuration: MeshTLS.Configuration = .defaults(), logger: Logger
  ) async throws -> CertifiedWorkload {
    let name = try IdentityName(identity)
    let anchors = try PEMFiles.readCertificates(caFile)
    let token: String
    do {
      token = try String(contentsOfFile: tokenFile, encoding: .utf8)
    } catch {
      throw MeshError.invalidConfiguration("cannot read token file \(tokenFile)", cause: error)
    }
    let client = IdentityClient(
      configuration: .init(
        server: try Authority(identityServer), trustAnchors: anchors,
        serverIdentity: try IdentityServer.serverIdentity(
          controlPlaneNamespace: name.controlPlaneNamespace, trustDomain: name.trustDomain)))
    let material = try await client.certify(identity: name, token: token)
    logger.notice("certified", metadata: ["identity": "\(name)", "valid_until": "\(material.notValidAfter)"])
    let tls = try MeshTLS(material: material, trustAnchors: anchors, configuration: configuration, logger: logger)
    let rotator = CertificateRotator(initial: material, logger: logger) {
      try await client.certify(identity: name, token: token)
    }
    return CertifiedWorkload(
      tls: tls, material: material,
      services: [rotator, RotationFollower(tls: tls, updates: rotator.updates())])
  }
}

/// Installs every renewed certificate into a `MeshTLS`'s contexts, until graceful shutdown.
public struct RotationFollower: Service {
  let tls: MeshTLS
  let updates: AsyncStream<WorkloadCertificate>

  public init(tls: MeshTLS, updates: AsyncStream<WorkloadCertificate>) {
    self.tls = tls
    self.updates = updates
  }

  public func run() async throws {
    await cancelWhenGracefulShutdown { await tls.follow(updates) }
  }
}
