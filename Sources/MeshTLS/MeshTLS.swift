import Foundation
public import Logging
public import MeshCore
public import MeshIdentity
public import NIOCore
public import NIOSSL
import Synchronization
public import X509

/// Mutual TLS for every proxy-to-proxy hop, built from the workload's current identity material.
///
/// Both sides verify the other's *identity name*, not just the chain: a client names the identity it
/// expects (it is also the SNI), a server learns the identity of each client. Rotation replaces the contexts
/// at once for new handshakes; open connections keep going. Contexts are built once per rotation, never per
/// connection.
public final class MeshTLS: Sendable {
  /// ALPN protocol names.
  public enum ALPN {
    /// The mesh transport between proxies.
    public static let transport = "transport.swiftmesh.io/v1"
    public static let http2 = "h2"
    public static let http11 = "http/1.1"
  }

  public struct Configuration: Sendable {
    /// What a server offers, in preference order. Default: the mesh transport, h2, http/1.1.
    public var serverALPN: [String] = [ALPN.transport, ALPN.http2, ALPN.http11]
    /// What a client asks for. Default: the mesh transport, then h2.
    public var clientALPN: [String] = [ALPN.transport, ALPN.http2]
    /// Lowest TLS version accepted. Default TLS 1.3.
    public var minimumTLSVersion: TLSVersion = .tlsv13
    /// How long a handshake may take from the moment the TLS handlers are added; past it the connection is
    /// closed and the session fails with `handshakeFailed`. Default 10 s.
    public var handshakeTimeout: Duration = .seconds(10)

    public init() {}

    public static func defaults(configure: (inout Self) -> Void = { _ in }) -> Self {
      var config = Self()
      configure(&config)
      return config
    }
  }

  private struct Contexts {
    var material: WorkloadCertificate
    var verifier: IdentityVerifier
    var server: NIOSSLContext
    var serverOptional: NIOSSLContext
    var client: NIOSSLContext
  }

  public let configuration: Configuration
  private let contexts: Mutex<Contexts>
  private let logger: Logger

  public init(
    material: WorkloadCertificate,
    trustAnchors: [Certificate],
    configuration: Configuration = .defaults(),
    logger: Logger = Logger(label: "swiftmesh.tls")
  ) throws(MeshTLSError) {
    self.configuration = configuration
    self.logger = logger
    self.contexts = Mutex(try Self.makeContexts(material, trustAnchors, configuration))
  }

  /// The identity material in force.
  public var material: WorkloadCertificate { contexts.withLock { $0.material } }
  /// The identity this side presents.
  public var localIdentity: IdentityName? { material.identity }
  /// The trust anchors peers must chain to.
  public var trustAnchors: [Certificate] { contexts.withLock { $0.verifier.trustAnchors } }

  /// Uses `material` for every handshake from now on; open connections are untouched.
  public func rotate(to material: WorkloadCertificate) throws(MeshTLSError) {
    let anchors = trustAnchors
    let fresh = try Self.makeContexts(material, anchors, configuration)
    contexts.withLock { $0 = fresh }
    logger.info("TLS identity rotated", metadata: ["serial": "\(material.leaf.serialNumber)"])
  }

  /// Replaces the trust bundle (for anchor rotation: configure old and new together, then drop the old).
  public func setTrustAnchors(_ anchors: [Certificate]) throws(MeshTLSError) {
    let fresh = try Self.makeContexts(material, anchors, configuration)
    contexts.withLock { $0 = fresh }
  }

  /// Follows a rotator: every certificate it publishes is installed at once. Returns when the rotator stops.
  public func follow(_ updates: AsyncStream<WorkloadCertificate>) async {
    for await fresh in updates {
      do { try rotate(to: fresh) } catch {
        logger.error("could not install the renewed certificate; keeping the old one", metadata: ["error": "\(error)"])
      }
    }
  }

  // MARK: - Pipelines
  //
  // Both sides add a `TLSRecordCoalescer` behind the TLS handler: the writes between two flushes (an HTTP/2
  // response's frames) are sealed into one record rather than one record each.

