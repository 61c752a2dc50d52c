import Foundation
import Logging
import MeshCore
import MeshIdentity
import Synchronization
import Testing
import X509
import _MeshTestSupport

@Suite("Certificate rotation")
struct CertificateRotatorTests {
  @Test("renews at 70 % of the lifetime, retries with jittered backoff, keeps the old certificate meanwhile")
  func renewsAndRetries() async throws {
    let pki = try TestPKI()
    let start = Date()
    let clock = ManualRotationClock(now: start)
    let first = try pki.workload(.test("web"), lifetime: .seconds(1000), now: start)
    let attempts = Mutex(0)
    let rotator = CertificateRotator(
      initial: first,
      configuration: .defaults {
        $0.initialBackoff = .seconds(2)
        $0.maximumBackoff = .seconds(5)
        $0.jitter = 0.5
      },
      clock: clock,
      logger: Logger(label: "test.rotator"),
      random: { 1.0 }  // the largest jitter: delays are halved
    ) {
      let attempt = attempts.withLock { value in
        value += 1
        return value
      }
      if attempt <= 3 { throw MeshError.unavailable("identity service down (attempt \(attempt))") }
      return try pki.workload(.test("web"), lifetime: .seconds(1000), now: clock.now())
    }
    let updates = rotator.updates()
    try await withThrowingTaskGroup { group in
      group.addTask { try await rotator.run() }

      // Lifetime is 1000 s + 20 s backdating; 70 % of 1020 s after notBefore.
      let renewAt = try #require(await clock.nextSleep())
      let expected = first.notValidBefore.addingTimeInterval(0.7 * 1020)
      #expect(abs(renewAt.timeIntervalSince(expected)) < 0.001)

      // Three failures: backoff 2 s, 4 s, then capped at 5 s, each halved by the jitter.
      clock.advance(to: renewAt)
      var previous = renewAt
      for expectedDelay in [1.0, 2.0, 2.5] {
        let retryAt = try #require(await clock.nextSleep())
        #expect(abs(retryAt.timeIntervalSince(previous) - expectedDelay) < 0.01)
        #expect(rotator.current == first, "the old certificate serves while renewal fails")
        clock.advance(to: retryAt)
        previous = retryAt
      }

      var iterator = updates.makeAsyncIterator()
      let renewed = try #require(await iterator.next())
      #expect(renewed != first)
      #expect(renewed.leaf.serialNumber != first.leaf.serialNumber)
      #expect(rotator.current == renewed)
      #expect(rotator.failures == 3)
      #expect(rotator.renewals == 1)

      // The next renewal is scheduled from the new certificate.
      let nextRenewal = try #require(await clock.nextSleep())
      #expect(abs(nextRenewal.timeIntervalSince(renewed.renewalTime())) < 0.001)
      group.cancelAll()
    }
  }

  @Test("backoff doubles up to the maximum")
  func backoff() {
    let rotator = CertificateRotator(
      initial: try! TestPKI().workload(.test("web")),
      configuration: .defaults { $0.initialBackoff = .seconds(1); $0.maximumBackoff = .seconds(60) },
      logger: Logger(label: "test")
    ) { throw MeshError.unavailable("unused") }
    #expect(rotator.backoff(attempt: 0) == .seconds(1))
    #expect(rotator.backoff(attempt: 3) == .seconds(8))
    #expect(rotator.backoff(attempt: 10) == .seconds(60))
  }
}
