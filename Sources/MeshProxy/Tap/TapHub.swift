public import MeshAPI
import Synchronization

/// One request as tap reports it: what the data plane knows when the event happens.
struct TapRequest: Sendable {
  var id: UInt64
  var direction: String
  var source: String
  var tls: Bool
  var clientID: String
  var method: String
  var authority: String
  var path: String
}

/// The observers of a proxy's requests (the tap API). The data plane asks `isObserved` first, so tapping
/// costs one atomic load per request while nobody watches; events go to each observer through a bounded
/// buffer, and an observer too slow to keep up loses events (counted) instead of slowing requests.
public final class TapHub: Sendable {
  /// Events buffered per observer before the oldest are dropped.
  static let bufferSize = 4096

  struct Observer {
    var match: Swiftmesh_Tap_Match
    var continuation: AsyncStream<Swiftmesh_Tap_TapEvent>.Continuation
    /// How many requests to observe; nil for no limit.
    var limit: UInt32?
    /// Requests admitted so far (their `request_init` delivered).
    var admitted: UInt32 = 0
    /// Admitted requests that have not ended yet: only their later events are delivered.
    var pending: Set<UInt64> = []
    var dropped: UInt64 = 0
  }

  private let observerTable = Mutex<[Int: Observer]>([:])
  private let observerCount = Atomic<Int>(0)
  private let nextObserver = Atomic<Int>(0)
  private let nextRequest = Atomic<UInt64>(0)

  public init() {}

  /// Somebody observes: worth describing requests.
  var isObserved: Bool { observerCount.load(ordering: .relaxed) > 0 }

  /// How many observers are connected now.
  public var observers: Int { observerCount.load(ordering: .relaxed) }

  /// A fresh request number.
  func requestID() -> UInt64 { nextRequest.add(1, ordering: .relaxed).newValue }

  /// Starts observing the matching requests that start from now on; the stream ends once the first
  /// `maxRequests` of them ended (0: never), or when `stop` is called.
  func observe(match: Swiftmesh_Tap_Match, maxRequests: UInt32) -> (id: Int, events: AsyncStream<Swiftmesh_Tap_TapEvent>) {
    let (stream, continuation) = AsyncStream<Swiftmesh_Tap_TapEvent>.makeStream(
      bufferingPolicy: .bufferingNewest(Self.bufferSize))
    let id = nextObserver.add(1, ordering: .relaxed).newValue
    observerTable.withLock {
      $0[id] = Observer(match: match, continuation: continuation, limit: maxRequests == 0 ? nil : maxRequests)
    }
    observerCount.add(1, ordering: .relaxed)
    continuation.onTermination = { [weak self] _ in self?.stop(id) }
    return (id, stream)
  }

  func stop(_ id: Int) {
    let removed = observerTable.withLock { $0.removeValue(forKey: id) }
    if let removed {
      observerCount.subtract(1, ordering: .relaxed)
      removed.continuation.finish()
    }
  }

  /// Delivers one event of `request` to every observer it matches.
  func publish(_ request: TapRequest, destination: String, serverID: String, event: Swiftmesh_Tap_TapEvent.OneOf_Event) {
    var message = Swiftmesh_Tap_TapEvent()
    message.id = request.id
    message.direction = request.direction
    message.source = request.source
    message.destination = destination
    message.tls = request.tls
    message.clientID = request.clientID
    message.serverID = serverID
    message.method = request.method
    message.authority = request.authority
    message.path = request.path
    message.event = event
    var finished: [AsyncStream<Swiftmesh_Tap_TapEvent>.Continuation] = []
    observerTable.withLock { observers in
      for (id, var observer) in observers where Self.matches(observer.match, request) {
        switch event {
        case .requestInit:
          // The next requests, up to the limit: a request is observed from its start or not at all.
          if let limit = observer.limit, observer.admitted >= limit { continue }
          observer.admitted += 1
          observer.pending.insert(request.id)
        case .responseInit, .responseEnd:
          guard observer.pending.contains(request.id) else { continue }
        }
        message.dropped = observer.dropped
        if case .dropped = observer.continuation.yield(message) { observer.dropped += 1 }
        if case .responseEnd = event {
          observer.pending.remove(request.id)
          if let limit = observer.limit, observer.admitted >= limit, observer.pending.isEmpty {
            finished.append(observer.continuation)
            observers[id] = nil
            continue
          }
        }
        observers[id] = observer
      }
    }
    if !finished.isEmpty {
      observerCount.subtract(finished.count, ordering: .relaxed)
      for continuation in finished { continuation.finish() }
    }
  }

  static let directions: Set<String> = ["inbound", "outbound", "gateway"]

  static func matches(_ match: Swiftmesh_Tap_Match, _ request: TapRequest) -> Bool {
    if !match.direction.isEmpty, match.direction != request.direction { return false }
    if !match.method.isEmpty, match.method.uppercased() != request.method { return false }
    if !match.pathPrefix.isEmpty, !request.path.hasPrefix(match.pathPrefix) { return false }
    if !match.authority.isEmpty, match.authority != request.authority {
      // `host` alone matches the authority at any port.
      let host = request.authority.split(separator: ":", maxSplits: 1).first.map(String.init) ?? request.authority
      if match.authority.contains(":") || match.authority != host { return false }
    }
    return true
  }
}
