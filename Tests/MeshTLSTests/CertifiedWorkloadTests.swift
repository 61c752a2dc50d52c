import Foundation
import Logging
import MeshCore
import MeshIdentity
import Synchronization
import Testing
import _MeshTestSupport

@testable import MeshTLS

/// Accepts exactly the tokens in `valid`, which a test changes as Kubernetes would rotate them.
final class RotatingTokens: TokenValidator {
  let valid = Mutex<Set<String>>([])
  let seen = Mutex<[String]>([])
  func validate(token: String) async throws -> ServiceAccountRef {
    seen.withLock { $0.append(token) }
    guard valid.withLock({ $0.contains(token) }) else { throw MeshError.unauthenticated("token expired or unknown") }
    return ServiceAccountRef(name: "web", namespace: "default")
  }
}

@Suite("CertifiedWorkload")
struct CertifiedWorkloadTests {
  @Test("each Certify reads the token file anew: a renewal presents the rotated token, not the one read at start")
  func rotatedTokenFile() async throws {
    let pki = try TestPKI()
    let tokens = RotatingTokens()
    let server = try IdentityServer(
      configuration: .defaults {
        $0.host = "127.0.0.1"
        $0.port = 0
      }, authority: try pki.authority(), validator: tokens, logger: Logger(label: "test.identity"))
    let dir = try TemporaryDirectory(prefix: "certified-workload")
    defer { dir.remove() }
    try await withThrowingTaskGroup { group in
      group.addTask { try await server.run() }
      let port = try await server.listeningPort
      let tokenFile = dir.file("token")
      tokens.valid.withLock { $0 = ["token-1"] }
      try "token-1\n".write(toFile: tokenFile, atomically: true, encoding: .utf8)
      let certify = try CertifiedWorkload.certifier(
        name: try IdentityName("web.default.serviceaccount.identity.swiftmesh.cluster.local"),
        identityServer: "127.0.0.1:\(port)", anchors: [pki.anchor.certificate], tokenFile: tokenFile)
      let first = try await certify()
      #expect(first.identity?.description.hasPrefix("web.default.") == true)

      // The kubelet rotates the projected token; the old one stops being valid.
      tokens.valid.withLock { $0 = ["token-2"] }
      try "token-2\n".write(toFile: tokenFile, atomically: true, encoding: .utf8)
      let renewed = try await certify()
      #expect(renewed.identity == first.identity)
      #expect(tokens.seen.withLock { $0 } == ["token-1", "token-2"])

      // An empty token file is a clear configuration error, not a request with an empty token.
      try "\n".write(toFile: tokenFile, atomically: true, encoding: .utf8)
      await #expect {
        _ = try await certify()
      } throws: { ($0 as? MeshError)?.code == .invalidConfiguration && "\($0)".contains("is empty") }
      group.cancelAll()
    }
  }
}
