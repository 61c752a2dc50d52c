import MeshTLS
import NIOCore
import NIOHTTP1
import Synchronization

/// Readiness as the admin server reports it.
public final class Readiness: Sendable {
  private let ready = Atomic<Bool>(false)
  public init() {}
  public var isReady: Bool { ready.load(ordering: .acquiring) }
  public func set(_ value: Bool) { ready.store(value, ordering: .releasing) }
}

/// The admin endpoints: `/metrics` (Prometheus text), `/ready`, `/live`.
final class AdminHandler: ChannelInboundHandler {
  typealias InboundIn = HTTPServerRequestPart
  typealias OutboundOut = HTTPServerResponsePart

  private let metrics: ProxyMetrics
  private let readiness: Readiness
  private var path = ""
  private var method: HTTPMethod = .GET

  init(metrics: ProxyMetrics, readiness: Readiness) {
    self.metrics = metrics
    self.readiness = readiness
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    switch unwrapInboundIn(data) {
    case .head(let head):
      path = String(head.uri.split(separator: "?", maxSplits: 1).first ?? "")
      method = head.method
    case .body:
      break
    case .end:
      respond(context: context)
    }
  }

  private func respond(context: ChannelHandlerContext) {
    let (status, contentType, body): (HTTPResponseStatus, String, ByteBuffer)
    switch (method, path) {
    case (.GET, "/metrics"):
      (status, contentType, body) = (.ok, "text/plain; version=0.0.4", ByteBuffer(bytes: metrics.exposition()))
    case (.GET, "/ready"):
      (status, contentType, body) =
        readiness.isReady
        ? (.ok, "text/plain", ByteBuffer(string: "ready\n")) : (.serviceUnavailable, "text/plain", ByteBuffer(string: "not ready\n"))
    case (.GET, "/live"):
      (status, contentType, body) = (.ok, "text/plain", ByteBuffer(string: "live\n"))
    default:
      (status, contentType, body) = (.notFound, "text/plain", ByteBuffer(string: "not found: \(path)\n"))
    }
    var headers = HTTPHeaders()
    headers.add(name: "content-type", value: contentType)
    headers.add(name: "content-length", value: String(body.readableBytes))
    context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
    context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
    context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
  }
}

/// The admin port's first handler: a TLS ClientHello gets the mesh's TLS (client certificate optional), then
/// HTTP/1.1; anything else is plain HTTP/1.1. Either way the admin handler answers.
final class AdminDetector: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer
  typealias InboundOut = ByteBuffer
  private let tls: MeshTLS?
  private let metrics: ProxyMetrics
  private let readiness: Readiness

  init(tls: MeshTLS?, metrics: ProxyMetrics, readiness: Readiness) {
    self.tls = tls
    self.metrics = metrics
    self.readiness = readiness
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let bytes = unwrapInboundIn(data)
    let sync = context.pipeline.syncOperations
    do {
      if let tls, bytes.getInteger(at: bytes.readerIndex, as: UInt8.self) == 0x16 {
        _ = try tls.addServerHandlers(to: sync, requireClientCertificate: false)
      }
      try sync.configureHTTPServerPipeline(withErrorHandling: true)
      try sync.addHandler(AdminHandler(metrics: metrics, readiness: readiness))
    } catch {
      context.close(promise: nil)
      return
    }
    context.fireChannelRead(data)
    sync.removeHandler(context: context, promise: nil)
  }
}
