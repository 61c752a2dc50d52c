public import MeshCore
public import MeshTLS
import NIOCore
import NIOPosix
import Synchronization

/// The admin port (`/metrics`, `/ready`, `/live`), bound on its own so it can answer before the rest of the
/// proxy exists: while the workload waits for its certificate, `/live` says 200 and `/ready` says 503 with
/// the reason. A `MeshProxy` given the listener adopts it (its metrics, readiness and port) instead of
/// binding one, so the port answers without a gap from start-up to shutdown.
public final class AdminListener: Sendable {
  public let metrics: ProxyMetrics
  public let readiness: Readiness
  /// The bound port (useful with port 0).
  public let port: Int
  let channel: any Channel
  /// The mesh TLS a TLS client (the gateway probe) gets; nil until the workload is certified.
  private let tls: SharedTLS

  private init(channel: any Channel, metrics: ProxyMetrics, readiness: Readiness, tls: SharedTLS) {
    self.channel = channel
    self.metrics = metrics
    self.readiness = readiness
    self.tls = tls
    self.port = channel.localAddress?.port ?? 0
  }

  /// Binds `address`; the listener answers from now on, not ready (with `readiness`'s reason) until
  /// someone says otherwise.
  public static func bind(
    _ address: Authority, metrics: ProxyMetrics = ProxyMetrics(), readiness: Readiness = Readiness(),
    tls: MeshTLS? = nil
  ) async throws -> AdminListener {
    // The box is shared by the initializer (every new connection) and `serve(tls:)`.
    let box = SharedTLS(tls)
    let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          // Plain HTTP, or mutual TLS when a gateway probe (or any mesh client) connects with TLS: the probe
          // checks the gateway's identity on the same port that serves /ready.
          try channel.pipeline.syncOperations.addHandler(
            AdminDetector(tls: box.current, metrics: metrics, readiness: readiness))
        }
      }
      .bind(host: address.host, port: address.port).get()
    return AdminListener(channel: channel, metrics: metrics, readiness: readiness, tls: box)
  }

  /// Offers `tls` to TLS clients from now on.
  public func serve(tls: MeshTLS?) {
    self.tls.set(tls)
  }

  /// Stops listening.
  public func close() async {
    try? await channel.close()
  }
}

/// A MeshTLS the admin listener's connections read when they start.
final class SharedTLS: Sendable {
  private let box: Mutex<MeshTLS?>
  init(_ tls: MeshTLS?) { box = Mutex(tls) }
  var current: MeshTLS? { box.withLock { $0 } }
  func set(_ tls: MeshTLS?) { box.withLock { $0 = tls } }
}
