public import Foundation
public import Logging
public import MeshKube
import NIOCore
import NIOHTTP1
import NIOPosix
public import NIOSSL
public import ServiceLifecycle
import Synchronization

/// An in-memory Kubernetes API server on SwiftNIO: the REST and watch protocol for built-in and
/// custom resources, discovery for kubectl, optional bearer-token auth and TLS.
///
/// `run()` listens until cancelled or graceful shutdown; `port()` waits for the bound port. State
/// lives in `state` and outlives the server, so a new server on the same port continues it.
public final class LocalKubeAPIServer: ServiceLifecycle.Service, Sendable {
  public struct Configuration: Sendable {
    /// Listen address. Default 127.0.0.1.
    public var host = "127.0.0.1"
    /// Listen port; 0 lets the OS choose (read it with `port()`). Default 0.
    public var port = 0
    /// When set, every request must carry `Authorization: Bearer <token>` (else 401). Default nil.
    public var bearerToken: String?
    /// When set, serve HTTPS. Default nil (plain HTTP).
    public var tls: TLSConfiguration?
    /// How often a watch with `allowWatchBookmarks=true` gets a BOOKMARK. Default 5 s.
    public var bookmarkInterval: Duration = .seconds(5)
    /// Longest a watch stays open when the client gives no `timeoutSeconds`. Default 30 min.
    public var maxWatchDuration: Duration = .seconds(1800)

    public init() {}
    public static func defaults(configure: (inout Self) -> Void = { _ in }) -> Self {
      var c = Self()
      configure(&c)
      return c
    }
  }

  public let configuration: Configuration
  public let state: LocalKubeState
  let logger: Logger
  let bound = OneShot<SocketAddress>()
  /// The listener and open connections, so `stop()` can close them.
  let channels = Mutex<(listener: (any Channel)?, connections: [ObjectIdentifier: any Channel], stopped: Bool)>((nil, [:], false))

  public init(configuration: Configuration = .init(), state: LocalKubeState = LocalKubeState(),
              logger: Logger = Logger(label: "swiftmesh.kube.local")) {
    self.configuration = configuration
    self.state = state
    self.logger = logger
  }

  /// The bound port, once `run()` is listening (throws if binding failed).
  public func port() async throws -> Int {
    try await bound.value().port ?? 0
  }

  /// `http(s)://host:port`, once listening.
  public func url() async throws -> String {
    let scheme = configuration.tls == nil ? "http" : "https"
    let host = configuration.host.contains(":") ? "[\(configuration.host)]" : configuration.host
    return "\(scheme)://\(host):\(try await port())"
  }

  /// A client configuration for this server, once listening.
  public func clientConfig(caPEM: Data? = nil) async throws -> KubeClientConfig {
    KubeClientConfig(server: try await url(), certificateAuthorityPEM: caPEM, token: configuration.bearerToken,
                     insecureSkipTLSVerify: configuration.tls != nil && caPEM == nil, namespace: "default")
  }

  /// A kubeconfig for this server (with the token when auth is on), once listening.
  public func kubeconfigYAML(contextName: String = "swiftmesh-local", caPEM: Data? = nil) async throws -> String {
    Self.kubeconfigYAML(server: try await url(), token: configuration.bearerToken, caPEM: caPEM,
                        insecureSkipTLSVerify: configuration.tls != nil && caPEM == nil, contextName: contextName)
  }

  /// Stops listening and closes every connection (watches end abruptly); `run()` then returns.
  /// The state stays: a new server with the same `state` and port carries on where this one stopped.
  public func stop() {
    let (listener, connections) = channels.withLock { c in
      c.stopped = true
      return (c.listener, Array(c.connections.values))
    }
    listener?.close(promise: nil)
    for connection in connections { connection.close(promise: nil) }
    state.dropWatchConnections()
  }

  /// A one-context kubeconfig document.
  public static func kubeconfigYAML(server: String, token: String? = nil, caPEM: Data? = nil,
                                    insecureSkipTLSVerify: Bool = false, contextName: String = "swiftmesh-local",
                                    namespace: String = "default") -> String {
    var cluster = "    server: \(server)\n"
    if let caPEM { cluster += "    certificate-authority-data: \(caPEM.base64EncodedString())\n" }
    if insecureSkipTLSVerify { cluster += "    insecure-skip-tls-verify: true\n" }
    let user = token.map { "    token: \($0)\n" } ?? "    {}\n"
    return """
      apiVersion: v1
      kind: Config
      clusters:
      - name: \(contextName)
        cluster:
      \(cluster)contexts:
      - name: \(contextName)
        context:
          cluster: \(contextName)
          user: \(contextName)
          namespace: \(namespace)
      current-context: \(contextName)
      users:
      - name: \(contextName)
        user:
      \(user)
      """
  }

  /// Listens and serves until cancelled or graceful shutdown.
  public func run() async throws {
    let tlsContext: NIOSSLContext?
    do {
      tlsContext = try configuration.tls.map { try NIOSSLContext(configuration: $0) }
    } catch {
      bound.fail(error)
      throw error
    }
    let server: NIOAsyncChannel<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, Never>
    do {
      server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .serverChannelOption(.backlog, value: 256)
        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
        .bind(host: configuration.host, port: configuration.port) { channel in
          channel.eventLoop.makeCompletedFuture {
            if let tlsContext {
              try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tlsContext))
            }
            try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
            return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(wrappingChannelSynchronously: channel)
          }
        }
    } catch {
      bound.fail(error)
      throw error
    }
    let stoppedEarly = channels.withLock { c -> Bool in
      c.listener = server.channel
      return c.stopped
    }
    if stoppedEarly { server.channel.close(promise: nil) }
    if let address = server.channel.localAddress { bound.succeed(address) }
    logger.info("kube API listening", metadata: ["address": "\(server.channel.localAddress.map { "\($0)" } ?? "?")"])
    do {
      try await withGracefulShutdownHandler {
        try await server.executeThenClose { inbound in
          try await withThrowingDiscardingTaskGroup { group in
            for try await connection in inbound {
              let id = ObjectIdentifier(connection.channel)
              let accepted = self.channels.withLock { c -> Bool in
                guard !c.stopped else { return false }
                c.connections[id] = connection.channel
                return true
              }
              guard accepted else {
                connection.channel.close(promise: nil)
                continue
              }
              group.addTask {
                await self.serve(connection)
                _ = self.channels.withLock { $0.connections.removeValue(forKey: id) }
              }
            }
          }
        }
      } onGracefulShutdown: {
        self.stop()
      }
    } catch is CancellationError {
      return
    }
  }
}

/// A value set once and awaited by many.
final class OneShot<Value: Sendable>: Sendable {
  private let state = Mutex<(result: Result<Value, any Error>?, waiters: [CheckedContinuation<Value, any Error>])>((nil, []))

  func succeed(_ value: Value) { complete(.success(value)) }
  func fail(_ error: any Error) { complete(.failure(error)) }

  private func complete(_ result: Result<Value, any Error>) {
    let waiters = state.withLock { s -> [CheckedContinuation<Value, any Error>] in
      guard s.result == nil else { return [] }
      s.result = result
      defer { s.waiters = [] }
      return s.waiters
    }
    for w in waiters { w.resume(with: result) }
  }

  func value() async throws -> Value {
    try await withCheckedThrowingContinuation { continuation in
      let ready = state.withLock { s -> Result<Value, any Error>? in
        if let r = s.result { return r }
        s.waiters.append(continuation)
        return nil
      }
      if let ready { continuation.resume(with: ready) }
    }
  }
}
