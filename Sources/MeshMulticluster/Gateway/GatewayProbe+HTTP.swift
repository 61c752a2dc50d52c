public import MeshCore
public import MeshTLS
import NIOCore
import NIOHTTP1
import NIOPosix

extension GatewayProbe {
  /// One probe: connects to `host:port`, runs the mesh TLS handshake expecting `identity`, sends
  /// `GET path` and waits for a 2xx answer, all within `timeout`. Returns the time it took.
  public static func probe(
    host: String, port: Int, path: String, identity: IdentityName, tls: MeshTLS, timeout: Duration
  ) async throws(MulticlusterError) -> Duration {
    let clock = ContinuousClock()
    let start = clock.now
    let deadline = start + timeout
    let place = "gateway \(host):\(port)"
    let channel: NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>
    let session: EventLoopFuture<MeshTLSSession>
    do {
      let milliseconds = max(1, Int64(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000))
      (session, channel) = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .connectTimeout(.milliseconds(milliseconds))
        .channelOption(.tcpOption(.tcp_nodelay), value: 1)
        .connect(host: host, port: port) { channel in
          channel.eventLoop.makeCompletedFuture {
            let session = try tls.addClientHandlers(to: channel.pipeline.syncOperations, expected: identity)
            try channel.pipeline.syncOperations.addHTTPClientHandlers()
            let async = try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(
              wrappingChannelSynchronously: channel)
            return (session, async)
          }
        }
    } catch {
      throw .gatewayProbeFailed("\(place): cannot connect: \(error)", cause: error)
    }
    let raw = channel.channel
    let result: Result<Duration, MulticlusterError>
    do {
      result = try await channel.executeThenClose { inbound, outbound in
        try await withThrowingTaskGroup(of: Result<Duration, MulticlusterError>?.self) { group in
          group.addTask {
            await Self.exchange(
              session: session, inbound: inbound, outbound: outbound, host: host, port: port, path: path,
              place: place, start: start)
          }
          group.addTask {
            try await Task.sleep(until: deadline, clock: clock)
            return nil
          }
          let first = try await group.next() ?? nil
          if first == nil { raw.close(promise: nil) }
          group.cancelAll()
          return first ?? .failure(.gatewayProbeFailed("\(place): no answer to GET \(path) within \(timeout)"))
        }
      }
    } catch {
      throw .gatewayProbeFailed("\(place): \(error)", cause: error)
    }
    return try result.get()
  }

  private static func exchange(
    session: EventLoopFuture<MeshTLSSession>,
    inbound: NIOAsyncChannelInboundStream<HTTPClientResponsePart>,
    outbound: NIOAsyncChannelOutboundWriter<HTTPClientRequestPart>,
    host: String, port: Int, path: String, place: String, start: ContinuousClock.Instant
  ) async -> Result<Duration, MulticlusterError> {
    do {
      _ = try await session.get()
    } catch let error as MeshTLSError where error.kind == .identityMismatch {
      return .failure(.gatewayIdentityMismatch("\(place): \(error.message)"))
    } catch {
      return .failure(.gatewayProbeFailed("\(place): TLS handshake failed: \(error)", cause: error))
    }
    do {
      var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path)
      head.headers.add(name: "Host", value: host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)")
      head.headers.add(name: "User-Agent", value: "swiftmesh-mirror-probe")
      head.headers.add(name: "Connection", value: "close")
      try await outbound.write(.head(head))
      try await outbound.write(.end(nil))
      var status: HTTPResponseStatus?
      for try await part in inbound {
        switch part {
        case .head(let response): status = response.status
        case .body: continue
        case .end: break
        }
        if case .end = part { break }
      }
      guard let status else {
        return .failure(.gatewayProbeFailed("\(place): connection closed before an answer to GET \(path)"))
      }
      guard (200..<300).contains(Int(status.code)) else {
        return .failure(.gatewayProbeFailed("\(place): GET \(path) answered \(status.code) \(status.reasonPhrase)"))
      }
      return .success(ContinuousClock.now - start)
    } catch {
      return .failure(.gatewayProbeFailed("\(place): GET \(path) failed: \(error)", cause: error))
    }
  }
}
