public import NIOHTTP1
import NIOCore
import NIOPosix
import Synchronization

/// A small HTTP/1.1 application for proxy tests: answers every request with `<name>\n` after `delay`, or
/// (a `failureRate` share of requests, at random) with 500 and `<name> failed\n`, never more than
/// ``maxConsecutiveFailures`` in a row: a proxy's failure accrual ejects an endpoint after 7 failures in a
/// row (Linkerd's default), and at 30 % a run of 550 requests had such a streak about one time in ten, after
/// which the proxy answered 503 and a test's counts no longer added up. It counts the requests
/// it received and keeps the last request's head. `stop()` closes it and all its connections, as a crashed
/// backend would.
public final class TestHTTPServer: Sendable {
  public let name: String
  public let port: Int
  private let server: any Channel
  private let children: ChildChannels
  private let seen: Seen

  /// The most failures in a row (see the type's description).
  public static let maxConsecutiveFailures = 3
  /// Requests received so far.
  public var requestCount: Int { seen.state.withLock { $0.count } }
  /// Connections accepted so far.
  public var connectionsAccepted: Int { children.all.count }
  /// Connections open now.
  public var openConnections: Int { children.all.filter(\.isActive).count }
  /// The head of the last request received.
  public var lastRequest: HTTPRequestHead? { seen.state.withLock { $0.last } }

  public init(name: String, delay: Duration = .zero, failureRate: Double = 0) async throws {
    let children = ChildChannels()
    let seen = Seen()
    let delayAmount = TimeAmount.nanoseconds(delay.components.seconds * 1_000_000_000 + delay.components.attoseconds / 1_000_000_000)
    self.server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .childChannelInitializer { channel in
        children.add(channel)
        return channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.configureHTTPServerPipeline()
          try channel.pipeline.syncOperations.addHandler(
            Responder(name: name, delay: delayAmount, failureRate: failureRate, seen: seen))
        }
      }
      .bind(host: "127.0.0.1", port: 0).get()
    self.name = name
    self.port = server.localAddress?.port ?? 0
    self.children = children
    self.seen = seen
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
    let failureRate: Double
    let seen: Seen
    init(name: String, delay: TimeAmount, failureRate: Double, seen: Seen) {
      self.name = name
      self.delay = delay
      self.failureRate = failureRate
      self.seen = seen
    }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
      let part = unwrapInboundIn(data)
      if case .head(let head) = part {
        seen.state.withLock {
          $0.count += 1
          $0.last = head
        }
      }
      guard case .end = part else { return }
      let failureRate = failureRate
      let fail = seen.state.withLock { state in
        let fail =
          failureRate > 0 && state.consecutiveFailures < TestHTTPServer.maxConsecutiveFailures
          && Double.random(in: 0..<1) < failureRate
        state.consecutiveFailures = fail ? state.consecutiveFailures + 1 : 0
        return fail
      }
      let body = ByteBuffer(string: fail ? "\(name) failed\n" : "\(name)\n")
      let status: HTTPResponseStatus = fail ? .internalServerError : .ok
      let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
      context.eventLoop.scheduleTask(in: delay) {
        let (handler, context) = bound.value
        var headers = HTTPHeaders()
        headers.add(name: "content-length", value: String(body.readableBytes))
        context.write(handler.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        context.write(handler.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        context.writeAndFlush(handler.wrapOutboundOut(.end(nil)), promise: nil)
      }
    }
  }
}

final class Seen: Sendable {
  struct State {
    var count = 0
    var last: HTTPRequestHead?
    var consecutiveFailures = 0
  }
  let state = Mutex(State())
}

final class ChildChannels: Sendable {
  private let channels = Mutex<[any Channel]>([])
  func add(_ channel: any Channel) { channels.withLock { $0.append(channel) } }
  var all: [any Channel] { channels.withLock { $0 } }
}
