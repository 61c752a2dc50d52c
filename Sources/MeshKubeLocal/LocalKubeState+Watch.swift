public import Foundation
import Synchronization
public import MeshKube

/// What a watch connection writes next.
enum WatchOutput: Sendable {
  /// One event line.
  case line(Data)
  /// Close the connection abruptly, mid-stream (a test hook).
  case drop
}

struct Watcher: Sendable {
  var resource: ResourceID
  var apiVersion: String
  var namespace: String?
  var labels: LabelQuery
  var fields: FieldQuery
  var continuation: AsyncStream<WatchOutput>.Continuation

  func wants(_ event: LocalKubeState.HistoryEvent) -> Bool {
    guard event.resource == resource else { return false }
    if let namespace, event.object["metadata"]?["namespace"]?.stringValue != namespace { return false }
    return labels.matches(event.object) && fields.matches(event.object)
  }

  func send(_ type: String, _ object: JSONValue) {
    var object = object
    object["apiVersion"] = .string(apiVersion)
    var line = JSONValue.object(["type": .string(type), "object": object]).serialized()
    line.append(UInt8(ascii: "\n"))
    continuation.yield(.line(line))
  }
}

/// A registered watch: its id (to cancel and send bookmarks) and the stream of lines to write.
struct WatchRegistration: Sendable {
  var id: Int
  var stream: AsyncStream<WatchOutput>
}

extension LocalKubeState {
  func record(_ s: inout State, _ event: HistoryEvent) {
    s.history.append(event)
    if s.history.count > configuration.historyLimit {
      let drop = s.history.count - configuration.historyLimit
      s.historyFloor = s.history[drop - 1].rv
      s.history.removeFirst(drop)
    }
    for watcher in s.watchers.values where watcher.wants(event) {
      watcher.send(event.type, event.object)
    }
  }

  /// Starts a watch. With no resourceVersion (or "0") it first replays the current objects as
  /// ADDED; with one, every retained event after it. Too old a resourceVersion yields a single
  /// `ERROR` event (Status 410 `Expired`) and the stream ends, as the real API server does.
  func watch(group: String, plural: String, version: String?, namespace: String?, resourceVersion: String?,
             labelSelector: String?, fieldSelector: String?) throws(APIStatusError) -> WatchRegistration {
    let t = try type(group: group, plural: plural)
    let labels = try LabelQuery(labelSelector)
    let fields = try FieldQuery(fieldSelector)
    var from: Int64?
    if let resourceVersion, !resourceVersion.isEmpty, resourceVersion != "0" {
      guard let n = Int64(resourceVersion) else {
        throw APIStatusError.badRequest("resourceVersion '\(resourceVersion)' is not valid")
      }
      from = n
    }
    let (stream, continuation) = AsyncStream<WatchOutput>.makeStream()
    let watcher = Watcher(resource: t.id, apiVersion: t.apiVersion(version), namespace: t.namespaced ? namespace : nil,
                          labels: labels, fields: fields, continuation: continuation)
    let id = state.withLock { s -> Int in
      if let from {
        if from < s.historyFloor {
          let status = APIStatusError(code: 410, reason: "Expired",
                                      message: "too old resource version: \(from) (\(s.historyFloor))")
          continuation.yield(.line(Self.errorLine(status)))
          continuation.finish()
          return -1
        }
        for event in s.history where event.rv > from && watcher.wants(event) {
          watcher.send(event.type, event.object)
        }
      } else {
        for (_, object) in (s.objects[t.id] ?? [:]).sorted(by: { $0.key < $1.key }) {
          let event = HistoryEvent(rv: 0, resource: t.id, type: "ADDED", object: object)
          if watcher.wants(event) { watcher.send("ADDED", object) }
        }
      }
      s.nextWatcher += 1
      s.watchers[s.nextWatcher] = watcher
      return s.nextWatcher
    }
    return WatchRegistration(id: id, stream: stream)
  }

  static func errorLine(_ status: APIStatusError) -> Data {
    var line = JSONValue.object(["type": "ERROR", "object": status.json]).serialized()
    line.append(UInt8(ascii: "\n"))
    return line
  }

  /// Ends a watch (the connection finishes its response).
  func stopWatch(_ id: Int) {
    let watcher = state.withLock { $0.watchers.removeValue(forKey: id) }
    watcher?.continuation.finish()
  }

  /// Sends a BOOKMARK with the current resourceVersion to one watch.
  func sendBookmark(_ id: Int) {
    state.withLock { s in
      guard let w = s.watchers[id], let t = s.types[w.resource] else { return }
      w.send("BOOKMARK", ["kind": .string(t.kind), "metadata": ["resourceVersion": .string(String(s.rv))]])
    }
  }

  /// Number of watches open now.
  public var activeWatchCount: Int { state.withLock { $0.watchers.count } }

  // MARK: - Test hooks

  /// Forgets the whole event history: every watch from an older resourceVersion now gets 410.
  public func compactHistory() {
    state.withLock { s in
      s.history.removeAll()
      s.historyFloor = s.rv
    }
  }

  /// Closes every watch connection abruptly (no final chunk), as a failing proxy or server would.
  public func dropWatchConnections() {
    let watchers = state.withLock { s in
      defer { s.watchers.removeAll() }
      return Array(s.watchers.values)
    }
    for w in watchers {
      w.continuation.yield(.drop)
      w.continuation.finish()
    }
  }

  /// Writes `line` (a newline is added) to every open watch as if it were an event: for corrupt-input tests.
  public func injectWatchLine(_ line: String) {
    state.withLock { s in
      for w in s.watchers.values { w.continuation.yield(.line(Data((line + "\n").utf8))) }
    }
  }
}
