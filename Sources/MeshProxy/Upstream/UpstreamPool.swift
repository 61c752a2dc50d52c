import MeshCore
import MeshTLS
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix

/// The connections one event loop keeps to upstreams: one multiplexed HTTP/2 connection per (address,
/// expected identity) — mutual TLS when an identity is expected, prior-knowledge plaintext otherwise — and
/// idle HTTP/1.1 keep-alive connections per address.
///
/// Used only on its own event loop (requests are served on the loop of their downstream connection), so it
/// needs no locks; every entry point checks that.
final class UpstreamPool: @unchecked Sendable {
  struct HTTP2Key: Hashable {
    var address: Authority
    var identity: IdentityName?
  }

  let eventLoop: any EventLoop
  private let tls: MeshTLS?
  private let configuration: ProxyConfiguration
  private let metrics: ProxyMetrics
  private var http2: [HTTP2Key: EventLoopFuture<NIOHTTP2Handler.StreamMultiplexer>] = [:]
  private var idle: [Authority: [any Channel]] = [:]

  init(eventLoop: any EventLoop, tls: MeshTLS?, configuration: ProxyConfiguration, metrics: ProxyMetrics) {
    self.eventLoop = eventLoop
    self.tls = tls
    self.configuration = configuration
    self.metrics = metrics
  }

  /// A new HTTP/2 stream to `address`, as an HTTP/1-parts channel (client side); mutual TLS expecting
  /// `identity` when given.
  func openHTTP2Stream(to address: Authority, identity: IdentityName?) -> EventLoopFuture<any Channel> {
    eventLoop.preconditionInEventLoop()
    let key = HTTP2Key(address: address, identity: identity)
    let connection: EventLoopFuture<NIOHTTP2Handler.StreamMultiplexer>
    if let existing = http2[key] {
      connection = existing
    } else {
      connection = connectHTTP2(key)
      http2[key] = connection
      connection.whenFailure { _ in self.http2[key] = nil }
    }
    return connection.flatMap { multiplexer in
      let promise = self.eventLoop.makePromise(of: (any Channel).self)
      multiplexer.createStreamChannel(promise: promise) { stream in
        stream.eventLoop.makeCompletedFuture {
          try stream.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTP1ClientCodec(httpProtocol: .http))
        }
      }
      return promise.futureResult
    }
  }

  private func connectHTTP2(_ key: HTTP2Key) -> EventLoopFuture<NIOHTTP2Handler.StreamMultiplexer> {
    let tls = self.tls
    let metrics = self.metrics
    return ClientBootstrap(group: eventLoop)
      .connectTimeout(TimeAmount(configuration.connectTimeout))
      .channelOption(.socketOption(.tcp_nodelay), value: 1)
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHandler(
            ConnectionMetricsHandler(metrics: metrics.tcp(direction: "outbound", peer: "dst", tls: key.identity != nil)))
        }
      }
      .connect(host: key.address.host, port: key.address.port)
      .flatMapErrorThrowing { error in
        throw ProxyError(.connectFailed, "connecting to \(key.address) failed: \(error)")
      }
      .flatMap { channel in
        // With mutual TLS, wait for the handshake, so that a refused identity fails with its reason.
        let ready: EventLoopFuture<Void>
        if let identity = key.identity {
          guard let tls else {
            channel.close(promise: nil)
            return channel.eventLoop.makeFailedFuture(ProxyError(.connectFailed, "no TLS identity to reach \(identity)"))
          }
          ready = channel.eventLoop.makeCompletedFuture {
            try tls.addClientHandlers(to: channel.pipeline.syncOperations, expected: identity)
          }.flatMap { $0 }.map { _ in () }.flatMapErrorThrowing { error in
            channel.close(promise: nil)
            throw ProxyError(.connectFailed, "mutual TLS with \(key.address) failed: \(error)")
          }
        } else {
          ready = channel.eventLoop.makeSucceededVoidFuture()
        }
        return ready.flatMapThrowing {
          let multiplexer = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
            mode: .client,
            connectionConfiguration: .init(),
            streamConfiguration: .init()
          ) { stream in stream.eventLoop.makeSucceededVoidFuture() }
          channel.closeFuture.whenComplete { _ in
            self.eventLoop.execute { self.http2[key] = nil }
          }
          return multiplexer
        }
      }
  }

  /// An HTTP/1.1 connection to `address`: an idle one if there is one, else a new one.
  func http1Connection(to address: Authority) -> EventLoopFuture<any Channel> {
    eventLoop.preconditionInEventLoop()
    while var list = idle[address], let channel = list.popLast() {
      idle[address] = list
      if channel.isActive { return eventLoop.makeSucceededFuture(channel) }
    }
    let metrics = self.metrics
    return ClientBootstrap(group: eventLoop)
      .connectTimeout(TimeAmount(configuration.connectTimeout))
      .channelOption(.socketOption(.tcp_nodelay), value: 1)
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHandler(
            ConnectionMetricsHandler(metrics: metrics.tcp(direction: "outbound", peer: "dst", tls: false)))
          try channel.pipeline.syncOperations.addHTTPClientHandlers()
        }
      }
      .connect(host: address.host, port: address.port)
      .flatMapErrorThrowing { error in
        throw ProxyError(.connectFailed, "connecting to \(address) failed: \(error)")
      }
  }

  /// Returns a finished HTTP/1.1 connection for reuse.
  func releaseHTTP1(_ channel: any Channel, to address: Authority) {
    eventLoop.preconditionInEventLoop()
    guard channel.isActive else { return }
    var list = idle[address] ?? []
    if list.count >= configuration.maxIdleConnectionsPerEndpoint {
      channel.close(promise: nil)
      return
    }
    list.append(channel)
    idle[address] = list
    channel.closeFuture.whenComplete { [self] _ in
      self.eventLoop.execute {
        self.idle[address]?.removeAll { $0 === channel }
      }
    }
  }
}

extension TimeAmount {
  init(_ duration: Duration) {
    let (seconds, attoseconds) = duration.components
    self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
  }
}
