import NIOCore
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
  /// Idle HTTP/1.1 connections kept per upstream and event loop. Default: no limit, as Linkerd's: a limit
  /// below the number of requests in flight closes connections the next requests open again (with 16 and one
  /// event loop, 32 keep-alive clients made the proxy open a connection every fourth request).
  /// `upstreamIdleTimeout` closes the ones a lighter load no longer needs.
  public var maxIdleConnectionsPerEndpoint: Int = .max
  /// An upstream HTTP/1.1 connection no request used for this long is closed (it is closed after one to two
  /// of these). Default 10 s. A connection the server closes first leaves the pool when its close arrives.
  public var upstreamIdleTimeout: Duration = .seconds(10)
  /// HTTP/1.1 connections the proxy opens at most to one upstream endpoint (outbound, gateway). Requests past
  /// that wait for a connection to come free. Default 1,000.
  public var maxConnectionsPerEndpoint: Int = 1000
  /// HTTP/1.1 connections the inbound side opens at most to the local application (its own limit: an
  /// application accepts fewer connections than a mesh peer). Default 256.
  public var maxApplicationConnections: Int = 256
  /// Destinations (authorities) the outbound side follows at most; past that the one used longest ago is
  /// forgotten. Default 500.
  public var maxDestinations: Int = 500
  /// A destination no request named for this long is forgotten (its discovery streams closed). Default 5 min.
  public var destinationIdleTimeout: Duration = .seconds(300)
  /// How long an HTTP/1.1 client may take to send a request's head, from its first byte; past that it gets
  /// 408 and the connection closes (slowloris). Default 10 s.
  public var headerReadTimeout: Duration = .seconds(10)
  /// How long a downstream HTTP/1.1 connection may sit with no request in progress before the proxy closes
  /// it. Default 300 s.
  public var downstreamIdleTimeout: Duration = .seconds(300)
  /// Upstream connections the proxy may be opening at once (connecting, not yet established), whatever
  /// their target: no client can make the proxy open an unbounded number of sockets. Default 512.
  public var maxConnectsInProgress: Int = 512
  /// HTTP/2 streams the proxy keeps open at most to one endpoint from each event loop (it has one connection
  /// there per loop). Requests past that wait for a stream to end, like HTTP/1.1 requests for a connection.
  /// Default 100, what swift-nio-http2 servers (and so SwiftMesh proxies) admit per connection: more would
  /// only queue inside the connection, where nothing sheds them.
  public var maxConcurrentStreamsPerEndpoint: Int = 100
  /// Requests that may wait for a connection to one endpoint; past that, and past the failfast timeout while
  /// waiting, a request is shed with 503 `overloaded`. Default 10,000.
  public var maxPendingRequestsPerEndpoint: Int = 10_000
  /// Gateway mode (`mesh-proxy --gateway`): only the inbound listener (the gateway port, default 4143) and
  /// admin; every caller must present a mesh certificate; each request goes to the local service its
  /// authority names (within `clusterDomain`), resolved and balanced like outbound traffic.
  public var gatewayMode: Bool = false
  /// The cluster's DNS domain, for service FQDNs. Default `cluster.local`.
  public var clusterDomain: String = "cluster.local"
  /// Transparent proxying (`mesh-proxy --transparent`, set in pods that `mesh-proxy-init` redirects): each
  /// accepted connection's original destination (`SO_ORIGINAL_DST`) says where it was going. Outbound, an
  /// address the mesh does not know is forwarded there as is, and opaque connections are resolved by it;
  /// inbound, the application is reached on the original destination's port on the pod's loopback (rather
  /// than `applicationAddress`). A connection whose original destination cannot be read is closed. Default
  /// off: applications name the proxy (`127.0.0.1:4140`) and the inbound side forwards to
  /// `applicationAddress`.
  public var transparent: Bool = false
  /// Ports whose connections are opaque TCP, with no protocol detection: server-speaks-first protocols, which
  /// would otherwise wait out the detect timeout. Outbound, a destination's profile can make more opaque
  /// (the `config.swiftmesh.io/opaque-ports` annotation, an `appProtocol`). Default: the ports Linkerd treats
  /// so (SMTP, MySQL, Galera, PostgreSQL, Redis, Elasticsearch, memcached).
  public var opaquePorts: PortSet = .defaultOpaquePorts
  /// How long protocol detection waits for a connection's first bytes: a client that has sent nothing that
  /// tells (HTTP/2's preface, an HTTP/1 request line) by then is carried as opaque TCP. Default 10 s.
  public var detectTimeout: Duration = .seconds(10)
  /// Event loops (threads) serving the listeners and their upstream connections; nil: one per core, shared
  /// with the rest of the process (`MultiThreadedEventLoopGroup.singleton`). A sidecar next to a small
  /// workload may want 1: fewer threads, less memory, no work handed between cores.
  public var eventLoops: Int?
  /// How often the proxy gives memory that malloc holds free back to the system, when there is more than
  /// `memoryTrimThreshold` of it; nil: never. A flood of connections leaves tens of megabytes freed but kept in
  /// glibc's arenas (measured: 30 MB anonymous after 2,000 connections closed, 6.5 MB once given back), which
  /// would count against a sidecar's memory limit until the next flood. Default 10 s.
  public var memoryTrimInterval: Duration? = .seconds(10)
  /// Free bytes in malloc's arenas above which ``memoryTrimInterval`` gives them back. Default 4 MiB.
  public var memoryTrimThreshold: Int = 4 << 20

  /// The number of event loops requests are served on.
  var eventLoopCount: Int { max(eventLoops ?? System.coreCount, 1) }

  public init() {}

  public static func defaults(configure: (inout Self) -> Void = { _ in }) -> Self {
    var config = Self()
    configure(&config)
    return config
  }
}