  /// Adds the server side of mesh TLS to a channel. The future gives the session once the handshake is done:
  /// the client's verified identity (nil when it sent no certificate and `requireClientCertificate` is
  /// false) and the negotiated ALPN protocol. It fails with `MeshTLSError`.
  public func addServerHandlers(
    to pipeline: ChannelPipeline.SynchronousOperations,
    requireClientCertificate: Bool = true
  ) throws -> EventLoopFuture<MeshTLSSession> {
    let (context, verifier) = contexts.withLock { state in
      (requireClientCertificate ? state.server : state.serverOptional, state.verifier)
    }
    let outcome = HandshakeOutcomeHandler(
      role: .server(requireClientCertificate: requireClientCertificate), eventLoop: pipeline.eventLoop)
    let handshakeGuard = HandshakeGuard(session: outcome.session, timeout: TimeAmount(configuration.handshakeTimeout))
    let ssl = NIOSSLServerHandler(
      context: context,
      customVerificationCallbackWithMetadata: handshakeGuard.tracking(
        verifier.nioSSLCallback(expected: nil, onResult: outcome.record)))
    try pipeline.addHandler(handshakeGuard)
    try pipeline.addHandler(ssl)
    try pipeline.addHandler(TLSRecordCoalescer())
    try pipeline.addHandler(outcome)
    return outcome.session
  }

  /// Adds the client side of mesh TLS to a channel: SNI is `expected`, and the server must present it.
  public func addClientHandlers(
    to pipeline: ChannelPipeline.SynchronousOperations,
    expected: IdentityName
  ) throws -> EventLoopFuture<MeshTLSSession> {
    let (context, verifier) = contexts.withLock { ($0.client, $0.verifier) }
    let outcome = HandshakeOutcomeHandler(role: .client(expected: expected), eventLoop: pipeline.eventLoop)
    let handshakeGuard = HandshakeGuard(session: outcome.session, timeout: TimeAmount(configuration.handshakeTimeout))
    let ssl = try NIOSSLClientHandler(
      context: context,
      serverHostname: expected.description,
      customVerificationCallbackWithMetadata: handshakeGuard.tracking(
        verifier.nioSSLCallback(expected: expected, onResult: outcome.record)))
    try pipeline.addHandler(handshakeGuard)
    try pipeline.addHandler(ssl)
    try pipeline.addHandler(TLSRecordCoalescer())
    try pipeline.addHandler(outcome)
    return outcome.session
  }

  // MARK: - Contexts

  private static func makeContexts(
    _ material: WorkloadCertificate,
    _ anchors: [Certificate],
    _ configuration: Configuration
  ) throws(MeshTLSError) -> Contexts {
    do {
      let chain = try material.nioCertificates().map { NIOSSLCertificateSource.certificate($0) }
      let key = NIOSSLPrivateKeySource.privateKey(try material.nioPrivateKey())
      let roots = NIOSSLTrustRoots.certificates(
        try anchors.map { try NIOSSLCertificate(bytes: try $0.derBytes(), format: .der) })

      var server = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: key)
      server.minimumTLSVersion = configuration.minimumTLSVersion
      server.trustRoots = roots
      server.certificateVerification = .noHostnameVerification
      server.applicationProtocols = configuration.serverALPN
      var optional = server
      optional.certificateVerification = .optionalVerification

      var client = TLSConfiguration.makeClientConfiguration()
      client.minimumTLSVersion = configuration.minimumTLSVersion
      client.certificateChain = chain
      client.privateKey = key
      client.trustRoots = roots
      client.certificateVerification = .noHostnameVerification
      client.applicationProtocols = configuration.clientALPN

      return Contexts(
        material: material,
        verifier: IdentityVerifier(trustAnchors: anchors),
        server: try NIOSSLContext(configuration: server),
        serverOptional: try NIOSSLContext(configuration: optional),
        client: try NIOSSLContext(configuration: client))
    } catch {
      throw MeshTLSError(.handshakeFailed, "cannot build TLS contexts from the identity material: \(error)")
    }
  }
}

/// What a finished handshake established.
public struct MeshTLSSession: Sendable, Hashable {
  /// The peer's verified identity; nil for a client that sent no certificate where that was allowed.
  public var peerIdentity: IdentityName?
  /// The peer's leaf certificate.
  public var peerCertificate: Certificate?
  /// The ALPN protocol both sides agreed on, if any.
  public var negotiatedProtocol: String?

  public init(peerIdentity: IdentityName?, peerCertificate: Certificate?, negotiatedProtocol: String?) {
    self.peerIdentity = peerIdentity
    self.peerCertificate = peerCertificate
    self.negotiatedProtocol = negotiatedProtocol
  }
}
