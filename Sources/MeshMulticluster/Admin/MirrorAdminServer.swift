import Foundation
import MeshAdminHTTP
public import Logging
public import MeshCore
import NIOCore
import NIOHTTP1
import NIOPosix
public import ServiceLifecycle
import Synchronization

/// The mirror controller's admin listener: `/metrics` (Prometheus text), `/gateways` (JSON array of
/// `GatewayReport`, what `meshctl multicluster gateways` reads), `/ready` and `/live`. `/ready` answers
/// 503 with the reason while `notReady` gives one (say, the probe identity is not certified yet).
public final class MirrorAdminServer: ServiceLifecycle.Service, Sendable {
  public typealias Reports = @Sendable () -> [GatewayReport]
  /// Why the mirror is not ready; nil when it is.
  public typealias NotReady = @Sendable () -> String?

  let address: Authority
  let metrics: MirrorMetrics
  let reports: Reports
  let notReady: NotReady
  let logger: Logger
  let bound = Mutex<(port: Int?, waiters: [CheckedContinuation<Int, any Error>], failure: (any Error)?)>((nil, [], nil))

  public init(
    address: Authority, metrics: MirrorMetrics, logger: Logger, reports: @escaping Reports,
    notReady: @escaping NotReady = { nil }
  ) {
    self.address = address
    self.metrics = metrics
    self.reports = reports
    self.notReady = notReady
    self.logger = logger
  }

  /// The bound port, once listening (port 0 in the address lets the OS choose).
  public func port() async throws -> Int {
    try await withCheckedThrowingContinuation { continuation in
      let ready = bound.withLock { b -> Result<Int, any Error>? in
        if let port = b.port { return .success(port) }
        if let failure = b.failure { return .failure(failure) }
        b.waiters.append(continuation)
        return nil
      }
      if let ready { continuation.resume(with: ready) }
    }
  }

  private func publish(_ result: Result<Int, any Error>) {
    let waiters = bound.withLock { b -> [CheckedContinuation<Int, any Error>] in
      switch result {
      case .success(let port): b.port = port
      case .failure(let error): b.failure = error
      }
      defer { b.waiters = [] }
      return b.waiters
    }
    for waiter in waiters { waiter.resume(with: result) }
  }

  public func run() async throws {
    let metrics = self.metrics
    let reports = self.reports
    let notReady = self.notReady
    let channel: any Channel
    do {
      channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        .childChannelInitializer { channel in
          channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
            try channel.pipeline.syncOperations.addHandler(
              AdminResponder(route: MirrorAdminRoutes.route(metrics: metrics, reports: reports, notReady: notReady)))
          }
        }
        .bind(host: address.host, port: address.port).get()
    } catch {
      let failure = MeshError.unavailable("admin listener \(address.host):\(address.port) cannot bind: \(error)", cause: error)
      publish(.failure(failure))
      throw error
    }
    let port = channel.localAddress?.port ?? address.port
    publish(.success(port))
    logger.notice("admin listening", metadata: ["address": "\(address.host):\(port)"])
    try? await gracefulShutdown()
    try? await channel.close()
  }
}

/// The mirror's admin endpoints.
enum MirrorAdminRoutes {
  static func route(
    metrics: MirrorMetrics, reports: @escaping MirrorAdminServer.Reports,
    notReady: @escaping MirrorAdminServer.NotReady = { nil }
  ) -> AdminResponder.Route {
    { method, path in
      switch (method, path) {
      case (.GET, "/metrics"):
        return .metrics(metrics.exposition())
      case (.GET, "/gateways"):
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard let data = try? encoder.encode(reports()) else {
          return .text(.internalServerError, "cannot encode the report\n")
        }
        return AdminResponse(status: .ok, contentType: "application/json", body: ByteBuffer(bytes: data))
      case (.GET, "/ready"):
        if let reason = notReady() { return .text(.serviceUnavailable, "not ready: \(reason)\n") }
        return .text(.ok, "ok\n")
      case (.GET, "/live"):
        return .text(.ok, "ok\n")
      default:
        return .notFound(path)
      }
    }
  }
}
