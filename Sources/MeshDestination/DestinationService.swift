import GRPCCore
import Logging
import MeshAPI
import MeshCore
public import MeshDiscovery

/// The gRPC handlers of the destination API, over the publisher registries.
struct DestinationService: Swiftmesh_Destination_Destination.SimpleServiceProtocol {
  let clusterDomain: String
  let endpoints: PublisherRegistry<EndpointSet>
  let profiles: PublisherRegistry<Profile>
  let logger: Logger

  func target(of request: Swiftmesh_Destination_GetDestination) throws(RPCError) -> DestinationTarget {
    do {
      return try DestinationTarget.parse(request.path, clusterDomain: clusterDomain)
    } catch {
      throw RPCError(code: .invalidArgument, message: error.message)
    }
  }
}

// MARK: - Get

extension DestinationService {
  func get(
    request: Swiftmesh_Destination_GetDestination, response: RPCWriter<Swiftmesh_Destination_Update>,
    context: ServerContext
  ) async throws {
    let target = try target(of: request)
    // The proxy's zone, for topology hints; an absent or opaque token leaves it unknown (hints ignored).
    let zone = ContextToken(parsing: request.contextToken)?.knownZone
    guard let (publisher, id, signals) = endpoints.subscribe(target, zone: zone) else {
      throw RPCError(code: .unavailable, message: "the destination service is shutting down")
    }
    defer { endpoints.unsubscribe(target, zone: zone, id: id) }
    logger.debug(
      "endpoint subscription", metadata: ["path": "\(request.path)", "target": "\(target)", "zone": "\(zone ?? "-")"])
    // gRPC reports a cancelled RPC through the handler, not by cancelling the task: end the
    // subscription then, which ends the loop.
    try await withRPCCancellationHandler {
      var machine = EndpointPublisher.StateMachine()
      for await _ in signals {
        for update in machine.next(publisher.current.value) {
          try await response.write(update.proto)
        }
      }
    } onCancelRPC: {
      endpoints.unsubscribe(target, zone: zone, id: id)
    }
  }
}

// MARK: - GetProfile

extension DestinationService {
  func getProfile(
    request: Swiftmesh_Destination_GetDestination, response: RPCWriter<Swiftmesh_Destination_DestinationProfile>,
    context: ServerContext
  ) async throws {
    let target = try target(of: request)
    guard let (publisher, id, signals) = profiles.subscribe(target) else {
      throw RPCError(code: .unavailable, message: "the destination service is shutting down")
    }
    defer { profiles.unsubscribe(target, id: id) }
    try await withRPCCancellationHandler {
      var sent: Profile?
      for await _ in signals {
        let profile = publisher.current.value
        guard profile != sent else { continue }
        try await response.write(profile.proto)
        sent = profile
      }
    } onCancelRPC: {
      profiles.unsubscribe(target, id: id)
    }
  }
}
