import MeshIdentity
import MeshTLS
import Testing

/// SwiftMesh's errors share one shape: a code to branch on, a message, an optional cause, equality by code.
@Suite("Error shape")
struct ErrorShapeTests {
  struct Underlying: Error, Sendable {}

  @Test("MeshTLSError is equal by code whatever the message and cause; kind is the code's earlier name")
  func meshTLSError() {
    let a = MeshTLSError(code: .identityMismatch, message: "expected a, presented b", cause: Underlying())
    let b = MeshTLSError(.identityMismatch, "expected c, presented d")
    #expect(a == b)
    #expect(a != MeshTLSError(.expired, "expected a, presented b"))
    #expect(a.kind == a.code)
    #expect(a.cause is Underlying)
    #expect(b.cause == nil)
    #expect("\(a)".hasPrefix("\(a.metricLabel): expected a, presented b"))
  }

  @Test("MeshTLSError's codes are distinct, and their labels are metric labels (lower case, underscores)")
  func meshTLSCodes() {
    let labels = MeshTLSError.Code.allCases.map(\.rawValue)
    #expect(Set(labels).count == labels.count)
    #expect(Set(MeshTLSError.Code.allCases).count == labels.count)
    for label in labels {
      #expect(label.allSatisfy { $0.isLowercase || $0 == "_" }, "\(label)")
    }
  }

  @Test("IdentityVerifier.Failure is equal by code and keeps its message")
  func verifierFailure() {
    let failure = IdentityVerifier.Failure(.untrusted, "chain does not lead to the anchor")
    #expect(failure == IdentityVerifier.Failure(code: .untrusted, message: "other"))
    #expect(failure != IdentityVerifier.Failure(.expired, "chain does not lead to the anchor"))
    #expect(failure.kind == .untrusted)
    #expect(failure.description == "chain does not lead to the anchor")
  }
}
