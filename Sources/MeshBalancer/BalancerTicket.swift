/// One request's claim on a picked endpoint: counts as pending there until completed.
///
/// Non-copyable, so it is completed at most once (the compiler rejects a second `complete`),
/// and a ticket that is dropped without completing is completed as ``RequestOutcome/cancelled``
/// by its `deinit`, so neither errors nor cancellation can leak a pending count. Store it in an
/// `Optional` property when the request outlives a scope, and complete it with
/// `ticket.take()?.complete(...)`.
public struct BalancerTicket<Endpoint: Hashable & Sendable>: ~Copyable, Sendable {
  /// The endpoint to send the request to.
  public let endpoint: Endpoint

  /// Whether this request is the single probe of an endpoint whose failure-accrual back-off
  /// ended; its outcome decides whether the endpoint is available again.
  public let isProbe: Bool

  private let balancer: P2CBalancer<Endpoint>
  private let slot: Int
  private let generation: UInt32
  private let startedAt: UInt64
  private var completed: Bool

  init(
    balancer: P2CBalancer<Endpoint>,
    endpoint: Endpoint,
    slot: Int,
    generation: UInt32,
    startedAt: UInt64,
    isProbe: Bool
  ) {
    self.balancer = balancer
    self.endpoint = endpoint
    self.slot = slot
    self.generation = generation
    self.startedAt = startedAt
    self.isProbe = isProbe
    self.completed = false
  }

  /// Ends the request with `outcome`: releases the pending count, updates the RTT estimate and
  /// failure accrual.
  public consuming func complete(_ outcome: RequestOutcome) {
    self.balancer.finish(
      slot: self.slot,
      generation: self.generation,
      startedAt: self.startedAt,
      isProbe: self.isProbe,
      outcome: outcome
    )
    self.completed = true
  }

  /// Ends the request as a ``RequestOutcome/success``.
  public consuming func succeed() {
    self.complete(.success)
  }

  /// Ends the request as a ``RequestOutcome/failure``.
  public consuming func fail() {
    self.complete(.failure)
  }

  /// Ends the request as ``RequestOutcome/cancelled``.
  public consuming func cancel() {
    self.complete(.cancelled)
  }

  deinit {
    if !self.completed {
      self.balancer.finish(
        slot: self.slot,
        generation: self.generation,
        startedAt: self.startedAt,
        isProbe: self.isProbe,
        outcome: .cancelled
      )
    }
  }
}
