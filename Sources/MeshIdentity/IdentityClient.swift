public import Crypto
import Foundation
public import GRPCCore
import SwiftASN1
import GRPCNIOTransportHTTP2
public import MeshAPI
public import MeshCore
import NIOSSL
import Synchronization
public import X509

/// Asks the identity service for a workload certificate. The service's own certificate must chain to the
/// trust anchors and carry the identity service's name.
public struct IdentityClient: Sendable {
  public struct Configuration: Sendable {
    /// The identity service address.
    public var server: Authority
    public var trustAnchors: [Certificate]
    /// The identity the service must present.
    public var serverIdentity: IdentityName
    /// Deadline of one `Certify` call. Default 10 s.
    public var timeout: Duration = .seconds(10)

    public init(server: Authority, trustAnchors: [Certificate], serverIdentity: IdentityName) {
      self.server = server
      self.trustAnchors = trustAnchors
      self.serverIdentity = serverIdentity
    }
  }

  public var configuration: Configuration

  public init(configuration: Configuration) {
    self.configuration = configuration
  }

  /// Makes a key and CSR for `identity`, sends them with `token`, and returns the certified material.
  public func certify(
    identity: IdentityName,
    token: String,
    privateKey: P256.Signing.PrivateKey = P256.Signing.PrivateKey()
  ) async throws(MeshError) -> WorkloadCertificate {
    let (key, csr) = try WorkloadKey.makeCSR(for: identity, privateKey: privateKey)
    var request = Swiftmesh_Identity_CertifyRequest()
    request.identity = identity.description
    request.token = Data(token.trimmingCharacters(in: .whitespacesAndNewlines).utf8)
    do {
      var serializer = DER.Serializer()
      try serializer.serialize(csr)
      request.certificateSigningRequest = Data(serializer.serializedBytes)
    } catch {
      throw .internalError("encoding the CSR failed", cause: error)
    }

    let response = try await send(request)
    let material = try Self.material(from: response, privateKey: key, identity: identity)
    let verifier = IdentityVerifier(trustAnchors: configuration.trustAnchors)
    if case .failure(let failure) = await verifier.verify(chain: material.chain, expected: identity) {
      throw .internalError("identity service answered with a certificate we cannot use: \(failure.message)")
    }
    return material
  }

  /// Sends one `Certify` request as it is and returns the answer; errors keep the server's message.
  public func send(_ request: Swiftmesh_Identity_CertifyRequest) async throws(MeshError) -> Swiftmesh_Identity_CertifyResponse {
    let refusal = Mutex<IdentityVerifier.Failure?>(nil)
    let verifier = IdentityVerifier(trustAnchors: configuration.trustAnchors)
    let callback = verifier.nioSSLCallback(expected: configuration.serverIdentity, onFailure: { failure in
      refusal.withLock { $0 = failure }
    })
    let anchors = configuration.trustAnchors
    do {
      let anchorSources = try anchors.map { TLSConfig.CertificateSource.bytes(try $0.derBytes(), format: .der) }
      let transport = try HTTP2ClientTransport.Posix(
        target: configuration.server.isIPAddress
          ? .ipv4(address: configuration.server.host, port: configuration.server.port)
          : .dns(host: configuration.server.host, port: configuration.server.port),
        transportSecurity: .tls { tls in
          tls.trustRoots = .certificates(anchorSources)
          tls.serverCertificateVerification = .noHostnameVerification
          tls.customVerificationCallback = callback
        },
        config: .defaults { config in
          config.backoff.max = .seconds(1)
        }
      )
      var options = CallOptions.defaults
      options.timeout = configuration.timeout
      options.waitForReady = false
      return try await withGRPCClient(transport: transport) { client in
        try await Swiftmesh_Identity_Identity.Client(wrapping: client).certify(request, options: options)
      }
    } catch let error as RPCError {
      if let failure = refusal.withLock({ $0 }) {
        throw .permissionDenied("identity service at \(configuration.server) refused: \(failure.message)")
      }
      throw MeshError(rpcError: error, context: "identity service at \(configuration.server)")
    } catch {
      throw .unavailable("identity service at \(configuration.server) failed", cause: error)
    }
  }

  /// Checks an answer: the leaf must carry the key we made and the identity we asked for.
  static func material(
    from response: Swiftmesh_Identity_CertifyResponse,
    privateKey: P256.Signing.PrivateKey,
    identity: IdentityName
  ) throws(MeshError) -> WorkloadCertificate {
    let leaf: Certificate
    let intermediates: [Certificate]
    do {
      leaf = try Certificate(derEncoded: Array(response.leafCertificate))
      intermediates = try response.intermediateCertificates.map { try Certificate(derEncoded: Array($0)) }
    } catch {
      throw .internalError("identity service answered with a certificate that does not parse", cause: error)
    }
    guard leaf.publicKey == Certificate.PublicKey(privateKey.publicKey) else {
      throw .internalError("identity service answered with a certificate for another key")
    }
    guard leaf.dnsNames == [identity.description] else {
      throw .internalError("identity service answered with a certificate for \(leaf.dnsNames), expected \(identity)")
    }
    return WorkloadCertificate(privateKey: privateKey, leaf: leaf, intermediates: intermediates)
  }
}

extension MeshError {
  /// A mesh error for a failed RPC, keeping the server's message.
  public init(rpcError error: RPCError, context: String) {
    let code: MeshError.Code =
      switch error.code {
      case .invalidArgument: .invalidArgument
      case .unauthenticated: .unauthenticated
      case .permissionDenied: .permissionDenied
      case .failedPrecondition: .expired
      case .notFound: .notFound
      case .unavailable, .deadlineExceeded: .unavailable
      default: .internalError
      }
    self.init(code: code, message: "\(context): \(error.message)", cause: error)
  }
}
