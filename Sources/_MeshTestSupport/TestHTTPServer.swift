import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// A small HTTP/1.1 application for proxy tests: answers every request with `<name>\n` after `delay`.
/// `stop()` closes it and all its connections, as a crashed backend would.
public final class TestHTTPServer: Sendable {
  public let name: String
  public let port: Int
  private let server: any Channel
  private let children: ChildChannels

  public init(name: String, delay: Duration = .zero) async throws {
    let children = ChildChannels()
    let delayAmount = TimeAmount.nanoseconds(delay.components.seconds * 1_000_000_000 + delay.components.attoseconds / 1_000_000_000)
    self.server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .childChannelInitializer { channel in
        children.add(channel)
        return channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.configureHTTPServerPipeline()
          try channel.pipeline.syncOperations.addHandler(Responder(name: name, delay: delayAmount))
        }
      }
      .bind(host: "127.0.0.1", port: 0).get()
    self.name = name
    self.port = server.localAddress?.port ?? 0
    self.children = children
  }

  public func stop() async {
    try? await server.close()
    for child in children.all { try? await child.close() }
  }

  private final class Responder: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let name: String
    let delay: TimeAmount
    init(name: String, delay: TimeAmount) {
      self.name = name
      self.delay = delay
    }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
      guard case .end = unwrapInboundIn(data) else { return }
      let body = ByteBuffer(string: "\(name)\n")
      let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
      context.eventLoop.scheduleTask(in: delay) {
        let (handler, context) = bound.value
        var headers = HTTPHeaders()
        headers.add(name: "content-length", value: String(body.readableBytes))
        context.write(handler.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
        context.write(handler.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        context.writeAndFlush(handler.wrapOutboundOut(.end(nil)), promise: nil)
      }
    }
  }
}

final class ChildChannels: Sendable {
  private let channels = Mutex<[any Channel]>([])
  func add(_ channel: any Channel) { channels.withLock { $0.append(channel) } }
  var all: [any Channel] { channels.withLock { $0 } }
}
