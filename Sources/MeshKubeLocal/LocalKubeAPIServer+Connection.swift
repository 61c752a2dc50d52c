import Foundation
import Logging
public import MeshKube
import NIOCore
import NIOFoundationCompat
import NIOHTTP1

/// What the router decided to answer.
enum Reply: Sendable {
  /// A JSON body; `warnings` become `Warning` headers (kubectl prints them), as admission webhooks' do.
  case json(HTTPResponseStatus, JSONValue, warnings: [String] = [])
  /// Plain text, as the real server answers health checks.
  case text(HTTPResponseStatus, String)
  case watch(WatchRegistration, timeout: Duration, bookmarks: Bool)
}

extension LocalKubeAPIServer {
  func serve(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>) async {
    do {
      try await connection.executeThenClose { inbound, outbound in
        var head: HTTPRequestHead?
        var body = ByteBuffer()
        for try await part in inbound {
          switch part {
          case .head(let h):
            head = h
            body.clear()
          case .body(var chunk):
            body.writeBuffer(&chunk)
          case .end:
            guard let request = head else { continue }
            head = nil
            let reply = await self.route(request, body: Data(buffer: body))
            switch reply {
            case .json(let status, let json, let warnings):
              try await Self.write(
                status: status, body: json.serialized(), warnings: warnings, keepAlive: request.isKeepAlive, to: outbound)
              if !request.isKeepAlive { return }
            case .text(let status, let text):
              try await Self.write(
                status: status, body: Data(text.utf8), contentType: "text/plain; charset=utf-8",
                keepAlive: request.isKeepAlive, to: outbound)
              if !request.isKeepAlive { return }
            case .watch(let registration, let timeout, let bookmarks):
              let keepOpen = try await self.stream(registration, timeout: timeout, bookmarks: bookmarks, to: outbound)
              if !keepOpen || !request.isKeepAlive { return }
            }
          }
        }
      }
    } catch {
      logger.debug("connection ended", metadata: ["error": "\(error)"])
    }
  }

  static func write(status: HTTPResponseStatus, body: Data, contentType: String = "application/json", warnings: [String] = [],
                    keepAlive: Bool, to outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>) async throws {
    var headers = HTTPHeaders()
    headers.add(name: "Content-Type", value: contentType)
    for warning in warnings {
      // RFC 7234 warn-code 299 (miscellaneous persistent warning), as the API server sends admission warnings.
      let text = warning.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
        .replacingOccurrences(of: "\n", with: " ")
      headers.add(name: "Warning", value: "299 - \"\(text)\"")
    }
    headers.add(name: "Content-Length", value: String(body.count))
    if !keepAlive { headers.add(name: "Connection", value: "close") }
    try await outbound.write(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers)))
    try await outbound.write(.body(.byteBuffer(ByteBuffer(data: body))))
    try await outbound.write(.end(nil))
  }

  /// Writes a chunked watch response until it times out, the watch is stopped or dropped. Returns
  /// false when the connection must be closed (dropped mid-stream).
  func stream(_ registration: WatchRegistration, timeout: Duration, bookmarks: Bool,
              to outbound: NIOAsyncChannelOutboundWriter<HTTPServerResponsePart>) async throws -> Bool {
    defer { state.stopWatch(registration.id) }
    var headers = HTTPHeaders()
    headers.add(name: "Content-Type", value: "application/json")
    headers.add(name: "Transfer-Encoding", value: "chunked")
    try await outbound.write(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers)))
    let dropped = try await withThrowingTaskGroup(of: Void.self) { group in
      let id = registration.id
      let state = self.state
      group.addTask {
        try await Task.sleep(for: timeout)
        state.stopWatch(id)
      }
      if bookmarks {
        let interval = configuration.bookmarkInterval
        group.addTask {
          while true {
            try await Task.sleep(for: interval)
            state.sendBookmark(id)
          }
        }
      }
      defer { group.cancelAll() }
      for await output in registration.stream {
        switch output {
        case .line(let data):
          try await outbound.write(.body(.byteBuffer(ByteBuffer(data: data))))
        case .drop:
          return true
        }
      }
      return false
    }
    if dropped { return false }
    try await outbound.write(.end(nil))
    return true
  }
}
