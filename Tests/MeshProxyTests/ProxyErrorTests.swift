import MeshProxy
import NIOHTTP1
import Testing

@Suite("ProxyError")
struct ProxyErrorTests {
  struct Underlying: Error, Sendable {}

  @Test("equal by code (reason) whatever the detail; code and message name reason and detail; the cause is kept")
  func shape() {
    let error = ProxyError(.connectFailed, "connect to 127.0.0.1:1 refused", cause: Underlying())
    #expect(error == ProxyError(code: .connectFailed, message: "other"))
    #expect(error != ProxyError(.noEndpoints, "connect to 127.0.0.1:1 refused"))
    #expect(error.code == error.reason && error.message == error.detail)
    #expect(error.cause is Underlying)
    #expect("\(error)".hasPrefix("\(error.reason.rawValue): connect to 127.0.0.1:1 refused (cause:"))
  }

  @Test("every code has its own header value, and maps to an HTTP error status and a gRPC status")
  func codes() {
    let values = ProxyError.Reason.allCases.map(\.rawValue)
    #expect(Set(values).count == values.count)
    for code in ProxyError.Code.allCases {
      let error = ProxyError(code, "x")
      #expect(error.status.code >= 400, "\(code)")
      #expect([4, 7, 14].contains(error.grpcStatus), "\(code)")
    }
    #expect(ProxyError(.timeout, "x").grpcStatus == 4)
    #expect(ProxyError(.identityRequired, "x").status == .forbidden)
  }
}
