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

/// Values a concurrent callback reports, for a test to read.
final class Recorded<Value: Sendable>: Sendable {
  private let values = Mutex<[Value]>([])
  func append(_ value: Value) { values.withLock { $0.append(value) } }
  var all: [Value] { values.withLock { $0 } }
  var count: Int { values.withLock { $0.count } }
}

@Suite("WorkloadCertifier: the first certificate, retried")
struct WorkloadCertifierTests {
  static let identity = "web.default.serviceaccount.identity.swiftmesh.cluster.local"

  @Test("back-off doubles from the initial delay up to the maximum; a refusal waits the slow delay")
  func delays() {
    let retry = WorkloadCertifier.Retry.defaults {
      $0.initialBackoff = .milliseconds(500)
      $0.maximumBackoff = .seconds(3)
      $0.refusedBackoff = .seconds(30)
    }
    #expect((1...5).map { retry.delay(afterAttempt: $0, refused: false) }
      == [.milliseconds(500), .seconds(1), .seconds(2), .seconds(3), .seconds(3)])
    #expect(retry.delay(afterAttempt: 1, refused: true) == .seconds(30))
  }

  @Test("an unreachable service is retried quickly; refusals and an unusable token file slowly")
  func problems() {
    #expect(WorkloadCertifier.problem(MeshError.unavailable("connection refused")) == .unreachable)
    #expect(WorkloadCertifier.problem(MeshError.internalError("bad answer")) == .unreachable)
    #expect(WorkloadCertifier.problem(MeshError.unauthenticated("token expired")) == .refused)
    #expect(WorkloadCertifier.problem(MeshError.permissionDenied("not yours")) == .refused)
    #expect(WorkloadCertifier.problem(MeshError.invalidConfiguration("cannot read token file t")) == .unusableToken)
  }

  @Test("an unreachable identity service: each attempt reported with its reason, growing delays; cancelling ends the wait")
  func unreachable() async throws {
    let pki = try TestPKI()
    let dir = try TemporaryDirectory(prefix: "certifier")
    defer { dir.remove() }
    try PEMFiles.write(try PEMFiles.pem([pki.anchor.certificate]), to: dir.file("ca.crt"))
    try "token\n".write(toFile: dir.file("token"), atomically: true, encoding: .utf8)
    let port = try await StablePorts.free()
    let certifier = try WorkloadCertifier(
      identity: Self.identity, identityServer: "127.0.0.1:\(port)", caFile: dir.file("ca.crt"),
      tokenFile: dir.file("token"), random: { 0 })
    let waits = Recorded<WorkloadCertifier.Waiting>()
    let retry = WorkloadCertifier.Retry.defaults {
      $0.initialBackoff = .milliseconds(50)
      $0.maximumBackoff = .milliseconds(200)
    }
    await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask {
        _ = try await certifier.certify(retry: retry, logger: Logger(label: "test.certifier")) { waiting in
          waits.append(waiting)
        }
      }
      let deadline = ContinuousClock.now + .seconds(20)
      while waits.count < 4 && ContinuousClock.now < deadline {
        try? await Task.sleep(for: .milliseconds(20))
      }
      group.cancelAll()
      do {
        _ = try await group.next()
        Issue.record("certify returned after cancellation")
      } catch is CancellationError {
      } catch {
        Issue.record("cancelled certify threw \(error), not CancellationError")
      }
    }
    let seen = waits.all
    try #require(seen.count >= 4)
    #expect(seen.allSatisfy { !$0.refused })
    #expect(seen.prefix(4).map(\.retryIn) == [.milliseconds(50), .milliseconds(100), .milliseconds(200), .milliseconds(200)])
    #expect(seen[0].reason.contains("unavailable"), "\(seen[0].reason)")
    #expect("\(seen[0])".contains("waiting for the identity service (attempt 1"), "\(seen[0])")
  }

  @Test("an identity the service refuses is retried slowly and said to be refused; once the token is valid it is certified")
  func refusedThenAccepted() async throws {
    let pki = try TestPKI()
    let tokens = RotatingTokens()
    let server = try IdentityServer(
      configuration: .defaults {
        $0.host = "127.0.0.1"
        $0.port = 0
      }, authority: try pki.authority(), validator: tokens, logger: Logger(label: "test.identity"))
    let dir = try TemporaryDirectory(prefix: "certifier")
    defer { dir.remove() }
    try PEMFiles.write(try PEMFiles.pem([pki.anchor.certificate]), to: dir.file("ca.crt"))
    try "token-1\n".write(toFile: dir.file("token"), atomically: true, encoding: .utf8)
    try await withThrowingTaskGroup { group in
      group.addTask { try await server.run() }
      let port = try await server.listeningPort
      let certifier = try WorkloadCertifier(
        identity: Self.identity, identityServer: "127.0.0.1:\(port)", caFile: dir.file("ca.crt"),
        tokenFile: dir.file("token"), random: { 0 })
      let waits = Recorded<WorkloadCertifier.Waiting>()
      let retry = WorkloadCertifier.Retry.defaults {
        $0.initialBackoff = .milliseconds(10)
        $0.refusedBackoff = .milliseconds(300)
      }
      let workload = try await withThrowingTaskGroup(of: CertifiedWorkload.self) { inner in
        inner.addTask {
          try await certifier.certify(retry: retry, logger: Logger(label: "test.certifier")) { waiting in
            waits.append(waiting)
          }
        }
        let deadline = ContinuousClock.now + .seconds(20)
        while waits.count < 2 && ContinuousClock.now < deadline {
          try await Task.sleep(for: .milliseconds(20))
        }
        tokens.valid.withLock { $0 = ["token-1"] }
        return try await inner.next()!
      }
      #expect(workload.tls.localIdentity?.description == Self.identity)
      let seen = waits.all
      try #require(seen.count >= 2)
      #expect(seen.allSatisfy { $0.refused && $0.retryIn == .milliseconds(300) }, "\(seen)")
      #expect(seen[0].reason.contains("unauthenticated"), "\(seen[0].reason)")
      #expect("\(seen[0])".contains("the identity service refused this workload's identity"), "\(seen[0])")
      group.cancelAll()
    }
  }
}
