import Foundation
import SwiftProtobuf
import GRPCCore
import GRPCNIOTransportHTTP2
public import MeshAPI
public import MeshCore
import MeshDiscovery

/// The client side of the tap API (`meshctl tap`).
public enum TapClient {
  /// Streams the events of `proxy`'s tap server that match, calling `onEvent` for each, until the server
  /// ends the stream (`maxRequests` reached), the task is cancelled, or the connection fails.
  public static func observe(
    proxy: Authority, match: Swiftmesh_Tap_Match, maxRequests: UInt32,
    onEvent: @escaping @Sendable (Swiftmesh_Tap_TapEvent) async throws -> Void
  ) async throws {
    var request = Swiftmesh_Tap_ObserveRequest()
    request.match = match
    request.maxRequests = maxRequests
    let transport = try HTTP2ClientTransport.Posix(
      target: Resolver.target(host: proxy.host, port: proxy.port), transportSecurity: .plaintext)
    try await withGRPCClient(transport: transport) { client in
      let tap = Swiftmesh_Tap_Tap.Client(wrapping: client)
      try await tap.observe(request) { response in
        for try await event in response.messages { try await onEvent(event) }
      }
    }
  }

  /// One event as a line, in the manner of `linkerd viz tap`:
  ///
  ///     req id=3 proxy=out src=127.0.0.1:50312 dst=127.0.0.1:8080 tls=false :method=GET :authority=web.default.svc.cluster.local:80 :path=/
  ///     rsp id=3 proxy=out src=... dst=... tls=false :status=200 latency=1843µs
  ///     end id=3 proxy=out src=... dst=... tls=false duration=2210µs :status=200
  public static func line(_ event: Swiftmesh_Tap_TapEvent) -> String {
    let proxy = event.direction == "outbound" ? "out" : event.direction == "inbound" ? "in" : event.direction
    var common = "id=\(event.id) proxy=\(proxy) src=\(event.source) dst=\(event.destination.isEmpty ? "-" : event.destination)"
    common += " tls=\(event.tls)"
    if !event.clientID.isEmpty { common += " client_id=\(event.clientID)" }
    if !event.serverID.isEmpty { common += " server_id=\(event.serverID)" }
    var text: String
    switch event.event {
    case .requestInit:
      text = "req \(common) :method=\(event.method) :authority=\(event.authority) :path=\(event.path)"
    case .responseInit(let response):
      text = "rsp \(common) :status=\(response.status) latency=\(micros(response.latencyMs))"
    case .responseEnd(let end):
      text = "end \(common) duration=\(micros(end.durationMs))"
      if end.status > 0 { text += " :status=\(end.status)" }
      if end.hasGrpcStatus { text += " grpc-status=\(end.grpcStatus)" }
      if !end.proxyError.isEmpty { text += " proxy-error=\"\(end.proxyError)\"" }
    case nil:
      text = "??? \(common)"
    }
    if event.dropped > 0 { text += " dropped=\(event.dropped)" }
    return text
  }

  static func micros(_ milliseconds: Double) -> String { "\(Int((milliseconds * 1000).rounded()))µs" }

  /// The event as a JSON object (one per line with `-o json`).
  public static func json(_ event: Swiftmesh_Tap_TapEvent) throws -> String {
    try event.jsonString()
  }
}
