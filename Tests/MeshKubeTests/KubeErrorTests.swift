import Foundation
import MeshKube
import Testing

@Suite("KubeError")
struct KubeErrorTests {
  @Test("the code is public, agrees with the is* properties, and decides equality")
  func code() {
    let notFound = KubeError.fromStatus(
      KubeStatus(message: "services \"web\" not found", reason: "NotFound", code: 404), httpStatus: 404,
      context: "GET /api/v1/namespaces/a/services/web")
    #expect(notFound.code == .notFound)
    #expect(notFound.isNotFound)
    #expect(notFound == KubeError.notFound("another message"))
    #expect(notFound != KubeError.conflict("services \"web\" not found"))
    let conflict = KubeError.httpFailure(status: 409, body: Data("not json".utf8), context: "PUT x")
    #expect(conflict.code == .conflict && conflict.isConflict && conflict.httpStatus == 409)
    let transport = KubeError.transport("connection refused to 127.0.0.1:1", cause: CancellationError())
    #expect(transport.code == .transport && transport.cause is CancellationError)
  }
}
