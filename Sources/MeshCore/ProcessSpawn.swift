package import Foundation
import Synchronization

/// One spawn at a time: Foundation's `Process.run()` on Linux was seen to crash (a bad pointer in a copy
/// inside it) while several threads started processes at once.
private let spawnLock = Mutex(())

extension Process {
  /// Starts the process with no signals blocked. Foundation's `Process` hands the child the calling
  /// thread's signal mask, and threads that trap signals (ServiceLifecycle's `UnixSignalsSequence`, test
  /// runners) block nearly every signal: a child started from them ignores SIGTERM, so `terminate()` does
  /// nothing. The calling thread's mask is cleared only for the moment of the spawn, then restored. Spawns
  /// from this method run one at a time.
  package func runWithDefaultSignalMask() throws {
    var empty = sigset_t()
    var previous = sigset_t()
    sigemptyset(&empty)
    pthread_sigmask(SIG_SETMASK, &empty, &previous)
    defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
    try spawnLock.withLock { _ in try self.run() }
  }
}
