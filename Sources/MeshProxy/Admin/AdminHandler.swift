import MeshAdminHTTP
import MeshTLS
import NIOCore
import NIOHTTP1
import Synchronization

/// Readiness as the admin server reports it: ready, or not ready for a reason that `/ready` tells
/// (waiting for a certificate, the identity service refused, shutting down, ...).
public final class Readiness: Sendable {
  /// nil when ready; else why not.
  private let notReadyReason: Mutex<String?>
  public init(notReady reason: String = "starting") { notReadyReason = Mutex(reason) }
  public var isReady: Bool { notReadyReason.withLock { $0 == nil } }
  /// Why the proxy is not ready; nil when it is.
  public var reason: String? { notReadyReason.withLock { $0 } }
  public func set(_ value: Bool) { notReadyReason.withLock { $0 = value ? nil : "not serving" } }
  public func setNotReady(_ reason: String) { notReadyReason.withLock { $0 = reason } }
}

/// The admin endpoints: `/metrics` (Prometheus text), `/ready`, `/live`.
enum AdminRoutes {
  static func route(metrics: ProxyMetrics, readiness: Readiness) -> AdminResponder.Route {
    { method, path in
      switch (method, path) {
      case (.GET, "/metrics"): .metrics(metrics.exposition())
      case (.GET, "/ready"):
        if let reason = readiness.reason { .text(.serviceUnavailable, "not ready: \(reason)\n") } else { .text(.ok, "ready\n") }
      case (.GET, "/live"): .text(.ok, "live\n")
      default: .notFound(path)
      }
    }
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
      try sync.addHandler(AdminResponder(route: AdminRoutes.route(metrics: metrics, readiness: readiness)))
    } catch {
      context.close(promise: nil)
      return
    }
    context.fireChannelRead(data)
    sync.removeHandler(context: context, promise: nil)
  }
}
