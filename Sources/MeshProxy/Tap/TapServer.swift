import GRPCCore
import GRPCNIOTransportHTTP2
public import Logging
public import MeshAPI
public import MeshCore
public import ServiceLifecycle
import SwiftProtobuf

/// The tap API's handler over a proxy's `TapHub`.
struct TapService: Swiftmesh_Tap_Tap.SimpleServiceProtocol {
  let hub: TapHub
  let logger: Logger

  func observe(
    request: Swiftmesh_Tap_ObserveRequest, response: RPCWriter<Swiftmesh_Tap_TapEvent>, context: ServerContext
  ) async throws {
    let match = request.match
    guard match.direction.isEmpty || TapHub.directions.contains(match.direction) else {
      throw RPCError(
        code: .invalidArgument,
        message: "direction '\(match.direction)' is not one of \(TapHub.directions.sorted().joined(separator: ", "))")
    }
    let (id, events) = hub.observe(match: match, maxRequests: request.maxRequests)
    logger.info(
      "tap started", metadata: ["observer": "\(id)", "peer": "\(context.remotePeer)", "match": "\(match.textFormatString())"])
    defer {
      hub.stop(id)
      logger.info("tap ended", metadata: ["observer": "\(id)"])
    }
    // A cancelled RPC is reported through the handler: end the stream then, which ends the loop.
    try await withRPCCancellationHandler {
      for await event in events { try await response.write(event) }
    } onCancelRPC: {
      hub.stop(id)
    }
  }
}

/// Serves the tap API (gRPC, plaintext) for one proxy. Bind it to loopback: whoever reaches it sees the
/// requests' methods, authorities and paths.
public final class TapServer: Service, Sendable {
  private let transport: HTTP2ServerTransport.Posix
  private let server: GRPCServer<HTTP2ServerTransport.Posix>

  public init(address: Authority, hub: TapHub, logger: Logger) {
    let host = address.host
    transport = HTTP2ServerTransport.Posix(
      address: host.contains(":") ? .ipv6(host: host, port: address.port) : .ipv4(host: host, port: address.port),
      transportSecurity: .plaintext)
    server = GRPCServer(transport: transport, services: [TapService(hub: hub, logger: logger)])
  }

  /// The bound port, once listening.
  public var listeningPort: Int {
    get async throws {
      let address = try await transport.listeningAddress
      if let ipv4 = address.ipv4 { return ipv4.port }
      if let ipv6 = address.ipv6 { return ipv6.port }
      throw MeshError.internalError("tap server is not listening on an IP address: \(address)")
    }
  }

  public func run() async throws {
    try await withGracefulShutdownHandler {
      try await server.serve()
    } onGracefulShutdown: {
      self.server.beginGracefulShutdown()
    }
  }
}
