public import Foundation
public import Logging
public import MeshKube
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import MeshCore
public import ServiceLifecycle
import Synchronization

/// An in-memory Kubernetes API server on SwiftNIO: the REST and watch protocol for built-in and
/// custom resources, discovery for kubectl; HTTPS, bearer-token authentication and RBAC by default.
///
/// By default it serves HTTPS with a certificate its state's cluster CA signs at start, accepts the admin
/// token (group `system:masters`) and the service-account tokens it minted (TokenRequest) for its own
/// audience, answers anonymous requests only on `/healthz`, `/readyz`, `/livez` and `/version` (401 with a
/// `Status` elsewhere), and authorizes with RBAC over the roles and bindings it stores (403 with the real
/// server's wording). `Transport.insecureHTTP` is the old insecure port: plain HTTP, no authentication, every
/// request an admin's, loopback only.
///
/// `run()` listens until cancelled or graceful shutdown; `port()` waits for the bound port. State
/// lives in `state` and outlives the server, so a new server on the same port continues it.
public final class LocalKubeAPIServer: ServiceLifecycle.Service, Sendable {
  public struct Configuration: Sendable {
    /// Listen address. Default 127.0.0.1.
    public var host = "127.0.0.1"
    /// Listen port; 0 lets the OS choose (read it with `port()`). Default 0.
    public var port = 0
    /// How clients reach it. Default `.tls` (HTTPS with a certificate the cluster CA signs at start).
    public var transport: Transport = .tls
    /// Names (DNS names or IP addresses) the generated serving certificate covers besides loopback, `localhost`,
    /// `kubernetes.default.svc...` and the listen host. Default none.
    public var subjectAlternativeNames: [String] = []
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

  /// How the server is reached.
  public enum Transport: Sendable {
    /// HTTPS with a serving certificate the state's cluster CA signs at start; kubeconfigs carry that CA.
    case tls
    /// HTTPS with this certificate chain and key (PEM); kubeconfigs carry `caPEM`, default the chain itself.
    case tlsCertificate(chainPEM: String, keyPEM: String, caPEM: String?)
    /// Plain HTTP without authentication or authorization (every request is an admin's), as kube-apiserver's
    /// old insecure port; refused on an address other than loopback.
    case insecureHTTP
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

  /// Whether requests are authenticated and authorized (every transport but `insecureHTTP`).
  public var isSecure: Bool {
    if case .insecureHTTP = configuration.transport { return false }
    return true
  }

  /// `http(s)://host:port`, once listening. A wildcard listen host gives the loopback address.
  public func url() async throws -> String {
    var host = configuration.host
    if host == "0.0.0.0" { host = "127.0.0.1" } else if host == "::" { host = "::1" }
    if host.contains(":") { host = "[\(host)]" }
    return "\(isSecure ? "https" : "http")://\(host):\(try await port())"
  }

  /// The PEM a client trusts for this server's certificate (nil with plain HTTP).
  public func certificateAuthorityPEM() throws -> String? {
    switch configuration.transport {
    case .tls: return try state.credentials().certificateAuthorityPEM
    case .tlsCertificate(let chain, _, let ca): return ca ?? chain
    case .insecureHTTP: return nil
    }
  }

  /// A client configuration for this server, once listening: its CA and `token` (default the admin's).
  public func clientConfig(token: String? = nil) async throws -> KubeClientConfig {
    let url = try await url()
    guard isSecure else { return KubeClientConfig(server: url, namespace: "default") }
    return KubeClientConfig(
      server: url, certificateAuthorityPEM: try certificateAuthorityPEM().map { Data($0.utf8) },
      token: try token ?? state.credentials().adminToken, namespace: "default")
  }

  /// A kubeconfig for this server, once listening: its CA and `token` (default the admin's).
  public func kubeconfigYAML(contextName: String = "swiftmesh-local", token: String? = nil) async throws -> String {
    let url = try await url()
    guard isSecure else { return Self.kubeconfigYAML(server: url, contextName: contextName) }
    return Self.kubeconfigYAML(
      server: url, token: try token ?? state.credentials().adminToken,
      caPEM: try certificateAuthorityPEM().map { Data($0.utf8) }, contextName: contextName)
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

  /// The TLS context to serve with (nil: plain HTTP), after checking the configuration.
  func makeTLSContext() throws -> NIOSSLContext? {
    let chainPEM: String
    let keyPEM: String
    switch configuration.transport {
    case .insecureHTTP:
      guard Self.isLoopback(configuration.host) else {
        throw MeshError.invalidConfiguration(
          "refusing to serve plain HTTP without authentication on \(configuration.host): "
            + "insecure HTTP listens on loopback only (127.0.0.1, ::1, localhost); serve HTTPS instead")
      }
      return nil
    case .tls:
      (chainPEM, keyPEM) = try state.credentials().servingCertificate(
        for: [configuration.host] + configuration.subjectAlternativeNames)
    case .tlsCertificate(let chain, let key, _):
      (chainPEM, keyPEM) = (chain, key)
    }
    do {
      var tls = TLSConfiguration.makeServerConfiguration(
        certificateChain: try NIOSSLCertificate.fromPEMBytes(Array(chainPEM.utf8)).map { .certificate($0) },
        privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(keyPEM.utf8), format: .pem)))
      tls.applicationProtocols = ["http/1.1"]
      return try NIOSSLContext(configuration: tls)
    } catch {
      throw MeshError.invalidConfiguration("the serving certificate or key is not usable PEM", cause: error)
    }
  }

  /// Whether `host` is a loopback address or name.
  public static func isLoopback(_ host: String) -> Bool {
    let bare = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
    return bare == "localhost" || bare == "::1" || bare.hasPrefix("127.")
  }

  /// Listens and serves until cancelled or graceful shutdown.
  public func run() async throws {
    let tlsContext: NIOSSLContext?
    do {
      tlsContext = try makeTLSContext()
    } catch {
      bound.fail(error)
      throw error
    }
    let server: ConnectionListener<Void, HTTPServerRequestPart, HTTPServerResponsePart>
    do {
      server = try await ConnectionListener.bind(host: configuration.host, port: configuration.port) { channel in
        if let tlsContext {
          try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tlsContext))
        }
        // Without pipelining assistance, which stops reading while a response is in flight: during a long
        // watch the TLS layer must still read, or a client's close_notify goes unanswered and the client
        // waits out its TLS shutdown timeout. Requests are served in order by `serve` all the same.
        try channel.pipeline.syncOperations.configureHTTPServerPipeline(
          withPipeliningAssistance: false, withErrorHandling: true)
      }
    } catch {
      bound.fail(error)
      throw error
    }
    let stoppedEarly = channels.withLock { c -> Bool in
      c.listener = server.channel
      return c.stopped
    }
    if stoppedEarly { server.close() }
    if let address = server.channel.localAddress { bound.succeed(address) }
    logger.info("kube API listening", metadata: ["address": "\(server.channel.localAddress.map { "\($0)" } ?? "?")"])
    await withGracefulShutdownHandler {
      await server.serve { _, connection in
        let id = ObjectIdentifier(connection.channel)
        let accepted = self.channels.withLock { c -> Bool in
          guard !c.stopped else { return false }
          c.connections[id] = connection.channel
          return true
        }
        guard accepted else {
          try? await connection.executeThenClose { _, _ in }
          return
        }
        await self.serve(connection)
        _ = self.channels.withLock { $0.connections.removeValue(forKey: id) }
      }
    } onGracefulShutdown: {
      self.stop()
    }
  }
}
