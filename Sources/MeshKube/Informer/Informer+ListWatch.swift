import AsyncHTTPClient
import Logging
import Synchronization

extension Informer {
  /// Why a watch ended.
  enum WatchEnd {
    /// The server closed the stream cleanly (timeout); resume from the last resourceVersion.
    case closed(eventsSeen: Int)
    /// The resourceVersion is too old: re-list.
    case expired
  }

  func listWatchLoop() async throws {
    var resourceVersion: String?
    var failures = 0
    while !Task.isCancelled {
      do {
        if resourceVersion == nil {
          resourceVersion = try await relist()
          failures = 0
        }
        switch try await watchOnce(from: resourceVersion!, onProgress: { failures = 0 }, resourceVersion: &resourceVersion) {
        case .expired:
          logger.info("resourceVersion \(resourceVersion ?? "-") expired; re-listing")
          resourceVersion = nil
        case .closed(let seen):
          if seen == 0 {
            failures += 1
            try await backoff(failures)
          }
        }
      } catch is CancellationError {
        throw CancellationError()
      } catch let error as KubeError where error.isGone {
        logger.info("resourceVersion \(resourceVersion ?? "-") gone (410); re-listing")
        resourceVersion = nil
      } catch {
        // A watch this informer (or its owner) ended itself is not a failure.
        if Task.isCancelled || Self.isOwnCancellation(error) { throw CancellationError() }
        stats.withLock { $0.errors += 1 }
        failures += 1
        // Retried: a warning, not an error (an API server restarting is a normal event).
        logger.warning("list/watch failed; retrying with backoff", metadata: [
          "error": "\(error)", "attempt": "\(failures)", "resourceVersion": "\(resourceVersion ?? "-")",
        ])
        try await backoff(failures)
      }
    }
    throw CancellationError()
  }

  /// Whether `error` says the request was cancelled or its client shut down on our side (the owner stopping),
  /// rather than the API server failing.
  static func isOwnCancellation(_ error: any Error) -> Bool {
    var current: (any Error)? = error
    while let error = current {
      if error is CancellationError { return true }
      if let http = error as? HTTPClientError, http == .cancelled || http == .alreadyShutdown { return true }
      current = (error as? KubeError)?.cause
    }
    return false
  }

  /// Sleeps `initialBackoff * 2^(attempt-1)`, capped at `maxBackoff`, scaled by a jitter in [0.5, 1].
  func backoff(_ attempt: Int) async throws {
    let exponent = min(attempt - 1, 20)
    var delay = configuration.initialBackoff * (1 << exponent)
    if delay > configuration.maxBackoff { delay = configuration.maxBackoff }
    delay = delay * Double.random(in: 0.5...1.0)
    try await Task.sleep(for: delay)
  }

  /// Lists everything, replaces the store's contents and emits the difference; returns the list's
  /// resourceVersion.
  func relist() async throws -> String {
    let list = try await client.listAll(
      R.self, namespace: configuration.namespace,
      options: ListOptions(labelSelector: configuration.labelSelector, fieldSelector: configuration.fieldSelector,
                           limit: configuration.pageSize))
    stats.withLock { $0.lists += 1 }
    let fresh = Dictionary(list.items.map { ($0.metadata.key, $0) }, uniquingKeysWith: { $1 })
    for key in store.keys where fresh[key] == nil {
      if let old = store.remove(key: key) { emit(.deleted(old)) }
    }
    for key in fresh.keys.sorted() {
      let object = fresh[key]!
      if let old = store.get(key: key) {
        guard old.metadata.resourceVersion != object.metadata.resourceVersion || old.metadata.uid != object.metadata.uid
        else { continue }
        store.upsert(object)
        emit(.updated(old: old, new: object))
      } else {
        store.upsert(object)
        emit(.added(object))
      }
    }
    let rv = list.metadata.resourceVersion ?? ""
    store.setSynced(resourceVersion: rv)
    logger.debug("listed", metadata: ["count": "\(fresh.count)", "resourceVersion": "\(rv)"])
    return rv
  }

  /// Watches from `rv` until the stream ends; applies every event to the store.
  func watchOnce(from rv: String, onProgress: () -> Void, resourceVersion: inout String?) async throws -> WatchEnd {
    let stream = try await client.watch(
      R.self, namespace: configuration.namespace,
      options: WatchOptions(resourceVersion: rv, labelSelector: configuration.labelSelector,
                            fieldSelector: configuration.fieldSelector, allowWatchBookmarks: true,
                            timeoutSeconds: configuration.watchTimeoutSeconds))
    stats.withLock { $0.watches += 1 }
    var seen = 0
    for try await event in stream {
      seen += 1
      onProgress()
      switch event {
      case .added(let object), .modified(let object):
        apply(upsert: object)
        resourceVersion = object.metadata.resourceVersion ?? resourceVersion
      case .deleted(let object):
        if let current = store.remove(key: object.metadata.key) {
          emit(.deleted(object.metadata.uid == current.metadata.uid ? object : current))
        }
        resourceVersion = object.metadata.resourceVersion ?? resourceVersion
      case .bookmark(let bookmarkRV):
        resourceVersion = bookmarkRV
      case .error(let status):
        if status.code == 410 || status.reason == "Expired" || status.reason == "Gone" { return .expired }
        throw KubeError.fromStatus(status, httpStatus: nil, context: "watch \(R.plural) ERROR event")
      }
      if let resourceVersion { store.setResourceVersion(resourceVersion) }
    }
    return .closed(eventsSeen: seen)
  }

  private func apply(upsert object: R) {
    if let current = store.get(key: object.metadata.key) {
      guard Self.isNewer(object.metadata.resourceVersion, than: current.metadata.resourceVersion) else { return }
      store.upsert(object)
      emit(.updated(old: current, new: object))
    } else {
      store.upsert(object)
      emit(.added(object))
    }
  }

  /// Whether `a` is a later resourceVersion than `b` (numeric when both are numbers; otherwise any
  /// difference counts, since resourceVersions are formally opaque).
  static func isNewer(_ a: String?, than b: String?) -> Bool {
    guard let a, let b else { return true }
    if let x = UInt64(a), let y = UInt64(b) { return x > y }
    return a != b
  }
}
