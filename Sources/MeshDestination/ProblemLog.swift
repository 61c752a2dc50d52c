import Logging
import Synchronization
public import MeshDiscovery

/// The problems found in ServiceProfiles and TrafficSplits, per resource, as last computed; logged
/// when they change. Observable through `DestinationServer.problems`.
final class ProblemLog: Sendable {
  private struct State {
    var current: [String: [ProfileProblem]] = [:]
    var reported = 0
  }
  private let state = Mutex(State())
  private let logger: Logger

  init(logger: Logger) { self.logger = logger }

  /// Replaces the problems of `source` (a profile key); logs the new ones.
  func set(_ problems: [ProfileProblem], for source: String) {
    let fresh: [ProfileProblem] = state.withLock { s in
      let old = s.current[source] ?? []
      s.current[source] = problems.isEmpty ? nil : problems
      let new = problems.filter { !old.contains($0) }
      s.reported += new.count
      return new
    }
    for problem in fresh {
      logger.warning("profile problem: route dropped or setting ignored", metadata: ["problem": "\(problem)"])
    }
  }

  var all: [ProfileProblem] {
    state.withLock { s in s.current.keys.sorted().flatMap { s.current[$0]! } }
  }
  var reportedCount: Int { state.withLock { $0.reported } }
}
