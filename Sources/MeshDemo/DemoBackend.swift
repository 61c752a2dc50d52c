import NIOCore
import NIOHTTP1
import NIOPosix

/// The demo's application: an HTTP/1.1 server on loopback that answers every request with
/// `cluster=<cluster> pod=<pod>` (after `delay`, to stand for real work), so a caller sees who served it.
package final class DemoBackend: Sendable {
  package let cluster: String
  package let pod: String
  package let port: Int
  private let channel: any Channel

  /// Listens on `host`:`port` (port 0: a free one, see `port`).
  package init(
    cluster: String, pod: String, host: String = "127.0.0.1", port: Int = 0, delay: Duration = .zero
  ) async throws {
    let amount = TimeAmount.nanoseconds(
      delay.components.seconds * 1_000_000_000 + delay.components.attoseconds / 1_000_000_000)
    let body = "cluster=\(cluster) pod=\(pod)\n"
    self.channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
          try channel.pipeline.syncOperations.addHandler(Responder(body: body, delay: amount))
        }
      }
      .bind(host: host, port: port).get()
    self.cluster = cluster
    self.pod = pod
    self.port = channel.localAddress?.port ?? 0
  }

  package func stop() async { try? await channel.close() }

  private final class Responder: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let body: String
    let delay: TimeAmount
    var keepAlive = true
    init(body: String, delay: TimeAmount) {
      self.body = body
      self.delay = delay
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
      switch unwrapInboundIn(data) {
      case .head(let head): keepAlive = head.isKeepAlive
      case .body: break
      case .end:
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let respond = {
          let (handler, context) = bound.value
          var headers = HTTPHeaders()
          headers.add(name: "content-type", value: "text/plain")
          headers.add(name: "content-length", value: String(handler.body.utf8.count))
          if !handler.keepAlive { headers.add(name: "connection", value: "close") }
          context.write(handler.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
          context.write(handler.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: handler.body)))), promise: nil)
          let keepAlive = handler.keepAlive
          let flushed = context.writeAndFlush(handler.wrapOutboundOut(.end(nil)))
          if !keepAlive { flushed.whenComplete { _ in bound.value.1.close(promise: nil) } }
        }
        if delay == .zero { respond() } else { context.eventLoop.assumeIsolated().scheduleTask(in: delay, respond) }
      }
    }
  }
}
