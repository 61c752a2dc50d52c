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
  private let server: GRPCServerService

  public init(address: Authority, hub: TapHub, logger: Logger) {
    server = GRPCServerService(
      name: "tap server", host: address.host, port: address.port, transportSecurity: .plaintext,
      services: [TapService(hub: hub, logger: logger)], logger: logger)
  }

  /// The bound port, once listening.
  public var listeningPort: Int {
    get async throws { try await server.listeningPort }
  }

  public func run() async throws {
    try await server.run()
  }
}
