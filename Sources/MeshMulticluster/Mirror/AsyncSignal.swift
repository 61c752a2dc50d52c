import Synchronization

/// A wake-up flag for one waiter at a time: `notify()` wakes the waiter, or the next `wait()` when nobody
/// waits. Several notifications before a wait count as one. `wait()` returns early when its task is cancelled.
final class AsyncSignal: Sendable {
  private struct State {
    var pending = false
    var waiter: CheckedContinuation<Void, Never>?
    var closed = false
  }
  private let state = Mutex(State())

  init() {}

  func notify() {
    let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
      if let w = s.waiter {
        s.waiter = nil
        return w
      }
      s.pending = true
      return nil
    }
    waiter?.resume()
  }

  /// Wakes every present and future waiter at once (for "finished" signals).
  func close() {
    let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
      s.closed = true
      defer { s.waiter = nil }
      return s.waiter
    }
    waiter?.resume()
  }

  var isClosed: Bool { state.withLock { $0.closed } }

  /// Returns after a notification (consuming it), on close, or when the task is cancelled.
  func wait() async {
    await withTaskCancellationHandler {
      await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let resumeNow = state.withLock { s -> Bool in
          if s.closed || Task.isCancelled { return true }
          if s.pending {
            s.pending = false
            return true
          }
          precondition(s.waiter == nil, "AsyncSignal supports one waiter at a time")
          s.waiter = continuation
          return false
        }
        if resumeNow { continuation.resume() }
      }
    } onCancel: {
      let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
        defer { s.waiter = nil }
        return s.waiter
      }
      waiter?.resume()
    }
  }

  /// `wait()` bounded by `timeout`; true when woken by a notification or close, false on timeout.
  func wait(timeout: Duration) async -> Bool {
    await withTaskGroup(of: Bool.self) { group in
      group.addTask {
        await self.wait()
        return !Task.isCancelled
      }
      group.addTask {
        try? await Task.sleep(for: timeout)
        return false
      }
      let first = await group.next() ?? false
      group.cancelAll()
      return first
    }
  }
}
