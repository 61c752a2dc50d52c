import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import MeshCore
import MeshProxy
import Testing
import _MeshTestSupport

/// Raw-bytes messages, so the test needs no generated code.
struct RawSerializer: MessageSerializer {
  func serialize<Bytes: GRPCContiguousBytes>(_ message: [UInt8]) throws -> Bytes { Bytes(message) }
}
struct RawDeserializer: MessageDeserializer {
  func deserialize<Bytes: GRPCContiguousBytes>(_ bytes: Bytes) throws -> [UInt8] {
    bytes.withUnsafeBytes { Array($0) }
  }
}

/// `test.Echo/Shout` (unary: the message upper-cased) and `test.Echo/Chat` (bidirectional: every message
/// echoed with a prefix, and a trailer counting them).
struct EchoService: RegistrableRPCService {
  static let shout = MethodDescriptor(fullyQualifiedService: "test.Echo", method: "Shout")
  static let chat = MethodDescriptor(fullyQualifiedService: "test.Echo", method: "Chat")

  func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
    router.registerHandler(forMethod: Self.shout, deserializer: RawDeserializer(), serializer: RawSerializer()) {
      request, _ in
      StreamingServerResponse { writer in
        for try await message in request.messages {
          try await writer.write(Array(String(decoding: message, as: UTF8.self).uppercased().utf8))
          break
        }
        return [:]
      }
    }
    router.registerHandler(forMethod: Self.chat, deserializer: RawDeserializer(), serializer: RawSerializer()) {
      request, _ in
      StreamingServerResponse { writer in
        var count = 0
        for try await message in request.messages {
          count += 1
          try await writer.write(Array("echo:".utf8) + message)
        }
        return ["echoed": "\(count)"]
      }
    }
  }
}

@Suite("gRPC through the proxy pair")
struct GRPCThroughProxyTests {
  @Test("a unary and a bidirectional-streaming call (grpc-swift on both ends) cross outbound -> mTLS -> inbound")
  func unaryAndBidi() async throws {
    let server = GRPCServer(
      transport: HTTP2ServerTransport.Posix(address: .ipv4(host: "127.0.0.1", port: 0), transportSecurity: .plaintext),
      services: [EchoService()])
    try await withThrowingTaskGroup { group in
      group.addTask { try await server.serve() }
      let appPort = try #require(try await server.listeningAddress?.ipv4?.port)
      let pair = try ProxyPair()
      try await pair.run(applicationPort: appPort) { client, serverProxy, _ in
        let outbound = try await client.boundPorts().outbound
        let transport = try HTTP2ClientTransport.Posix(
          target: .ipv4(address: "127.0.0.1", port: outbound),
          transportSecurity: .plaintext,
          config: .defaults { $0.http2.authority = "backend.default.svc.cluster.local:80" })
        try await withGRPCClient(transport: transport) { grpc in
          let shouted = try await grpc.unary(
            request: ClientRequest(message: Array("hello mesh".utf8)), descriptor: EchoService.shout,
            serializer: RawSerializer(), deserializer: RawDeserializer(), options: .defaults
          ) { try $0.message }
          #expect(String(decoding: shouted, as: UTF8.self) == "HELLO MESH")

          let (replies, trailer) = try await grpc.bidirectionalStreaming(
            request: StreamingClientRequest(of: [UInt8].self) { writer in
              for i in 0..<50 { try await writer.write(Array("m\(i)".utf8)) }
            },
            descriptor: EchoService.chat, serializer: RawSerializer(), deserializer: RawDeserializer(),
            options: .defaults
          ) { response in
            var replies: [String] = []
            var trailer: String?
            for try await part in response.bodyParts {
              switch part {
              case .message(let message): replies.append(String(decoding: message, as: UTF8.self))
              case .trailingMetadata(let metadata):
                if case .string(let value)? = metadata["echoed"].first(where: { _ in true }) { trailer = value }
              }
            }
            return (replies, trailer)
          }
          #expect(replies.count == 50)
          #expect(replies.first == "echo:m0" && replies.last == "echo:m49")
          #expect(trailer == "50")
        }
        let serverAdmin = try await serverProxy.boundPorts().admin
        let metrics = try await Subprocess.run("curl", ["-s", "http://127.0.0.1:\(serverAdmin)/metrics"]).stdout
        #expect(metrics.contains("grpc_status=\"0\""), "gRPC status recorded from trailers")
      }
      server.beginGracefulShutdown()
      try await group.waitForAll()
    }
  }
}
