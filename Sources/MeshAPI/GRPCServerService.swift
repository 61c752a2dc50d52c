package import GRPCCore
package import GRPCNIOTransportHTTP2
package import Logging
import MeshCore
import ServiceLifecycle

/// A gRPC server over HTTP/2 as a ServiceLifecycle `Service`, shared by the identity, destination and tap
/// servers: `run()` serves until graceful shutdown, which begins the server's own graceful shutdown (no new
/// RPCs; those in flight finish), and logs `"<name> listening"` once the listener is bound.
package final class GRPCServerService: Service, Sendable {
  /// What the log line and errors call this server ("identity service", ...).
  package let name: String
  private let transport: HTTP2ServerTransport.Posix
  private let server: GRPCServer<HTTP2ServerTransport.Posix>
  private let host: String
  private let metadata: Logger.Metadata
  private let logger: Logger

  /// A server for `services` on `host:port` (an IPv6 literal when `host` holds a colon). `metadata` is added
  /// to the "listening" log line.
  package init(
    name: String, host: String, port: Int, transportSecurity: HTTP2ServerTransport.Posix.TransportSecurity,
    services: [any RegistrableRPCService], metadata: Logger.Metadata = [:], logger: Logger
  ) {
    self.name = name
    self.transport = HTTP2ServerTransport.Posix(
      address: host.contains(":") ? .ipv6(host: host, port: port) : .ipv4(host: host, port: port),
      transportSecurity: transportSecurity)
    self.server = GRPCServer(transport: transport, services: services)
    self.metadata = metadata
    self.logger = logger
    self.host = host
  }

  /// The bound port, once listening (useful with port 0). Throws if the server stopped before it listened.
  package var listeningPort: Int {
    get async throws {
      let address = try await transport.listeningAddress
      if let ipv4 = address.ipv4 { return ipv4.port }
      if let ipv6 = address.ipv6 { return ipv6.port }
      throw MeshError.internalError("\(name) is not listening on an IP address: \(address)")
    }
  }

  package func run() async throws {
    try await run(onGracefulShutdown: {})
  }

  /// Serves until graceful shutdown; `onGracefulShutdown` runs first then (to end long-lived streams, say),
  /// before the server stops taking RPCs.
  package func run(onGracefulShutdown: @escaping @Sendable () -> Void) async throws {
    try await withThrowingDiscardingTaskGroup { group in
      group.addTask {
        // Only a server that could not bind fails here; serve() reports that.
        guard let port = try? await self.listeningPort else { return }
        var metadata = self.metadata
        metadata["address"] = "\(self.host):\(port)"
        self.logger.notice("\(self.name) listening", metadata: metadata)
      }
      try await withGracefulShutdownHandler {
        try await self.server.serve()
      } onGracefulShutdown: {
        onGracefulShutdown()
        self.server.beginGracefulShutdown()
      }
    }
  }
}
