import Synchronization

/// What a `ServiceMirror` has to do next, coalesced: a burst of events about one remote service is one
/// reconciliation of it; "everything" and "repair" absorb the single keys.
final class MirrorWorkQueue: Sendable {
  struct Batch: Sendable {
    /// Remote services (`namespace/name`) to reconcile, in arrival order.
    var keys: [String] = []
    var keySet: Set<String> = []
    /// Local namespaces that appeared.
    var namespaces: Set<String> = []
    /// Reconcile every service (gateway liveness or the Link's spec changed).
    var all = false
    /// Re-read the local mirrors, reconcile everything, delete orphans.
    var repair = false
    /// Retry the services whose last write failed.
    var retry = false
    /// The Link's spec changed.
    var linkChanged = false
    /// End the session (credentials changed).
    var restart = false

    var isEmpty: Bool {
      keys.isEmpty && namespaces.isEmpty && !all && !repair && !retry && !linkChanged && !restart
    }
  }

  private let pending = Mutex(Batch())
  let signal = AsyncSignal()

  init() {}

  private func change(_ body: (inout Batch) -> Void) {
    pending.withLock { body(&$0) }
    signal.notify()
  }

  func add(_ key: String) {
    change { b in
      if b.keySet.insert(key).inserted { b.keys.append(key) }
    }
  }
  func namespaceAppeared(_ name: String) { change { $0.namespaces.insert(name) } }
  func everything() { change { $0.all = true } }
  func repair() { change { $0.repair = true } }
  func retry() { change { $0.retry = true } }
  func linkChanged() { change { $0.linkChanged = true } }
  func restart() { change { $0.restart = true } }

  /// Takes everything pending.
  func take() -> Batch {
    pending.withLock { b in
      defer { b = Batch() }
      return b
    }
  }

  /// Drops what is pending except a Link change (a new session starts from a full repair anyway).
  func reset() {
    pending.withLock { b in
      let linkChanged = b.linkChanged
      b = Batch()
      b.linkChanged = linkChanged
    }
  }

  /// Waits until something is pending (or the task is cancelled).
  func next() async -> Batch {
    while !Task.isCancelled {
      let batch = take()
      if !batch.isEmpty { return batch }
      await signal.wait()
    }
    return Batch()
  }
}
