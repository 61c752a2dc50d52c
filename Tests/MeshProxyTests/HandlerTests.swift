@testable import MeshProxy
import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP2
import Testing

@Suite("Channel handlers in isolation")
struct HandlerTests {
  @Test("grpc-message is percent-encoded UTF-8")
  func grpcMessage() {
    #expect(GRPCMessage.percentEncoded("no endpoints: café 100%") == "no endpoints: caf%C3%A9 100%25")
  }

  @Test("gRPC content types are recognised in any case; others are not")
  func grpcContentType() {
    #expect(ProxyRequestHandler.isGRPCContentType("application/grpc"))
    #expect(ProxyRequestHandler.isGRPCContentType("Application/GRPC+proto"))
    #expect(!ProxyRequestHandler.isGRPCContentType("application/json"))
    #expect(!ProxyRequestHandler.isGRPCContentType("application/grp"))
  }
}
