public import Foundation

extension Process {
  /// Starts the process with no signals blocked. Foundation's `Process` hands the child the calling
  /// thread's signal mask, and threads that trap signals (ServiceLifecycle's `UnixSignalsSequence`, test
  /// runners) block nearly every signal: a child started from them ignores SIGTERM, so `terminate()` does
  /// nothing. The calling thread's mask is cleared only for the moment of the spawn, then restored.
  public func runWithDefaultSignalMask() throws {
    var empty = sigset_t()
    var previous = sigset_t()
    sigemptyset(&empty)
    pthread_sigmask(SIG_SETMASK, &empty, &previous)
    defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
    try self.run()
  }
}
