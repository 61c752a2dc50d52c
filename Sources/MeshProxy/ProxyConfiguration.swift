public import MeshCore

/// How a proxy runs. Defaults follow Linkerd's where it has one.
public struct ProxyConfiguration: Sendable {
  /// Where the application's outbound traffic arrives. Default 127.0.0.1:4140.
  public var outboundAddress: Authority = try! Authority("127.0.0.1:4140")
  /// Where meshed peers connect (mutual TLS). Default 0.0.0.0:4143.
  public var inboundAddress: Authority = try! Authority("0.0.0.0:4143")
  /// Metrics, readiness, liveness. Default 0.0.0.0:4191.
  public var adminAddress: Authority = try! Authority("0.0.0.0:4191")
  /// The local application the inbound side forwards to. Default 127.0.0.1:8080.
  public var applicationAddress: Authority = try! Authority("127.0.0.1:8080")
  /// How long a request waits for endpoints before a 503. Default 3 s.
  public var failfastTimeout: Duration = .seconds(3)
  /// How long a connection attempt may take. Default 1 s.
  public var connectTimeout: Duration = .seconds(1)
  /// Whether the inbound side refuses clients without a mesh certificate. Default false: plaintext from
  /// unmeshed clients is accepted, as Linkerd does unless a port requires identity.
  public var requireIdentityOnInbound: Bool = false
  /// How long graceful shutdown waits for in-flight requests. Default 30 s.
  public var shutdownGracePeriod: Duration = .seconds(30)
  /// Idle HTTP/1.1 connections kept per upstream and event loop. Default 16.
  public var maxIdleConnectionsPerEndpoint: Int = 16
  /// Gateway mode (`mesh-proxy --gateway`): only the inbound listener (the gateway port, default 4143) and
  /// admin; every caller must present a mesh certificate; each request goes to the local service its
  /// authority names (within `clusterDomain`), resolved and balanced like outbound traffic.
  public var gatewayMode: Bool = false
  /// The cluster's DNS domain, for service FQDNs. Default `cluster.local`.
  public var clusterDomain: String = "cluster.local"

  public init() {}

  public static func defaults(configure: (inout Self) -> Void = { _ in }) -> Self {
    var config = Self()
    configure(&config)
    return config
  }
}
