public import Foundation
import SwiftASN1
public import MeshCore
public import NIOCore
public import NIOSSL
public import X509

extension IdentityVerifier {
  /// A NIOSSL custom verification callback running this verifier: the chain must lead to the trust anchors,
  /// and the leaf must carry `expected` (or any mesh identity when `expected` is nil). A refusal is passed
  /// to `onFailure` before the handshake fails, so the caller can say why.
  public func nioSSLCallback(
    expected: IdentityName?,
    now: @escaping @Sendable () -> Date = { Date() },
    onFailure: @escaping @Sendable (Failure) -> Void
  ) -> @Sendable ([NIOSSLCertificate], EventLoopPromise<NIOSSLVerificationResultWithMetadata>) -> Void {
    nioSSLCallback(expected: expected, now: now) { result in
      if case .failure(let failure) = result { onFailure(failure) }
    }
  }

  /// As `nioSSLCallback(expected:now:onFailure:)`, reporting success too: the verified identity and leaf.
  public func nioSSLCallback(
    expected: IdentityName?,
    now: @escaping @Sendable () -> Date = { Date() },
    onResult: @escaping @Sendable (Result<(IdentityName, Certificate), Failure>) -> Void
  ) -> @Sendable ([NIOSSLCertificate], EventLoopPromise<NIOSSLVerificationResultWithMetadata>) -> Void {
    { nioChain, promise in
      let onFailure: @Sendable (Failure) -> Void = { onResult(.failure($0)) }
      let chain: [Certificate]
      do {
        chain = try nioChain.map { try Certificate(derEncoded: try $0.toDERBytes()) }
      } catch {
        onFailure(Failure(.untrusted, "peer certificate could not be parsed: \(error)"))
        promise.succeed(.failed)
        return
      }
      promise.completeWithTask {
        switch await self.verify(chain: chain, expected: expected, now: now()) {
        case .success(let identity):
          onResult(.success((identity, chain[0])))
          return .certificateVerified(VerificationMetadata(ValidatedCertificateChain(nioChain)))
        case .failure(let failure):
          onFailure(failure)
          return .failed
        }
      }
    }
  }
}
