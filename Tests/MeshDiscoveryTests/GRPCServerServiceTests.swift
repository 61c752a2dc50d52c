import GRPCCore
import GRPCNIOTransportHTTP2
import Logging
import MeshAPI
import MeshCore
import ServiceLifecycle
import ServiceLifecycleTestKit
import Testing

/// The gRPC server adapter the identity, destination and tap servers share.
@Suite("GRPCServerService")
struct GRPCServerServiceTests {
  @Test("binds port 0, answers gRPC, runs its shutdown hook and returns on graceful shutdown")
  func lifecycle() async throws {
    let hookRan = OneShot<Void>()
    let server = GRPCServerService(
      name: "test server", host: "127.0.0.1", port: 0, transportSecurity: .plaintext, services: [],
      logger: Logger(label: "test"))
    try await testGracefulShutdown { trigger in
      try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await server.run { hookRan.succeed(()) } }
        let port = try await server.listeningPort
        #expect(port > 0)
        // A server with no services answers every method UNIMPLEMENTED: it speaks gRPC on that port.
        let error = await #expect(throws: RPCError.self) {
          try await withDestinationClient(port: port) { client in
            var request = Swiftmesh_Destination_GetDestination()
            request.path = "web.default.svc.cluster.local:80"
            _ = try await client.getProfile(request: ClientRequest(message: request)) { response in
              for try await _ in response.messages {}
            }
          }
        }
        #expect(error?.code == .unimplemented)
        #expect(hookRan.current == nil)
        trigger.triggerGracefulShutdown()
        try await group.waitForAll()
      }
    }
    #expect(hookRan.current != nil)
  }

  @Test("a port already taken makes run() throw and listeningPort fail, instead of hanging")
  func portTaken() async throws {
    let first = GRPCServerService(
      name: "first", host: "127.0.0.1", port: 0, transportSecurity: .plaintext, services: [], logger: Logger(label: "test"))
    try await testGracefulShutdown { trigger in
      try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await first.run() }
        let port = try await first.listeningPort
        let second = GRPCServerService(
          name: "second", host: "127.0.0.1", port: port, transportSecurity: .plaintext, services: [],
          logger: Logger(label: "test"))
        await #expect(throws: (any Error).self) { try await second.run() }
        await #expect(throws: (any Error).self) { try await second.listeningPort }
        trigger.triggerGracefulShutdown()
        try await group.waitForAll()
      }
    }
  }
}
