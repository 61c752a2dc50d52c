public import AsyncHTTPClient
public import Foundation
import NIOCore
import NIOFoundationCompat
import NIOHTTP1

/// One watch event.
public enum WatchEvent<R: KubeResource>: Sendable {
  case added(R)
  case modified(R)
  case deleted(R)
  /// The server's progress marker: everything up to this resourceVersion has been sent.
  case bookmark(resourceVersion: String)
  /// An `ERROR` event; code 410 / reason `Expired` means the watch's resourceVersion is too old.
  case error(KubeStatus)
}

/// Options of a watch request.
public struct WatchOptions: Sendable, Hashable {
  public var resourceVersion: String?
  public var labelSelector: String?
  public var fieldSelector: String?
  public var allowWatchBookmarks: Bool
  /// Ask the server to end the watch after this many seconds.
  public var timeoutSeconds: Int?

  public init(resourceVersion: String? = nil, labelSelector: String? = nil, fieldSelector: String? = nil,
              allowWatchBookmarks: Bool = true, timeoutSeconds: Int? = nil) {
    self.resourceVersion = resourceVersion
    self.labelSelector = labelSelector
    self.fieldSelector = fieldSelector
    self.allowWatchBookmarks = allowWatchBookmarks
    self.timeoutSeconds = timeoutSeconds
  }
}

extension KubeClient {
  /// Opens a watch. Connection and HTTP errors throw here; a corrupt event line throws a decoding
  /// `KubeError` from the sequence (the caller re-watches from the last good resourceVersion).
  public func watch<R: KubeResource>(_ type: R.Type, namespace: String? = nil, options: WatchOptions = WatchOptions()) async throws -> WatchEventStream<R> {
    let path = R.collectionPath(namespace: namespace)
    var query: [(String, String)] = [("watch", "true")]
    if let rv = options.resourceVersion { query.append(("resourceVersion", rv)) }
    if let l = options.labelSelector, !l.isEmpty { query.append(("labelSelector", l)) }
    if let f = options.fieldSelector, !f.isEmpty { query.append(("fieldSelector", f)) }
    if options.allowWatchBookmarks { query.append(("allowWatchBookmarks", "true")) }
    if let t = options.timeoutSeconds { query.append(("timeoutSeconds", String(t))) }
    let request = try makeRequest(.GET, path: path, query: query, body: nil, contentType: "application/json")
    let context = "WATCH \(path)"
    let response: HTTPClientResponse
    do {
      let timeout: TimeAmount = options.timeoutSeconds.map { .seconds(Int64($0) + 60) } ?? .hours(24)
      response = try await http.execute(request, timeout: timeout, logger: logger)
    } catch is CancellationError {
      throw CancellationError()
    } catch {
      throw KubeError.transport("\(context) \(baseURL): \(error)", cause: error)
    }
    guard response.status == .ok else {
      let body = (try? await response.body.collect(upTo: 64 * 1024)).map { Data(buffer: $0) } ?? Data()
      throw Self.error(status: Int(response.status.code), body: body, context: context)
    }
    return WatchEventStream(body: response.body, context: context)
  }
}

/// The events of one watch response, parsed line by line.
public struct WatchEventStream<R: KubeResource>: AsyncSequence, Sendable {
  public typealias Element = WatchEvent<R>
  let body: HTTPClientResponse.Body
  let context: String

  public func makeAsyncIterator() -> Iterator {
    Iterator(body: body.makeAsyncIterator(), context: context)
  }

  public struct Iterator: AsyncIteratorProtocol {
    var body: HTTPClientResponse.Body.AsyncIterator
    let context: String
    var buffer = ByteBuffer()
    var finished = false

    public mutating func next() async throws -> WatchEvent<R>? {
      while true {
        if let newline = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) {
          let length = newline - buffer.readerIndex
          let line = buffer.readData(length: length)!
          buffer.moveReaderIndex(forwardBy: 1)
          if line.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\r") }) { continue }
          return try Self.parse(line, context: context)
        }
        if finished {
          guard buffer.readableBytes > 0 else { return nil }
          let line = buffer.readData(length: buffer.readableBytes)!
          return try Self.parse(line, context: context)
        }
        do {
          if var chunk = try await body.next() {
            buffer.discardReadBytes()
            buffer.writeBuffer(&chunk)
          } else {
            finished = true
          }
        } catch is CancellationError {
          throw CancellationError()
        } catch {
          throw KubeError.transport("\(context): stream failed: \(error)", cause: error)
        }
      }
    }

    static func parse(_ line: Data, context: String) throws -> WatchEvent<R> {
      func snippet() -> String {
        let text = String(decoding: line.prefix(120), as: UTF8.self)
        return line.count > 120 ? text + "…" : text
      }
      let raw: WatchLineRaw
      do {
        raw = try JSONDecoder().decode(WatchLineRaw.self, from: line)
      } catch {
        throw KubeError.decoding("\(context): corrupt watch event line '\(snippet())'", cause: error)
      }
      switch raw.type {
      case "BOOKMARK":
        guard let rv = raw.object["metadata"]?["resourceVersion"]?.stringValue else {
          throw KubeError.decoding("\(context): BOOKMARK without metadata.resourceVersion: '\(snippet())'")
        }
        return .bookmark(resourceVersion: rv)
      case "ERROR":
        let status = (try? raw.object.decoded(as: KubeStatus.self))
          ?? KubeStatus(message: "unparseable ERROR event", reason: nil, code: nil)
        return .error(status)
      case "ADDED", "MODIFIED", "DELETED":
        var object: R
        do {
          object = try JSONDecoder().decode(WatchLineTyped<R>.self, from: line).object
        } catch {
          throw KubeError.decoding(
            "\(context): \(raw.type) event object is not a valid \(R.kind): \(KubeClient.describe(error))", cause: error)
        }
        object.metadata.originalObject = raw.object
        switch raw.type {
        case "ADDED": return .added(object)
        case "MODIFIED": return .modified(object)
        default: return .deleted(object)
        }
      default:
        throw KubeError.decoding("\(context): unknown watch event type '\(raw.type)'")
      }
    }
  }
}

struct WatchLineRaw: Decodable {
  var type: String
  var object: JSONValue
}

struct WatchLineTyped<R: KubeResource>: Decodable {
  var object: R
}
