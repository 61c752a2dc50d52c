@testable import MeshProxy
import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP2
import Testing

@Suite("Channel handlers in isolation")
struct HandlerTests {
  static func headers(_ status: String, endStream: Bool = false) -> HTTP2Frame.FramePayload {
    .headers(.init(headers: HPACKHeaders([(":status", status), ("grpc-status", "5")]), endStream: endStream))
  }

  static func written(_ channel: EmbeddedChannel) throws -> [HTTP2Frame.FramePayload] {
    var frames: [HTTP2Frame.FramePayload] = []
    while let frame = try channel.readOutbound(as: HTTP2Frame.FramePayload.self) { frames.append(frame) }
    return frames
  }

  @Test("a response head followed by an empty end becomes one HEADERS frame with END_STREAM")
  func trailersOnly() throws {
    let channel = EmbeddedChannel(handler: TrailersOnlyCoalescer())
    channel.write(Self.headers("200"), promise: nil)
    channel.write(HTTP2Frame.FramePayload.data(.init(data: .byteBuffer(ByteBuffer()), endStream: true)), promise: nil)
    channel.flush()
    let frames = try Self.written(channel)
    #expect(frames.count == 1)
    guard case .headers(let headers) = frames.first else { Issue.record("\(frames)"); return }
    #expect(headers.endStream)
    #expect(headers.headers.first(name: "grpc-status") == "5")
  }

  @Test("a head with a body, a flushed head, and 1xx heads pass as they are")
  func otherResponses() throws {
    let channel = EmbeddedChannel(handler: TrailersOnlyCoalescer())
    channel.write(Self.headers("100"), promise: nil)
    channel.write(Self.headers("200"), promise: nil)
    channel.flush()
    channel.write(HTTP2Frame.FramePayload.data(.init(data: .byteBuffer(ByteBuffer(string: "x")), endStream: false)), promise: nil)
    channel.write(Self.headers("200", endStream: true), promise: nil)
    channel.flush()
    let frames = try Self.written(channel)
    #expect(frames.count == 4, "\(frames)")
    if case .headers(let first) = frames[0] { #expect(first.headers.first(name: ":status") == "100") }
    if case .headers(let head) = frames[1] { #expect(!head.endStream) } else { Issue.record("\(frames)") }
  }

  @Test("a reset event becomes RST_STREAM with the upstream's code")
  func reset() throws {
    let channel = EmbeddedChannel(handler: TrailersOnlyCoalescer())
    channel.pipeline.triggerUserOutboundEvent(StreamResetEvent(code: .refusedStream), promise: nil)
    let frames = try Self.written(channel)
    guard case .rstStream(let code) = frames.first else { Issue.record("\(frames)"); return }
    #expect(code == .refusedStream)
  }

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
