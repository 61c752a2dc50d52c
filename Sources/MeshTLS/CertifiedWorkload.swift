import Foundation
public import Logging
import MeshCore
public import MeshIdentity
public import ServiceLifecycle
import X509

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
    let certify = try certifier(name: name, identityServer: identityServer, anchors: anchors, tokenFile: tokenFile)
    let material = try await certify()
    logger.notice("certified", metadata: ["identity": "\(name)", "valid_until": "\(material.notValidAfter)"])
    let tls = try MeshTLS(material: material, trustAnchors: anchors, configuration: configuration, logger: logger)
    let rotator = CertificateRotator(initial: material, logger: logger, renew: certify)
    return CertifiedWorkload(
      tls: tls, material: material,
      services: [rotator, RotationFollower(tls: tls, updates: rotator.updates())])
  }
}

extension CertifiedWorkload {
  /// One `Certify` call for `name`, reading the token file anew each time: Kubernetes rotates projected
  /// service-account tokens in place, and a renewal must present the current one, not the one read at start.
  static func certifier(
    name: IdentityName, identityServer: String, anchors: [Certificate], tokenFile: String
  ) throws -> @Sendable () async throws -> WorkloadCertificate {
    let client = IdentityClient(
      configuration: .init(
        server: try Authority(identityServer), trustAnchors: anchors,
        serverIdentity: try IdentityServer.serverIdentity(
          controlPlaneNamespace: name.controlPlaneNamespace, trustDomain: name.trustDomain)))
    return {
      let token: String
      do {
        token = try String(contentsOfFile: tokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
      } catch {
        throw MeshError.invalidConfiguration("cannot read token file \(tokenFile)", cause: error)
      }
      guard !token.isEmpty else { throw MeshError.invalidConfiguration("token file \(tokenFile) is empty") }
      return try await client.certify(identity: name, token: token)
    }
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
