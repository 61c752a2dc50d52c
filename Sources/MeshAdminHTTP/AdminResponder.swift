public import NIOCore
public import NIOHTTP1

/// One answer of an admin port (`/metrics`, `/ready`, ...).
public struct AdminResponse: Sendable {
  public var status: HTTPResponseStatus
  public var contentType: String
  public var body: ByteBuffer

  public init(status: HTTPResponseStatus, contentType: String, body: ByteBuffer) {
    self.status = status
    self.contentType = contentType
    self.body = body
  }

  /// A plain-text answer.
  public static func text(_ status: HTTPResponseStatus, _ text: String) -> Self {
    Self(status: status, contentType: "text/plain", body: ByteBuffer(string: text))
  }

  /// A Prometheus text exposition.
  public static func metrics(_ exposition: [UInt8]) -> Self {
    Self(status: .ok, contentType: "text/plain; version=0.0.4", body: ByteBuffer(bytes: exposition))
  }

  public static func notFound(_ path: String) -> Self { text(.notFound, "not found: \(path)\n") }
}

/// Answers each HTTP/1.1 request of an admin port with what `route` says for its method and path (without
/// the query). Goes after `configureHTTPServerPipeline`; the request body, if any, is ignored.
public final class AdminResponder: ChannelInboundHandler {
  public typealias InboundIn = HTTPServerRequestPart
  public typealias OutboundOut = HTTPServerResponsePart
  public typealias Route = @Sendable (_ method: HTTPMethod, _ path: String) -> AdminResponse

  private let route: Route
  private var path = ""
  private var method: HTTPMethod = .GET

  public init(route: @escaping Route) { self.route = route }

  public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    switch unwrapInboundIn(data) {
    case .head(let head):
      path = String(head.uri.split(separator: "?", maxSplits: 1).first ?? "")
      method = head.method
    case .body:
      break
    case .end:
      let response = route(method, path)
      var headers = HTTPHeaders()
      headers.add(name: "content-type", value: response.contentType)
      headers.add(name: "content-length", value: String(response.body.readableBytes))
      let head = HTTPResponseHead(version: .http1_1, status: response.status, headers: headers)
      context.write(wrapOutboundOut(.head(head)), promise: nil)
      context.write(wrapOutboundOut(.body(.byteBuffer(response.body))), promise: nil)
      context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }
  }
}
