public import Foundation
public import MeshIdentity
import Synchronization

/// A rotation clock that moves only when a test says so. `nextSleep()` tells the test when the code under
/// test has gone to sleep and until when, so tests never race it and never sleep for real.
public final class ManualRotationClock: RotationClock {
  private struct Sleeper {
    var deadline: Date
    var continuation: CheckedContinuation<Void, any Error>
  }
  private struct State {
    var now: Date
    var sleepers: [Int: Sleeper] = [:]
    var nextID = 0
  }
  private let state: Mutex<State>
  private let sleeps: AsyncStream<Date>
  private let sleepsContinuation: AsyncStream<Date>.Continuation

  public init(now: Date) {
    self.state = Mutex(State(now: now))
    (sleeps, sleepsContinuation) = AsyncStream.makeStream(of: Date.self)
  }

  public func now() -> Date { state.withLock { $0.now } }

  public func sleep(until deadline: Date) async throws {
    let id = state.withLock { state in
      defer { state.nextID += 1 }
      return state.nextID
    }
    try await withTaskCancellationHandler {
      try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
        let resumeNow = state.withLock { state -> Bool in
          if deadline <= state.now { return true }
          state.sleepers[id] = Sleeper(deadline: deadline, continuation: continuation)
          return false
        }
        sleepsContinuation.yield(deadline)
        if resumeNow { continuation.resume() }
      }
    } onCancel: {
      let sleeper = state.withLock { $0.sleepers.removeValue(forKey: id) }
      sleeper?.continuation.resume(throwing: CancellationError())
    }
  }

  /// Waits until the code under test calls `sleep(until:)`, and returns the deadline it asked for.
  public func nextSleep() async -> Date? {
    var iterator = sleeps.makeAsyncIterator()
    return await iterator.next()
  }

  /// Moves time to `date` and wakes every sleeper whose deadline has come.
  public func advance(to date: Date) {
    let due = state.withLock { state -> [CheckedContinuation<Void, any Error>] in
      state.now = max(state.now, date)
      let ready = state.sleepers.filter { $0.value.deadline <= state.now }
      for key in ready.keys { state.sleepers.removeValue(forKey: key) }
      return ready.values.map(\.continuation)
    }
    for continuation in due { continuation.resume() }
  }
}
