public import Foundation
public import GRPCCore
public import Logging
public import MeshAPI
public import MeshCore
import SwiftASN1
import SwiftProtobuf
public import X509

/// The `Certify` RPC: authenticates the token, checks the CSR against the identity the token grants, and
/// signs it with the cluster's issuer. Every bad request gets its own gRPC status; the service keeps serving.
public struct IdentityService: Swiftmesh_Identity_Identity.SimpleServiceProtocol {
  public let authority: CertificateAuthority
  public let validator: any TokenValidator
  public let trustDomain: TrustDomain
  public let controlPlaneNamespace: String
  private let logger: Logger
  private let now: @Sendable () -> Date

  public init(
    authority: CertificateAuthority,
    validator: any TokenValidator,
    trustDomain: TrustDomain,
    controlPlaneNamespace: String = IdentityName.defaultControlPlaneNamespace,
    logger: Logger,
    now: @escaping @Sendable () -> Date = { Date() }
  ) {
    self.authority = authority
    self.validator = validator
    self.trustDomain = trustDomain
    self.controlPlaneNamespace = controlPlaneNamespace
    self.logger = logger
    self.now = now
  }

  public func certify(
    request: Swiftmesh_Identity_CertifyRequest,
    context: ServerContext
  ) async throws -> Swiftmesh_Identity_CertifyResponse {
    do {
      let (identity, leaf) = try await sign(request)
      var response = Swiftmesh_Identity_CertifyResponse()
      response.leafCertificate = Data(try leaf.derBytes())
      response.intermediateCertificates = try authority.issuerChain.map { Data(try $0.derBytes()) }
      response.validUntil = Google_Protobuf_Timestamp(date: leaf.notValidAfter)
      logger.info(
        "certified identity",
        metadata: ["identity": "\(identity)", "serial": "\(leaf.serialNumber)", "peer": "\(context.remotePeer)"])
      return response
    } catch let error as MeshError {
      logger.notice(
        "refused certification",
        metadata: ["identity": "\(request.identity)", "reason": "\(error.message)", "peer": "\(context.remotePeer)"])
      throw RPCError(meshError: error)
    }
  }

  /// The checks and the signature, without the gRPC wrapping.
  public func sign(_ request: Swiftmesh_Identity_CertifyRequest) async throws(MeshError) -> (IdentityName, Certificate) {
    let requested = try IdentityName(request.identity)
    guard let token = String(data: request.token, encoding: .utf8), !token.isEmpty else {
      throw .unauthenticated("request carries no token")
    }
    let account: ServiceAccountRef
    do {
      account = try await validator.validate(token: token)
    } catch let error as MeshError {
      throw error
    } catch {
      throw .unavailable("token validation failed", cause: error)
    }
    let granted = try IdentityName(
      serviceAccount: account.name, namespace: account.namespace,
      controlPlaneNamespace: controlPlaneNamespace, trustDomain: trustDomain)
    guard granted == requested else {
      throw .permissionDenied("token belongs to \(granted), but the request asks for \(requested)")
    }
    let csr = try CertificateAuthority.parseCSR(der: Array(request.certificateSigningRequest))
    let leaf = try authority.sign(csr: csr, for: granted, now: now())
    return (granted, leaf)
  }
}

extension Certificate {
  /// The certificate's DER encoding.
  public func derBytes() throws -> [UInt8] {
    var serializer = DER.Serializer()
    try serializer.serialize(self)
    return serializer.serializedBytes
  }
}

extension RPCError {
  /// The gRPC status for a mesh error: the message says what was wrong.
  public init(meshError error: MeshError) {
    let code: RPCError.Code =
      switch error.code {
      case .invalidArgument, .invalidIdentity, .invalidAuthority: .invalidArgument
      case .unauthenticated: .unauthenticated
      case .permissionDenied: .permissionDenied
      case .expired: .failedPrecondition
      case .notFound: .notFound
      case .unavailable: .unavailable
      default: .internalError
      }
    self.init(code: code, message: error.message)
  }
}
