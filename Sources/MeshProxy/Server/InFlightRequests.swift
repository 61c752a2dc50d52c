import Synchronization

/// Counts requests in flight, so graceful shutdown can wait for them.
public final class InFlightRequests: Sendable {
  private let count = Atomic<Int>(0)
  public init() {}
  func begin() { count.add(1, ordering: .relaxed) }
  func end() { count.subtract(1, ordering: .relaxed) }
  public var current: Int { count.load(ordering: .relaxed) }
}
