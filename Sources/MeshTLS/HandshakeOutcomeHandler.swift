import MeshCore
import MeshIdentity
import NIOCore
import NIOSSL
import NIOTLS
import Synchronization
import X509

/// The verification result of one handshake, written from the verification callback (which may run off the
/// event loop) and read on the event loop when the handshake ends.
final class VerificationRecord: Sendable {
  private let box = Mutex<Result<(IdentityName, Certificate), IdentityVerifier.Failure>?>(nil)
  @Sendable func record(_ result: Result<(IdentityName, Certificate), IdentityVerifier.Failure>) {
    box.withLock { $0 = result }
  }
  var result: Result<(IdentityName, Certificate), IdentityVerifier.Failure>? { box.withLock { $0 } }
}

/// Sits behind the NIOSSL handler until the handshake ends, turns the outcome into a `MeshTLSSession` or a
/// `MeshTLSError`, and then removes itself so it costs nothing per message.
final class HandshakeOutcomeHandler: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = NIOAny

  enum Role {
    case server(requireClientCertificate: Bool)
    case client(expected: IdentityName)
  }

  private let role: Role
  private let promise: EventLoopPromise<MeshTLSSession>
  private let verification = VerificationRecord()
  private var finished = false

  init(role: Role, eventLoop: any EventLoop) {
    self.role = role
    self.promise = eventLoop.makePromise(of: MeshTLSSession.self)
  }

  var session: EventLoopFuture<MeshTLSSession> { promise.futureResult }
  var record: @Sendable (Result<(IdentityName, Certificate), IdentityVerifier.Failure>) -> Void {
    verification.record
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if !finished, let tls = event as? TLSUserEvent, case .handshakeCompleted(let negotiated) = tls {
      finished = true
      switch verification.result {
      case .success(let (identity, certificate)):
        promise.succeed(
          MeshTLSSession(peerIdentity: identity, peerCertificate: certificate, negotiatedProtocol: negotiated))
      case .none:
        if case .server(requireClientCertificate: false) = role {
          promise.succeed(MeshTLSSession(peerIdentity: nil, peerCertificate: nil, negotiatedProtocol: negotiated))
        } else {
          promise.fail(MeshTLSError(.handshakeFailed, "handshake completed without verifying the peer"))
          context.close(promise: nil)
        }
      case .failure(let failure):
        promise.fail(MeshTLSError(failure))
        context.close(promise: nil)
      }
      context.fireUserInboundEventTriggered(event)
      context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
      return
    }
    context.fireUserInboundEventTriggered(event)
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    if !finished {
      finished = true
      promise.fail(classify(error))
      context.close(promise: nil)
    }
    context.fireErrorCaught(error)
  }

  func channelInactive(context: ChannelHandlerContext) {
    if !finished {
      finished = true
      promise.fail(
        verification.result.flatMap { result -> MeshTLSError? in
          if case .failure(let failure) = result { return MeshTLSError(failure) }
          return nil
        } ?? MeshTLSError(.handshakeFailed, "connection closed before the TLS handshake completed"))
    }
    context.fireChannelInactive()
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    if !finished {
      finished = true
      promise.fail(MeshTLSError(.handshakeFailed, "TLS handler removed before the handshake completed"))
    }
  }

  /// Maps a handshake error to a mesh TLS error, preferring what our verifier said.
  private func classify(_ error: any Error) -> MeshTLSError {
    if let error = error as? MeshTLSError { return error }
    if case .failure(let failure) = verification.result { return MeshTLSError(failure) }
    let text = "\(error)"
    if text.contains("HTTP_REQUEST") || text.contains("WRONG_VERSION_NUMBER") || text.contains("HTTPS_PROXY_REQUEST")
      || text.contains("UNKNOWN_PROTOCOL") || text.contains("RECORD_LENGTH_MISMATCH")
    {
      return MeshTLSError(.notTLS, "peer did not speak TLS (\(text))")
    }
    if text.contains("PEER_DID_NOT_RETURN_A_CERTIFICATE") {
      return MeshTLSError(.noClientCertificate, "client presented no certificate; this port requires one")
    }
    if text.contains("CERTIFICATE_EXPIRED") {
      return MeshTLSError(.expired, "peer refused our certificate as expired (\(text))")
    }
    if text.contains("CERTIFICATE_VERIFY_FAILED") || text.contains("UNKNOWN_CA") || text.contains("BAD_CERTIFICATE") {
      return MeshTLSError(.untrustedChain, "certificate verification failed (\(text))")
    }
    return MeshTLSError(.handshakeFailed, "TLS handshake failed: \(text)")
  }
}
